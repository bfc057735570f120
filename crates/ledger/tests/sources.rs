//! Source allow-lists through the engine (docs/api.md, "Source allow-lists"): allowed and
//! refused sources, the workspace default, narrowing-only updates, rotation, the
//! `require_on_live` policy, and a rebuild from the log giving the same state.

use keyledger_core::sources::parse_sources;
use keyledger_core::{DenyReason, Environment, Payload, SourceNet, Timestamp, UsageContext};
use keyledger_ledger::state::SourcePolicy;
use keyledger_ledger::{
    Caller, Engine, KeyChanges, KeyControls, LedgerError, VerifyOutcome, VerifyRequirements,
};
use std::net::IpAddr;

mod support;

use support::{open, rid, spec, ws};

fn nets(list: &[&str]) -> Vec<SourceNet> {
    parse_sources(list).unwrap()
}

/// A key's own allow-list, to issue it with.
fn listed(list: &[&str]) -> KeyControls {
    KeyControls { sources: Some(nets(list)), ..KeyControls::default() }
}

async fn verify_from(engine: &Engine, secret: &str, ip: Option<&str>) -> Result<(), DenyReason> {
    let context = UsageContext { ip: ip.map(|i| i.parse::<IpAddr>().unwrap()), ..Default::default() };
    match engine.verify(rid(), secret, VerifyRequirements::default(), context).await.unwrap() {
        VerifyOutcome::Known(verdict) => verdict.outcome,
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_verified_only_from_its_sources_and_a_refusal_is_recorded() {
    let (_dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let (key, secret) = engine
        .create_with_controls(
            caller.clone(),
            ws("acme"),
            spec("ci", &["read"]),
            None,
            listed(&["10.0.0.0/8", "2001:db8::/32"]),
        )
        .await
        .unwrap();
    let listed = key.allowed_sources.clone().unwrap();
    assert_eq!(listed.sources, nets(&["10.0.0.0/8", "2001:db8::/32"]));
    assert!(!listed.from_policy);

    assert_eq!(verify_from(&engine, secret.expose(), Some("10.1.2.3")).await, Ok(()));
    assert_eq!(verify_from(&engine, secret.expose(), Some("::ffff:10.1.2.3")).await, Ok(()));
    assert_eq!(verify_from(&engine, secret.expose(), Some("2001:db8::7")).await, Ok(()));
    let outside: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(
        verify_from(&engine, secret.expose(), Some("192.0.2.1")).await,
        Err(DenyReason::SourceNotAllowed(Some(outside)))
    );
    assert_eq!(verify_from(&engine, secret.expose(), None).await, Err(DenyReason::SourceNotAllowed(None)));

    // The refusal is a `denied` event with the reason and the address.
    let log = engine.log();
    match log.event(log.len() - 2).unwrap().payload {
        Payload::Denied(d) => {
            assert_eq!(d.reason, DenyReason::SourceNotAllowed(Some(outside)));
            assert_eq!(d.context.ip, Some(outside));
        }
        other => panic!("expected a denial, got {other:?}"),
    }

    // Revoked beats the source check: a revoked key is reported as revoked from anywhere.
    engine.revoke(caller.clone(), key.key_id, None).await.unwrap();
    assert_eq!(verify_from(&engine, secret.expose(), Some("192.0.2.1")).await, Err(DenyReason::Revoked));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_is_inherited_updates_only_narrow_and_rotation_inherits() {
    let (_dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let (early, _) = engine.create(caller.clone(), ws("acme"), spec("early", &[])).await.unwrap();
    let default = SourcePolicy { default_sources: nets(&["10.0.0.0/8"]), require_on_live: false };
    let policy = engine.policy(&ws("acme"));
    engine.set_policy_with_sources(caller.clone(), ws("acme"), policy, Some(default)).await.unwrap();

    let (key, secret) = engine.create(caller.clone(), ws("acme"), spec("inherits", &[])).await.unwrap();
    let listed = key.allowed_sources.clone().unwrap();
    assert_eq!((listed.sources, listed.from_policy), (nets(&["10.0.0.0/8"]), true));
    assert!(verify_from(&engine, secret.expose(), Some("11.0.0.1")).await.is_err());
    assert_eq!(verify_from(&engine, secret.expose(), Some("10.0.0.1")).await, Ok(()));
    // Another workspace has no default.
    let (free, _) = engine.create(caller.clone(), ws("other"), spec("free", &[])).await.unwrap();
    assert!(free.allowed_sources.is_none());

    let change = |list: &[&str]| KeyChanges { allowed_sources: Some(nets(list)), ..Default::default() };
    for widening in [&["0.0.0.0/0"][..], &["10.0.0.0/8", "11.0.0.1"], &[]] {
        let before = engine.log().len();
        let refused = engine.update(caller.clone(), key.key_id, change(widening)).await;
        assert!(
            matches!(&refused, Err(LedgerError::Invalid(e)) if e.field == "allowed_sources"),
            "{widening:?}: {refused:?}"
        );
        assert_eq!(engine.log().len(), before, "a refused update appended");
    }
    let narrowed = engine.update(caller.clone(), key.key_id, change(&["10.1.0.0/16"])).await.unwrap();
    let listed = narrowed.allowed_sources.unwrap();
    assert_eq!((listed.sources, listed.from_policy), (nets(&["10.1.0.0/16"]), false));
    assert!(verify_from(&engine, secret.expose(), Some("10.2.0.1")).await.is_err());
    // Restricting an unrestricted key narrows it.
    let restricted = engine.update(caller.clone(), free.key_id, change(&["192.0.2.0/24"])).await.unwrap();
    assert!(restricted.allowed_sources.is_some());

    // Rotation copies "no list" too: the default is for new keys only.
    let (early_successor, _, _) = engine.rotate(caller.clone(), early.key_id, 0).await.unwrap();
    assert!(early_successor.allowed_sources.is_none(), "{:?}", early_successor.allowed_sources);
    let (new, _, new_secret) = engine.rotate(caller.clone(), key.key_id, 0).await.unwrap();
    assert_eq!(new.allowed_sources.unwrap().sources, nets(&["10.1.0.0/16"]), "rotation inherits the list");
    assert!(verify_from(&engine, new_secret.expose(), Some("10.2.0.1")).await.is_err());
    assert_eq!(verify_from(&engine, new_secret.expose(), Some("10.1.0.1")).await, Ok(()));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_can_require_a_list_on_live_keys() {
    let (_dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let (before_policy, _) = engine.create(caller.clone(), ws("acme"), spec("old", &[])).await.unwrap();
    let required = SourcePolicy { default_sources: vec![], require_on_live: true };
    let policy = engine.policy(&ws("acme"));
    engine.set_policy_with_sources(caller.clone(), ws("acme"), policy, Some(required)).await.unwrap();

    let len = engine.log().len();
    let refused = engine.create(caller.clone(), ws("acme"), spec("bare", &[])).await;
    let policy_refusal = |answer: Result<(), &LedgerError>| matches!(answer, Err(LedgerError::Conflict(m)) if m.contains("allowed_sources"));
    assert!(policy_refusal(refused.as_ref().map(|_| ())), "{refused:?}");
    let rotated = engine.rotate(caller.clone(), before_policy.key_id, 0).await;
    assert!(policy_refusal(rotated.as_ref().map(|_| ())), "{rotated:?}");
    assert_eq!(engine.log().len(), len, "refusals appended nothing");

    let mut test_key = spec("test-env", &[]);
    test_key.environment = Environment::Test;
    engine.create(caller.clone(), ws("acme"), test_key).await.unwrap();
    engine
        .create_with_controls(caller.clone(), ws("acme"), spec("listed", &[]), None, listed(&["10.0.0.1"]))
        .await
        .unwrap();
    let (exceptions, count) =
        keyledger_ledger::sources::exceptions(&engine.registry(), &ws("acme"), Timestamp::now(), 10);
    assert_eq!((exceptions, count), (vec![before_policy.key_id], 1), "the key issued before the policy");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_survive_a_restart_and_a_rebuild_from_the_log() {
    let (dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let default = SourcePolicy { default_sources: nets(&["10.0.0.0/8"]), require_on_live: true };
    let policy = engine.policy(&ws("acme"));
    engine.set_policy_with_sources(caller.clone(), ws("acme"), policy, Some(default)).await.unwrap();
    let (a, secret) = engine.create(caller.clone(), ws("acme"), spec("a", &[])).await.unwrap();
    let (b, _) = engine
        .create_with_controls(
            caller.clone(),
            ws("acme"),
            spec("b", &[]),
            None,
            listed(&["::1", "192.0.2.0/24"]),
        )
        .await
        .unwrap();
    let change = KeyChanges { allowed_sources: Some(nets(&["192.0.2.0/25"])), ..Default::default() };
    engine.update(caller.clone(), b.key_id, change).await.unwrap();
    engine.rotate(caller.clone(), a.key_id, 60_000_000).await.unwrap();
    let live = engine.registry().clone();
    engine.shutdown().await;
    drop(engine);

    let (incremental, rebuilt, _) = support::persisted_and_rebuilt(&dir);
    assert_eq!(incremental, live, "the persisted projection holds the lists");
    assert_eq!(incremental.sources.keys.len(), 3);
    assert_eq!(rebuilt, incremental, "a rebuild from the log gives the same state");

    let engine = open(&dir);
    assert_eq!(engine.key(&b.key_id).unwrap().allowed_sources.unwrap().sources, nets(&["192.0.2.0/25"]));
    assert!(verify_from(&engine, secret.expose(), Some("11.0.0.1")).await.is_err());
    assert_eq!(verify_from(&engine, secret.expose(), Some("10.0.0.1")).await, Ok(()));
    engine.shutdown().await;
}

/// An admin key with a source allow-list cannot escape it by issuing or rotating an admin
/// key usable from elsewhere (docs/security.md, "Who may act on which key"): a `_ledger`
/// key it issues must have a list inside its own, and a stronger (unrestricted) admin key
/// is beyond it for rotate, revoke and revoke-all alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_key_with_a_list_issues_and_acts_on_admin_keys_only_inside_it() {
    let (_dir, outcome, engine) = support::ledger();
    let root = Caller { actor: keyledger_core::Actor::Admin(outcome.admin_key_id), request_id: rid() };
    let scopes = keyledger_ledger::ADMIN_SCOPES;
    let ledger = keyledger_core::WorkspaceId::ledger();
    let (admin, _) = engine
        .create_with_controls(
            root.clone(),
            ledger.clone(),
            spec("listed", &scopes),
            None,
            listed(&["10.0.0.0/8"]),
        )
        .await
        .unwrap();
    let caller = Caller { actor: keyledger_core::Actor::Admin(admin.key_id), request_id: rid() };
    let refused = |answer: Result<(), &LedgerError>| matches!(answer, Err(LedgerError::Forbidden(m)) if m.contains("source allow-list"));
    let len = engine.log().len();
    let open = engine.create(caller.clone(), ledger.clone(), spec("anywhere", &["ledger:keys:read"])).await;
    assert!(refused(open.as_ref().map(|_| ())), "{open:?}");
    let wider = engine
        .create_with_controls(
            caller.clone(),
            ledger.clone(),
            spec("wider", &["ledger:keys:read"]),
            None,
            listed(&["10.0.0.0/8", "192.0.2.1"]),
        )
        .await;
    assert!(refused(wider.as_ref().map(|_| ())), "{wider:?}");
    let rotated = engine.rotate(caller.clone(), outcome.admin_key_id, 0).await;
    assert!(refused(rotated.as_ref().map(|_| ())), "rotating the unrestricted root: {rotated:?}");
    let revoked = engine.revoke(caller.clone(), outcome.admin_key_id, None).await;
    assert!(refused(revoked.as_ref().map(|_| ())), "{revoked:?}");
    assert_eq!(engine.log().len(), len, "refusals appended nothing");

    let (inside, _) = engine
        .create_with_controls(
            caller.clone(),
            ledger.clone(),
            spec("inside", &["ledger:keys:read"]),
            None,
            listed(&["10.1.0.0/16"]),
        )
        .await
        .unwrap();
    let (successor, _, _) = engine.rotate(caller.clone(), inside.key_id, 0).await.unwrap();
    assert_eq!(successor.allowed_sources.unwrap().sources, nets(&["10.1.0.0/16"]));

    // Without a list of its own, a new admin key takes `_ledger`'s default: issued only if
    // the default is inside the caller's list.
    let set_default = |list: &[&str]| {
        let policy = engine.policy(&ledger);
        let default = SourcePolicy { default_sources: nets(list), require_on_live: false };
        engine.set_policy_with_sources(root.clone(), ledger.clone(), policy, Some(default))
    };
    set_default(&["192.0.2.0/24"]).await.unwrap();
    let outside = engine.create(caller.clone(), ledger.clone(), spec("outside", &["ledger:keys:read"])).await;
    assert!(refused(outside.as_ref().map(|_| ())), "{outside:?}");
    set_default(&["10.2.0.0/16"]).await.unwrap();
    let (defaulted, _) = engine
        .create(caller.clone(), ledger.clone(), spec("defaulted", &["ledger:keys:read"]))
        .await
        .unwrap();
    assert_eq!(defaulted.allowed_sources.unwrap().sources, nets(&["10.2.0.0/16"]));

    // Revoke-all in `_ledger` revokes only the keys inside its list: the unrestricted root
    // (and the caller itself) survive.
    engine.revoke_all(caller.clone(), ledger.clone(), None).await.unwrap();
    let now = Timestamp::now();
    let status = |id| engine.key(&id).unwrap().status(now);
    assert_eq!(status(outcome.admin_key_id), keyledger_ledger::KeyStatus::Active, "the root is beyond it");
    assert_eq!(status(defaulted.key_id), keyledger_ledger::KeyStatus::Revoked);
    assert_eq!(status(successor.key_id), keyledger_ledger::KeyStatus::Revoked);
    // Workspace keys are the application's: any list, or none.
    engine.create(caller.clone(), ws("acme"), spec("app", &[])).await.unwrap();
    engine.shutdown().await;
}
