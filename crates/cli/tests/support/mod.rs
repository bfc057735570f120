//! What the admin client's end-to-end tests share: a running `keyledger serve` of the real
//! binary, started by the end-to-end crate's spawner ([`keyledger_e2e::Ledger`],
//! [`keyledger_e2e::Server`]), and `keyledger` subcommands run against it the way an operator
//! runs them (`KEYLEDGER_URL` and `KEYLEDGER_ADMIN_KEY` in the environment, no colours).
//!
//! Every test binary declares `mod support;` and uses the part it needs.
#![allow(dead_code)]

use keyledger_ledger::{Engine, EngineOptions};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `keyledger` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_keyledger");

/// A running `keyledger serve` on a fresh data dir, stopped when dropped.
pub struct Server {
    /// Declared before `ledger`: the server stops before its data dir is removed.
    serve: keyledger_e2e::Server,
    _ledger: keyledger_e2e::Ledger,
    pub url: String,
    pub admin_key: String,
}

impl Server {
    /// `keyledger init`, then `keyledger serve EXTRA…` on a free loopback port, healthy.
    pub fn start(extra: &[&str]) -> Server {
        keyledger_e2e::use_keyledger_bin(std::path::Path::new(BIN));
        let ledger = keyledger_e2e::Ledger::init();
        let serve = ledger.serve(extra);
        let (url, admin_key) = (serve.url.clone(), ledger.admin_key.clone());
        Server { serve, _ledger: ledger, url, admin_key }
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        self.serve.logs()
    }

    /// An HTTP client for this server (4xx and 5xx are answers, not errors).
    pub fn http(&self) -> keyledger_e2e::Client {
        self.serve.client()
    }

    /// `keyledger ARGS` against this server with `admin_key`, not yet run.
    pub fn command(&self, admin_key: &str, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("KEYLEDGER_URL", &self.url)
            .env("KEYLEDGER_ADMIN_KEY", admin_key)
            .env("NO_COLOR", "1");
        command
    }

    /// `keyledger ARGS` against this server with the init admin key, stdin closed.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_key(&self.admin_key, args)
    }

    /// `keyledger ARGS` against this server with `admin_key`, stdin closed.
    pub fn cli_with_key(&self, admin_key: &str, args: &[&str]) -> Output {
        self.command(admin_key, args).stdin(Stdio::null()).output().expect("run keyledger")
    }

    /// `keyledger ARGS` with `input` on its stdin.
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(&self.admin_key, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyledger");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("wait keyledger")
    }

    /// Runs `args` (plus `--json`), expects exit 0 and returns the printed JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        parse_json(&args, &self.cli(&args))
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Expects `output` of `args` to be exit 0 with JSON on stdout, and returns the JSON.
pub fn parse_json(args: &[&str], output: &Output) -> Value {
    assert_eq!(output.status.code(), Some(0), "{args:?} failed: {}", stderr(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", stdout(output)))
}

/// A data dir (`<dir>/data`) initialised and open as an engine in this process, with a
/// runtime for the engine's async calls (these tests are synchronous). Files a test writes
/// go in `dir`, removed when it drops.
pub struct Local {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub engine: Engine,
    pub rt: tokio::runtime::Runtime,
}

/// Initialises and opens a fresh data dir with default engine options.
pub fn local() -> Local {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Engine::init(&data, EngineOptions::default()).unwrap();
    let engine = Engine::open(&data, EngineOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    Local { dir, data, engine, rt }
}

/// `keyledger export verify FILE --public-key KEY EXTRA…`: its exit code, stdout and stderr.
pub fn export_verify(file: &Path, public_key: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(BIN)
        .args(["export", "verify"])
        .arg(file)
        .args(["--public-key", public_key])
        .args(extra)
        .output()
        .unwrap();
    (output.status.code(), stdout(&output), stderr(&output))
}
