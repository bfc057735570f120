//! The witnessed log end to end, real binaries only (docs/witness.md, "End to end"): a log
//! served with two `keyledger witness serve` processes and `--witness-quorum 2` gets its
//! checkpoints cosigned by both (checked with keyledger-verify and Python's
//! `cryptography`), a stranger mirrors its tiles and rebuilds the cosigned root, a proof
//! bundle, an export and a compliance report verify offline with that quorum (and not with
//! a witness that never cosigned), and a witness that saw a forked copy of the log raises a
//! fork alarm.

use keyledger_e2e::cosignature::python_verifies;
use keyledger_e2e::{Ledger, Run, Server, copy_dir, free_port, keyledger, keyledger_bin, path_str, poll};
use keyledger_verify::cosignature::{WitnessKey, verify_cosignatures};
use keyledger_verify::merkle::{Hash, TreeHash};
use keyledger_verify::note::{VerifierKey, open_checkpoint};
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long any one condition is waited for.
const WAIT: Duration = Duration::from_secs(20);

/// A witness nobody runs (name `witness.example.org`, Ed25519 seed 42 repeated).
const UNKNOWN_WITNESS: &str = "witness.example.org+6605b45c+BBl/ayPhbIUyxqvIOPrNXqeJvgx2spIDNAOb+os9No1h";

/// `keyledger WHAT verify FILE --public-key LOG_KEY EXTRA…`: the offline check of a proof
/// bundle (`proof`), an export (`export`) or a compliance report (`report`), each taking the
/// same `--witness`/`--witness-quorum` flags (docs/witness.md, "End to end").
fn verify_offline(what: &str, file: &Path, log_public_key: &str, extra: &[&str]) -> Run {
    keyledger(&[&[what, "verify", path_str(file), "--public-key", log_public_key][..], extra].concat())
}

/// A `keyledger witness init` data dir and its `witness serve` process (killed on drop).
struct WitnessProcess {
    child: Child,
    vkey: String,
    url: String,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl WitnessProcess {
    fn start(root: &Path, name: &str, log_vkey: &str) -> WitnessProcess {
        let dir = root.join(name);
        let init = keyledger(&["witness", "init", "--data-dir", path_str(&dir), "--name", name]);
        assert!(init.success(), "witness init {name} failed: {}", init.stderr);
        let vkey = init.stdout.trim().to_owned();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let stderr = root.join(format!("{name}.stderr"));
        let child = Command::new(keyledger_bin())
            .args(["witness", "serve", "--data-dir", path_str(&dir), "--listen", &addr.to_string()])
            .args(["--log", log_vkey])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("cannot start keyledger witness serve");
        let mut process = WitnessProcess { child, vkey, url: format!("http://{addr}"), addr, stderr };
        poll(WAIT, "the witness to listen", || {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("witness serve {name} exited with {status}:\n{}", process.logs());
            }
            TcpStream::connect(addr).ok().map(|_| ())
        });
        process
    }

    /// The `serve --witness` flag naming this witness.
    fn flag(&self) -> String {
        format!("{}={}", self.vkey, self.url)
    }

    fn key(&self) -> WitnessKey {
        self.vkey.parse().unwrap()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `POST /add-checkpoint` over a plain HTTP/1.1 connection: status and body.
    fn add_checkpoint(&self, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        let head = format!(
            "POST /add-checkpoint HTTP/1.1\r\nhost: witness\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
        (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cosignature line of witness `name` in `note`.
fn line_of<'a>(note: &'a str, name: &str) -> &'a str {
    note.split_inclusive('\n')
        .find(|line| line.starts_with(&format!("\u{2014} {name} ")))
        .unwrap_or_else(|| panic!("no cosignature line of {name} in {note}"))
}

/// `GET url` without credentials: status and raw bytes.
fn fetch(agent: &ureq::Agent, url: &str) -> (u16, Vec<u8>) {
    let mut response = agent.get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.body_mut().read_to_vec().expect("body"))
}

/// The checkpoint view, polled until `done` holds.
fn checkpoint_until(server: &Server, admin: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let http = server.client();
    let mut last = Value::Null;
    let found = poll_or(|| {
        let resp = http.get("/v1/log/checkpoint", admin);
        assert_eq!(resp.status, 200, "{}", resp.dump());
        last = resp.body.clone();
        done(&resp.body).then_some(resp.body)
    });
    found.unwrap_or_else(|| panic!("timed out waiting for {what}; last view: {last:#}\n{}", server.logs()))
}

fn poll_or<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Creates a key in `workspace` and verifies it `uses` times; the last verification's
/// request id.
fn create_and_use(server: &Server, admin: &str, workspace: &str, uses: usize) -> String {
    let http = server.client();
    let created = http.post(
        &format!("/v1/workspaces/{workspace}/keys"),
        admin,
        &json!({"name": "svc", "scopes": ["read"]}),
    );
    assert_eq!(created.status, 201, "{}", created.dump());
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let mut request_id = String::new();
    for _ in 0..uses {
        let verified =
            http.send("POST", "/v1/verify", &[], Some(&json!({"key": secret, "scopes": ["read"]})));
        assert_eq!(verified.status, 200, "{}", verified.dump());
        request_id = verified.body["request_id"].as_str().unwrap().to_owned();
    }
    request_id
}

#[test]
fn a_log_witnessed_by_two_witnesses_proves_itself_offline_and_alarms_on_a_fork() {
    let ledger = Ledger::init();
    let root = ledger.tmp.path();
    let admin = ledger.admin_key.as_str();
    // The fork: the same initialised log (same signing key), before either is served.
    let fork_dir = root.join("fork");
    copy_dir(&ledger.data_dir, &fork_dir);

    let a = WitnessProcess::start(root, "a.witness.example", &ledger.log_public_key);
    let b = WitnessProcess::start(root, "b.witness.example", &ledger.log_public_key);
    let fast = ["--checkpoint-every-events", "1", "--checkpoint-interval-secs", "1", "--public-log"];
    let server = ledger.serve(
        &[&fast[..], &["--witness", &a.flag(), "--witness", &b.flag(), "--witness-quorum", "2"]].concat(),
    );
    let request_id = create_and_use(&server, admin, "acme", 3);
    let size = server.client().get("/healthz", admin).body["log_size"].as_u64().unwrap();

    // Both witnesses cosign a checkpoint of every event; the view says the quorum is met.
    let view = checkpoint_until(&server, admin, "a checkpoint of every event cosigned by both", |v| {
        v["size"].as_u64() >= Some(size) && v["cosignatures"] == 2
    });
    assert_eq!(view["quorum"], 2, "{view:#}");
    assert_eq!(view["quorum_met"], true, "{view:#}");
    assert_eq!(view["fork_alarm"], Value::Null, "{view:#}");
    let note = view["note"].as_str().unwrap();
    let log_key: VerifierKey = ledger.log_public_key.parse().unwrap();
    let checkpoint = open_checkpoint(note, &log_key).unwrap();
    assert_eq!(verify_cosignatures(note, &[a.key(), b.key()]).unwrap().len(), 2, "{note}");
    for witness in [&a, &b] {
        let name = witness.key().name().to_owned();
        python_verifies(&witness.vkey, note, line_of(note, &name));
    }

    // A stranger mirrors the tiles and rebuilds the root of the cosigned checkpoint.
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).proxy(None).build().into();
    let (status, served) = fetch(&agent, &format!("{}/checkpoint", server.url));
    assert_eq!(status, 200);
    let served = String::from_utf8(served).unwrap();
    let mirrored = open_checkpoint(&served, &log_key).unwrap();
    assert!(mirrored.size >= checkpoint.size);
    if mirrored.size == checkpoint.size {
        assert_eq!(verify_cosignatures(&served, &[a.key(), b.key()]).unwrap().len(), 2, "{served}");
    }
    let mut leaves: Vec<Hash> = Vec::new();
    for n in 0..mirrored.size.div_ceil(256) {
        let width = (mirrored.size - n * 256).min(256);
        let path = if width == 256 { format!("0/{n:03}") } else { format!("0/{n:03}.p/{width}") };
        let (status, tile) = fetch(&agent, &format!("{}/tile/{path}", server.url));
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&tile));
        leaves.extend(tile.chunks_exact(32).map(|h| Hash::try_from(h).unwrap()));
    }
    assert_eq!(TreeHash::Rfc6962.root_from_leaves(&leaves), mirrored.root, "the mirrored tiles");

    // A proof bundle of the last `used` event verifies with the two witnesses, quorum 2;
    // adding a witness that never cosigned and asking for 3 refuses it.
    let bundle = root.join("used.tlog-proof");
    let prove = keyledger(&[
        "audit",
        "prove",
        &request_id,
        "--out",
        path_str(&bundle),
        "--url",
        &server.url,
        "--admin-key",
        admin,
        "--wait",
        "20",
    ]);
    assert!(prove.success(), "audit prove failed: {}{}", prove.stdout, prove.stderr);
    let (key, wa, wb) = (ledger.log_public_key.as_str(), a.vkey.as_str(), b.vkey.as_str());
    // Both witnesses, quorum 2: met; with a witness that never cosigned added, quorum 3: not.
    let both = ["--witness", wa, "--witness", wb, "--witness-quorum", "2"];
    let with_unknown =
        ["--witness", wa, "--witness", wb, "--witness", UNKNOWN_WITNESS, "--witness-quorum", "3"];
    let run = verify_offline("proof", &bundle, key, &both);
    assert!(run.success(), "proof verify with both witnesses failed: {}{}", run.stdout, run.stderr);
    let run = verify_offline("proof", &bundle, key, &with_unknown);
    assert_eq!(run.status.code(), Some(1), "quorum 3 was met: {}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("2 of the 3 trusted witnesses"), "{}", run.stderr);

    // A fresh export carries the quorum's cosignatures of its anchor and verifies with it.
    let export = root.join("export.jsonl");
    let run = keyledger(&[
        "export",
        "create",
        "--url",
        &server.url,
        "--admin-key",
        admin,
        "--out",
        path_str(&export),
    ]);
    assert!(run.success(), "export failed: {}{}", run.stdout, run.stderr);
    let run = verify_offline("export", &export, key, &both);
    assert!(run.success(), "export verify with both witnesses failed: {}{}", run.stdout, run.stderr);
    let run = verify_offline("export", &export, key, &with_unknown);
    assert_eq!(run.status.code(), Some(1), "quorum 3 was met: {}{}", run.stdout, run.stderr);

    // So does a compliance report: its signed checkpoint note carries the cosignatures.
    let report = root.join("report.html");
    let day = |offset: i64| {
        keyledger_core::Timestamp::now().plus_micros(offset * 86_400_000_000).to_rfc3339()[..10].to_owned()
    };
    let (from, to) = (day(-1), day(1));
    let run = keyledger(&[
        "report",
        "compliance",
        "--url",
        &server.url,
        "--admin-key",
        admin,
        "--from",
        &from,
        "--to",
        &to,
        "--out",
        path_str(&report),
    ]);
    assert!(run.success(), "report compliance failed: {}{}", run.stdout, run.stderr);
    let run = verify_offline("report", &report, key, &both);
    assert!(run.success(), "report verify with both witnesses failed: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("cosigned by a.witness.example"), "{}", run.stdout);
    let run = verify_offline(
        "report",
        &report,
        key,
        &["--witness", wa, "--witness", UNKNOWN_WITNESS, "--witness-quorum", "2"],
    );
    assert_eq!(run.status.code(), Some(1), "quorum 2 was met: {}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("witness cosignatures of the checkpoint"), "{}", run.stderr);
    let log_size = server.client().get("/healthz", admin).body["log_size"].as_u64().unwrap();
    server.stop();

    // The fork: the copy, served alone, grows past the original, and witness C cosigns it.
    let fork = Server::start(&fork_dir, &fast);
    create_and_use(&fork, admin, "elsewhere", usize::try_from(log_size).unwrap() + 5);
    let fork_size = fork.client().get("/healthz", admin).body["log_size"].as_u64().unwrap();
    let fork_view = checkpoint_until(&fork, admin, "the fork's checkpoint of every event", |v| {
        v["size"].as_u64() >= Some(fork_size)
    });
    fork.stop();
    let c = WitnessProcess::start(root, "c.witness.example", &ledger.log_public_key);
    let (status, line) = c.add_checkpoint(&format!("old 0\n\n{}", fork_view["note"].as_str().unwrap()));
    assert_eq!(status, 200, "{line}\n{}", c.logs());

    // The original, witnessed by C, learns that C saw a bigger tree: a fork alarm.
    let server = ledger.serve(&[&fast[..], &["--witness", &c.flag()]].concat());
    let view = checkpoint_until(&server, admin, "a fork alarm", |v| !v["fork_alarm"].is_null());
    let alarm = &view["fork_alarm"];
    assert_eq!(alarm["kind"], "witness_ahead", "{view:#}");
    assert_eq!(alarm["witness"], "c.witness.example", "{view:#}");
    assert_eq!(alarm["witness_size"].as_u64(), fork_view["size"].as_u64(), "{view:#}");
    assert_eq!(view["quorum_met"], false, "{view:#}");
    let metrics = server.client().send("GET", "/metrics", &[], None);
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    let alarms: f64 = text
        .lines()
        .find(|l| l.starts_with("keyledger_witness_fork_alarms_total{") && l.contains("c.witness.example"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no fork alarm counter for c.witness.example:\n{text}"));
    assert!(alarms > 0.0, "{text}");
    assert!(server.logs().contains("FORK ALARM"), "{}", server.logs());
    server.stop();
}
