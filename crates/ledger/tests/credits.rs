//! Usage credits through the engine (docs/credits.md): spending, denial at zero, checks
//! without spending, top-ups, rotation, and balances rebuilt from the log.

use keyledger_core::{DenyReason, Payload, Refill, RefillInterval, UsageContext};
use keyledger_ledger::credits::{CreditsChange, CreditsSpec};
use keyledger_ledger::{Caller, Engine, LedgerError, VerifyOutcome, VerifyRequirements};

mod support;

use support::{open, rid, spec, ws};

/// Verifies `secret` spending `cost` (`None`: the default, 1); the decision and the balance.
async fn verify(engine: &Engine, secret: &str, cost: Option<u64>) -> (Result<(), DenyReason>, Option<u64>) {
    let wants = VerifyRequirements { cost, ..Default::default() };
    match engine.verify(rid(), secret, wants, UsageContext::default()).await.unwrap() {
        VerifyOutcome::Known(verdict) => (verdict.outcome, verdict.credits_remaining),
        other => panic!("unexpected {other:?}"),
    }
}

fn credits(remaining: u64) -> CreditsSpec {
    CreditsSpec {
        remaining,
        refill: Some(Refill { amount: 100, interval: RefillInterval::Monthly, day: Some(1) }),
        low_threshold: Some(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spends_until_zero_then_denies_usage_exceeded_without_spending() {
    let (_dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let metered = spec("metered", &["read"]);
    let (key, secret) = engine
        .create(
            caller.clone(),
            ws("acme"),
            keyledger_ledger::KeySpec { credits: Some(credits(3)), ..metered },
        )
        .await
        .unwrap();
    assert_eq!(engine.credits(&key.key_id).unwrap().remaining, 3);
    assert_eq!(verify(&engine, secret.expose(), None).await, (Ok(()), Some(2)));
    assert_eq!(verify(&engine, secret.expose(), Some(0)).await, (Ok(()), Some(2)), "cost 0 only checks");
    assert_eq!(verify(&engine, secret.expose(), Some(3)).await, (Err(DenyReason::UsageExceeded), Some(2)));
    assert_eq!(verify(&engine, secret.expose(), Some(2)).await, (Ok(()), Some(0)));
    assert_eq!(verify(&engine, secret.expose(), None).await, (Err(DenyReason::UsageExceeded), Some(0)));
    assert_eq!(verify(&engine, secret.expose(), Some(0)).await, (Ok(()), Some(0)), "a check at zero passes");
    // Revocation is checked before credits: a revoked key is denied `revoked`, never
    // `usage_exceeded`, and spends nothing.
    let (other, other_secret) = engine
        .create(
            caller.clone(),
            ws("acme"),
            keyledger_ledger::KeySpec { credits: Some(credits(5)), ..spec("o", &[]) },
        )
        .await
        .unwrap();
    engine.revoke(caller.clone(), other.key_id, None).await.unwrap();
    assert_eq!(verify(&engine, other_secret.expose(), None).await, (Err(DenyReason::Revoked), Some(5)));

    // A key without credits is never metered: its uses stay plain `used` events.
    let (plain, plain_secret) = engine.create(caller, ws("acme"), spec("plain", &[])).await.unwrap();
    assert_eq!(verify(&engine, plain_secret.expose(), Some(1_000)).await, (Ok(()), None));
    let events: Vec<_> = engine.log().events_from(0).map(|e| e.unwrap()).collect();
    assert!(events.iter().any(|e| matches!(&e.payload, Payload::Used(u) if u.key_id == plain.key_id)));
    assert!(
        !events.iter().any(|e| matches!(&e.payload, Payload::Metered(m) if m.usage.key_id == plain.key_id))
    );
    let spent: u64 = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Metered(m) if m.usage.key_id == key.key_id => Some(m.cost),
            _ => None,
        })
        .sum();
    assert_eq!(spent, 3, "the log holds exactly the spends");
    assert!(events.iter().all(|e| e.payload.kind().as_str() != "metered"), "a spend is a `used` event");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_ups_add_or_set_and_refuse_what_they_cannot_do() {
    let (_dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let (key, secret) = engine
        .create(
            caller.clone(),
            ws("acme"),
            keyledger_ledger::KeySpec { credits: Some(credits(1)), ..spec("k", &[]) },
        )
        .await
        .unwrap();
    assert_eq!(verify(&engine, secret.expose(), None).await, (Ok(()), Some(0)));
    let (_, after) = engine.set_credits(caller.clone(), key.key_id, CreditsChange::Add(5)).await.unwrap();
    assert_eq!(after.remaining, 5);
    assert_eq!(after.refill.as_ref().map(|r| r.amount), Some(100), "a top-up keeps the refill");
    assert_eq!(verify(&engine, secret.expose(), Some(5)).await, (Ok(()), Some(0)));
    let (_, after) = engine.set_credits(caller.clone(), key.key_id, CreditsChange::Set(2)).await.unwrap();
    assert_eq!(after.remaining, 2);

    // `add` needs credits; `set` gives a key its first balance (it only ever narrows what
    // the key may do).
    let (plain, plain_secret) = engine.create(caller.clone(), ws("acme"), spec("plain", &[])).await.unwrap();
    let before = engine.log().len();
    let refused = engine.set_credits(caller.clone(), plain.key_id, CreditsChange::Add(1)).await;
    assert!(matches!(refused, Err(LedgerError::Conflict(_))), "{refused:?}");
    let refused = engine.set_credits(caller.clone(), key.key_id, CreditsChange::Add(u64::MAX)).await;
    assert!(matches!(refused, Err(LedgerError::Invalid(_))), "{refused:?}");
    assert_eq!(engine.log().len(), before, "refused top-ups append nothing");
    // Admin keys are never metered: no balance for a `_ledger` key.
    let admin = spec("admin", &["ledger:keys:read"]);
    let metered = keyledger_ledger::KeySpec { credits: Some(credits(5)), ..admin.clone() };
    let refused = engine.create(caller.clone(), keyledger_core::WorkspaceId::ledger(), metered).await;
    assert!(matches!(&refused, Err(LedgerError::Invalid(e)) if e.field == "credits"), "{refused:?}");
    let (admin, _) =
        engine.create(caller.clone(), keyledger_core::WorkspaceId::ledger(), admin).await.unwrap();
    let before = engine.log().len();
    let refused = engine.set_credits(caller.clone(), admin.key_id, CreditsChange::Set(1)).await;
    assert!(matches!(&refused, Err(LedgerError::Invalid(e)) if e.field == "credits"), "{refused:?}");
    assert_eq!(engine.log().len(), before, "refused top-ups append nothing");
    engine.set_credits(caller.clone(), plain.key_id, CreditsChange::Set(1)).await.unwrap();
    assert_eq!(verify(&engine, plain_secret.expose(), None).await, (Ok(()), Some(0)));
    assert_eq!(verify(&engine, plain_secret.expose(), None).await, (Err(DenyReason::UsageExceeded), Some(0)));

    engine.revoke(caller.clone(), key.key_id, None).await.unwrap();
    let refused = engine.set_credits(caller, key.key_id, CreditsChange::Add(1)).await;
    assert!(matches!(refused, Err(LedgerError::Conflict(_))), "a revoked key gets no credits: {refused:?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_moves_the_balance_to_the_successor() {
    let (_dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let (old, old_secret) = engine
        .create(
            caller.clone(),
            ws("acme"),
            keyledger_ledger::KeySpec { credits: Some(credits(10)), ..spec("k", &[]) },
        )
        .await
        .unwrap();
    assert_eq!(verify(&engine, old_secret.expose(), Some(4)).await, (Ok(()), Some(6)));
    // With an overlap, the old key stays valid but has nothing left to spend.
    let (new, _, new_secret) = engine.rotate(caller, old.key_id, 3_600_000_000).await.unwrap();
    let moved = engine.credits(&new.key_id).unwrap();
    assert_eq!((moved.remaining, moved.low_threshold), (6, 1));
    assert_eq!(moved.refill, credits(0).refill, "the successor inherits the refill");
    assert_eq!(engine.credits(&old.key_id).unwrap().remaining, 0);
    assert_eq!(engine.credits(&old.key_id).unwrap().refill, None, "the old key is never refilled");
    assert_eq!(verify(&engine, old_secret.expose(), None).await, (Err(DenyReason::UsageExceeded), Some(0)));
    assert_eq!(verify(&engine, old_secret.expose(), Some(0)).await, (Ok(()), Some(0)));
    assert_eq!(verify(&engine, new_secret.expose(), Some(6)).await, (Ok(()), Some(0)));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_survive_a_restart_and_a_rebuild_from_the_log_equals_the_live_ones() {
    let (dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let mut keys = Vec::new();
    for i in 0..6u64 {
        let spec =
            keyledger_ledger::KeySpec { credits: Some(credits(20 + i)), ..spec(&format!("k{i}"), &[]) };
        let (key, secret) = engine.create(caller.clone(), ws("acme"), spec).await.unwrap();
        for n in 0..i * 3 {
            let _ = verify(&engine, secret.expose(), Some(n % 3)).await;
        }
        keys.push((key.key_id, secret));
    }
    engine.set_credits(caller.clone(), keys[1].0, CreditsChange::Add(7)).await.unwrap();
    engine.set_credits(caller.clone(), keys[2].0, CreditsChange::Set(1)).await.unwrap();
    engine.rotate(caller.clone(), keys[3].0, 0).await.unwrap();
    let live = engine.registry().credits.clone();
    assert_eq!(live.len(), 7, "six keys and a successor");
    engine.shutdown().await;
    drop(engine);

    let engine = open(&dir);
    assert_eq!(engine.registry().credits, live, "the balances after a restart");
    let (_, left) = verify(&engine, keys[5].1.expose(), Some(1)).await;
    assert_eq!(left, Some(live[&keys[5].0].remaining - 1));
    let live = engine.registry().credits.clone();
    engine.shutdown().await;
    drop(engine);

    let (incremental, rebuilt, _) = support::persisted_and_rebuilt(&dir);
    assert_eq!(rebuilt.credits, live);
    assert_eq!(rebuilt, incremental);
}
