//! Revocation is linearizable (docs/api.md, "Keys: the secret and its fields": once a revoke
//! call has returned, no verification of that key succeeds, on any code path), and every
//! verification of a known key appends exactly one event (docs/api.md, "Verify").
//!
//! Each round creates a key, lets 8 verifier tasks hammer `Engine::verify` for it on a
//! multi-thread runtime, and after a short random delay cuts it off: by `revoke`, by
//! `rotate` with overlap 0, or by `revoke_all` of its workspace. The assertions are all
//! sound whatever the scheduling:
//!
//! - **happens-before**: a verification whose *start* instant is after the instant the cut
//!   returned (one monotonic clock, so real-time order) must be denied as revoked;
//! - **log order**: the log is the linearization: every `used` event of the key has a seq
//!   below its `revoked` event, every `denied` one above; each verdict's seq is that event;
//! - **one event per verification**: the key's `used` and `denied` events in the log are
//!   exactly the verdicts returned (same seqs), and its `use_count` is the number allowed.

use keyledger_core::{Actor, DenyReason, Event, KeyId, Payload, UsageContext, WorkspaceId};
use keyledger_ledger::{Caller, Engine, EngineOptions, KeySpec, VerifyOutcome, VerifyRequirements};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::{Rng, init, rid};

const ROUNDS: usize = 1_000;
const VERIFIERS: usize = 8;
/// Verifications a task may run before the cut returns (then it waits for the cut).
const BEFORE_CAP: usize = 6;
/// Verifications every task runs after it has seen the cut return.
const AFTER: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    Revoke,
    /// `rotate` with overlap 0: the old key is revoked in the same step.
    RotateWithoutOverlap,
    /// `revoke_all` of the workspace; two keys per round.
    RevokeAll,
}

/// One verification as a verifier task saw it.
struct Observation {
    key: usize,
    started: Instant,
    /// The task had seen the cut's completion flag before starting this verification.
    saw_cut: bool,
    outcome: VerifyOutcome,
}

#[derive(Default, Debug)]
struct Stats {
    verifications: usize,
    allowed: usize,
    denied: usize,
    /// Started after the task saw the cut's completion flag (all must be denied).
    started_after_cut: usize,
    /// Started after the cut returned, before the task saw the flag (all must be denied).
    started_after_cut_unflagged: usize,
    /// Started before the cut returned but were sequenced after it (denied): the race.
    overlapping_denied: usize,
    /// Started before the cut returned and were sequenced before it (allowed).
    overlapping_allowed: usize,
}

fn spec() -> KeySpec {
    support::spec("raced", &["read"])
}

fn wants() -> VerifyRequirements {
    VerifyRequirements { scopes: vec!["read".into()], ..Default::default() }
}

async fn race(cut: Cut, seed: u64) {
    let dir = support::DataDir::new();
    let outcome = init(&dir);
    let engine = Arc::new(Engine::open(&dir, EngineOptions::default()).unwrap());
    let caller = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
    let workspace: WorkspaceId = "race".parse().unwrap();
    let keys_per_round = if cut == Cut::RevokeAll { 2 } else { 1 };
    let mut rng = Rng(seed);
    let mut stats = Stats::default();
    let began = Instant::now();

    for round in 0..ROUNDS {
        let mut keys = Vec::new();
        for _ in 0..keys_per_round {
            let (record, secret) = engine.create(caller.clone(), workspace.clone(), spec()).await.unwrap();
            keys.push((record.key_id, secret));
        }
        let log_start = engine.log().len();
        let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
        let started = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for task in 0..VERIFIERS {
            let engine = engine.clone();
            let key = task % keys.len();
            let secret = keys[key].1.clone();
            let mut cut_rx = cut_rx.clone();
            let started = started.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut after = 0;
                loop {
                    // Read the flag *before* taking the start instant: a verification
                    // counted as "after" surely started after the cut returned.
                    let saw_cut = *cut_rx.borrow();
                    if saw_cut {
                        if after == AFTER {
                            break;
                        }
                        after += 1;
                    } else if seen.len() >= BEFORE_CAP {
                        let _ = cut_rx.wait_for(|done| *done).await;
                        continue;
                    }
                    let start = Instant::now();
                    started.fetch_add(1, Ordering::Relaxed);
                    let outcome =
                        engine.verify(rid(), secret.expose(), wants(), UsageContext::default()).await;
                    seen.push(Observation { key, started: start, saw_cut, outcome: outcome.unwrap() });
                }
                seen
            }));
        }

        // A short random delay: let 0..8 verifications start, then spin 0..200 µs.
        let wanted = rng.below(VERIFIERS as u64) as usize;
        let spin = Duration::from_micros(rng.below(200));
        let deadline = Instant::now() + Duration::from_secs(5);
        while started.load(Ordering::Relaxed) < wanted && Instant::now() < deadline {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        let spin_from = Instant::now();
        while spin_from.elapsed() < spin {
            std::hint::spin_loop();
        }

        let mut successor = None;
        match cut {
            Cut::Revoke => {
                engine.revoke(caller.clone(), keys[0].0, Some("race".into())).await.unwrap();
            }
            Cut::RotateWithoutOverlap => {
                let (new, previous, secret) = engine.rotate(caller.clone(), keys[0].0, 0).await.unwrap();
                assert!(previous.revoked_at.is_some(), "round {round}: overlap 0 did not revoke the old key");
                successor = Some(secret);
                let _ = new;
            }
            Cut::RevokeAll => {
                let revoked =
                    engine.revoke_all(caller.clone(), workspace.clone(), Some("race".into())).await.unwrap();
                let revoked: BTreeSet<KeyId> = revoked.into_iter().collect();
                let ours: BTreeSet<KeyId> = keys.iter().map(|(id, _)| *id).collect();
                assert_eq!(revoked, ours, "round {round}: revoke-all revoked the wrong keys");
            }
        }
        let cut_returned = Instant::now();
        cut_tx.send_replace(true);

        let mut observations = Vec::new();
        for task in tasks {
            observations.extend(task.await.unwrap());
        }
        if let Some(secret) = successor {
            // The successor of an overlap-0 rotation works at once.
            let outcome =
                engine.verify(rid(), secret.expose(), wants(), UsageContext::default()).await.unwrap();
            assert!(
                matches!(&outcome, VerifyOutcome::Known(v) if v.outcome.is_ok()),
                "round {round}: successor {outcome:?}"
            );
        }
        let events: Vec<Event> = engine.log().events_from(log_start).collect::<Result<_, _>>().unwrap();
        check_round(
            round,
            cut,
            &keys.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            &observations,
            cut_returned,
            &events,
            &engine,
            &mut stats,
        );
    }
    engine.shutdown().await;
    eprintln!("{cut:?}: {ROUNDS} rounds in {:?}: {stats:?}", began.elapsed());
    assert_eq!(stats.started_after_cut, ROUNDS * VERIFIERS * AFTER, "every task verified after the cut");
}

#[allow(clippy::too_many_arguments)]
fn check_round(
    round: usize,
    cut: Cut,
    keys: &[KeyId],
    observations: &[Observation],
    cut_returned: Instant,
    events: &[Event],
    engine: &Engine,
    stats: &mut Stats,
) {
    // The log's own order: where each key was revoked, and its usage events by seq.
    let mut revoked_at: BTreeMap<KeyId, u64> = BTreeMap::new();
    let mut usage: BTreeMap<u64, (KeyId, Result<(), DenyReason>)> = BTreeMap::new();
    for event in events {
        match &event.payload {
            Payload::Revoked(r) if keys.contains(&r.key_id) => {
                assert!(
                    revoked_at.insert(r.key_id, event.seq).is_none(),
                    "round {round}: {} revoked twice",
                    r.key_id
                );
            }
            Payload::Used(u) if keys.contains(&u.key_id) => {
                usage.insert(event.seq, (u.key_id, Ok(())));
            }
            Payload::Denied(d) if keys.contains(&d.key_id) => {
                usage.insert(event.seq, (d.key_id, Err(d.reason.clone())));
            }
            // The rotation's new key and the rotated marker.
            Payload::Created(c) if cut == Cut::RotateWithoutOverlap && c.rotated_from == Some(keys[0]) => {}
            Payload::Rotated(r) if cut == Cut::RotateWithoutOverlap && r.key_id == keys[0] => {}
            // The successor's one verification.
            Payload::Used(_) if cut == Cut::RotateWithoutOverlap => {}
            other => panic!("round {round}: unexpected event {other:?}"),
        }
    }
    assert_eq!(revoked_at.len(), keys.len(), "round {round}: not every key was revoked: {revoked_at:?}");

    let mut verdict_seqs = BTreeSet::new();
    let mut allowed_per_key = vec![0u64; keys.len()];
    for observation in observations {
        let key_id = keys[observation.key];
        let VerifyOutcome::Known(verdict) = &observation.outcome else {
            panic!("round {round}: a known key verified as unknown");
        };
        assert_eq!(verdict.key.key_id, key_id, "round {round}: verdict about another key");
        assert!(verdict_seqs.insert(verdict.seq), "round {round}: two verdicts share seq {}", verdict.seq);
        let logged = usage
            .get(&verdict.seq)
            .unwrap_or_else(|| panic!("round {round}: verdict seq {} has no usage event", verdict.seq));
        assert_eq!(
            logged,
            &(key_id, verdict.outcome.clone()),
            "round {round}: the log recorded another outcome"
        );
        let revoked = revoked_at[&key_id];
        stats.verifications += 1;
        match &verdict.outcome {
            Ok(()) => {
                stats.allowed += 1;
                allowed_per_key[observation.key] += 1;
                // Happens-before: a verification that began after the cut returned must not succeed.
                assert!(
                    observation.started <= cut_returned && !observation.saw_cut,
                    "round {round}: LINEARIZABILITY VIOLATION: a verification started {:?} after the cut returned was allowed (seq {}, revoked at seq {revoked})",
                    observation.started.saturating_duration_since(cut_returned),
                    verdict.seq
                );
                assert!(
                    verdict.seq < revoked,
                    "round {round}: allowed at seq {} after the revocation at seq {revoked}",
                    verdict.seq
                );
                stats.overlapping_allowed += 1;
            }
            Err(DenyReason::Revoked) => {
                stats.denied += 1;
                assert!(
                    verdict.seq > revoked,
                    "round {round}: denied as revoked at seq {} before the revocation at seq {revoked}",
                    verdict.seq
                );
                if observation.saw_cut {
                    stats.started_after_cut += 1;
                } else if observation.started > cut_returned {
                    stats.started_after_cut_unflagged += 1;
                } else {
                    stats.overlapping_denied += 1;
                }
            }
            Err(other) => panic!("round {round}: unexpected denial {other:?}"),
        }
    }
    // Exactly one usage event per verification, and no other usage of these keys.
    assert_eq!(
        verdict_seqs.len(),
        usage.len(),
        "round {round}: {} verdicts but {} usage events",
        verdict_seqs.len(),
        usage.len()
    );
    for (i, key_id) in keys.iter().enumerate() {
        let record = engine.key(key_id).unwrap();
        assert_eq!(
            record.last_used.count, allowed_per_key[i],
            "round {round}: use_count disagrees with the allowed verdicts"
        );
        assert!(record.revoked_at.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_verification_succeeds_after_revoke_returned() {
    race(Cut::Revoke, 0x9e37_79b9_7f4a_7c15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_verification_succeeds_after_a_rotation_without_overlap_returned() {
    race(Cut::RotateWithoutOverlap, 0xd1b5_4a32_d192_ed03).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_verification_succeeds_after_revoke_all_returned() {
    race(Cut::RevokeAll, 0x8cb9_2ba7_2f3d_8dd7).await;
}
