//! `keyledger store copy`: a ledger moved from a data dir into PostgreSQL and back keeps its
//! seqs, records, tree and signed checkpoints byte for byte, and the witnesses' fork alarms;
//! a non-empty target, a data dir a server holds, and key files of another ledger are
//! refused, changing nothing.

#[path = "copy_support/mod.rs"]
mod support;

use keyledger_e2e::{Server, keyledger, keyledger_with_env, log_verify, path_str, snapshot};
use keyledger_log::segment::{SegmentLog, SegmentOptions};
use keyledger_log::storage::OsStorage;
use keyledger_log::witnessed::{AlarmRecord, DirRecords, WitnessRecords};
use std::path::Path;
use support::{connect, copied_into_database, database, ledger_with_history, store_copy};

/// Every record of the segment log in `dir`, in order.
fn records(dir: &Path) -> Vec<Vec<u8>> {
    let (reader, _) = SegmentLog::inspect(OsStorage::shared(), dir, SegmentOptions::default()).unwrap();
    reader.iter(0).map(|r| r.unwrap().1).collect()
}

/// A digest of every row the database holds for the ledger.
fn database_rows(url: &str) -> Vec<String> {
    let mut db = connect(url);
    [
        "SELECT count(*)::text || md5(coalesce(string_agg(record || leaf, '' ORDER BY seq), '')) FROM keyledger_events",
        "SELECT count(*)::text || md5(coalesce(string_agg(note, '' ORDER BY size), '')) FROM keyledger_checkpoints",
        "SELECT count(*)::text || coalesce(string_agg(size::text || encode(root, 'hex'), ''), '') FROM keyledger_head",
        "SELECT count(*)::text || coalesce(string_agg(origin || verifier_key, ''), '') FROM keyledger_identity",
    ]
    .iter()
    .map(|query| db.query_one(*query, &[]).unwrap().get(0))
    .collect()
}

#[test]
fn a_ledger_copied_into_postgres_and_back_is_identical_and_verifies_everywhere() {
    let source = ledger_with_history();
    assert!(log_verify(&source.data_dir).success());
    // A fork alarm a witness raised travels with the log, both ways.
    let alarm = AlarmRecord {
        witness: "w.example".into(),
        kind: "witness_ahead".into(),
        log_size: 5,
        log_root: [7; 32],
        witness_size: Some(1_000),
        detected_at: keyledger_core::Timestamp(1_764_800_000_123_456),
        cleared: true,
    };
    DirRecords::new(source.data_dir.join("log")).record_alarm(&alarm).unwrap();
    let (_cluster, url) = copied_into_database(&source, "copy");
    let verified = keyledger(&["log", "verify", "--store", &url]);
    assert!(verified.success(), "{}{}", verified.stdout, verified.stderr);

    // The database holds the data dir's records and checkpoint notes exactly.
    let source_log = source.data_dir.join("log");
    let events = records(&source_log.join("events"));
    let checkpoints = records(&source_log.join("checkpoints"));
    let mut db = connect(&url);
    let rows: Vec<Vec<u8>> = db
        .query("SELECT record FROM keyledger_events ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, events);
    let notes: Vec<String> = db
        .query("SELECT note FROM keyledger_checkpoints ORDER BY size", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let source_notes: Vec<String> =
        checkpoints.iter().map(|r| String::from_utf8(r[8..].to_vec()).unwrap()).collect();
    assert_eq!(notes, source_notes);
    assert!(notes.len() >= 3, "{notes:?}");
    let stored = keyledger_pg::PgWitnessRecords::new(url.parse().unwrap());
    assert_eq!(stored.alarms(&["w.example".into()]).unwrap(), std::slice::from_ref(&alarm));

    // Back into a new data dir: the same records, the same checkpoint records (signing times
    // included), a log that verifies, and a server that knows the keys and the revocation.
    let copy_root = tempfile::tempdir().unwrap();
    let copy = copy_root.path().join("copy");
    let run = store_copy(&url, path_str(&copy), &["--keys-from", path_str(&source.data_dir)]);
    assert!(run.success(), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("1 witness's fork alarm"), "{}", run.stdout);
    assert_eq!(DirRecords::new(copy.join("log")).stored_alarms().unwrap(), [alarm]);
    assert_eq!(records(&copy.join("log/events")), events);
    assert_eq!(records(&copy.join("log/checkpoints")), checkpoints);
    let verified = log_verify(&copy);
    assert!(verified.success(), "{}{}", verified.stdout, verified.stderr);
    let server = Server::start(&copy, &[]);
    let http = server.client();
    let active = http.send("POST", "/v1/verify", &[], Some(&serde_json::json!({"key": source.active.1})));
    assert_eq!(active.status, 200, "{}", active.dump());
    assert_eq!(active.body["key_id"], source.active.0.as_str());
    let revoked = http.send("POST", "/v1/verify", &[], Some(&serde_json::json!({"key": source.revoked.1})));
    assert_eq!(revoked.status, 401, "{}", revoked.dump());
    server.stop();
}

#[test]
fn a_non_empty_target_a_served_source_and_foreign_keys_are_refused_changing_nothing() {
    let source = ledger_with_history();
    let (_cluster, url) = copied_into_database(&source, "full");

    // The database already holds a ledger.
    let before = database_rows(&url);
    let again = store_copy(path_str(&source.data_dir), &url, &[]);
    assert!(!again.success());
    assert!(again.stderr.contains("already holds a keyledger ledger"), "{}", again.stderr);
    assert_eq!(database_rows(&url), before);

    // The target data dir is not empty.
    let taken = tempfile::tempdir().unwrap();
    std::fs::write(taken.path().join("something"), b"mine").unwrap();
    let listed = snapshot(taken.path());
    let run = store_copy(&url, path_str(taken.path()), &["--keys-from", path_str(&source.data_dir)]);
    assert!(!run.success());
    assert!(run.stderr.contains("is not empty"), "{}", run.stderr);
    assert_eq!(snapshot(taken.path()), listed);

    // The key files of another ledger: refused, naming the signing key, no data dir left.
    let other = ledger_with_history();
    let target = taken.path().join("new");
    let run = store_copy(&url, path_str(&target), &["--keys-from", path_str(&other.data_dir)]);
    assert!(!run.success());
    assert!(run.stderr.contains("signing.key is not the ledger's signing key"), "{}", run.stderr);
    assert!(!target.exists());
    // Its staging directory came and went beside the target: the entries are as they were.
    let entries =
        |listing: Vec<String>| listing.into_iter().filter(|e| !e.starts_with(' ')).collect::<Vec<_>>();
    assert_eq!(entries(snapshot(taken.path())), entries(listed));

    // A data dir a server holds is not copied.
    let server = Server::start(&source.data_dir, &[]);
    let (_other_cluster, empty) = database("empty");
    let run = store_copy(path_str(&source.data_dir), &empty, &[]);
    assert!(!run.success());
    assert!(run.stderr.contains("stop the server"), "{}", run.stderr);
    server.stop();
    let tables: bool = connect(&empty)
        .query_one("SELECT to_regclass('keyledger_identity') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!tables, "a refused copy creates nothing");

    // A database holding only a fork alarm (its ledger tables emptied) is not empty either:
    // the alarm would be shown beside the copied ledger.
    keyledger_pg::PgStore::connect(&empty).unwrap();
    let alarm = AlarmRecord {
        witness: "w.example".into(),
        kind: "witness_ahead".into(),
        log_size: 1,
        log_root: [1; 32],
        witness_size: Some(2),
        detected_at: keyledger_core::Timestamp(1_764_800_000_000_000),
        cleared: false,
    };
    keyledger_pg::PgWitnessRecords::new(empty.parse().unwrap()).record_alarm(&alarm).unwrap();
    let run = store_copy(path_str(&source.data_dir), &empty, &[]);
    assert!(!run.success());
    assert!(run.stderr.contains("already holds a keyledger ledger"), "{}", run.stderr);
    let events: i64 = connect(&empty).query_one("SELECT count(*) FROM keyledger_events", &[]).unwrap().get(0);
    assert_eq!(events, 0, "nothing was copied");
}

/// A database that requires a password (SCRAM) is reached with the password in
/// `PGPASSWORD` or in a private password file, never on the command line; a password file
/// others may read is ignored, as libpq ignores it (docs/operations.md, "High availability").
#[test]
fn the_password_comes_from_the_environment_or_a_private_password_file() {
    let source = ledger_with_history();
    let (cluster, admin_url) = database("secured");
    let mut admin = connect(&admin_url);
    admin
        .batch_execute(
            "CREATE ROLE keeper LOGIN PASSWORD 'open sesame'; ALTER DATABASE secured OWNER TO keeper",
        )
        .unwrap();
    let hba = cluster.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all keeper 127.0.0.1/32 scram-sha-256\n{rules}")).unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    let url = format!("postgres://keeper@127.0.0.1:{}/secured", cluster.port());
    keyledger_e2e::poll(std::time::Duration::from_secs(10), "the password rule in force", || {
        postgres::Client::connect(&url, postgres::NoTls).is_err().then_some(())
    });

    let without = store_copy(path_str(&source.data_dir), &url, &[]);
    assert!(!without.success(), "{}{}", without.stdout, without.stderr);
    assert!(without.stderr.contains("cannot connect to the database"), "{}", without.stderr);

    let copy = ["store", "copy", "--from", path_str(&source.data_dir), "--to", &url];
    let copied = keyledger_with_env(&copy, &[("PGPASSWORD", "open sesame")]);
    assert!(copied.success(), "{}{}", copied.stdout, copied.stderr);

    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    let line = format!("127.0.0.1:{}:secured:keeper:open sesame\n", cluster.port());
    std::fs::write(&passfile, line).unwrap();
    let verify = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(mode)).unwrap();
        keyledger_with_env(&["log", "verify", "--store", &url], &[("PGPASSFILE", path_str(&passfile))])
    };
    let private = verify(0o600);
    assert!(private.success(), "{}{}", private.stdout, private.stderr);
    let readable = verify(0o644);
    assert!(!readable.success(), "{}{}", readable.stdout, readable.stderr);
}
