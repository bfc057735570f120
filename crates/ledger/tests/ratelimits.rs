//! Named rate limits decided by the sequencer (docs/api.md, "Rate limits"): exact counting
//! on one node, nothing spent by a refusal, revocation first, limits kept in the log and
//! the projection, the spends of the windows in progress recounted from the log after a
//! restart.

use keyledger_core::{Actor, DenyReason, Event, Payload, RateLimit, UsageContext};
use keyledger_ledger::ratelimit::LimitStatus;
use keyledger_ledger::{
    Caller, Engine, EngineOptions, KeyControls, LedgerError, VerifyOutcome, VerifyRequirements,
};

mod support;

use support::{init, rid, spec, ws};

const SECOND: i64 = 1_000_000;
/// A window long enough (aligned to the epoch) that no test crosses its end by chance.
const LONG: i64 = 30 * 86_400 * SECOND;

fn limit(name: &str, max: u64, duration: i64, auto_apply: bool) -> RateLimit {
    RateLimit { name: name.into(), limit: max, duration, auto_apply }
}

async fn verify(
    engine: &Engine,
    secret: &str,
    requested: &[(&str, u64)],
) -> (Result<(), DenyReason>, Vec<LimitStatus>) {
    let wants = VerifyRequirements {
        ratelimits: requested.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        ..Default::default()
    };
    match engine.verify(rid(), secret, wants, UsageContext::default()).await.unwrap() {
        VerifyOutcome::Known(verdict) => {
            (verdict.outcome, verdict.ratelimits.map(|r| *r).unwrap_or_default())
        }
        _ => panic!("the key is unknown"),
    }
}

fn remaining(statuses: &[LimitStatus]) -> Vec<(String, u64)> {
    statuses.iter().map(|s| (s.name.clone(), s.remaining)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counting_costs_refusals_and_revocation_first() {
    let (_dir, outcome, engine) = support::ledger();
    let admin = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
    let (key, secret) = engine.create(admin.clone(), ws("acme"), spec("k", &["read"])).await.unwrap();
    let limits = vec![limit("api", 3, LONG, true), limit("heavy", 10, LONG, false)];
    engine.set_ratelimits(admin.clone(), ws("acme"), Some(key.key_id), limits.clone()).await.unwrap();
    assert_eq!(engine.ratelimits(&key.key_id, &ws("acme")), (limits, true));

    // `heavy` is not auto-applied: only `api` counts.
    let (ok, statuses) = verify(&engine, secret.expose(), &[]).await;
    assert_eq!((ok, remaining(&statuses)), (Ok(()), vec![("api".into(), 2)]));
    // Requested with cost 4, and an unknown name ignored.
    let (ok, statuses) = verify(&engine, secret.expose(), &[("heavy", 4), ("nope", 1)]).await;
    assert_eq!((ok, remaining(&statuses)), (Ok(()), vec![("api".into(), 1), ("heavy".into(), 6)]));
    // Cost 0 checks without spending.
    let (ok, statuses) = verify(&engine, secret.expose(), &[("api", 0), ("heavy", 0)]).await;
    assert_eq!((ok, remaining(&statuses)), (Ok(()), vec![("api".into(), 1), ("heavy".into(), 6)]));
    // `heavy` refuses cost 7: nothing is spent on `api` either.
    let (refused, statuses) = verify(&engine, secret.expose(), &[("heavy", 7)]).await;
    assert_eq!(refused, Err(DenyReason::RateLimited("heavy".into())));
    assert_eq!(remaining(&statuses), vec![("api".into(), 1), ("heavy".into(), 6)]);
    // The limit exactly reached, then the next one refused.
    assert_eq!(verify(&engine, secret.expose(), &[]).await.0, Ok(()));
    let (refused, statuses) = verify(&engine, secret.expose(), &[]).await;
    assert_eq!(refused, Err(DenyReason::RateLimited("api".into())));
    assert_eq!(remaining(&statuses), vec![("api".into(), 0)]);
    // A cost-0 check of a used-up window is refused too.
    assert_eq!(
        verify(&engine, secret.expose(), &[("api", 0)]).await.0,
        Err(DenyReason::RateLimited("api".into()))
    );
    // Revoked beats rate-limited.
    engine.revoke(admin.clone(), key.key_id, None).await.unwrap();
    let (revoked, statuses) = verify(&engine, secret.expose(), &[]).await;
    assert_eq!((revoked, statuses), (Err(DenyReason::Revoked), vec![]));
    // A revoked key's limits cannot be changed.
    let error = engine.set_ratelimits(admin, ws("acme"), Some(key.key_id), vec![]).await.unwrap_err();
    assert!(matches!(error, LedgerError::Conflict(_)), "{error:?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_resets() {
    let (_dir, _, engine) = support::ledger();
    let (key, secret) = engine.create(Caller::system(), ws("acme"), spec("k", &[])).await.unwrap();
    let limits = vec![limit("api", 1, SECOND, true)];
    engine.set_ratelimits(Caller::system(), ws("acme"), Some(key.key_id), limits).await.unwrap();
    // Up to three tries: a try that straddles a window boundary proves nothing.
    let mut proved = false;
    for _ in 0..3 {
        let (first, statuses) = verify(&engine, secret.expose(), &[]).await;
        let (second, _) = verify(&engine, secret.expose(), &[]).await;
        if first.is_ok() && second == Err(DenyReason::RateLimited("api".into())) {
            let reset = statuses[0].reset;
            let wait = reset.micros() - keyledger_core::Timestamp::now().micros();
            tokio::time::sleep(std::time::Duration::from_micros(wait.max(0) as u64 + 20_000)).await;
            assert_eq!(verify(&engine, secret.expose(), &[]).await.0, Ok(()), "the next window refused");
            proved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert!(proved);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_rotation_and_restart() {
    let dir = support::DataDir::new();
    init(&dir);
    let (own, own_secret, plain, plain_secret) = {
        let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
        let system = Caller::system();
        let default = vec![limit("ws", 1, LONG, true)];
        engine.set_ratelimits(system.clone(), ws("acme"), None, default.clone()).await.unwrap();
        let (plain, plain_secret) = engine.create(system.clone(), ws("acme"), spec("p", &[])).await.unwrap();
        assert_eq!(engine.ratelimits(&plain.key_id, &ws("acme")), (default.clone(), false));
        assert_eq!(verify(&engine, plain_secret.expose(), &[]).await.0, Ok(()));
        assert_eq!(
            verify(&engine, plain_secret.expose(), &[]).await.0,
            Err(DenyReason::RateLimited("ws".into()))
        );
        // An empty own list removes the key's own limits: the default applies, never none.
        let len = engine.log().len();
        engine.set_ratelimits(system.clone(), ws("acme"), Some(plain.key_id), Vec::new()).await.unwrap();
        assert_eq!(engine.log().len(), len, "`[]` on a key without limits of its own changes nothing");
        let own = vec![limit("own", 9, LONG, true)];
        engine.set_ratelimits(system.clone(), ws("acme"), Some(plain.key_id), own).await.unwrap();
        engine.set_ratelimits(system.clone(), ws("acme"), Some(plain.key_id), Vec::new()).await.unwrap();
        assert_eq!(engine.ratelimits(&plain.key_id, &ws("acme")), (default.clone(), false));
        assert_eq!(
            verify(&engine, plain_secret.expose(), &[]).await.0,
            Err(DenyReason::RateLimited("ws".into())),
            "`[]` does not exempt the key from the workspace default"
        );
        // Admin keys are never limited: neither their own list nor a `_ledger` default.
        let ledger = keyledger_core::WorkspaceId::ledger();
        let (admin, _) = engine.create(system.clone(), ledger.clone(), spec("admin", &[])).await.unwrap();
        let len = engine.log().len();
        for key_id in [Some(admin.key_id), None] {
            let refused =
                engine.set_ratelimits(system.clone(), ledger.clone(), key_id, default.clone()).await;
            assert!(
                matches!(&refused, Err(LedgerError::Invalid(e)) if e.field == "ratelimits"),
                "{refused:?}"
            );
        }
        let controls = KeyControls { ratelimits: Some(default.clone()), ..KeyControls::default() };
        let refused =
            engine.create_with_controls(system.clone(), ledger, spec("limited", &[]), None, controls).await;
        assert!(matches!(&refused, Err(LedgerError::Invalid(e)) if e.field == "ratelimits"), "{refused:?}");
        assert_eq!(engine.log().len(), len, "refusals append nothing");
        // A key's own list (even one limit) replaces the default.
        let (own, _) = engine.create(system.clone(), ws("acme"), spec("o", &[])).await.unwrap();
        let limits = vec![limit("api", 2, LONG, true)];
        engine.set_ratelimits(system.clone(), ws("acme"), Some(own.key_id), limits.clone()).await.unwrap();
        // The rotated successor inherits the key's own limits.
        let (new, _, new_secret) = engine.rotate(system, own.key_id, 0).await.unwrap();
        assert_eq!(engine.ratelimits(&new.key_id, &ws("acme")), (limits, true));
        assert_eq!(verify(&engine, new_secret.expose(), &[]).await.1[0].remaining, 1);
        engine.shutdown().await;
        (new.key_id, new_secret, plain.key_id, plain_secret)
    };
    // After a restart the limits are there (projection and log), and so is what the
    // windows in progress had spent (recounted from the `used` events).
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    assert_eq!(engine.ratelimits(&own, &ws("acme")).0, vec![limit("api", 2, LONG, true)]);
    assert_eq!(engine.ratelimits(&plain, &ws("acme")).0, vec![limit("ws", 1, LONG, true)]);
    assert_eq!(verify(&engine, own_secret.expose(), &[]).await.1[0].remaining, 0);
    assert_eq!(verify(&engine, own_secret.expose(), &[]).await.0, Err(DenyReason::RateLimited("api".into())));
    assert_eq!(
        verify(&engine, plain_secret.expose(), &[]).await.0,
        Err(DenyReason::RateLimited("ws".into()))
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lists_are_refused_and_change_nothing() {
    let (_dir, _, engine) = support::ledger();
    let (key, _) = engine.create(Caller::system(), ws("acme"), spec("k", &[])).await.unwrap();
    let before = engine.log().len();
    for bad in [
        vec![limit("API", 1, SECOND, true)],
        vec![limit("a", 0, SECOND, true)],
        vec![limit("a", 1, LONG + 1, true)],
        (0..17).map(|i| limit(&format!("l{i}"), 1, SECOND, true)).collect(),
    ] {
        let error =
            engine.set_ratelimits(Caller::system(), ws("acme"), Some(key.key_id), bad).await.unwrap_err();
        assert!(matches!(error, LedgerError::Invalid(_)), "{error:?}");
    }
    assert_eq!(engine.log().len(), before);
    engine.shutdown().await;
}

/// A key issued with its own limits has them from its `created` batch on: the two events
/// are adjacent under one request id, and a bad list issues no key at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_issued_with_limits_has_them_in_its_created_batch() {
    let (_dir, _, engine) = support::ledger();
    let with = |limits: Vec<RateLimit>| KeyControls { ratelimits: Some(limits), ..KeyControls::default() };
    let before = engine.log().len();
    let bad = with(vec![limit("API", 1, SECOND, true)]);
    let error = engine.create_with_controls(Caller::system(), ws("acme"), spec("k", &[]), None, bad).await;
    assert!(matches!(error, Err(LedgerError::Invalid(_))), "{error:?}");
    assert_eq!(engine.log().len(), before, "a bad list issued a key");

    let limits = vec![limit("api", 1, LONG, true)];
    let (key, secret) = engine
        .create_with_controls(Caller::system(), ws("acme"), spec("k", &[]), None, with(limits.clone()))
        .await
        .unwrap();
    let events: Vec<Event> = engine.log().events_from(before).map(Result::unwrap).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.payload.kind().as_str()).collect();
    assert_eq!(kinds, ["created", "ratelimits_set"]);
    assert_eq!(events[0].request_id, events[1].request_id);
    assert!(matches!(&events[1].payload, Payload::RateLimitsSet(set) if set.key_id == Some(key.key_id)));
    assert_eq!(engine.ratelimits(&key.key_id, &ws("acme")), (limits, true));
    assert_eq!(verify(&engine, secret.expose(), &[]).await.0, Ok(()));
    assert_eq!(verify(&engine, secret.expose(), &[]).await.0, Err(DenyReason::RateLimited("api".into())));
    engine.shutdown().await;
}

/// Credits are checked before rate limits are spent: a verification refused
/// `usage_exceeded` spends no allowance, and one refused `rate_limited` spends no credits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_credits_spends_no_allowance() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let outcome = init(&dir);
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    let admin = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
    let credits = keyledger_ledger::credits::CreditsSpec { remaining: 2, refill: None, low_threshold: None };
    let (key, secret) = engine
        .create(
            admin.clone(),
            ws("acme"),
            keyledger_ledger::KeySpec { credits: Some(credits), ..spec("k", &[]) },
        )
        .await
        .unwrap();
    let limits = vec![limit("api", 3, LONG, true)];
    engine.set_ratelimits(admin.clone(), ws("acme"), Some(key.key_id), limits).await.unwrap();
    for _ in 0..2 {
        assert_eq!(verify(&engine, secret.expose(), &[]).await.0, Ok(()));
    }
    // Out of credits: refused `usage_exceeded`, twice, and the window keeps its last unit.
    for _ in 0..2 {
        assert_eq!(verify(&engine, secret.expose(), &[]).await.0, Err(DenyReason::UsageExceeded));
    }
    let (ok, statuses) = verify(&engine, secret.expose(), &[("api", 0)]).await;
    assert_eq!(ok, Err(DenyReason::UsageExceeded));
    assert!(statuses.is_empty(), "a refusal for credits applies no limit: {statuses:?}");
    assert_eq!(engine.credits(&key.key_id).unwrap().remaining, 0);
    // Topped up: the window's last unit is still there, then the limit refuses, spending
    // no credits.
    let add = keyledger_ledger::credits::CreditsChange::Add(5);
    engine.set_credits(admin, key.key_id, add).await.unwrap();
    let (ok, statuses) = verify(&engine, secret.expose(), &[]).await;
    assert_eq!((ok, remaining(&statuses)), (Ok(()), vec![("api".into(), 0)]));
    assert_eq!(verify(&engine, secret.expose(), &[]).await.0, Err(DenyReason::RateLimited("api".into())));
    assert_eq!(engine.credits(&key.key_id).unwrap().remaining, 4);
    // The allowed verification's `used` event carries both spends; the balance it leaves
    // is what a restart folds from the log and the projection.
    let last_used = engine
        .log()
        .events_from(0)
        .map(Result::unwrap)
        .filter(|e| e.payload.kind() == keyledger_core::EventKind::Used)
        .last()
        .unwrap();
    match &last_used.payload {
        Payload::Counted(counted) => {
            assert_eq!(counted.credits, Some(keyledger_core::CreditSpend { cost: 1, remaining: 4 }));
            assert_eq!(
                counted.spent,
                vec![keyledger_core::LimitSpend { name: "api".into(), cost: 1, duration: LONG }]
            );
        }
        other => panic!("expected a counted `used` event: {other:?}"),
    }
    engine.shutdown().await;
    drop(engine);
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    assert_eq!(engine.credits(&key.key_id).unwrap().remaining, 4);
    engine.shutdown().await;
}

/// What an allowed verification spent of each limit rides on its `used` event (the
/// `ratelimits_spent` member of its JSON form), so that other nodes count it; a verification
/// that spent nothing writes a plain `used` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_used_event_names_what_it_spent() {
    let (_dir, _, engine) = support::ledger();
    let (key, secret) = engine.create(Caller::system(), ws("acme"), spec("k", &[])).await.unwrap();
    let limits = vec![limit("api", 5, LONG, true), limit("heavy", 10, LONG, false)];
    engine.set_ratelimits(Caller::system(), ws("acme"), Some(key.key_id), limits).await.unwrap();
    let spent_by = |requested: &'static [(&'static str, u64)]| {
        let engine = &engine;
        let secret = secret.expose().to_owned();
        async move {
            let before = engine.log().len();
            assert_eq!(verify(engine, &secret, requested).await.0, Ok(()));
            let events: Vec<Event> = engine.log().events_from(before).map(Result::unwrap).collect();
            assert_eq!(events.len(), 1);
            let json = keyledger_core::json::event_json(&events[0]);
            assert_eq!(json["kind"], "used");
            (events[0].payload.limit_spends().to_vec(), json["ratelimits_spent"].clone())
        }
    };
    let (spent, json) = spent_by(&[("heavy", 4)]).await;
    let names: Vec<(String, u64)> = spent.into_iter().map(|s| (s.name, s.cost)).collect();
    assert_eq!(names, vec![("api".to_owned(), 1), ("heavy".to_owned(), 4)]);
    let spent_json = serde_json::json!([
        {"name": "api", "cost": 1, "duration": "30d"},
        {"name": "heavy", "cost": 4, "duration": "30d"}
    ]);
    assert_eq!(json, spent_json);
    // Cost 0 on `api` and `heavy` not named: nothing spent, a plain `used` event.
    let (spent, json) = spent_by(&[("api", 0)]).await;
    assert!(spent.is_empty());
    assert!(json.is_null(), "{json}");
    engine.shutdown().await;
}

/// A limit given another length counts afresh from its new window, and a restart counts
/// the same way: each spend in the log names the length it was made under.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_counts_a_lengthened_limit_as_the_running_node_did() {
    let dir = support::DataDir::new();
    init(&dir);
    let secret = {
        let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
        let system = Caller::system();
        let (key, secret) = engine.create(system.clone(), ws("acme"), spec("k", &[])).await.unwrap();
        let daily = vec![limit("api", 2, 86_400 * SECOND, true)];
        engine.set_ratelimits(system.clone(), ws("acme"), Some(key.key_id), daily).await.unwrap();
        assert_eq!(verify(&engine, secret.expose(), &[]).await.1[0].remaining, 1);
        let monthly = vec![limit("api", 2, LONG, true)];
        engine.set_ratelimits(system, ws("acme"), Some(key.key_id), monthly).await.unwrap();
        assert_eq!(verify(&engine, secret.expose(), &[]).await.1[0].remaining, 1, "afresh");
        engine.shutdown().await;
        secret
    };
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    let (ok, statuses) = verify(&engine, secret.expose(), &[]).await;
    assert_eq!((ok, remaining(&statuses)), (Ok(()), vec![("api".into(), 0)]));
    engine.shutdown().await;
}

/// While older nodes share the store (`rolling_upgrade`), a rate-limited verification
/// appends only kinds they read: a plain `used` event, its spend counted on this node (the
/// limit holds here), not named in the log, so not recounted after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_appends_no_kind_older_nodes_cannot_read() {
    let dir = support::DataDir::new();
    init(&dir);
    let upgrading = || EngineOptions { rolling_upgrade: true, ..EngineOptions::default() };
    let engine = Engine::open(&dir, upgrading()).unwrap();
    let (key, secret) = engine.create(Caller::system(), ws("acme"), spec("k", &[])).await.unwrap();
    let limits = vec![limit("api", 2, LONG, true)];
    engine.set_ratelimits(Caller::system(), ws("acme"), Some(key.key_id), limits).await.unwrap();
    let before = engine.log().len();
    assert_eq!(verify(&engine, secret.expose(), &[]).await.1[0].remaining, 1);
    let events: Vec<Event> = engine.log().events_from(before).map(Result::unwrap).collect();
    assert_eq!(events.len(), 1);
    assert!(matches!(events[0].payload, Payload::Used(_)), "{:?}", events[0].payload);
    assert_eq!(verify(&engine, secret.expose(), &[]).await.1[0].remaining, 0);
    assert_eq!(verify(&engine, secret.expose(), &[]).await.0, Err(DenyReason::RateLimited("api".into())));
    engine.shutdown().await;
    drop(engine);
    // What older versions did after a restart: the windows start empty.
    let engine = Engine::open(&dir, upgrading()).unwrap();
    assert_eq!(verify(&engine, secret.expose(), &[]).await.1[0].remaining, 1);
    engine.shutdown().await;
    drop(engine);
    // Once every node runs this version the flag goes, and spends are named again (those
    // made during the upgrade were not: they are not recounted).
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    let before = engine.log().len();
    assert_eq!(verify(&engine, secret.expose(), &[]).await.1[0].remaining, 1);
    let events: Vec<Event> = engine.log().events_from(before).map(Result::unwrap).collect();
    assert!(matches!(events[0].payload, Payload::Counted(_)), "{:?}", events[0].payload);
    engine.shutdown().await;
}

/// The kinds of the events appended since `before`, and whether they share one request id.
fn appended(engine: &Engine, before: u64) -> (Vec<&'static str>, bool) {
    let events: Vec<Event> = engine.log().events_from(before).map(Result::unwrap).collect();
    let one_request = events.windows(2).all(|pair| pair[0].request_id == pair[1].request_id);
    (events.iter().map(|e| e.payload.kind().as_str()).collect(), one_request)
}

/// A key's update that also sets its limits is one command: when either part is refused
/// nothing of it is applied, and when both are allowed `updated` and `ratelimits_set` are
/// adjacent, under one request id. Limits alone append no `updated` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_update_with_limits_is_applied_whole_or_not_at_all() {
    let (_dir, outcome, engine) = support::ledger();
    let root = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
    let limits = vec![limit("api", 5, LONG, true)];
    let changes = |name: &str, scopes: Option<&[&str]>, limits: &[RateLimit]| keyledger_ledger::KeyChanges {
        name: Some(name.into()),
        scopes: scopes.map(|s| s.iter().map(|s| s.to_string()).collect()),
        ratelimits: Some(limits.to_vec()),
        ..Default::default()
    };

    // The limits part refused (an admin key is never limited): the rename is not applied.
    let ledger = keyledger_core::WorkspaceId::ledger();
    let (admin, _) =
        engine.create(root.clone(), ledger, spec("reader", &["ledger:keys:read"])).await.unwrap();
    let before = engine.log().len();
    let refused = engine.update(root.clone(), admin.key_id, changes("renamed", None, &limits)).await;
    assert!(matches!(&refused, Err(LedgerError::Invalid(e)) if e.field == "ratelimits"), "{refused:?}");
    assert_eq!(engine.log().len(), before, "no `updated` event, nothing appended");
    assert_eq!(engine.key(&admin.key_id).unwrap().name, "reader");

    // The fields part refused (a widened scope): the limits are not applied.
    let (key, _) = engine.create(root.clone(), ws("acme"), spec("k", &["read"])).await.unwrap();
    let before = engine.log().len();
    let widened = changes("renamed", Some(&["read", "write"]), &limits);
    let refused = engine.update(root.clone(), key.key_id, widened).await;
    assert!(matches!(&refused, Err(LedgerError::Invalid(e)) if e.field == "scopes"), "{refused:?}");
    assert_eq!(engine.log().len(), before);
    assert_eq!(engine.ratelimits(&key.key_id, &ws("acme")), (vec![], false));

    // Both allowed: the two events together.
    let updated = engine.update(root.clone(), key.key_id, changes("renamed", None, &limits)).await.unwrap();
    assert_eq!(updated.name, "renamed");
    assert_eq!(appended(&engine, before), (vec!["updated", "ratelimits_set"], true));
    assert_eq!(engine.ratelimits(&key.key_id, &ws("acme")), (limits, true));

    // Limits alone (the name unchanged): only their own event.
    let before = engine.log().len();
    let raised = vec![limit("api", 9, LONG, true)];
    engine.update(root, key.key_id, changes("renamed", None, &raised)).await.unwrap();
    assert_eq!(appended(&engine, before), (vec!["ratelimits_set"], true));
    assert_eq!(engine.ratelimits(&key.key_id, &ws("acme")), (raised, true));
    engine.shutdown().await;
}

/// A workspace's policy with default limits is one command: when the limits are refused
/// (a `_ledger` default) neither the policy nor `on_leak` is set, and when they are allowed
/// `policy_set` and `ratelimits_set` are adjacent, under one request id. A default left as
/// it is (or `[]` where there is none) appends nothing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_with_limits_is_applied_whole_or_not_at_all() {
    let (_dir, outcome, engine) = support::ledger();
    let root = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
    let limits = vec![limit("api", 5, LONG, true)];
    let policy = keyledger_core::Policy { require_expiry: true, ..Default::default() };
    let controls = |limits: &[RateLimit]| keyledger_ledger::PolicyControls {
        on_leak: Some(keyledger_core::OnLeak::Revoke),
        ratelimits: Some(limits.to_vec()),
        ..Default::default()
    };

    let ledger = keyledger_core::WorkspaceId::ledger();
    let before = engine.log().len();
    let refused =
        engine.set_policy_with(root.clone(), ledger.clone(), policy.clone(), controls(&limits)).await;
    assert!(matches!(&refused, Err(LedgerError::Invalid(e)) if e.field == "ratelimits"), "{refused:?}");
    assert_eq!(engine.log().len(), before, "no `policy_set` event, nothing appended");
    assert!(!engine.policy(&ledger).require_expiry);
    assert_eq!(engine.on_leak(&ledger), keyledger_core::OnLeak::Notify);

    engine.set_policy_with(root.clone(), ws("acme"), policy.clone(), controls(&limits)).await.unwrap();
    let (kinds, one_request) = appended(&engine, before);
    assert_eq!(kinds, ["policy_set", "leak_policy_set", "ratelimits_set"]);
    assert!(one_request);
    assert_eq!(engine.workspace_ratelimits(&ws("acme")), limits);

    let before = engine.log().len();
    engine.set_policy_with(root.clone(), ws("acme"), policy.clone(), controls(&limits)).await.unwrap();
    assert_eq!(engine.log().len(), before, "nothing changed, nothing appended");
    engine.set_policy_with(root, ws("beta"), policy, controls(&[])).await.unwrap();
    assert_eq!(appended(&engine, before).0, ["policy_set", "leak_policy_set"]);
    engine.shutdown().await;
}
