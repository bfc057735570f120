//! Storage faults under the engine (docs/security.md, "Storage faults"): an [`Engine`] over
//! [`FaultyStorage`].
//!
//! After some acknowledged operations a fault is switched on: writes fail (`ENOSPC`), fsync
//! fails (`EIO`), writes are torn in half (short write), or the disk fills up mid-batch.
//! From then on every call that must append (create, rotate, revoke, and verify of a known
//! key) fails with [`LedgerError::Unavailable`] (fail closed: no verdict without a recorded
//! use), reads keep working and [`Engine::is_healthy`] is false. The engine is stopped, the
//! fault cleared, and the data dir reopened with real storage: everything acknowledged
//! before (and during) the fault is there, the log verifies
//! ([`keyledger_log::verify::verify_log`]) and the projections equal a replay
//! ([`keyledger_ledger::projection::registry_check::check_registry`]).
//!
//! One documented exception: with `batched` usage durability, a verify answers once its usage event
//! is *written*, before the fsync (docs/operations.md, "Durability"). So when only fsync fails, the
//! first verify after the fault may still answer (its use is written, the fsync that follows within
//! the window fails and poisons the log); every call after that failure is refused. The test
//! accepts that one answer, and checks its use is in the log after the reopen.
//!
//! Also: a torn tail (garbage or a half frame appended to the last segment of a closed data
//! dir) is cut on reopen, back to the last complete batch, and the log verifies.

use keyledger_core::{Actor, DenyReason, KeyId, Payload, Timestamp, UsageContext, WorkspaceId};
use keyledger_ledger::{
    Caller, Engine, EngineOptions, KeySpec, KeyStatus, LedgerError, VerifyOutcome, VerifyRequirements,
};
use keyledger_log::Durability;
use keyledger_log::storage::{Fault, FaultSwitch, FaultyStorage, OsStorage};
use keyledger_verify::merkle::TreeHash;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{init, rid};

fn spec(name: &str) -> KeySpec {
    support::spec(name, &["read"])
}

fn acme() -> WorkspaceId {
    support::ws("acme")
}

fn faulty(switch: &Arc<FaultSwitch>, durability: Durability) -> EngineOptions {
    EngineOptions {
        usage_durability: durability,
        storage: Arc::new(FaultyStorage::with_switch(switch.clone())),
        ..EngineOptions::default()
    }
}

async fn verify(engine: &Engine, secret: &str) -> Result<VerifyOutcome, LedgerError> {
    engine.verify(rid(), secret, VerifyRequirements::default(), UsageContext::default()).await
}

/// A verification that must be answered, with its verdict's seq.
async fn verify_ok(engine: &Engine, secret: &str) -> (Result<(), DenyReason>, u64) {
    match verify(engine, secret).await {
        Ok(VerifyOutcome::Known(verdict)) => (verdict.outcome, verdict.seq),
        other => panic!("expected a verdict, got {other:?}"),
    }
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: Result<T, LedgerError>) {
    match result {
        Err(LedgerError::Unavailable(_)) => {}
        other => panic!("{what}: expected LedgerError::Unavailable (fail closed), got {other:?}"),
    }
}

/// What was acknowledged before (or, for the documented batched case, during) the fault.
#[derive(Default)]
struct Acknowledged {
    /// (key id, expected revoked, rotated_to).
    keys: Vec<(KeyId, bool, Option<KeyId>)>,
    /// (seq, key id, allowed?) of every answered verification.
    uses: Vec<(u64, KeyId, bool)>,
}

struct Case {
    _parent: tempfile::TempDir,
    dir: PathBuf,
    caller: Caller,
}

fn new_case() -> Case {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let outcome = init(&dir);
    let caller = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
    Case { _parent: parent, dir, caller }
}

/// Reopens `dir` with real storage and checks everything acknowledged is there, the log
/// verifies and the projections equal a replay. Returns the reopened event count.
async fn reopen_and_check(case: &Case, acked: &Acknowledged, label: &str) -> u64 {
    let engine = Engine::open(&case.dir, EngineOptions::default())
        .unwrap_or_else(|e| panic!("{label}: the data dir does not reopen after the fault: {e}"));
    assert!(engine.is_healthy(), "{label}: unhealthy after reopen");
    let now = Timestamp::now();
    for (key_id, revoked, rotated_to) in &acked.keys {
        let key = engine.key(key_id).unwrap_or_else(|| panic!("{label}: acknowledged key {key_id} lost"));
        let expected = if *revoked { KeyStatus::Revoked } else { KeyStatus::Active };
        assert_eq!(key.status(now), expected, "{label}: key {key_id}");
        assert_eq!(&key.rotated_to, rotated_to, "{label}: rotation link of {key_id}");
    }
    for (seq, key_id, allowed) in &acked.uses {
        let event = engine
            .log()
            .event(*seq)
            .unwrap_or_else(|e| panic!("{label}: acknowledged usage event {seq} lost: {e}"));
        match (&event.payload, allowed) {
            (Payload::Used(usage), true) => assert_eq!(&usage.key_id, key_id, "{label}: seq {seq}"),
            (Payload::Denied(denial), false) => assert_eq!(&denial.key_id, key_id, "{label}: seq {seq}"),
            (other, _) => {
                panic!("{label}: seq {seq} should be the use of {key_id} (allowed {allowed}), is {other:?}")
            }
        }
    }
    // The reopened engine works again.
    let (key, secret) = engine.create(case.caller.clone(), acme(), spec("after")).await.unwrap();
    assert_eq!(verify_ok(&engine, secret.expose()).await.0, Ok(()), "{label}: verify after reopen");
    assert!(engine.key(&key.key_id).is_some());
    let verifier = engine.public_key().clone();
    engine.shutdown().await;
    drop(engine);
    check_offline(&case.dir, &verifier, label)
}

/// `log verify` (the library half of it): the log and the projections.
fn check_offline(dir: &Path, verifier: &keyledger_verify::note::VerifierKey, label: &str) -> u64 {
    let log_dir = dir.join(keyledger_ledger::datadir::LOG_DIR);
    let report = keyledger_log::verify::verify_log(
        OsStorage::shared(),
        &log_dir,
        verifier,
        TreeHash::Rfc6962,
        &mut |_, _| {},
    )
    .unwrap_or_else(|e| panic!("{label}: the log does not verify: {e}"));
    let compared =
        keyledger_ledger::projection::registry_check::check_registry(dir, &log_dir, OsStorage::shared())
            .unwrap_or_else(|e| panic!("{label}: projections differ from a replay: {e}"));
    assert_eq!(compared, report.events, "{label}: projections cover {compared} of {} events", report.events);
    report.events
}

async fn wait_unhealthy(engine: &Engine, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.is_healthy() {
        assert!(Instant::now() < deadline, "{label}: still healthy 5 s after a failed fsync");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn fault_case(fault: Fault, durability: Durability) {
    let label = format!("{fault:?}/{durability:?}");
    let case = new_case();
    let switch = FaultSwitch::new();
    let engine = Engine::open(&case.dir, faulty(&switch, durability)).unwrap();
    let caller = case.caller.clone();
    let mut acked = Acknowledged::default();

    // Acknowledged before the fault.
    let (alpha, alpha_secret) = engine.create(caller.clone(), acme(), spec("alpha")).await.unwrap();
    let (beta, beta_secret) = engine.create(caller.clone(), acme(), spec("beta")).await.unwrap();
    let (gamma, _) = engine.create(caller.clone(), acme(), spec("gamma")).await.unwrap();
    for _ in 0..3 {
        let (outcome, seq) = verify_ok(&engine, alpha_secret.expose()).await;
        assert_eq!(outcome, Ok(()));
        acked.uses.push((seq, alpha.key_id, true));
    }
    engine.revoke(caller.clone(), beta.key_id, Some("leaked".into())).await.unwrap();
    let (outcome, seq) = verify_ok(&engine, beta_secret.expose()).await;
    assert_eq!(outcome, Err(DenyReason::Revoked));
    acked.uses.push((seq, beta.key_id, false));
    let (delta, _, delta_secret) = engine.rotate(caller.clone(), gamma.key_id, 0).await.unwrap();
    let (outcome, seq) = verify_ok(&engine, delta_secret.expose()).await;
    assert_eq!(outcome, Ok(()));
    acked.uses.push((seq, delta.key_id, true));
    acked.keys.push((alpha.key_id, false, None));
    acked.keys.push((beta.key_id, true, None));
    acked.keys.push((gamma.key_id, true, Some(delta.key_id)));
    acked.keys.push((delta.key_id, false, None));
    assert!(engine.is_healthy());
    let writes_before = switch.writes();

    fault.switch_on(&switch);

    // The first append after the fault: a verification of a known, valid key.
    match (fault, durability, verify(&engine, alpha_secret.expose()).await) {
        (_, _, Err(LedgerError::Unavailable(_))) => {}
        // Documented: batched verify answers once written; the fsync fails after it.
        (Fault::FailSync, Durability::Written, Ok(VerifyOutcome::Known(verdict))) => {
            assert_eq!(verdict.outcome, Ok(()), "{label}");
            acked.uses.push((verdict.seq, alpha.key_id, true));
            wait_unhealthy(&engine, &label).await;
        }
        (_, _, other) => panic!(
            "{label}: verify of a valid key with the log failing must be refused (fail closed), got {other:?}"
        ),
    }
    assert!(switch.writes() > writes_before || fault == Fault::FailSync, "{label}: the fault was never hit");
    assert!(!engine.is_healthy(), "{label}: is_healthy() after a failed append");

    // Every append is refused now, verify included.
    assert_unavailable(&format!("{label}: verify alpha"), verify(&engine, alpha_secret.expose()).await);
    assert_unavailable(&format!("{label}: verify delta"), verify(&engine, delta_secret.expose()).await);
    assert_unavailable(&format!("{label}: verify revoked beta"), verify(&engine, beta_secret.expose()).await);
    assert_unavailable(&format!("{label}: create"), engine.create(caller.clone(), acme(), spec("x")).await);
    assert_unavailable(&format!("{label}: revoke"), engine.revoke(caller.clone(), alpha.key_id, None).await);
    assert_unavailable(&format!("{label}: rotate"), engine.rotate(caller.clone(), delta.key_id, 0).await);
    assert_unavailable(
        &format!("{label}: revoke-all"),
        engine.revoke_all(caller.clone(), acme(), None).await,
    );
    // A presented key that is not ours needs no append: still refused as malformed.
    assert!(matches!(verify(&engine, "kl_live_nope").await, Ok(VerifyOutcome::Malformed)), "{label}");

    // Reads keep working and show exactly the acknowledged state.
    let now = Timestamp::now();
    for (key_id, revoked, _) in &acked.keys {
        let key = engine.key(key_id).unwrap_or_else(|| panic!("{label}: read of {key_id} during the fault"));
        let expected = if *revoked { KeyStatus::Revoked } else { KeyStatus::Active };
        assert_eq!(key.status(now), expected, "{label}: read of {key_id} during the fault");
    }
    let mut listed: Vec<KeyId> = engine.keys(&acme(), |_| true).iter().map(|k| k.key_id).collect();
    listed.sort();
    let mut expected: Vec<KeyId> = acked.keys.iter().map(|k| k.0).collect();
    expected.sort();
    assert_eq!(listed, expected, "{label}: keys() during the fault");
    assert!(engine.workspaces().contains(&acme()), "{label}: workspaces() during the fault");

    engine.shutdown().await;
    drop(engine);
    switch.clear();
    reopen_and_check(&case, &acked, &label).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_fail_closed_and_lose_nothing() {
    fault_case(Fault::FailWrites, Durability::Written).await;
    fault_case(Fault::FailWrites, Durability::Synced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_fails_closed_and_loses_nothing() {
    fault_case(Fault::FailSync, Durability::Synced).await;
    fault_case(Fault::FailSync, Durability::Written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_writes_fail_closed_and_lose_nothing() {
    fault_case(Fault::ShortWrite, Durability::Written).await;
    fault_case(Fault::ShortWrite, Durability::Synced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filling_up_mid_batch_fails_closed_and_loses_nothing() {
    fault_case(Fault::DiskFills, Durability::Written).await;
    fault_case(Fault::DiskFills, Durability::Synced).await;
}

/// The first command that hits a failing write is refused; reads must not show its effect
/// either (the restart will not have it: its batch was never written).
async fn refused_command_leaves_no_trace(fault: Fault) -> Vec<String> {
    let label = format!("{fault:?}");
    let case = new_case();
    let switch = FaultSwitch::new();
    let engine = Engine::open(&case.dir, faulty(&switch, Durability::Synced)).unwrap();
    let caller = case.caller.clone();
    let (alpha, alpha_secret) = engine.create(caller.clone(), acme(), spec("alpha")).await.unwrap();
    fault.switch_on(&switch);

    assert_unavailable(&label, engine.revoke(caller.clone(), alpha.key_id, Some("leak".into())).await);
    let seen = engine.key(&alpha.key_id).unwrap();
    let after_revoke = seen.status(Timestamp::now());
    engine.shutdown().await;
    drop(engine);
    switch.clear();
    let reopened = Engine::open(&case.dir, EngineOptions::default()).unwrap();
    let on_disk = reopened.key(&alpha.key_id).unwrap().status(Timestamp::now());
    reopened.shutdown().await;
    drop(reopened);
    let mut problems = Vec::new();
    if after_revoke != on_disk {
        problems.push(format!(
            "{label}: after a revoke refused with Unavailable, engine.key() shows the key {after_revoke:?}, but the reopened ledger has it {on_disk:?}"
        ));
    }

    let switch = FaultSwitch::new();
    let engine = Engine::open(&case.dir, faulty(&switch, Durability::Synced)).unwrap();
    let before: Vec<KeyId> = engine.keys(&acme(), |_| true).iter().map(|k| k.key_id).collect();
    fault.switch_on(&switch);
    assert_unavailable(&label, engine.create(caller.clone(), acme(), spec("phantom")).await);
    let during: Vec<KeyId> = engine.keys(&acme(), |_| true).iter().map(|k| k.key_id).collect();
    assert_unavailable(&label, verify(&engine, alpha_secret.expose()).await);
    engine.shutdown().await;
    drop(engine);
    if during != before {
        problems.push(format!(
            "{label}: after a create refused with Unavailable, keys() lists {} keys instead of {} (a key that was never written)",
            during.len(),
            before.len()
        ));
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_is_not_visible_to_reads() {
    let mut problems = refused_command_leaves_no_trace(Fault::FailWrites).await;
    problems.extend(refused_command_leaves_no_trace(Fault::ShortWrite).await);
    assert!(problems.is_empty(), "reads show the effect of refused commands:\n{}", problems.join("\n"));
}

// ----- torn tails -------------------------------------------------------------------------

/// The last segment file of a data dir's log.
fn last_segment(dir: &Path) -> PathBuf {
    let events = keyledger_log::events_dir(&dir.join(keyledger_ledger::datadir::LOG_DIR));
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seg-")))
        .collect();
    segments.sort();
    segments.pop().expect("a segment file")
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

/// Frame = `len u32 LE | crc32c u32 LE | flags u8 | record`. A frame header promising more
/// bytes than follow: the start of a batch whose write a crash interrupted.
fn half_frame() -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&200u32.to_le_bytes());
    bytes.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
    bytes.push(0x01);
    bytes.extend_from_slice(&[0x5A; 57]);
    bytes
}

/// A complete, valid frame without the commit mark (the first record of an unfinished
/// batch), followed by half of the next one.
fn uncommitted_frame_then_half(record: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(record.len() as u32).to_le_bytes());
    let crc = crc32c_of(0x00, record);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.push(0x00);
    bytes.extend_from_slice(record);
    let full = bytes.clone();
    bytes.extend_from_slice(&full[..full.len() / 2]);
    bytes
}

/// CRC32C (Castagnoli), bitwise: this crate has no crc32c dependency.
fn crc32c_of(flags: u8, record: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in std::iter::once(&flags).chain(record) {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// Builds the bytes of a torn tail from the last complete record.
type TailMaker = Box<dyn Fn(&[u8]) -> Vec<u8>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_back_to_the_last_complete_batch() {
    let tails: Vec<(&str, TailMaker)> = vec![
        ("garbage", Box::new(|_| (0..37u8).map(|b| b.wrapping_mul(73) ^ 0xA5).collect())),
        ("half frame", Box::new(|_| half_frame())),
        ("zero fill", Box::new(|_| vec![0u8; 4096])),
        ("unfinished batch", Box::new(uncommitted_frame_then_half)),
    ];
    for (name, tail) in tails {
        let case = new_case();
        let engine = Engine::open(&case.dir, EngineOptions::default()).unwrap();
        let caller = case.caller.clone();
        let mut acked = Acknowledged::default();
        let (alpha, alpha_secret) = engine.create(caller.clone(), acme(), spec("alpha")).await.unwrap();
        let (beta, _) = engine.create(caller.clone(), acme(), spec("beta")).await.unwrap();
        let (outcome, seq) = verify_ok(&engine, alpha_secret.expose()).await;
        assert_eq!(outcome, Ok(()));
        acked.uses.push((seq, alpha.key_id, true));
        engine.revoke(caller.clone(), beta.key_id, None).await.unwrap();
        acked.keys.push((alpha.key_id, false, None));
        acked.keys.push((beta.key_id, true, None));
        let events = engine.log().len();
        let last_record = engine.log().raw(events - 1).unwrap();
        let verifier = engine.public_key().clone();
        engine.shutdown().await;
        drop(engine);

        let segment = last_segment(&case.dir);
        let clean_len = std::fs::metadata(&segment).unwrap().len();
        let garbage = tail(&last_record);
        append_bytes(&segment, &garbage);

        // `log verify` on the torn data dir: passes, and reports the tail it will cut.
        let log_dir = case.dir.join(keyledger_ledger::datadir::LOG_DIR);
        let report = keyledger_log::verify::verify_log(
            OsStorage::shared(),
            &log_dir,
            &verifier,
            TreeHash::Rfc6962,
            &mut |_, _| {},
        )
        .unwrap_or_else(|e| panic!("{name}: a torn tail fails `log verify`: {e}"));
        assert_eq!(report.events, events, "{name}");
        assert_eq!(report.torn_tail_bytes, garbage.len() as u64, "{name}: torn tail reported");

        // Reopen: cut back to the last complete batch, nothing acknowledged lost.
        let engine = Engine::open(&case.dir, EngineOptions::default())
            .unwrap_or_else(|e| panic!("{name}: does not reopen over a torn tail: {e}"));
        assert_eq!(engine.log().len(), events, "{name}: events after recovery");
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), clean_len, "{name}: the tail was not cut");
        engine.shutdown().await;
        drop(engine);
        let after = reopen_and_check(&case, &acked, name).await;
        assert!(after > events, "{name}");
    }
}

/// Verifies against a limit of 3: once, once more with a failing write, then again once
/// the writer has recovered. Returns what the limit has left after that last one.
async fn remaining_after_a_refused_write(options: impl FnOnce(EngineOptions) -> EngineOptions) -> u64 {
    let case = new_case();
    let switch = FaultSwitch::new();
    let engine = Engine::open(&case.dir, options(faulty(&switch, Durability::Synced))).unwrap();
    let (key, secret) = engine.create(case.caller.clone(), acme(), spec("k")).await.unwrap();
    let api = keyledger_core::RateLimit {
        name: "api".into(),
        limit: 3,
        duration: 30 * 86_400 * 1_000_000,
        auto_apply: true,
    };
    engine.set_ratelimits(case.caller.clone(), acme(), Some(key.key_id), vec![api]).await.unwrap();
    let remaining = |outcome: VerifyOutcome| match outcome {
        VerifyOutcome::Known(verdict) => verdict.ratelimits.expect("the limit's status")[0].remaining,
        other => panic!("expected a verdict, got {other:?}"),
    };
    assert_eq!(remaining(verify(&engine, secret.expose()).await.unwrap()), 2);
    switch.set_fail_writes(true);
    assert_unavailable("a verification whose write fails", verify(&engine, secret.expose()).await);
    switch.clear();
    // The writer recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    let left = loop {
        match verify(&engine, secret.expose()).await {
            Ok(outcome) => break remaining(outcome),
            Err(LedgerError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("the writer did not recover within 20 s: {other:?}"),
        }
    };
    engine.shutdown().await;
    left
}

/// A verification refused because its write failed spends no rate-limit allowance: the
/// writer's recovery recounts the counters from the log (docs/api.md, "Rate limits").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_refused_by_a_failed_write_spends_no_allowance() {
    let left = remaining_after_a_refused_write(|options| options).await;
    assert_eq!(left, 1, "the refused verification spent allowance");
}

/// During a rolling upgrade the log names no spends, so a recovery cannot recount them:
/// the windows are kept as they were (the refused verification's spend with them, the
/// safe side), as the previous version kept them, never emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_during_a_rolling_upgrade_keeps_the_windows() {
    let left =
        remaining_after_a_refused_write(|options| EngineOptions { rolling_upgrade: true, ..options }).await;
    assert_eq!(left, 0, "the windows were emptied by the recovery");
}
