//! `keyledger log verify --store`: an intact database-held log passes, and each kind of
//! damage (a record, a leaf hash, a missing row, a checkpoint's signature, the head) is
//! found and named with the first bad seq.

#[path = "copy_support/mod.rs"]
mod support;

use keyledger_e2e::keyledger;
use keyledger_log::verify::LogVerifyError;
use keyledger_pg::verify::{StoreVerifyError, verify_store};
use support::{connect, copied_into_database, ledger_with_history};

fn verify(url: &str) -> Result<keyledger_pg::verify::StoreVerifyReport, StoreVerifyError> {
    verify_store(&mut connect(url), &mut |_, _| {})
}

#[test]
fn an_intact_log_verifies_and_every_kind_of_damage_names_its_seq() {
    let source = ledger_with_history();
    let (_cluster, url) = copied_into_database(&source, "verify");
    let mut db = connect(&url);

    let intact = verify(&url).expect("the copied log verifies");
    let events: i64 = db.query_one("SELECT count(*) FROM keyledger_events", &[]).unwrap().get(0);
    let checkpoints: i64 = db.query_one("SELECT count(*) FROM keyledger_checkpoints", &[]).unwrap().get(0);
    assert_eq!(intact.events, events as u64);
    assert_eq!(intact.checkpoints, checkpoints as u64);
    assert!(checkpoints >= 3, "the source signed a checkpoint every 3 events: {checkpoints}");
    let run = keyledger(&["log", "verify", "--store", &url]);
    assert!(run.success(), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("log intact: {events} events, {checkpoints} checkpoints")),
        "{}",
        run.stdout
    );

    // A record altered (its leaf left as it was): named by its seq, through the binary too.
    db.execute("UPDATE keyledger_events SET record = record || '\\x00'::bytea WHERE seq = 4", &[]).unwrap();
    let error = verify(&url).unwrap_err();
    assert_eq!(error.first_bad_seq(), Some(4), "{error}");
    let run = keyledger(&["log", "verify", "--store", &url]);
    assert!(!run.success());
    assert!(run.stderr.contains("log verify FAILED at seq 4"), "{}", run.stderr);
    db.execute(
        "UPDATE keyledger_events SET record = substring(record from 1 for length(record) - 1) WHERE seq = 4",
        &[],
    )
    .unwrap();
    verify(&url).expect("restored");

    // A leaf hash altered.
    db.execute("UPDATE keyledger_events SET leaf = sha256(leaf) WHERE seq = 6", &[]).unwrap();
    match verify(&url) {
        Err(StoreVerifyError::Leaf { seq: 6 }) => {}
        other => panic!("a tampered leaf must be named: {other:?}"),
    }
    db.execute("UPDATE keyledger_events SET leaf = sha256('\\x00'::bytea || record) WHERE seq = 6", &[])
        .unwrap();
    verify(&url).expect("restored");

    // A row deleted: the gap is named.
    let saved = db.query_one("SELECT record, leaf FROM keyledger_events WHERE seq = 5", &[]).unwrap();
    let (record, leaf): (Vec<u8>, Vec<u8>) = (saved.get(0), saved.get(1));
    db.execute("DELETE FROM keyledger_events WHERE seq = 5", &[]).unwrap();
    match verify(&url) {
        Err(error @ StoreVerifyError::Gap { seq: 5, .. }) => assert_eq!(error.first_bad_seq(), Some(5)),
        other => panic!("a deleted row must be named: {other:?}"),
    }
    db.execute("INSERT INTO keyledger_events (seq, record, leaf) VALUES (5, $1, $2)", &[&record, &leaf])
        .unwrap();
    verify(&url).expect("restored");

    // The last rows deleted: the head (and the checkpoints) cover events that are gone.
    let last = intact.events as i64 - 1;
    let saved = db.query_one("SELECT record, leaf FROM keyledger_events WHERE seq = $1", &[&last]).unwrap();
    let (record, leaf): (Vec<u8>, Vec<u8>) = (saved.get(0), saved.get(1));
    db.execute("DELETE FROM keyledger_events WHERE seq = $1", &[&last]).unwrap();
    let error = verify(&url).unwrap_err();
    assert_eq!(error.first_bad_seq(), Some(last as u64), "{error}");
    db.execute(
        "INSERT INTO keyledger_events (seq, record, leaf) VALUES ($1, $2, $3)",
        &[&last, &record, &leaf],
    )
    .unwrap();
    verify(&url).expect("restored");

    // A checkpoint's signature altered.
    let size: i64 = db.query_one("SELECT min(size) FROM keyledger_checkpoints", &[]).unwrap().get(0);
    let note: String =
        db.query_one("SELECT note FROM keyledger_checkpoints WHERE size = $1", &[&size]).unwrap().get(0);
    let signature_at = note.rfind(' ').unwrap() + 6;
    let mut forged = note.clone().into_bytes();
    forged[signature_at] = if forged[signature_at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    db.execute("UPDATE keyledger_checkpoints SET note = $1 WHERE size = $2", &[&forged, &size]).unwrap();
    match verify(&url) {
        Err(StoreVerifyError::Log(LogVerifyError::Checkpoint { reason, .. })) => {
            assert!(reason.contains(&format!("size {size}")), "{reason}")
        }
        other => panic!("a bad checkpoint signature must be found: {other:?}"),
    }
    db.execute("UPDATE keyledger_checkpoints SET note = $1 WHERE size = $2", &[&note, &size]).unwrap();
    verify(&url).expect("restored");

    // The head's root altered.
    db.execute("UPDATE keyledger_head SET root = sha256(root)", &[]).unwrap();
    match verify(&url) {
        Err(StoreVerifyError::Head { reason, .. }) => assert!(reason.contains("root"), "{reason}"),
        other => panic!("a wrong head must be found: {other:?}"),
    }
}
