//! Support for keyledger's end-to-end tests: they drive the real `keyledger` binary.
//!
//! - [`keyledger_bin`] builds the binary once per test process (`cargo build -p keyledger
//!   --bin keyledger`, a no-op when it is fresh) and returns its path ([`use_keyledger_bin`]
//!   hands it one built already); [`cargo_bin`] does the same for any binary of the
//!   workspace (e.g. `examples/axum-service`).
//! - [`Ledger::init`] runs `keyledger init` in a fresh temporary directory.
//! - [`Server`] runs `keyledger serve` on a free loopback port, waits for `/healthz`, and
//!   stops it with SIGTERM (killing it if it is dropped still running).
//! - [`Client`] is a tiny HTTP client that returns `(status, headers, JSON body)` and never
//!   treats 4xx/5xx as errors.
//! - [`Env`] is the three together: a fresh ledger, its server, a client for it.
//! - [`receiver`] is a webhook receiver on loopback that keeps every JSON body it is sent.
#![forbid(unsafe_code)]

use serde_json::Value;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root (the parent of this package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e package lives inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { workspace_root().join(dir) }
        }
        None => workspace_root().join("target"),
    }
}

static KEYLEDGER_BIN: OnceLock<PathBuf> = OnceLock::new();

/// The `keyledger` binary, built (once per test process) with the profile of the tests.
pub fn keyledger_bin() -> &'static Path {
    KEYLEDGER_BIN.get_or_init(|| cargo_bin("keyledger", "keyledger"))
}

/// Makes [`keyledger_bin`] return `path` instead of building the binary: for the tests of the
/// `keyledger` package itself, which cargo hands the binary it built
/// (`CARGO_BIN_EXE_keyledger`). No effect once the binary was chosen.
pub fn use_keyledger_bin(path: &Path) {
    let _ = KEYLEDGER_BIN.set(path.to_path_buf());
}

/// Builds binary `bin` of workspace package `package` with the profile of the tests
/// (`cargo build -p PACKAGE --bin BIN`, a no-op when it is fresh) and returns its path.
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root()).args(["build", "--quiet", "-p", package, "--bin", bin]);
    if release {
        command.arg("--release");
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot run cargo to build {bin}: {e}"));
    assert!(
        output.status.success(),
        "building the {bin} binary failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = target_dir().join(if release { "release" } else { "debug" }).join(bin);
    assert!(path.is_file(), "the {bin} binary is not at {}", path.display());
    path
}

/// The captured result of one `keyledger` invocation.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// `keyledger` with none of the caller's `KEYLEDGER_*` variables nor PostgreSQL's password
/// variables: a test's flags and environment are always explicit, so a developer's shell
/// cannot change what it checks.
pub(crate) fn command() -> Command {
    let mut command = Command::new(keyledger_bin());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("KEYLEDGER_") {
            command.env_remove(var);
        }
    }
    command.env_remove("PGPASSWORD").env_remove("PGPASSFILE");
    command.stdin(Stdio::null());
    command
}

/// Runs `keyledger ARGS…` to completion.
pub fn keyledger(args: &[&str]) -> Run {
    command().args(args).output().expect("cannot run keyledger").into()
}

/// Runs `keyledger ARGS…` to completion with the environment variables `env` set.
pub fn keyledger_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = command();
    command.args(args).envs(env.iter().copied());
    command.output().expect("cannot run keyledger").into()
}

/// `keyledger log verify --data-dir DIR`.
pub fn log_verify(data_dir: &Path) -> Run {
    keyledger(&["log", "verify", "--data-dir", path_str(data_dir)])
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// An initialised data dir in its own temporary directory (removed on drop).
pub struct Ledger {
    pub tmp: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub admin_key: String,
    pub admin_key_id: String,
    pub log_public_key: String,
    /// The JSON object `init` printed.
    pub init_output: Value,
}

impl Ledger {
    /// Runs `keyledger init` on a new data dir and checks its one-line JSON output.
    pub fn init() -> Ledger {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let run = keyledger(&["init", "--data-dir", path_str(&data_dir)]);
        assert!(run.success(), "init failed: {}", run.stderr);
        let init_output: Value = serde_json::from_str(run.stdout.trim())
            .unwrap_or_else(|e| panic!("init must print one JSON object, got {:?}: {e}", run.stdout));
        let text = |field: &str| {
            init_output[field]
                .as_str()
                .unwrap_or_else(|| panic!("init output lacks `{field}`: {init_output}"))
                .to_owned()
        };
        Ledger {
            admin_key: text("admin_key"),
            admin_key_id: text("admin_key_id"),
            log_public_key: text("log_public_key"),
            init_output,
            data_dir,
            tmp,
        }
    }

    /// Starts `keyledger serve` on this data dir with `extra` flags.
    pub fn serve(&self, extra: &[&str]) -> Server {
        Server::start(&self.data_dir, extra)
    }

    /// `keyledger log verify` on this data dir.
    pub fn log_verify(&self) -> Run {
        log_verify(&self.data_dir)
    }
}

/// A free loopback port (bound, then released: another process may race us for it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("cannot bind a loopback port").port()
}

/// A running `keyledger serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub url: String,
    logs: tempfile::TempDir,
}

enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

impl Server {
    /// Starts `keyledger serve --data-dir DIR --listen 127.0.0.1:PORT EXTRA…` and waits until
    /// `/healthz` answers 200. Retries on another port if the chosen one was taken.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        for _attempt in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let logs = tempfile::tempdir().expect("tempdir");
            let stdout = File::create(logs.path().join("stdout")).expect("log file");
            let stderr = File::create(logs.path().join("stderr")).expect("log file");
            let child = command()
                .args(["serve", "--data-dir", path_str(data_dir), "--listen", &addr.to_string()])
                .args(extra)
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("cannot start keyledger serve");
            let mut server = Server { child: Some(child), addr, url: format!("http://{addr}"), logs };
            match server.wait_ready(Duration::from_secs(30)) {
                Startup::Ready => return server,
                Startup::Exited(status) => {
                    let logs = server.logs();
                    if logs.contains("cannot listen") {
                        continue; // lost the race for the port
                    }
                    panic!("keyledger serve exited with {status} before it was ready:\n{logs}");
                }
                Startup::TimedOut => panic!("keyledger serve did not become healthy:\n{}", server.logs()),
            }
        }
        panic!("could not find a free port for keyledger serve");
    }

    fn wait_ready(&mut self, timeout: Duration) -> Startup {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                return Startup::Exited(status);
            }
            if client.try_get("/healthz").is_some_and(|r| r.status == 200) {
                return Startup::Ready;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Startup::TimedOut
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Everything the server printed so far (stdout then stderr).
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// Stops the server with SIGTERM and waits for it to exit (a clean stop writes the final
    /// checkpoint). Panics if it does not stop within 20 s or exits non-zero. Returns the
    /// server's output.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("server running");
        let killed =
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("cannot run kill");
        assert!(killed.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("keyledger serve did not stop within 20 s of SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let logs = self.logs();
        assert!(status.success(), "keyledger serve exited with {status} after SIGTERM:\n{logs}");
        logs
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP answer: status, headers (lower-case names) and the body parsed as JSON
/// (`Value::Null` when empty, a JSON string when not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The response as text, for assertion messages and for "contains" checks.
    pub fn dump(&self) -> String {
        format!("{} {:?} {}", self.status, self.headers, self.body)
    }
}

/// A tiny HTTP client over ureq; 4xx and 5xx are answers, not errors.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(20)))
            .build();
        Client { agent: ureq::Agent::new_with_config(config), base: base.trim_end_matches('/').to_owned() }
    }

    /// Sends a request; a transport error (e.g. the server was killed) is an `Err`.
    pub fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Resp, ureq::Error> {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "GET" => {
                let mut request = self.agent.get(&url);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                request.call()
            }
            _ => {
                let mut request = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    other => panic!("unsupported method {other}"),
                };
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                match body {
                    Some(body) => request.send_json(body),
                    None => request.send_empty(),
                }
            }
        };
        Self::read(response?)
    }

    /// The status, headers and JSON body (text when not JSON) of an answer.
    fn read(mut response: ureq::http::Response<ureq::Body>) -> Result<Resp, ureq::Error> {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (n.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .collect();
        let text = response.body_mut().read_to_string()?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Resp { status, headers, body })
    }

    fn try_get(&self, path: &str) -> Option<Resp> {
        self.try_send("GET", path, &[], None).ok()
    }

    /// `POST path` with exactly these body bytes (e.g. a body a signature covers).
    pub fn post_bytes(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut request = self.agent.post(&format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send(body).and_then(Self::read).unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Sends a request; panics only on transport errors.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Resp {
        self.try_send(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path` with `Authorization: Bearer KEY`.
    pub fn get(&self, path: &str, key: &str) -> Resp {
        self.send("GET", path, &[("authorization", &format!("Bearer {key}"))], None)
    }

    /// `POST path` with `Authorization: Bearer KEY` and a JSON body.
    pub fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send("POST", path, &[("authorization", &format!("Bearer {key}"))], Some(body))
    }

    /// `POST path` with `Authorization: Bearer KEY` and no body.
    pub fn post_empty(&self, path: &str, key: &str) -> Resp {
        self.send("POST", path, &[("authorization", &format!("Bearer {key}"))], None)
    }

    pub fn put(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send("PUT", path, &[("authorization", &format!("Bearer {key}"))], Some(body))
    }

    pub fn patch(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send("PATCH", path, &[("authorization", &format!("Bearer {key}"))], Some(body))
    }
}

/// A fresh ledger, `keyledger serve` on it, and a client for that server.
pub struct Env {
    /// Declared first: the server stops before the ledger's data dir is removed.
    pub server: Server,
    pub ledger: Ledger,
    pub http: Client,
}

impl Env {
    /// [`Ledger::init`], then [`Ledger::serve`] with `extra` flags.
    pub fn start(extra: &[&str]) -> Env {
        let ledger = Ledger::init();
        let server = ledger.serve(extra);
        let http = server.client();
        Env { server, ledger, http }
    }

    /// The admin key `init` printed (a full admin key).
    pub fn root(&self) -> &str {
        &self.ledger.admin_key
    }

    /// The id of [`Env::root`].
    pub fn root_id(&self) -> &str {
        &self.ledger.admin_key_id
    }

    /// `GET /v1/keys/{key_id}` with the root key; asserts 200 and returns the key.
    pub fn key(&self, key_id: &str) -> Value {
        let resp = self.http.get(&format!("/v1/keys/{key_id}"), self.root());
        assert_eq!(resp.status, 200, "{}", resp.dump());
        resp.body
    }

    /// The log size `/healthz` reports, read with the root key (it is shown only to a key
    /// holding `ledger:audit:read`, docs/security.md).
    pub fn log_size(&self) -> u64 {
        let health = self.http.get("/healthz", self.root());
        assert_eq!(health.status, 200, "{}", health.dump());
        health.body["log_size"].as_u64().expect("healthz log_size")
    }
}

/// The string `field` of `value`; panics, naming both, if it is not a string.
pub fn text(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("`{field}` is not a string in {value}")).to_owned()
}

/// A webhook receiver on loopback: answers 200 to every request and keeps its body as JSON
/// (`Value::Null` when it is not JSON). Returns its URL and the bodies received so far.
pub fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let received = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(clone) = stream.try_clone() else { continue };
            let mut reader = BufReader::new(clone);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                received.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

/// Every file under `dir` (recursively), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let entry = entry.expect("dir entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// A recursive listing of `dir`: every entry with its kind, size, mode and mtime, sorted.
pub fn snapshot(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let meta = std::fs::symlink_metadata(&current).expect("metadata");
        let relative = current.strip_prefix(dir).expect("under dir").display().to_string();
        out.push(format!(
            "{relative} dir={} size={} mode={:o} mtime={}.{:09}",
            meta.is_dir(),
            if meta.is_dir() { 0 } else { meta.len() },
            meta.mode(),
            meta.mtime(),
            meta.mtime_nsec()
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&current).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        }
    }
    out.sort();
    out
}

/// Copies the directory tree `from` to `to` (which must not exist), keeping file modes.
pub fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).expect("create copy dir");
    let mode = std::fs::metadata(from).expect("metadata").permissions().mode();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).expect("chmod");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Index of the first occurrence of `needle` in `haystack` at or after `from`.
pub fn find_bytes(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len()).find(|&i| &haystack[i..i + needle.len()] == needle)
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub fn poll<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Frames of a segment file: `len u32 LE | crc32c u32 LE | flags u8 | record[len]`, the
/// CRC covering `flags ‖ record`.
pub mod cosignature;
pub mod store;

pub mod frames {
    pub const HEADER: usize = 9;
    pub const COMMIT: u8 = 0x01;

    /// One decoded frame.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Frame {
        pub flags: u8,
        pub record: Vec<u8>,
        /// Byte offset of the frame in its file.
        pub offset: usize,
    }

    /// Parses every frame of `bytes`, checking each CRC (panics on damage: the input is a
    /// log the tests just wrote cleanly).
    pub fn parse(bytes: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            assert!(at + HEADER <= bytes.len(), "partial frame header at {at}");
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
            let flags = bytes[at + 8];
            let record = bytes[at + HEADER..at + HEADER + len].to_vec();
            assert_eq!(crc, checksum(flags, &record), "CRC of the frame at {at}");
            out.push(Frame { flags, record, offset: at });
            at += HEADER + len;
        }
        out
    }

    /// The CRC32C of `flags ‖ record`.
    pub fn checksum(flags: u8, record: &[u8]) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(&[flags]), record)
    }

    /// Encodes frames with correct CRCs.
    pub fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            out.extend_from_slice(&(frame.record.len() as u32).to_le_bytes());
            out.extend_from_slice(&checksum(frame.flags, &frame.record).to_le_bytes());
            out.push(frame.flags);
            out.extend_from_slice(&frame.record);
        }
        out
    }
}
