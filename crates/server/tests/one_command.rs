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
use serde_json::json;
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
