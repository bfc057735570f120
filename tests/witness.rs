//! An auditor's witness in front of a real log, both through the real binary: `keyledger
//! init` + `serve` is the log, `keyledger witness init` + `witness serve` the witness. The
//! test takes the log's own signed checkpoints and consistency proofs from its API, submits
//! them as tlog-witness `add-checkpoint` requests, and checks the cosignatures with
//! keyledger-verify and with Python's `cryptography`; then that the witness refuses a stale
//! old size with 409 and keeps its state across a restart.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyledger_e2e::cosignature::python_verifies;
use keyledger_e2e::{Ledger, free_port, keyledger, keyledger_bin, path_str, poll};
use keyledger_verify::cosignature::{WitnessKey, verify_cosignatures};
use serde_json::json;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `keyledger witness serve` (killed if dropped still running).
struct WitnessProcess {
    child: Option<Child>,
    addr: SocketAddr,
    stderr: std::path::PathBuf,
}

impl WitnessProcess {
    fn start(dir: &Path, logs_dir: &Path, log_vkey: &str) -> WitnessProcess {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let stderr = logs_dir.join(format!("witness-{}.stderr", addr.port()));
        let child = Command::new(keyledger_bin())
            .args(["witness", "serve", "--data-dir", path_str(dir), "--listen", &addr.to_string()])
            .args(["--log", log_vkey])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("cannot start keyledger witness serve");
        let mut process = WitnessProcess { child: Some(child), addr, stderr };
        poll(Duration::from_secs(30), "the witness to listen", || {
            if let Some(status) = process.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("witness serve exited with {status}:\n{}", process.logs());
            }
            TcpStream::connect(addr).ok().map(|_| ())
        });
        process
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let status = poll(Duration::from_secs(20), "the witness to stop", || child.try_wait().unwrap());
        assert!(status.success(), "witness serve exited with {status}:\n{}", self.logs());
    }

    /// `POST /add-checkpoint`: status, content type, body.
    fn add_checkpoint(&self, body: &str) -> (u16, String, String) {
        self.request("POST", "/add-checkpoint", body)
    }

    /// One HTTP/1.1 request: status, content type, body.
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: witness\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .split("\r\n")
            .filter_map(|l| l.split_once(": "))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        (status, content_type, body.to_owned())
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn base64_of_hex(hex: &str) -> String {
    STANDARD.encode(hex::decode(hex).expect("the log's proof hashes are hex"))
}

#[test]
fn a_witness_cosigns_a_real_logs_checkpoints_and_keeps_its_state() {
    let ledger = Ledger::init();
    let server = ledger.serve(&["--checkpoint-every-events", "1"]);
    let http = server.client();
    let checkpoint = || {
        let resp = http.get("/v1/log/checkpoint", &ledger.admin_key);
        assert_eq!(resp.status, 200, "{}", resp.dump());
        (resp.body["size"].as_u64().unwrap(), resp.body["note"].as_str().unwrap().to_owned())
    };

    // witness init: the key file is the owner's only, and the vkey is printed.
    let witness_dir = ledger.tmp.path().join("witness");
    let init = keyledger(&[
        "witness",
        "init",
        "--data-dir",
        path_str(&witness_dir),
        "--name",
        "witness.example/e2e",
    ]);
    assert!(init.success(), "witness init failed: {}", init.stderr);
    let vkey = init.stdout.trim().to_owned();
    let witness_key: WitnessKey =
        vkey.parse().unwrap_or_else(|e| panic!("{vkey:?} is not a witness vkey: {e}"));
    assert_eq!(witness_key.name(), "witness.example/e2e");
    let mode = std::fs::metadata(witness_dir.join("witness.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = keyledger(&["witness", "init", "--data-dir", path_str(&witness_dir), "--name", "other"]);
    assert!(!again.success(), "a second init must not replace the witness key");

    let witness = WitnessProcess::start(&witness_dir, ledger.tmp.path(), &ledger.log_public_key);

    // The first checkpoint: old size 0, no proof.
    let (size1, note1) = checkpoint();
    let (status, content_type, line) = witness.add_checkpoint(&format!("old 0\n\n{note1}"));
    assert_eq!(status, 200, "{line}\n{}", witness.logs());
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    python_verifies(&vkey, &note1, &line);
    assert_eq!(
        verify_cosignatures(&format!("{note1}{line}"), std::slice::from_ref(&witness_key)).unwrap().len(),
        1
    );

    // The log grows; its next checkpoint comes with the log's own consistency proof.
    let created = http.post(
        "/v1/workspaces/acme/keys",
        &ledger.admin_key,
        &json!({"name": "worker", "scopes": ["read"]}),
    );
    assert_eq!(created.status, 201, "{}", created.dump());
    let (size2, note2) = poll(Duration::from_secs(20), "a newer checkpoint", || {
        let (size, note) = checkpoint();
        (size > size1).then_some((size, note))
    });
    let proof = http.get(&format!("/v1/log/proofs/consistency?from={size1}&to={size2}"), &ledger.admin_key);
    assert_eq!(proof.status, 200, "{}", proof.dump());
    let proof_lines: String = proof.body["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{}\n", base64_of_hex(h.as_str().unwrap())))
        .collect();
    let (status, _, line) = witness.add_checkpoint(&format!("old {size1}\n{proof_lines}\n{note2}"));
    assert_eq!(status, 200, "{line}\n{}", witness.logs());
    python_verifies(&vkey, &note2, &line);

    // Monitors read the same cosigned checkpoint from the witness.
    let origin = note2.split('\n').next().unwrap();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(origin.as_bytes()));
    let (status, _, served) = witness.request("GET", &format!("/{hash}/checkpoint"), "");
    assert_eq!(status, 200, "{served}");
    assert!(served.ends_with(&line), "{served}");
    python_verifies(&vkey, &served, &line);

    // A stale old size: 409 with the witness's size.
    let (status, content_type, body) =
        witness.add_checkpoint(&format!("old {size1}\n{proof_lines}\n{note2}"));
    assert_eq!(
        (status, content_type.as_str(), body.as_str()),
        (409, "text/x.tlog.size", format!("{size2}\n").as_str())
    );

    // After a restart the witness still knows the log is at size2.
    witness.stop();
    let witness = WitnessProcess::start(&witness_dir, ledger.tmp.path(), &ledger.log_public_key);
    let (status, content_type, body) = witness.add_checkpoint(&format!("old 0\n\n{note2}"));
    assert_eq!(
        (status, content_type.as_str(), body.as_str()),
        (409, "text/x.tlog.size", format!("{size2}\n").as_str())
    );
    let (status, _, line) = witness.add_checkpoint(&format!("old {size2}\n\n{note2}"));
    assert_eq!(status, 200, "{line}");
    python_verifies(&vkey, &note2, &line);
    witness.stop();
    server.stop();
}
