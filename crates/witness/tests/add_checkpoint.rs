//! `add-checkpoint` end to end through the library and over real HTTP: the spec's byte
//! formats and status codes, consistency proofs from keyledger-log's proof generator (so the
//! tests do not depend on the tree hash), persistence across a restart, serialised
//! concurrent requests, and every cosignature also checked by Python's `cryptography`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use keyledger_log::proof::{MemoryNodes, consistency_proof};
use keyledger_verify::cosignature::{WitnessKey, verify_cosignatures};
use keyledger_verify::merkle::{self, Hash};
use keyledger_verify::note::{Checkpoint, NoteSigner, open_checkpoint, sign_checkpoint};
use keyledger_witness::store::origin_file_name;
use keyledger_witness::{AddError, LogConfig, Store, Witness};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ORIGIN: &str = "log.example/a";

fn log_signer(seed: u8) -> NoteSigner {
    NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

fn leaves(n: u64, salt: &str) -> Vec<Hash> {
    (0..n).map(|i| merkle::TreeHash::Rfc6962.leaf(format!("{salt}{i}").as_bytes())).collect()
}

/// A tree of `n` leaves, its signed checkpoint (by `signer`) and its nodes for proofs.
fn tree(n: u64, salt: &str, signer: &NoteSigner) -> (MemoryNodes, String) {
    let nodes = MemoryNodes::from_leaves(merkle::TreeHash::Rfc6962, &leaves(n, salt));
    let note = sign_checkpoint(&Checkpoint::new(ORIGIN, n, nodes.root()), signer).unwrap();
    (nodes, note)
}

fn body(old: u64, proof: &[Hash], note: &str) -> Vec<u8> {
    let mut text = format!("old {old}\n");
    for hash in proof {
        text.push_str(&STANDARD.encode(hash));
        text.push('\n');
    }
    text.push('\n');
    text.push_str(note);
    text.into_bytes()
}

/// The request extending the witness from `old` to the tree `nodes` of `note`.
fn extend(nodes: &MemoryNodes, old: u64, note: &str) -> Vec<u8> {
    body(old, &consistency_proof(nodes, old, nodes.size()).unwrap(), note)
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    vkey: WitnessKey,
    log: NoteSigner,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let vkey = Store::init(&dir, "witness.example/w1").unwrap();
    Setup { _tmp: tmp, dir, vkey, log: log_signer(1) }
}

impl Setup {
    fn open(&self) -> Witness {
        Witness::open(&self.dir, vec![LogConfig { origin: ORIGIN.into(), keys: vec![self.log.verifier()] }])
            .unwrap()
    }
}

/// Checks a cosignature line with Python's `cryptography`, from the witness's vkey string,
/// the checkpoint note it cosigns and the line, rebuilding the cosignature/v1 message as the
/// spec defines it. Returns the timestamp.
fn python_check(vkey: &WitnessKey, note: &str, line: &str) -> u64 {
    const SCRIPT: &str = r#"
import base64, hashlib, struct, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
vkey, note, line = sys.argv[1], sys.argv[2], sys.argv[3]
name, key_id_hex, typed_b64 = vkey.split("+", 2)
typed = base64.b64decode(typed_b64, validate=True)
assert typed[0] == 4 and len(typed) == 33
assert hashlib.sha256(name.encode() + b"\n" + typed).digest()[:4].hex() == key_id_hex
text = note[: note.rindex("\n\n") + 1].encode()
assert line.endswith("\n") and line.count("\n") == 1
prefix = "\u2014 " + name + " "
assert line.startswith(prefix)
blob = base64.b64decode(line[len(prefix):-1], validate=True)
assert len(blob) == 76 and blob[:4].hex() == key_id_hex
(ts,) = struct.unpack(">Q", blob[4:12])
assert 0 < ts < 2**63
Ed25519PublicKey.from_public_bytes(typed[1:]).verify(blob[12:], b"cosignature/v1\ntime %d\n" % ts + text)
print(ts)
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &vkey.to_string(), note, line])
        .output()
        .expect("python3 must be installed: cosignatures are cross-checked with Python's cryptography");
    assert!(
        out.status.success(),
        "python rejected the cosignature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

fn assert_cosigned(s: &Setup, note: &str, line: &str) {
    python_check(&s.vkey, note, line);
    let cosigned = verify_cosignatures(&format!("{note}{line}"), std::slice::from_ref(&s.vkey)).unwrap();
    assert_eq!(cosigned.len(), 1);
}

#[tokio::test]
async fn first_checkpoint_then_extensions() {
    let s = setup();
    let w = s.open();
    assert_eq!(w.latest_size(ORIGIN).await, Some(0));
    let (n5, note5) = tree(5, "", &s.log);
    let line = w.add_checkpoint(&extend(&n5, 0, &note5)).await.unwrap();
    assert_cosigned(&s, &note5, &line);
    assert_eq!(w.latest_size(ORIGIN).await, Some(5));

    // Every shape of extension: to a power of two, past it, by one.
    let mut old = 5;
    for size in [8, 13, 14, 32, 33] {
        let (nodes, note) = tree(size, "", &s.log);
        let line = w.add_checkpoint(&extend(&nodes, old, &note)).await.unwrap();
        assert_cosigned(&s, &note, &line);
        old = size;
    }
    // The same checkpoint again is cosigned again.
    let (n33, note33) = tree(33, "", &s.log);
    let line = w.add_checkpoint(&extend(&n33, 33, &note33)).await.unwrap();
    assert_cosigned(&s, &note33, &line);
}

#[tokio::test]
async fn a_checkpoint_with_extension_lines_and_foreign_signatures() {
    let s = setup();
    let w = s.open();
    let nodes = MemoryNodes::from_leaves(merkle::TreeHash::Rfc6962, &leaves(3, ""));
    let mut cp = Checkpoint::new(ORIGIN, 3, nodes.root());
    cp.extensions.push("some extension".into());
    let note = sign_checkpoint(&cp, &s.log).unwrap();
    // A stranger's signature and an old cosignature are ignored.
    let stranger = NoteSigner::new("someone.else", SigningKey::from_bytes(&[9; 32])).unwrap();
    let stranger_line = stranger.sign(&cp.body()).unwrap();
    let stranger_line = stranger_line.rsplit_once("\n\n").unwrap().1;
    let note = format!("{note}{stranger_line}");
    let line = w.add_checkpoint(&extend(&nodes, 0, &note)).await.unwrap();
    assert_cosigned(&s, &note, &line);
}

#[tokio::test]
async fn stale_old_size_is_a_conflict_with_our_size() {
    let s = setup();
    let w = s.open();
    let (n5, note5) = tree(5, "", &s.log);
    w.add_checkpoint(&extend(&n5, 0, &note5)).await.unwrap();
    let (n8, note8) = tree(8, "", &s.log);
    for old in [0, 3, 6] {
        let err = w.add_checkpoint(&extend(&n8, old, &note8)).await.unwrap_err();
        assert!(matches!(err, AddError::Conflict { current: 5, .. }), "old {old}: {err:?}");
        assert_eq!(err.status(), 409);
    }
    // Old size above the checkpoint's size is a bad request, not a conflict.
    let err = w.add_checkpoint(&body(9, &[], &note8)).await.unwrap_err();
    assert!(matches!(err, AddError::OldSizeTooLarge { old: 9, size: 8 }));
    assert_eq!(err.status(), 400);
    assert_eq!(w.latest_size(ORIGIN).await, Some(5));
}

#[tokio::test]
async fn proofs_that_do_not_verify_are_refused() {
    let s = setup();
    let w = s.open();
    let (n5, note5) = tree(5, "", &s.log);
    // A proof with old size 0 must be empty.
    let err = w.add_checkpoint(&body(0, &[[0; 32]], &note5)).await.unwrap_err();
    assert_eq!(err.status(), 422, "{err:?}");
    w.add_checkpoint(&extend(&n5, 0, &note5)).await.unwrap();

    let (n8, note8) = tree(8, "", &s.log);
    let good = consistency_proof(&n8, 5, 8).unwrap();
    let mut bent = good.clone();
    bent[1][0] ^= 1;
    let cases = [bent, good[..good.len() - 1].to_vec(), [good.clone(), vec![[7; 32]]].concat(), Vec::new()];
    for (i, proof) in cases.iter().enumerate() {
        let err = w.add_checkpoint(&body(5, proof, &note8)).await.unwrap_err();
        assert!(matches!(err, AddError::Inconsistent(_)), "case {i}: {err:?}");
        assert_eq!(err.status(), 422);
    }
    assert_eq!(w.latest_size(ORIGIN).await, Some(5));
    // The right proof still works afterwards.
    w.add_checkpoint(&body(5, &good, &note8)).await.unwrap();
}

#[tokio::test]
async fn a_size_zero_checkpoint_must_have_the_empty_root() {
    let s = setup();
    let w = s.open();
    let empty =
        sign_checkpoint(&Checkpoint::new(ORIGIN, 0, merkle::TreeHash::Rfc6962.empty_root()), &s.log).unwrap();
    let line = w.add_checkpoint(&body(0, &[], &empty)).await.unwrap();
    assert_cosigned(&s, &empty, &line);
    let wrong = sign_checkpoint(&Checkpoint::new(ORIGIN, 0, [1; 32]), &s.log).unwrap();
    assert_eq!(w.add_checkpoint(&body(0, &[], &wrong)).await.unwrap_err().status(), 422);
}

#[tokio::test]
async fn a_fork_is_refused() {
    let s = setup();
    let w = s.open();
    let (n8, note8) = tree(8, "", &s.log);
    w.add_checkpoint(&extend(&n8, 0, &note8)).await.unwrap();
    // Same size, another root, validly signed by the log: a split view.
    let (_, fork8) = tree(8, "fork", &s.log);
    let err = w.add_checkpoint(&body(8, &[], &fork8)).await.unwrap_err();
    assert!(matches!(err, AddError::Inconsistent(_)), "{err:?}");
    // A larger tree that rewrote history, with its own (self-consistent) proof.
    let (f12, fork12) = tree(12, "fork", &s.log);
    let err = w.add_checkpoint(&extend(&f12, 8, &fork12)).await.unwrap_err();
    assert!(matches!(err, AddError::Inconsistent(_)), "{err:?}");
    assert_eq!(w.latest_size(ORIGIN).await, Some(8));
    // The honest history goes on.
    let (n12, note12) = tree(12, "", &s.log);
    w.add_checkpoint(&extend(&n12, 8, &note12)).await.unwrap();
}

#[tokio::test]
async fn unknown_origin_is_404_and_untrusted_or_bad_signatures_are_403() {
    let s = setup();
    let w = s.open();
    // Another origin.
    let other = NoteSigner::new("log.example/b", SigningKey::from_bytes(&[1; 32])).unwrap();
    let note =
        sign_checkpoint(&Checkpoint::new("log.example/b", 0, merkle::TreeHash::Rfc6962.empty_root()), &other)
            .unwrap();
    let err = w.add_checkpoint(&body(0, &[], &note)).await.unwrap_err();
    assert!(matches!(err, AddError::UnknownOrigin(_)));
    assert_eq!(err.status(), 404);
    // An unknown origin is echoed only in part: a request cannot make a 60 KiB error.
    let long = "o".repeat(60_000);
    let signer = NoteSigner::new("x", SigningKey::from_bytes(&[1; 32])).unwrap();
    let note =
        sign_checkpoint(&Checkpoint::new(long, 0, merkle::TreeHash::Rfc6962.empty_root()), &signer).unwrap();
    let err = w.add_checkpoint(&body(0, &[], &note)).await.unwrap_err();
    assert!(matches!(err, AddError::UnknownOrigin(_)));
    assert!(err.to_string().len() < 200, "{} bytes", err.to_string().len());
    // The right origin signed by a key the witness does not trust.
    let (n3, _) = tree(3, "", &s.log);
    let (_, by_stranger) = tree(3, "", &log_signer(2));
    let err = w.add_checkpoint(&extend(&n3, 0, &by_stranger)).await.unwrap_err();
    assert_eq!(err.status(), 403, "{err:?}");
    // A trusted key's line whose signature does not verify (the text was changed).
    let (_, good) = tree(3, "", &s.log);
    let (_, other_root) = tree(3, "x", &s.log);
    let forged = format!(
        "{}{}",
        &other_root[..other_root.rfind("\n\n").unwrap() + 2],
        good.rsplit_once("\n\n").unwrap().1
    );
    let err = w.add_checkpoint(&extend(&n3, 0, &forged)).await.unwrap_err();
    assert_eq!(err.status(), 403, "{err:?}");
    assert_eq!(w.latest_size(ORIGIN).await, Some(0));
    // Malformed bodies are 400.
    for bad in [b"".as_slice(), b"old 0\n\nnot a note\n", b"old x\n\n", &[0xff; 10]] {
        assert_eq!(w.add_checkpoint(bad).await.unwrap_err().status(), 400);
    }
}

#[tokio::test]
async fn state_survives_a_restart_and_is_written_atomically() {
    let s = setup();
    {
        let w = s.open();
        let (n8, note8) = tree(8, "", &s.log);
        w.add_checkpoint(&extend(&n8, 0, &note8)).await.unwrap();
    }
    // The state file is the cosigned note: the log's signature and the witness's.
    let state = s.dir.join("logs").join(origin_file_name(ORIGIN));
    let (n8, _) = tree(8, "", &s.log);
    let stored = std::fs::read_to_string(&state).unwrap();
    assert_eq!(open_checkpoint(&stored, &s.log.verifier()).unwrap(), Checkpoint::new(ORIGIN, 8, n8.root()));
    assert_eq!(verify_cosignatures(&stored, std::slice::from_ref(&s.vkey)).unwrap().len(), 1);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(s.dir.join("logs")).unwrap().count(), 1);

    // A crash between writing the temporary file and the rename leaves the old state.
    std::fs::write(s.dir.join("logs").join(format!(".{}.tmp", origin_file_name(ORIGIN))), b"garbage")
        .unwrap();
    let w = s.open();
    assert_eq!(w.latest_size(ORIGIN).await, Some(8));
    let (n10, note10) = tree(10, "", &s.log);
    let err = w.add_checkpoint(&extend(&n10, 0, &note10)).await.unwrap_err();
    assert!(matches!(err, AddError::Conflict { current: 8, .. }));
    w.add_checkpoint(&extend(&n10, 8, &note10)).await.unwrap();
    drop(w);
    assert_eq!(s.open().latest_size(ORIGIN).await, Some(10));

    // A state file that is not this log's checkpoint refuses to start.
    std::fs::write(&state, "log.example/other\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n").unwrap();
    let err = Witness::open(&s.dir, vec![LogConfig { origin: ORIGIN.into(), keys: vec![s.log.verifier()] }]);
    assert!(err.is_err());
}

#[tokio::test]
async fn concurrent_requests_for_one_origin_are_serialised() {
    let s = setup();
    let w = Arc::new(s.open());
    let (n5, note5) = tree(5, "", &s.log);
    w.add_checkpoint(&extend(&n5, 0, &note5)).await.unwrap();
    // Many requests from old size 5 to different sizes: exactly one wins, the others see
    // a conflict with the winner's size, and the state never goes back.
    let mut tasks = Vec::new();
    for size in 6..=20u64 {
        let w = Arc::clone(&w);
        let (nodes, note) = tree(size, "", &s.log);
        tasks.push(tokio::spawn(async move { (size, w.add_checkpoint(&extend(&nodes, 5, &note)).await) }));
    }
    let mut winners = Vec::new();
    let mut conflicts = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (size, Ok(_)) => winners.push(size),
            (_, Err(AddError::Conflict { current, .. })) => conflicts.push(current),
            (_, Err(e)) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(conflicts.iter().all(|&c| c == winners[0]), "{conflicts:?} vs {winners:?}");
    assert_eq!(w.latest_size(ORIGIN).await, Some(winners[0]));
}

#[tokio::test]
async fn monitors_read_the_latest_cosigned_checkpoint() {
    let s = setup();
    let w = s.open();
    let hash = origin_file_name(ORIGIN);
    assert_eq!(hash, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ORIGIN.as_bytes())));
    assert_eq!(w.latest_note(&hash).await, None);
    // A note with a stranger's signature and two lines by the log: the stranger's is not kept.
    let (n5, note5) = tree(5, "", &s.log);
    let stranger = NoteSigner::new("someone.else", SigningKey::from_bytes(&[9; 32])).unwrap();
    let text = &note5[..note5.rfind("\n\n").unwrap() + 1];
    let log_line = note5.rsplit_once("\n\n").unwrap().1;
    let stranger_line = stranger.sign(text).unwrap();
    let stranger_line = stranger_line.rsplit_once("\n\n").unwrap().1;
    let submitted = format!("{text}\n{stranger_line}{log_line}");
    let line = w.add_checkpoint(&extend(&n5, 0, &submitted)).await.unwrap();
    let served = w.latest_note(&hash).await.unwrap();
    assert_eq!(served, format!("{text}\n{log_line}{line}"));
    assert_eq!(open_checkpoint(&served, &s.log.verifier()).unwrap().size, 5);
    python_check(&s.vkey, &served, &line);
    assert_eq!(w.latest_note(&"0".repeat(64)).await, None);
    assert_eq!(w.latest_note("").await, None);
    // And after a restart.
    drop(w);
    assert_eq!(s.open().latest_note(&hash).await.unwrap(), served);
}

#[tokio::test]
async fn a_note_with_the_most_log_signatures_still_loads_after_cosigning() {
    let s = setup();
    let w = s.open();
    let (n3, note3) = tree(3, "", &s.log);
    let log_line = note3.rsplit_once("\n\n").unwrap().1;
    let text = &note3[..note3.rfind("\n\n").unwrap() + 1];
    let full = format!("{text}\n{}", log_line.repeat(keyledger_verify::note::MAX_SIGNATURES));
    w.add_checkpoint(&extend(&n3, 0, &full)).await.unwrap();
    drop(w);
    let w = s.open();
    assert_eq!(w.latest_size(ORIGIN).await, Some(3));
    let served = w.latest_note(&origin_file_name(ORIGIN)).await.unwrap();
    assert_eq!(verify_cosignatures(&served, std::slice::from_ref(&s.vkey)).unwrap().len(), 1);
}

#[test]
fn init_refuses_an_existing_witness_and_open_checks_the_key_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = setup();
    assert!(Store::init(&s.dir, "witness.example/w2").is_err());
    let key = s.dir.join("witness.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let vkey_file = std::fs::read_to_string(s.dir.join("witness.vkey")).unwrap();
    assert_eq!(vkey_file, format!("{}\n", s.vkey));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(Store::open(&s.dir).is_err());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Store::open(&s.dir).is_ok());
    assert!(Store::init(Path::new(&s.dir.join("bad")), "bad name").is_err());
}

/// One raw HTTP/1.1 exchange: status, lower-case headers, body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: witness\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A peer may answer (413) and close before it read a too-large body.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn over_http_the_spec_status_codes_and_bodies() {
    let s = setup();
    let w = Arc::new(s.open());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, keyledger_witness::router(w)).await });

    let (n5, note5) = tree(5, "", &s.log);
    let (status, headers, reply) = http(addr, "POST", "/add-checkpoint", &extend(&n5, 0, &note5)).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").unwrap().starts_with("text/plain"));
    let line = String::from_utf8(reply).unwrap();
    assert!(line.starts_with("\u{2014} witness.example/w1 ") && line.ends_with('\n'), "{line:?}");
    assert_cosigned(&s, &note5, &line);

    // Stale old size: 409, text/x.tlog.size, our size and a newline.
    let (n7, note7) = tree(7, "", &s.log);
    let (status, headers, reply) = http(addr, "POST", "/add-checkpoint", &extend(&n7, 0, &note7)).await;
    assert_eq!(status, 409);
    assert_eq!(header(&headers, "content-type"), Some("text/x.tlog.size"));
    assert_eq!(reply, b"5\n");

    // Refusals carry the error body with the request id of the header.
    let mut bad = consistency_proof(&n7, 5, 7).unwrap();
    bad[0][0] ^= 1;
    let (status, headers, reply) = http(addr, "POST", "/add-checkpoint", &body(5, &bad, &note7)).await;
    assert_eq!(status, 422);
    let json: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(json["error"], "inconsistent_checkpoint");
    assert!(json["message"].as_str().unwrap().contains("consistent"));
    assert_eq!(json["request_id"].as_str(), header(&headers, "request-id"));

    let (status, _, _) = http(addr, "POST", "/add-checkpoint", b"old 0\n").await;
    assert_eq!(status, 400);
    let (status, headers, _) = http(addr, "GET", "/add-checkpoint", b"").await;
    assert_eq!((status, header(&headers, "allow")), (405, Some("POST")));
    let (status, _, reply) = http(addr, "POST", "/nope", b"").await;
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&reply).unwrap()["error"], "not_found");
    let huge = vec![b'a'; keyledger_witness::request::MAX_REQUEST_BYTES + 1];
    let (status, _, _) = http(addr, "POST", "/add-checkpoint", &huge).await;
    assert_eq!(status, 413);

    // The monitoring path serves what was cosigned.
    let (status, _, served) =
        http(addr, "GET", &format!("/{}/checkpoint", origin_file_name(ORIGIN)), b"").await;
    assert_eq!(status, 200);
    let served = String::from_utf8(served).unwrap();
    assert!(
        served.starts_with(&note5[..note5.rfind("\n\n").unwrap()]) && served.ends_with(&line),
        "{served}"
    );
    let (status, _, _) = http(addr, "GET", &format!("/{}/checkpoint", "ab".repeat(32)), b"").await;
    assert_eq!(status, 404);

    // Nothing above changed the state; the right request still extends it.
    let (status, _, _) = http(addr, "POST", "/add-checkpoint", &extend(&n7, 5, &note7)).await;
    assert_eq!(status, 200);
    server.abort();
}
