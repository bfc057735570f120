//! Nodes of one ledger over a PostgreSQL store, for the high-availability tests
//! (docs/architecture.md, docs/operations.md "High availability").
//!
//! - [`init_store`] runs `keyledger init --store URL --data-dir D` and keeps what it printed:
//!   the database then holds the ledger, and `D` the node secrets (`signing.key`,
//!   `pepper.key`) every node must hold.
//! - [`StoreLedger::node`] starts a [`StoreNode`]: `keyledger serve --store URL --data-dir
//!   D2 --listen 127.0.0.1:PORT`, where `D2` is the node's own data dir holding copies of
//!   those two secrets. A node can be crashed ([`StoreNode::kill`], SIGKILL), frozen
//!   ([`StoreNode::pause`], SIGSTOP) and thawed ([`StoreNode::resume`], SIGCONT), and
//!   restarted on its data dir and port ([`StoreNode::restart`]).
//! - [`Caller`] is an HTTP client for load threads: a dead or frozen node is an `Err` (after
//!   a bounded wait), never a panic.
//!
//! Every process is killed when its value is dropped, so a failing test leaves none behind.

use crate::{Client, Resp, command, free_port, path_str};
use serde_json::Value;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The node secrets `init` writes and every node must hold (docs/architecture.md).
pub const NODE_SECRETS: [&str; 2] = ["signing.key", "pepper.key"];

/// Runs `keyledger ARGS…` to completion with `env` set (and nothing else from the caller's
/// configuration), e.g. a node that must refuse to start.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    command().args(args).envs(env.iter().copied()).output().expect("cannot run keyledger")
}

/// A ledger whose log lives in a PostgreSQL database, initialised by [`init_store`].
pub struct StoreLedger {
    /// Holds the data dir of `init` and those of the nodes (removed on drop).
    pub tmp: tempfile::TempDir,
    /// The store's connection string.
    pub store: String,
    /// The data dir `init` wrote the node secrets to.
    pub data_dir: PathBuf,
    pub admin_key: String,
    pub admin_key_id: String,
    pub log_public_key: String,
    /// The JSON object `init` printed.
    pub init_output: Value,
}

/// Runs `keyledger init --store STORE --data-dir D` on a new temporary directory; panics
/// unless it succeeds and prints one JSON object with the admin key and the log's key.
pub fn init_store(store: &str) -> StoreLedger {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("init");
    let output = command()
        .args(["init", "--store", store, "--data-dir", path_str(&data_dir)])
        .output()
        .expect("cannot run keyledger init");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "init --store failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let init_output: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("init must print one JSON object, got {stdout:?}: {e}"));
    let text = |field: &str| {
        init_output[field]
            .as_str()
            .unwrap_or_else(|| panic!("init output lacks `{field}`: {init_output}"))
            .to_owned()
    };
    StoreLedger {
        admin_key: text("admin_key"),
        admin_key_id: text("admin_key_id"),
        log_public_key: text("log_public_key"),
        store: store.to_owned(),
        init_output,
        data_dir,
        tmp,
    }
}

impl StoreLedger {
    /// A new data dir `name` for a node, holding copies of the node secrets (mode kept).
    pub fn node_dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("create node dir");
        for secret in NODE_SECRETS {
            let from = self.data_dir.join(secret);
            std::fs::copy(&from, dir.join(secret))
                .unwrap_or_else(|e| panic!("copy {} to node {name}: {e}", from.display()));
        }
        dir
    }

    /// Starts node `name` on a new data dir ([`Self::node_dir`]) with `extra` flags.
    pub fn node(&self, name: &str, extra: &[&str]) -> StoreNode {
        StoreNode::start(name, &self.store, &self.node_dir(name), extra)
    }
}

/// A running `keyledger serve --store …`.
pub struct StoreNode {
    pub name: String,
    child: Option<Child>,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub data_dir: PathBuf,
    store: String,
    extra: Vec<String>,
    /// Environment variables the process gets (e.g. `KEYLEDGER_PEPPER`).
    env: Vec<(String, String)>,
    logs: tempfile::TempDir,
    /// Output of the node's earlier lives (before [`Self::restart`]).
    earlier_logs: String,
}

impl StoreNode {
    /// Starts `keyledger serve --store STORE --data-dir DATA_DIR --listen 127.0.0.1:PORT
    /// EXTRA…` and waits until `/healthz` answers 200. Retries on another port if the chosen
    /// one was taken.
    pub fn start(name: &str, store: &str, data_dir: &Path, extra: &[&str]) -> StoreNode {
        Self::start_with_env(name, store, data_dir, extra, &[])
    }

    /// [`Self::start`] with environment variables `env` (kept across restarts).
    pub fn start_with_env(
        name: &str,
        store: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> StoreNode {
        for _attempt in 0..5 {
            let mut node = StoreNode {
                name: name.to_owned(),
                child: None,
                addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
                url: String::new(),
                data_dir: data_dir.to_path_buf(),
                store: store.to_owned(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                logs: tempfile::tempdir().expect("tempdir"),
                earlier_logs: String::new(),
            };
            node.url = format!("http://{}", node.addr);
            match node.spawn() {
                Ok(()) => return node,
                Err(logs) if logs.contains("cannot listen") => continue, // lost the race for the port
                Err(logs) => panic!("node {name} did not become healthy:\n{logs}"),
            }
        }
        panic!("could not find a free port for node {name}");
    }

    /// Spawns the process on `self.addr` and waits up to 30 s for `/healthz`; `Err(logs)` if
    /// it exits or times out.
    fn spawn(&mut self) -> Result<(), String> {
        let stdout = File::create(self.logs.path().join("stdout")).expect("log file");
        let stderr = File::create(self.logs.path().join("stderr")).expect("log file");
        let child = command()
            .args(["serve", "--store", &self.store, "--data-dir", path_str(&self.data_dir)])
            .args(["--listen", &self.addr.to_string()])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("cannot start keyledger serve");
        self.child = Some(child);
        let caller = Caller::new(&self.url, Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                self.child = None;
                return Err(format!("exited with {status}:\n{}", self.logs()));
            }
            if caller.get("/healthz", None).is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("not healthy after 30 s:\n{}", self.logs()))
    }

    /// A client that panics on transport errors (for a node known to be up).
    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// A client whose requests give up after `timeout` and return transport errors.
    pub fn caller(&self, timeout: Duration) -> Caller {
        Caller::new(&self.url, timeout)
    }

    /// The process id of the node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{signal} {} ({}) failed", self.pid(), self.name);
    }

    /// SIGKILLs the node and reaps it: no clean shutdown, nothing flushed.
    pub fn kill(&mut self) {
        self.signal("KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Stops the node with SIGTERM and waits up to 20 s for it to exit; panics unless it
    /// exits cleanly. Returns its output.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let mut child = self.child.take().expect("node running");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} did not stop within 20 s of SIGTERM:\n{}", self.name, self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let logs = self.logs();
        assert!(status.success(), "node {} exited with {status} after SIGTERM:\n{logs}", self.name);
        logs
    }

    /// Freezes the node (SIGSTOP): its connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a node frozen by [`Self::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Whether the process is still running (not exited).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Starts a node that was [`Self::kill`]ed again, on the same data dir, address and flags,
    /// and waits until it is healthy.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart needs a stopped node");
        self.earlier_logs.push_str(&self.logs());
        if let Err(logs) = self.spawn() {
            panic!("node {} did not restart:\n{}{logs}", self.name, self.earlier_logs);
        }
    }

    /// Everything the node printed in its current life (stdout then stderr).
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }
}

impl Drop for StoreNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP client that reports transport failures (refused, reset, timed out) as `Err`,
/// with a bound on every request: what load threads need against nodes that die or freeze.
#[derive(Clone)]
pub struct Caller {
    agent: ureq::Agent,
    base: String,
}

impl Caller {
    pub fn new(base: &str, timeout: Duration) -> Caller {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(timeout))
            .build();
        Caller { agent: ureq::Agent::new_with_config(config), base: base.trim_end_matches('/').to_owned() }
    }

    /// `GET path`, with `Authorization: Bearer KEY` when `key` is given.
    pub fn get(&self, path: &str, key: Option<&str>) -> Result<Resp, String> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        Self::read(request.call())
    }

    /// `POST path` with a JSON body, with `Authorization: Bearer KEY` when `key` is given.
    pub fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Result<Resp, String> {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        Self::read(request.send_json(body))
    }

    fn read(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Resp, String> {
        let mut response = response.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (n.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .collect();
        let text = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Resp { status, headers, body })
    }
}
