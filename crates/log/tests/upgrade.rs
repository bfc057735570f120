//! Upgrading a format-1 log (BLAKE3 tree) to format 2 (SHA-256), at the log's level
//! (docs/log-format.md, "Upgrading a format-1 log"): the transition note binds the two roots,
//! the first open as format 2 recomputes the tree and signs a SHA-256 checkpoint, `log
//! verify` checks both trees, and a log that does not verify, or a forged or altered
//! transition, is refused.

use ed25519_dalek::SigningKey;
use keyledger_log::checkpoint::TRANSITION_FILE;
use keyledger_log::segment::{SegmentLog, SegmentOptions};
use keyledger_log::storage::OsStorage;
use keyledger_log::upgrade::{UpgradeError, prepare};
use keyledger_log::verify::verify_log;
use keyledger_log::{Durability, Log, LogConfig, OpenError, WriterOptions};
use keyledger_verify::merkle::{Frontier, TreeHash};
use keyledger_verify::note::{NoteSigner, open_checkpoint};
use keyledger_verify::transition::{Transition, open_transition, sign_transition};
use std::path::Path;

mod support;

use support::{ORIGIN, Usages, signer};

fn config(dir: &Path, tree_hash: TreeHash) -> LogConfig {
    LogConfig {
        dir: dir.to_owned(),
        storage: OsStorage::shared(),
        signer: signer(),
        origin: ORIGIN.into(),
        tree_hash,
    }
}

/// Appends `events` events to the log in `dir` (hashed with `tree_hash`), signing a
/// checkpoint halfway and at the clean stop.
fn append(dir: &Path, tree_hash: TreeHash, events: u64) {
    let writer = Log::open(config(dir, tree_hash)).unwrap().start(Usages, WriterOptions::default(), None);
    for tag in 0..events {
        writer.submit_blocking(tag, Durability::Synced).unwrap();
        if tag == events / 2 {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(writer.checkpoint_now()).unwrap();
        }
    }
    writer.shutdown_blocking();
}

/// The root of the first `size` events hashed with `hash`, recomputed from the segments
/// (without trusting either tree).
fn root_of(dir: &Path, hash: TreeHash, size: u64) -> [u8; 32] {
    let (events, _) =
        SegmentLog::inspect(OsStorage::shared(), &dir.join("events"), SegmentOptions::default()).unwrap();
    let mut frontier = Frontier::new(hash);
    for record in events.iter(0).take(size as usize) {
        frontier.push(hash.leaf(&record.unwrap().1));
    }
    assert_eq!(frontier.size(), size);
    frontier.root()
}

#[test]
fn a_format_1_log_upgrades_keeps_its_events_and_verifies_both_trees() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    append(&log_dir, TreeHash::Blake3, 37);
    let blake3_root = root_of(&log_dir, TreeHash::Blake3, 37);
    let sha256_root = root_of(&log_dir, TreeHash::Rfc6962, 37);
    let format1 =
        verify_log(OsStorage::shared(), &log_dir, &signer().verifier(), TreeHash::Blake3, &mut |_, _| {})
            .unwrap();
    assert_eq!((format1.events, format1.root), (37, blake3_root));

    let prepared = prepare(OsStorage::shared(), &log_dir, &signer(), &mut |_, _| {}).unwrap();
    let expected = Transition { origin: ORIGIN.into(), size: 37, blake3_root, sha256_root };
    assert_eq!(prepared.transition, expected);
    let note = std::fs::read_to_string(log_dir.join("checkpoints").join(TRANSITION_FILE)).unwrap();
    assert_eq!(open_transition(&note, &signer().verifier()), Ok(expected));
    // Until the format switches (a crash here), it is still a valid format-1 log, and the
    // upgrade can run again: it writes the same note.
    verify_log(OsStorage::shared(), &log_dir, &signer().verifier(), TreeHash::Blake3, &mut |_, _| {})
        .unwrap();
    let again = prepare(OsStorage::shared(), &log_dir, &signer(), &mut |_, _| {}).unwrap();
    assert_eq!(again.transition, prepared.transition);
    assert_eq!(std::fs::read_to_string(log_dir.join("checkpoints").join(TRANSITION_FILE)).unwrap(), note);
    assert!(!log_dir.join("checkpoints").join("transition.note.tmp").exists());

    // The first open as format 2 recomputes the tree and signs a SHA-256 checkpoint.
    let log = Log::open(config(&log_dir, TreeHash::Rfc6962)).unwrap();
    let reader = log.reader();
    assert_eq!(reader.root_at(37).unwrap(), sha256_root);
    let latest = reader.latest_checkpoint().unwrap();
    assert_eq!((latest.size, latest.root), (37, sha256_root));
    assert_eq!(open_checkpoint(&latest.note, &signer().verifier()).unwrap().root, sha256_root);
    drop((reader, log));
    assert_eq!(std::fs::read_to_string(log_dir.join("tree").join("hash")).unwrap(), "sha256\n");

    // It keeps growing as format 2, and `log verify` checks both trees and the note.
    append(&log_dir, TreeHash::Rfc6962, 20);
    let report =
        verify_log(OsStorage::shared(), &log_dir, &signer().verifier(), TreeHash::Rfc6962, &mut |_, _| {})
            .unwrap();
    assert_eq!((report.events, report.transition_size), (57, Some(37)));
    assert_eq!(report.root, root_of(&log_dir, TreeHash::Rfc6962, 57));
    assert!(report.checkpoints >= 4, "two format-1 checkpoints, the upgrade's and later ones");
}

#[test]
fn a_log_that_does_not_verify_is_not_prepared_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    append(&log_dir, TreeHash::Blake3, 12);
    // Flip one byte of an event's payload inside its segment (the CRC then fails).
    let segment = std::fs::read_dir(log_dir.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let before = snapshot(&log_dir);
    match prepare(OsStorage::shared(), &log_dir, &signer(), &mut |_, _| {}) {
        Err(UpgradeError::Verify(error)) => assert!(error.first_bad_seq().is_some(), "{error}"),
        other => panic!("expected a verification failure, got {other:?}"),
    }
    assert_eq!(snapshot(&log_dir), before, "a refused upgrade changes nothing");
    assert!(!log_dir.join("checkpoints").join(TRANSITION_FILE).exists());
}

#[test]
fn a_forged_or_mismatched_transition_is_refused_on_open_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    append(&log_dir, TreeHash::Blake3, 9);
    let prepared = prepare(OsStorage::shared(), &log_dir, &signer(), &mut |_, _| {}).unwrap();
    let path = log_dir.join("checkpoints").join(TRANSITION_FILE);
    let good = std::fs::read_to_string(&path).unwrap();

    // Signed by the log's key, but binding another SHA-256 root.
    let lie = Transition { sha256_root: [9; 32], ..prepared.transition.clone() };
    std::fs::write(&path, sign_transition(&lie, &signer()).unwrap()).unwrap();
    assert!(matches!(
        Log::open(config(&log_dir, TreeHash::Rfc6962)),
        Err(OpenError::TransitionMismatch { size: 9 })
    ));
    let error =
        verify_log(OsStorage::shared(), &log_dir, &signer().verifier(), TreeHash::Rfc6962, &mut |_, _| {})
            .unwrap_err();
    assert!(error.to_string().contains("transition note"), "{error}");

    // Another BLAKE3 root: the format-1 tree does not match it.
    let lie = Transition { blake3_root: [9; 32], ..prepared.transition.clone() };
    std::fs::write(&path, sign_transition(&lie, &signer()).unwrap()).unwrap();
    let error =
        verify_log(OsStorage::shared(), &log_dir, &signer().verifier(), TreeHash::Rfc6962, &mut |_, _| {})
            .unwrap_err();
    assert!(error.to_string().contains("blake3"), "{error}");

    // Signed by another key.
    let other = NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[8; 32])).unwrap();
    std::fs::write(&path, sign_transition(&prepared.transition, &other).unwrap()).unwrap();
    assert!(Log::open(config(&log_dir, TreeHash::Rfc6962)).is_err());
    assert!(
        verify_log(OsStorage::shared(), &log_dir, &signer().verifier(), TreeHash::Rfc6962, &mut |_, _| {})
            .is_err()
    );

    // The genuine note opens.
    std::fs::write(&path, good).unwrap();
    Log::open(config(&log_dir, TreeHash::Rfc6962)).unwrap();
    verify_log(OsStorage::shared(), &log_dir, &signer().verifier(), TreeHash::Rfc6962, &mut |_, _| {})
        .unwrap();
}

#[test]
fn a_format_2_log_is_never_read_as_format_1_nor_the_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    append(&log_dir, TreeHash::Rfc6962, 5);
    // Its checkpoints commit to SHA-256 roots: a BLAKE3 reading fails loudly.
    assert!(
        verify_log(OsStorage::shared(), &log_dir, &signer().verifier(), TreeHash::Blake3, &mut |_, _| {})
            .is_err()
    );
    let other = tempfile::tempdir().unwrap();
    let format1 = other.path().join("log");
    append(&format1, TreeHash::Blake3, 5);
    assert!(matches!(
        Log::open(config(&format1, TreeHash::Rfc6962)),
        Err(OpenError::CheckpointMismatch { .. })
    ));
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}
