//! Revoke-all during creates (docs/security.md, "Revoke-all during creates"): a key created
//! concurrently with a workspace's revoke-all is either in that revoke-all's set or created
//! strictly after it, never half.
//!
//! [`CREATORS`] tasks create keys in one workspace as fast as the engine acknowledges them,
//! [`VERIFIERS`] tasks verify acknowledged keys all the while, and one task runs
//! [`REVOKE_ALLS`] revoke-alls spread over the run. Afterwards, with the log as the
//! linearization (each revoke-all is one batch of `revoked` events under its request id):
//!
//! - every revoke-all's returned `key_ids` are exactly its `revoked` events, contiguous in
//!   the log (no create or verification sequenced between two of them);
//! - every acknowledged create is in the log, outside every revoke-all's range; the first
//!   revoke-all sequenced after it lists it and it is revoked (by that revoke-all's event),
//!   or no revoke-all came after it and it is active. So never a key created before a
//!   revoke-all yet left active, and never a key in `key_ids` still active;
//! - real time agrees: a create that returned before a revoke-all started is revoked by it
//!   or an earlier one; a create that started after a revoke-all returned is not in it;
//! - verifications: each verdict is its usage event; an allowed one is sequenced before its
//!   key's revocation, a denied one after it (and denied as revoked); none that started
//!   after the revoke-all covering its key returned succeeded.

use keyledger_core::{
    Actor, DenyReason, Event, KeyId, Payload, RequestId, Secret, Timestamp, UsageContext, WorkspaceId,
};
use keyledger_ledger::{Caller, Engine, EngineOptions, KeySpec, VerifyOutcome, VerifyRequirements};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::{Rng, rid};

const CREATORS: usize = 8;
const CREATES_PER_CREATOR: usize = 500;
const VERIFIERS: usize = 4;
const REVOKE_ALLS: usize = 10;

fn spec(n: usize) -> KeySpec {
    support::spec(&format!("storm-{n}"), &["read"])
}

/// One acknowledged create as its caller saw it.
struct Create {
    key_id: KeyId,
    secret: Secret,
    started: Instant,
    returned: Instant,
}

/// One revoke-all as its caller saw it.
struct RevokeAll {
    request_id: RequestId,
    key_ids: BTreeSet<KeyId>,
    started: Instant,
    returned: Instant,
}

/// One verification as its caller saw it.
struct Verification {
    key_id: KeyId,
    started: Instant,
    seq: u64,
    outcome: Result<(), DenyReason>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_created_during_revoke_all_are_revoked_by_it_or_created_after_it() {
    let dir = support::DataDir::new();
    let outcome = support::init(&dir);
    let engine = Arc::new(Engine::open(&dir, EngineOptions::default()).unwrap());
    let admin = outcome.admin_key_id;
    let caller = move || Caller { actor: Actor::Admin(admin), request_id: rid() };
    let workspace: WorkspaceId = "storm".parse().unwrap();
    let log_start = engine.log().len();
    let began = Instant::now();

    let creates: Arc<Mutex<Vec<Create>>> = Arc::default();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let creating = Arc::new(AtomicBool::new(true));
    let mut creators = Vec::new();
    for c in 0..CREATORS {
        let (engine, workspace, creates, acknowledged) =
            (engine.clone(), workspace.clone(), creates.clone(), acknowledged.clone());
        creators.push(tokio::spawn(async move {
            for n in 0..CREATES_PER_CREATOR {
                let started = Instant::now();
                let (record, secret) =
                    engine.create(caller(), workspace.clone(), spec(c * 10_000 + n)).await.unwrap();
                let returned = Instant::now();
                creates.lock().unwrap().push(Create { key_id: record.key_id, secret, started, returned });
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    let mut verifiers = Vec::new();
    for v in 0..VERIFIERS {
        let (engine, creates, creating) = (engine.clone(), creates.clone(), creating.clone());
        verifiers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (v as u64 + 1));
            let mut seen = Vec::new();
            while creating.load(Ordering::SeqCst) {
                let picked = {
                    let creates = creates.lock().unwrap();
                    // Mostly recent keys: those are the ones racing the revoke-alls.
                    let len = creates.len();
                    (len > 0).then(|| {
                        let back = rng.below(len.min(64) as u64) as usize;
                        let create = &creates[len - 1 - back];
                        (create.key_id, create.secret.clone())
                    })
                };
                let Some((key_id, secret)) = picked else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let wants = VerifyRequirements { scopes: vec!["read".into()], ..Default::default() };
                let started = Instant::now();
                let outcome =
                    engine.verify(rid(), secret.expose(), wants, UsageContext::default()).await.unwrap();
                let VerifyOutcome::Known(verdict) = outcome else { panic!("an acknowledged key is unknown") };
                assert_eq!(verdict.key.key_id, key_id);
                seen.push(Verification {
                    key_id,
                    started,
                    seq: verdict.seq,
                    outcome: verdict.outcome.clone(),
                });
            }
            seen
        }));
    }

    // The revoke-alls, spread over the run: each waits for its share of acknowledged creates.
    let total = CREATORS * CREATES_PER_CREATOR;
    let mut revoke_alls = Vec::new();
    for r in 0..REVOKE_ALLS {
        let threshold = (r + 1) * total / (REVOKE_ALLS + 1);
        while acknowledged.load(Ordering::SeqCst) < threshold {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let call = caller();
        let started = Instant::now();
        let key_ids = engine.revoke_all(call.clone(), workspace.clone(), Some("storm".into())).await.unwrap();
        let returned = Instant::now();
        revoke_alls.push(RevokeAll {
            request_id: call.request_id,
            key_ids: key_ids.into_iter().collect(),
            started,
            returned,
        });
    }
    for creator in creators {
        creator.await.unwrap();
    }
    creating.store(false, Ordering::SeqCst);
    let mut verifications = Vec::new();
    for verifier in verifiers {
        verifications.extend(verifier.await.unwrap());
    }
    let creates = std::mem::take(&mut *creates.lock().unwrap());
    let ran_for = began.elapsed();

    // ----- the log's order --------------------------------------------------------------
    let events: Vec<Event> = engine.log().events_from(log_start).collect::<Result<_, _>>().unwrap();
    let mut created_seq: HashMap<KeyId, u64> = HashMap::new();
    let mut revoked: HashMap<KeyId, (u64, RequestId)> = HashMap::new();
    let mut usage: BTreeMap<u64, (KeyId, Result<(), DenyReason>)> = BTreeMap::new();
    for event in &events {
        match &event.payload {
            Payload::Created(c) => assert!(created_seq.insert(c.key_id, event.seq).is_none()),
            Payload::Revoked(r) => {
                let first = revoked.insert(r.key_id, (event.seq, event.request_id));
                assert!(first.is_none(), "{} revoked twice", r.key_id);
            }
            Payload::Used(u) => assert!(usage.insert(event.seq, (u.key_id, Ok(()))).is_none()),
            Payload::Denied(d) => {
                assert!(usage.insert(event.seq, (d.key_id, Err(d.reason.clone()))).is_none())
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(created_seq.len(), creates.len(), "the log has creates nobody acknowledged, or lost some");

    // Each revoke-all: its answer is its events, one contiguous run of seqs.
    let mut ranges: Vec<(u64, u64, usize)> = Vec::new();
    for (j, revoke_all) in revoke_alls.iter().enumerate() {
        let in_log: BTreeSet<KeyId> =
            revoked.iter().filter(|(_, (_, r))| *r == revoke_all.request_id).map(|(k, _)| *k).collect();
        assert_eq!(in_log, revoke_all.key_ids, "revoke-all {j}: key_ids differ from its revoked events");
        assert!(!in_log.is_empty(), "revoke-all {j} revoked nothing: the run did not race it");
        let seqs: Vec<u64> = in_log.iter().map(|k| revoked[k].0).collect();
        let (low, high) = (*seqs.iter().min().unwrap(), *seqs.iter().max().unwrap());
        assert_eq!(high - low + 1, seqs.len() as u64, "revoke-all {j} is not one contiguous run of events");
        ranges.push((low, high, j));
    }
    ranges.sort();
    let order: Vec<usize> = ranges.iter().map(|r| r.2).collect();
    assert_eq!(order, (0..REVOKE_ALLS).collect::<Vec<_>>(), "one caller's revoke-alls logged out of order");

    // ----- every acknowledged create ------------------------------------------------------
    let now = Timestamp::now();
    let (mut revoked_by_next, mut active_after_last, mut realtime_checks, mut overlapping) =
        (0u64, 0u64, 0u64, 0u64);
    let mut covering: HashMap<KeyId, usize> = HashMap::new();
    for create in &creates {
        let c = created_seq[&create.key_id];
        for &(low, high, j) in &ranges {
            assert!(!(low..=high).contains(&c), "{} was created inside revoke-all {j}", create.key_id);
        }
        let record = engine.key(&create.key_id).unwrap();
        match ranges.iter().find(|(low, _, _)| *low > c) {
            Some(&(low, high, j)) => {
                assert!(
                    revoke_alls[j].key_ids.contains(&create.key_id),
                    "{} (created at seq {c}) is missing from revoke-all {j} at seqs {low}..={high}",
                    create.key_id
                );
                let (seq, _) = revoked[&create.key_id];
                assert!((low..=high).contains(&seq));
                assert_eq!(
                    record.status(now),
                    keyledger_ledger::KeyStatus::Revoked,
                    "{} listed by revoke-all {j} is not revoked",
                    create.key_id
                );
                covering.insert(create.key_id, j);
                revoked_by_next += 1;
            }
            None => {
                assert!(
                    !revoked.contains_key(&create.key_id),
                    "{} created after the last revoke-all is revoked",
                    create.key_id
                );
                assert_eq!(record.status(now), keyledger_ledger::KeyStatus::Active);
                active_after_last += 1;
            }
        }
        // Real time: what returned before a revoke-all started is covered by it or an earlier
        // one; what started after a revoke-all returned is not covered by it or an earlier one.
        for (j, revoke_all) in revoke_alls.iter().enumerate() {
            if create.started < revoke_all.returned && create.returned > revoke_all.started {
                overlapping += 1; // in flight during the revoke-all: either side is fine
            } else if create.returned < revoke_all.started {
                let by = covering.get(&create.key_id).copied();
                assert!(
                    by.is_some_and(|i| i <= j),
                    "{} returned before revoke-all {j} started but survived it",
                    create.key_id
                );
                realtime_checks += 1;
            } else if create.started > revoke_all.returned {
                let by = covering.get(&create.key_id).copied();
                assert!(
                    by.is_none_or(|i| i > j),
                    "{} started after revoke-all {j} returned but was revoked by it",
                    create.key_id
                );
                realtime_checks += 1;
            }
        }
    }
    assert!(overlapping > 0, "no create was in flight during a revoke-all: nothing raced");
    let listed: usize = revoke_alls.iter().map(|r| r.key_ids.len()).sum();
    assert_eq!(
        listed as u64, revoked_by_next,
        "a revoke-all listed a key that was not an acknowledged create"
    );

    // ----- verifications ----------------------------------------------------------------
    let (mut allowed, mut denied, mut after_cover) = (0u64, 0u64, 0u64);
    let mut verdict_seqs = BTreeSet::new();
    for verification in &verifications {
        assert!(verdict_seqs.insert(verification.seq), "two verdicts share seq {}", verification.seq);
        assert_eq!(
            usage.get(&verification.seq),
            Some(&(verification.key_id, verification.outcome.clone())),
            "verdict at seq {} is not its usage event",
            verification.seq
        );
        let revocation = revoked.get(&verification.key_id).map(|(seq, _)| *seq);
        let cover_returned = covering.get(&verification.key_id).map(|j| revoke_alls[*j].returned);
        match &verification.outcome {
            Ok(()) => {
                allowed += 1;
                assert!(
                    revocation.is_none_or(|r| verification.seq < r),
                    "allowed after its key's revocation"
                );
                assert!(
                    cover_returned.is_none_or(|returned| verification.started <= returned),
                    "LINEARIZABILITY VIOLATION: {} verified after the revoke-all covering it returned",
                    verification.key_id
                );
            }
            Err(DenyReason::Revoked) => {
                denied += 1;
                let r = revocation.expect("denied as revoked, but never revoked");
                assert!(verification.seq > r, "denied as revoked before its revocation");
            }
            Err(other) => panic!("unexpected denial {other:?}"),
        }
        if cover_returned.is_some_and(|returned| verification.started > returned) {
            after_cover += 1;
        }
    }
    assert_eq!(verdict_seqs.len(), usage.len(), "usage events that no verification returned");
    assert!(after_cover > 0 && allowed > 0, "the verifiers did not race the revoke-alls");

    engine.shutdown().await;
    let sizes: Vec<usize> = revoke_alls.iter().map(|r| r.key_ids.len()).collect();
    eprintln!(
        "revoke-all during creates: {} creates by {CREATORS} tasks, {REVOKE_ALLS} revoke-alls revoking {sizes:?} keys \
         ({revoked_by_next} revoked by the next revoke-all, {active_after_last} created after the last, \
         {overlapping} creates in flight during a revoke-all), {realtime_checks} real-time checks, {} verifications ({allowed} allowed, {denied} denied as revoked, \
         {after_cover} started after their key's revoke-all returned), {} events, in {ran_for:?}",
        creates.len(),
        verifications.len(),
        events.len()
    );
}
