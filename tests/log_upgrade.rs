//! `keyledger log upgrade` through the real binary (docs/operations.md, "Upgrading a
//! format-1 data dir"; docs/log-format.md, "Upgrading a format-1 log").
//!
//! A format-1 data dir (BLAKE3 tree) is made from a real one: the events a server wrote stay
//! byte for byte, and the log library, in its BLAKE3 mode, rebuilds the tree and signs the
//! checkpoint a format-1 writer would have (see `to_format_1`). That keeps any way to write a
//! format-1 log out of the shipped binary. Then `serve` must refuse it naming the upgrade,
//! the upgrade must convert it so that `log verify` passes and the server starts and keeps
//! verifying the keys it had, and the upgrade of a tampered format-1 log must be refused
//! changing nothing.

use keyledger_e2e::{Ledger, files_under, free_port, keyledger, log_verify, path_str, snapshot};
use keyledger_ledger::datadir;
use keyledger_log::segment::SegmentReader;
use keyledger_log::{Batch, Log, LogConfig, Sequencer, WriterOptions};
use keyledger_verify::merkle::TreeHash;
use serde_json::json;
use std::path::Path;

/// Never asked to sequence anything: the fixture only opens the log and stops it, which
/// signs the final checkpoint.
struct Idle;

impl Sequencer for Idle {
    type Command = ();
    type Reply = ();
    fn sequence(&mut self, _: (), _: &mut Batch) {}
    fn rewind(&mut self, _: &SegmentReader, _: u64) -> Result<(), String> {
        Ok(())
    }
}

/// Turns the (stopped) format-2 data dir `dir` into the format-1 data dir a format-1 server
/// would have left with the same events: BLAKE3 tree files without a `hash` file,
/// checkpoints of BLAKE3 roots, and `"format": 1`.
fn to_format_1(dir: &Path) {
    let secrets = datadir::load(dir).expect("a format-2 data dir");
    let log_dir = dir.join(datadir::LOG_DIR);
    std::fs::remove_dir_all(log_dir.join("checkpoints")).unwrap();
    std::fs::remove_dir_all(log_dir.join("tree")).unwrap();
    let log = Log::open(LogConfig {
        dir: log_dir.clone(),
        storage: keyledger_log::storage::OsStorage::shared(),
        signer: secrets.signer,
        origin: secrets.origin,
        tree_hash: TreeHash::Blake3,
    })
    .expect("the events open as a format-1 log");
    let events = log.len();
    assert!(events > 0);
    log.start(Idle, WriterOptions::default(), None).shutdown_blocking();
    assert!(!log_dir.join("tree").join("hash").exists(), "format 1 wrote no hash file");
    datadir::set_format(dir, 1).unwrap();
    let identity = std::fs::read_to_string(dir.join(datadir::IDENTITY_FILE)).unwrap();
    assert!(identity.contains("\"format\": 1"), "{identity}");
}

/// A data dir whose server issued a key (returned: its id and secret), then stopped.
fn ledger_with_a_key() -> (Ledger, String, String) {
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    let http = server.client();
    let created =
        http.post("/v1/workspaces/acme/keys", &ledger.admin_key, &json!({"name": "svc", "scopes": ["read"]}));
    assert_eq!(created.status, 201, "{}", created.dump());
    let key_id = created.body["key_id"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let verified = http.send("POST", "/v1/verify", &[], Some(&json!({"key": secret, "scopes": ["read"]})));
    assert_eq!(verified.status, 200, "{}", verified.dump());
    server.stop();
    (ledger, key_id, secret)
}

/// Every file under `dir` with its bytes, and the listing with modes and mtimes.
fn state(dir: &Path) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let files = files_under(dir).into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()));
    (files.collect(), snapshot(dir))
}

#[test]
fn a_format_1_data_dir_is_refused_then_upgraded_and_served() {
    let (ledger, key_id, secret) = ledger_with_a_key();
    let dir = &ledger.data_dir;
    to_format_1(dir);

    // `log verify` reads format 1, and says it must be upgraded.
    let verify = log_verify(dir);
    assert!(verify.success(), "{}{}", verify.stdout, verify.stderr);
    assert!(verify.stdout.contains("log format 1 (blake3 tree)"), "{}", verify.stdout);
    assert!(verify.stdout.contains("keyledger log upgrade"), "{}", verify.stdout);

    // `serve` (and the offline recovery, which writes too) refuse it, changing nothing.
    let before = state(dir);
    let listen = format!("127.0.0.1:{}", free_port());
    let serve = keyledger(&["serve", "--data-dir", path_str(dir), "--listen", &listen]);
    assert!(!serve.success(), "serve must refuse a format-1 data dir: {}", serve.stdout);
    let command = format!("keyledger log upgrade --data-dir {}", dir.display());
    assert!(serve.stderr.contains("format-1 log"), "{}", serve.stderr);
    assert!(serve.stderr.contains(&command), "the refusal must name the upgrade: {}", serve.stderr);
    let recover = keyledger(&["admin", "recover", "--data-dir", path_str(dir)]);
    assert!(!recover.success(), "{}", recover.stdout);
    assert!(recover.stderr.contains(&command), "{}", recover.stderr);
    assert_eq!(state(dir), before, "a refused start changes nothing");

    // The upgrade.
    let upgrade = keyledger(&["log", "upgrade", "--data-dir", path_str(dir)]);
    assert!(upgrade.success(), "{}{}", upgrade.stdout, upgrade.stderr);
    assert!(upgrade.stdout.contains("log upgraded to format 2"), "{}", upgrade.stdout);
    let identity = std::fs::read_to_string(dir.join(datadir::IDENTITY_FILE)).unwrap();
    assert!(identity.contains("\"format\": 2"), "{identity}");
    assert!(dir.join("log/checkpoints/transition.note").is_file());
    assert_eq!(std::fs::read_to_string(dir.join("log/tree/hash")).unwrap(), "sha256\n");

    let verify = log_verify(dir);
    assert!(verify.success(), "{}{}", verify.stdout, verify.stderr);
    assert!(verify.stdout.contains("log format 2 (sha256 tree)"), "{}", verify.stdout);
    assert!(verify.stdout.contains("upgraded from format 1 at"), "{}", verify.stdout);

    // A second upgrade is refused and changes nothing.
    let before = state(dir);
    let again = keyledger(&["log", "upgrade", "--data-dir", path_str(dir)]);
    assert_eq!(again.status.code(), Some(1), "{}{}", again.stdout, again.stderr);
    assert!(again.stderr.contains("already log format 2"), "{}", again.stderr);
    assert_eq!(state(dir), before);

    // The server starts on it, and the key issued before the upgrade still verifies.
    let server = ledger.serve(&[]);
    let http = server.client();
    let verified = http.send("POST", "/v1/verify", &[], Some(&json!({"key": secret, "scopes": ["read"]})));
    assert_eq!(verified.status, 200, "{}", verified.dump());
    assert_eq!(verified.body["valid"], true, "{}", verified.dump());
    assert_eq!(verified.body["key_id"], key_id.as_str());
    let created = http.post(
        "/v1/workspaces/acme/keys",
        &ledger.admin_key,
        &json!({"name": "after", "scopes": ["read"]}),
    );
    assert_eq!(created.status, 201, "{}", created.dump());
    server.stop();
    let verify = log_verify(dir);
    assert!(verify.success(), "{}{}", verify.stdout, verify.stderr);
    assert!(verify.stdout.contains("upgraded from format 1 at"), "{}", verify.stdout);
}

#[test]
fn the_upgrade_of_a_tampered_format_1_log_is_refused_and_changes_nothing() {
    let (ledger, _, _) = ledger_with_a_key();
    let dir = &ledger.data_dir;
    to_format_1(dir);
    // Flip one byte in the middle of the first event segment.
    let segment = files_under(&dir.join("log/events"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("an event segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let before = state(dir);
    let upgrade = keyledger(&["log", "upgrade", "--data-dir", path_str(dir)]);
    assert_eq!(upgrade.status.code(), Some(1), "{}{}", upgrade.stdout, upgrade.stderr);
    assert!(upgrade.stderr.contains("log upgrade refused"), "{}", upgrade.stderr);
    assert!(upgrade.stderr.contains("does not verify at seq"), "{}", upgrade.stderr);
    assert!(upgrade.stderr.contains("nothing was changed"), "{}", upgrade.stderr);
    assert_eq!(state(dir), before, "a refused upgrade changes nothing");
    let identity = std::fs::read_to_string(dir.join(datadir::IDENTITY_FILE)).unwrap();
    assert!(identity.contains("\"format\": 1"), "{identity}");
}
