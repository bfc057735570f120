//! A request that changes several things is one command of the single writer
//! (docs/architecture.md; docs/decisions/0004-single-writer-sequencer.md): a command another
//! request sends while it is being carried out is sequenced before or after all of it, never
//! between its parts, so it cannot leave the request half applied behind an error.
//!
//! Each test holds the writer in a slow fsync (`FaultSwitch::set_sync_delay`) once the
//! request's first change is visible in the registry, and sends the other command then.

use axum::http::StatusCode;
use keyledger_ledger::{Engine, EngineOptions};
use keyledger_log::storage::{FaultSwitch, FaultyStorage};
use keyledger_server::ServerConfig;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::Api;

/// How long each fsync takes while a test interleaves: ample time to send a request.
const SLOW_SYNC: Duration = Duration::from_millis(400);

fn slow_api() -> (Arc<Api>, Arc<FaultSwitch>) {
    let switch = FaultSwitch::new();
    let options = EngineOptions {
        storage: Arc::new(FaultyStorage::with_switch(switch.clone())),
        ..EngineOptions::default()
    };
    (Arc::new(support::open(&support::init(), options, ServerConfig::default())), switch)
}

/// Waits until `seen` holds of the engine (a command's first effect, applied when it is
/// sequenced, before its fsync).
async fn wait_until(engine: &Engine, seen: impl Fn(&Engine) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen(engine) {
        assert!(Instant::now() < deadline, "the request was not sequenced within 5 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The kinds of the events appended since `before`, and their request ids.
fn appended(engine: &Engine, before: u64) -> Vec<(&'static str, keyledger_core::RequestId)> {
    let events = engine.log().events_from(before).map(Result::unwrap);
    events.map(|e| (e.payload.kind().as_str(), e.request_id)).collect()
}

fn created_id(answer: &support::Answer) -> String {
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.dump());
    answer.body["key_id"].as_str().unwrap().to_owned()
}

/// A revoke sent while a PATCH of a key's name and limits is carried out: the PATCH is
/// applied whole (200, both changes, its events adjacent), the revoke after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_during_a_patch_lands_after_all_of_it() {
    let (api, switch) = slow_api();
    let key_id =
        created_id(&api.admin("POST", "/v1/workspaces/acme/keys", Some(json!({"name": "before"}))).await);
    let id: keyledger_core::KeyId = key_id.parse().unwrap();
    let before = api.engine.log().len();
    let limits = json!([{"name": "api", "limit": 5, "duration": "1m"}]);

    switch.set_sync_delay(SLOW_SYNC);
    let patch = tokio::spawn({
        let (api, path, body) =
            (api.clone(), format!("/v1/keys/{key_id}"), json!({"name": "after", "ratelimits": limits}));
        async move { api.admin("PATCH", &path, Some(body)).await }
    });
    wait_until(&api.engine, |engine| engine.key(&id).is_some_and(|k| k.name == "after")).await;
    let revoked = api.admin("POST", &format!("/v1/keys/{key_id}/revoke"), None).await;
    switch.set_sync_delay(Duration::ZERO);
    let patched = patch.await.unwrap();

    assert_eq!(patched.status, StatusCode::OK, "{}", patched.dump());
    assert_eq!(patched.body["name"], "after");
    assert_eq!(patched.body["ratelimits"][0]["limit"], 5, "{}", patched.dump());
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.dump());
    let events = appended(&api.engine, before);
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(kinds, ["updated", "ratelimits_set", "revoked"]);
    assert_eq!(events[0].1, events[1].1, "the PATCH's two events are one request's");
}

/// An admin key disabled while its PUT of a workspace policy with default limits is carried
/// out: the PUT is applied whole (200, the policy and the limits, its events adjacent), the
/// suspension after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_of_the_caller_during_a_policy_put_lands_after_all_of_it() {
    let (api, switch) = slow_api();
    let scopes: Vec<&str> = keyledger_ledger::authority::ADMIN_SCOPES.to_vec();
    let ops = api
        .admin("POST", "/v1/workspaces/_ledger/keys", Some(json!({"name": "ops", "scopes": scopes})))
        .await;
    let ops_id = created_id(&ops);
    let ops_secret = ops.body["secret"].as_str().unwrap().to_owned();
    let acme: keyledger_core::WorkspaceId = "acme".parse().unwrap();
    let before = api.engine.log().len();

    switch.set_sync_delay(SLOW_SYNC);
    let put = tokio::spawn({
        let api = api.clone();
        let body =
            json!({"require_expiry": true, "ratelimits": [{"name": "api", "limit": 5, "duration": "1m"}]});
        async move { api.call_as(Some(&ops_secret), "PUT", "/v1/workspaces/acme/policy", Some(body)).await }
    });
    wait_until(&api.engine, |engine| engine.policy(&acme).require_expiry).await;
    let disabled = api.admin("POST", &format!("/v1/keys/{ops_id}/disable"), None).await;
    switch.set_sync_delay(Duration::ZERO);
    let put = put.await.unwrap();

    assert_eq!(put.status, StatusCode::OK, "{}", put.dump());
    assert_eq!(put.body["require_expiry"], true);
    assert_eq!(put.body["ratelimits"][0]["limit"], 5, "{}", put.dump());
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.dump());
    let events = appended(&api.engine, before);
    let (last, put_events) = events.split_last().unwrap();
    assert_eq!(last.0, "disabled", "{events:?}");
    let kinds: Vec<&str> = put_events.iter().map(|(kind, _)| *kind).collect();
    assert_eq!((kinds.first(), kinds.last()), (Some(&"policy_set"), Some(&"ratelimits_set")), "{kinds:?}");
    assert!(put_events.iter().all(|(_, rid)| *rid == put_events[0].1), "one request's events: {events:?}");
    let view: Value = api.admin("GET", "/v1/workspaces/acme/policy", None).await.body;
    assert_eq!(view["ratelimits"], put.body["ratelimits"]);
}

/// Limits on an admin key, or a `_ledger` default, are refused by the ledger as the whole
/// request: 400 naming `ratelimits`, and neither the rename nor the policy beside them is
/// applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_in_ledger_are_refused_with_everything_beside_them() {
    let api = support::api(ServerConfig::default());
    let reader = api.admin("POST", "/v1/workspaces/_ledger/keys", Some(json!({"name": "reader"}))).await;
    let reader_id = created_id(&reader);
    let limits = json!([{"name": "api", "limit": 5, "duration": "1m"}]);
    let before = api.engine.log().len();
    let refusals = [
        ("PATCH", format!("/v1/keys/{reader_id}"), json!({"name": "renamed", "ratelimits": limits})),
        (
            "PUT",
            "/v1/workspaces/_ledger/policy".to_owned(),
            json!({"require_expiry": true, "ratelimits": limits}),
        ),
    ];
    for (method, path, body) in refusals {
        let refused = api.admin(method, &path, Some(body)).await;
        refused.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(refused.body["message"], "`ratelimits` admin keys (`_ledger`) are never rate-limited");
        assert_eq!(api.engine.log().len(), before, "{method} {path}: nothing appended");
    }
    assert_eq!(api.admin("GET", &format!("/v1/keys/{reader_id}"), None).await.body["name"], "reader");
    assert_eq!(api.admin("GET", "/v1/workspaces/_ledger/policy", None).await.body["require_expiry"], false);
}
