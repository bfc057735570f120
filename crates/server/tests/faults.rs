//! Storage faults through the HTTP API, in-process (docs/security.md, "Storage faults"): the
//! engine runs over [`FaultyStorage`]; once writes, fsyncs or the disk fail, every call that
//! must append answers 503 `unavailable` in the error shape of docs/api.md, verify included
//! (with `"valid": false`: fail closed, no 200 without a recorded use), reads keep answering,
//! and `/healthz` answers 503. After a restart on healthy storage nothing acknowledged is
//! lost.

use axum::http::StatusCode;
use keyledger_ledger::{Engine, EngineOptions};
use keyledger_log::Durability;
use keyledger_log::storage::{Fault, FaultSwitch, FaultyStorage};
use keyledger_server::ServerConfig;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{Answer, Api, DataDir};

/// Opens the data dir with `options`, served with the default configuration.
fn open(ledger: &DataDir, options: EngineOptions) -> Api {
    support::open(ledger, options, ServerConfig::default())
}

impl Api {
    async fn call(&self, method: &str, uri: &str, auth: Option<&str>, body: Option<Value>) -> Answer {
        self.call_as(auth, method, uri, body).await
    }
}

/// The error shape of docs/api.md with `code`, the body's request id equal to the header's.
fn assert_error(answer: &Answer, status: StatusCode, code: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.dump());
    let body = &answer.body;
    assert_eq!(body["error"], code, "{what}: {}", answer.dump());
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {}", answer.dump());
    let request_id = body["request_id"].as_str().unwrap_or_default();
    assert!(request_id.starts_with("req_"), "{what}: {}", answer.dump());
    assert_eq!(
        answer.headers.get("request-id").and_then(|v| v.to_str().ok()),
        Some(request_id),
        "{what}: the body's request_id is the header's"
    );
    for field in body.as_object().unwrap().keys() {
        assert!(
            ["error", "message", "request_id", "valid", "reason"].contains(&field.as_str()),
            "{what}: unexpected field `{field}`: {}",
            answer.dump()
        );
    }
}

/// A refused verification: 503 `unavailable` and `"valid": false`.
fn assert_verify_unavailable(answer: &Answer, what: &str) {
    assert_error(answer, StatusCode::SERVICE_UNAVAILABLE, "unavailable", what);
    assert_eq!(answer.body["valid"], false, "{what}: {}", answer.dump());
}

async fn wait_unhealthy(engine: &Engine, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.is_healthy() {
        assert!(Instant::now() < deadline, "{what}: still healthy 5 s after a failed fsync");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn fault_case(fault: Fault, durability: Durability) {
    let what = format!("{fault:?}/{durability:?}");
    let ledger = support::init();
    let admin = ledger.admin.as_str();
    let switch = FaultSwitch::new();
    let options = EngineOptions {
        usage_durability: durability,
        storage: Arc::new(FaultyStorage::with_switch(switch.clone())),
        ..EngineOptions::default()
    };
    let api = open(&ledger, options);

    // Acknowledged before the fault.
    let created = api
        .call("POST", "/v1/workspaces/acme/keys", Some(admin), Some(json!({"name": "a", "scopes": ["read"]})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{what}: {}", created.dump());
    let key_id = created.body["key_id"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let other = api.call("POST", "/v1/workspaces/acme/keys", Some(admin), Some(json!({"name": "b"}))).await;
    assert_eq!(other.status, StatusCode::CREATED, "{what}: {}", other.dump());
    let other_id = other.body["key_id"].as_str().unwrap().to_owned();
    let verified =
        api.call("POST", "/v1/verify", None, Some(json!({"key": secret, "scopes": ["read"]}))).await;
    assert_eq!(verified.status, StatusCode::OK, "{what}: {}", verified.dump());
    let health = api.call("GET", "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK, "{what}: {}", health.dump());

    fault.switch_on(&switch);

    if fault == Fault::FailSync && durability == Durability::Written {
        // Batched verify answers once its use is written, before the fsync
        // (docs/operations.md, "Durability"): a lifecycle call meets the failing fsync first.
        let create =
            api.call("POST", "/v1/workspaces/acme/keys", Some(admin), Some(json!({"name": "c"}))).await;
        assert_error(&create, StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{what}: create"));
        wait_unhealthy(&api.engine, &what).await;
    }
    // Verify of a valid key: 503 in JSON mode and in forward-auth mode.
    let refused =
        api.call("POST", "/v1/verify", None, Some(json!({"key": secret, "scopes": ["read"]}))).await;
    assert_verify_unavailable(&refused, &format!("{what}: POST /v1/verify"));
    let forward = api.call("GET", "/v1/verify?scope=read", Some(&secret), None).await;
    assert_verify_unavailable(&forward, &format!("{what}: GET /v1/verify"));
    let forward = api.call("POST", "/v1/verify/some/path", Some(&secret), None).await;
    assert_verify_unavailable(&forward, &format!("{what}: POST /v1/verify/some/path"));
    // An unknown key needs no append: still 401.
    let unknown = api.call("POST", "/v1/verify", None, Some(json!({"key": "kl_live_nope"}))).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED, "{what}: {}", unknown.dump());
    assert_eq!(unknown.body["valid"], false);

    // Lifecycle calls: 503.
    let create = api.call("POST", "/v1/workspaces/acme/keys", Some(admin), Some(json!({"name": "d"}))).await;
    assert_error(&create, StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{what}: create"));
    let revoke = api.call("POST", &format!("/v1/keys/{other_id}/revoke"), Some(admin), Some(json!({}))).await;
    assert_error(&revoke, StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{what}: revoke"));
    let rotate = api
        .call("POST", &format!("/v1/keys/{other_id}/rotate"), Some(admin), Some(json!({"overlap": "0s"})))
        .await;
    assert_error(&rotate, StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{what}: rotate"));

    // Reads keep answering.
    let shown = api.call("GET", &format!("/v1/keys/{key_id}"), Some(admin), None).await;
    assert_eq!(shown.status, StatusCode::OK, "{what}: GET /v1/keys/{{id}}: {}", shown.dump());
    assert_eq!(shown.body["status"], "active", "{what}: {}", shown.dump());
    let shown = api.call("GET", &format!("/v1/keys/{other_id}"), Some(admin), None).await;
    assert_eq!(shown.status, StatusCode::OK, "{what}: {}", shown.dump());
    let listed = api.call("GET", "/v1/workspaces/acme/keys", Some(admin), None).await;
    assert_eq!(listed.status, StatusCode::OK, "{what}: {}", listed.dump());
    let health = api.call("GET", "/healthz", None, None).await;
    assert_error(&health, StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{what}: /healthz"));

    // Restart on healthy storage: what was acknowledged is there; it works again.
    api.engine.shutdown().await;
    drop(api);
    switch.clear();
    let api = open(&ledger, EngineOptions::default());
    let health = api.call("GET", "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK, "{what}: {}", health.dump());
    let shown = api.call("GET", &format!("/v1/keys/{key_id}"), Some(admin), None).await;
    assert_eq!(shown.status, StatusCode::OK, "{what}: {}", shown.dump());
    assert!(
        shown.body["use_count"].as_u64().is_some_and(|n| n >= 1),
        "{what}: the acknowledged use: {}",
        shown.dump()
    );
    let shown = api.call("GET", &format!("/v1/keys/{other_id}"), Some(admin), None).await;
    assert_eq!(shown.body["status"], "active", "{what}: the refused revoke: {}", shown.dump());
    let verified =
        api.call("POST", "/v1/verify", None, Some(json!({"key": secret, "scopes": ["read"]}))).await;
    assert_eq!(verified.status, StatusCode::OK, "{what}: {}", verified.dump());
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_answer_503_and_reads_keep_working() {
    fault_case(Fault::FailWrites, Durability::Written).await;
    fault_case(Fault::FailWrites, Durability::Synced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_answers_503_and_reads_keep_working() {
    fault_case(Fault::FailSync, Durability::Synced).await;
    fault_case(Fault::FailSync, Durability::Written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_writes_answer_503_and_reads_keep_working() {
    fault_case(Fault::ShortWrite, Durability::Written).await;
    fault_case(Fault::ShortWrite, Durability::Synced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_reads_keep_working() {
    fault_case(Fault::DiskFills, Durability::Written).await;
    fault_case(Fault::DiskFills, Durability::Synced).await;
}

/// docs/operations.md, "Failure behaviour": keyledger recovers by itself when the disk does. While
/// the disk refuses writes, every append answers 503 and `/healthz` 503; once it takes writes again
/// the writer reopens the log from disk (no restart), `/healthz` answers 200 and appends succeed;
/// everything acknowledged before is still there, refused calls left no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_by_itself_when_space_returns() {
    for fault in Fault::ALL {
        recovers_from(fault).await;
    }
}

async fn recovers_from(fault: Fault) {
    let what = format!("{fault:?}");
    let ledger = support::init();
    let admin = ledger.admin.as_str();
    let switch = FaultSwitch::new();
    let options = EngineOptions {
        storage: Arc::new(FaultyStorage::with_switch(switch.clone())),
        ..EngineOptions::default()
    };
    let api = open(&ledger, options);
    let created = api
        .call("POST", "/v1/workspaces/acme/keys", Some(admin), Some(json!({"name": "a", "scopes": ["read"]})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{what}: {}", created.dump());
    let key_id = created.body["key_id"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let verified =
        api.call("POST", "/v1/verify", None, Some(json!({"key": secret, "scopes": ["read"]}))).await;
    assert_eq!(verified.status, StatusCode::OK, "{what}: {}", verified.dump());
    // A batched use is fsynced within the 10 ms sync window; one answered within that
    // window before a failed fsync is lost (documented, like a power cut): let it sync.
    tokio::time::sleep(Duration::from_millis(100)).await;

    fault.switch_on(&switch);
    let create =
        api.call("POST", "/v1/workspaces/acme/keys", Some(admin), Some(json!({"name": "lost"}))).await;
    assert_error(&create, StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{what}: create"));
    wait_unhealthy(&api.engine, &what).await;
    // Still failing: the background recovery attempts fail too, and nothing is let through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = api.call("GET", "/healthz", None, None).await;
    assert_error(&health, StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{what}: /healthz"));
    let refused =
        api.call("POST", "/v1/verify", None, Some(json!({"key": secret, "scopes": ["read"]}))).await;
    assert_verify_unavailable(&refused, &format!("{what}: verify while failing"));
    let revoke = api.call("POST", &format!("/v1/keys/{key_id}/revoke"), Some(admin), Some(json!({}))).await;
    assert_error(&revoke, StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{what}: revoke"));
    let shown = api.call("GET", &format!("/v1/keys/{key_id}"), Some(admin), None).await;
    assert_eq!(shown.status, StatusCode::OK, "{what}: reads keep working: {}", shown.dump());

    // Space returns: no restart.
    switch.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let create = api
            .call(
                "POST",
                "/v1/workspaces/acme/keys",
                Some(admin),
                Some(json!({"name": "b", "scopes": ["read"]})),
            )
            .await;
        if create.status == StatusCode::CREATED {
            break create;
        }
        assert_error(&create, StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{what}: create"));
        assert!(Instant::now() < deadline, "{what}: still {} 10 s after space returned", create.dump());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(api.call("GET", "/healthz", None, None).await.status, StatusCode::OK, "{what}");
    let new_secret = after.body["secret"].as_str().unwrap().to_owned();
    let verified =
        api.call("POST", "/v1/verify", None, Some(json!({"key": new_secret, "scopes": ["read"]}))).await;
    assert_eq!(verified.status, StatusCode::OK, "{what}: {}", verified.dump());
    let shown = api.call("GET", &format!("/v1/keys/{key_id}"), Some(admin), None).await;
    assert_eq!(shown.body["status"], "active", "{what}: the refused revoke left no trace: {}", shown.dump());
    assert!(
        shown.body["use_count"].as_u64().is_some_and(|n| n >= 1),
        "{what}: the acknowledged use: {}",
        shown.dump()
    );
    let listed = api.call("GET", "/v1/workspaces/acme/keys", Some(admin), None).await;
    let names: Vec<&str> = listed.body["keys"]
        .as_array()
        .map_or(Vec::new(), |keys| keys.iter().filter_map(|k| k["name"].as_str()).collect());
    assert!(!names.contains(&"lost"), "{what}: the refused create left no trace: {names:?}");
    assert!(names.contains(&"a") && names.contains(&"b"), "{what}: {names:?}");
    api.engine.shutdown().await;
    drop(api);

    // After a restart on real storage: the same state, and the log verifies.
    let api = open(&ledger, EngineOptions::default());
    let shown = api.call("GET", &format!("/v1/keys/{key_id}"), Some(admin), None).await;
    assert_eq!(shown.body["status"], "active", "{what}: {}", shown.dump());
    let listed = api.call("GET", "/v1/workspaces/acme/keys", Some(admin), None).await;
    assert_eq!(listed.body["keys"].as_array().map(Vec::len), Some(2), "{what}: {}", listed.dump());
    let verifier = api.engine.public_key().clone();
    api.engine.shutdown().await;
    drop(api);
    let log_dir = ledger.path.join(keyledger_ledger::datadir::LOG_DIR);
    keyledger_log::verify::verify_log(
        keyledger_log::storage::OsStorage::shared(),
        &log_dir,
        &verifier,
        keyledger_verify::merkle::TreeHash::Rfc6962,
        &mut |_, _| {},
    )
    .unwrap_or_else(|e| panic!("{what}: log verify after the recovery: {e}"));
}

/// A create whose fsync outlasts the request timeout answers 408, but the writer still
/// carries it out. A retry under the same `Idempotency-Key` then learns that it was done
/// (409 naming the key it produced), rather than "still being processed" for a day, and
/// no second key is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_idempotent_create_is_answered_as_done_on_retry() {
    let ledger = support::init();
    let switch = FaultSwitch::new();
    let options = EngineOptions {
        storage: Arc::new(FaultyStorage::with_switch(switch.clone())),
        ..EngineOptions::default()
    };
    let config = keyledger_server::ServerConfig {
        request_timeout: Duration::from_millis(200),
        ..keyledger_server::ServerConfig::default()
    };
    let api = support::open(&ledger, options, config);
    let body = Some(json!({"name": "slow"}).to_string());
    let create = || {
        let headers = [("idempotency-key", "create-slow-1")];
        support::request("POST", "/v1/workspaces/acme/keys", Some(&api.admin), &headers, body.clone())
    };
    switch.set_sync_delay(Duration::from_millis(800));
    let first = api.send(create()).await;
    assert_eq!(first.status, StatusCode::REQUEST_TIMEOUT, "{}", first.dump());
    switch.set_sync_delay(Duration::ZERO);
    // The writer finishes the create meanwhile (a retry during its fsync times out too).
    let deadline = Instant::now() + Duration::from_secs(5);
    let retry = loop {
        let retry = api.send(create()).await;
        if retry.status != StatusCode::REQUEST_TIMEOUT || Instant::now() > deadline {
            break retry;
        }
    };
    let listed = api.admin("GET", "/v1/workspaces/acme/keys", None).await.body["keys"].clone();
    let listed = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "the timed-out create was carried out");
    assert_eq!(retry.status, StatusCode::CONFLICT, "{}", retry.dump());
    assert_eq!(retry.body["key_ids"], json!([listed[0]["key_id"]]), "{}", retry.dump());
    let list = api.admin("GET", "/v1/workspaces/acme/keys", None).await;
    assert_eq!(list.body["keys"].as_array().map(Vec::len), Some(1), "no second key");
}
