//! `GET /v1/log/entries/{seq}`: an event's stored bytes and leaf hash, which with the
//! checkpoint and `GET /v1/log/proofs/inclusion` prove the event offline; only to an admin
//! key over all workspaces holding `ledger:audit:read`; bad input is a clear error.

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use keyledger_ledger::{Engine, EngineOptions};
use keyledger_server::{AppState, ServerConfig, router};
use keyledger_verify::merkle::{Hash, TreeHash, verify_inclusion};
use keyledger_verify::note::open_checkpoint;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request =
        Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {key}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(body.map_or(Body::empty(), |b| Body::from(b.to_string()))).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn hash(hex_text: &Value) -> Hash {
    hex::decode(hex_text.as_str().unwrap()).unwrap().try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_is_the_stored_event_and_proves_into_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let init = {
        let path = path.clone();
        std::thread::spawn(move || Engine::init(&path, EngineOptions::default()).unwrap()).join().unwrap()
    };
    let engine = Arc::new(Engine::open(&path, EngineOptions::default()).unwrap());
    let app = router(AppState::new(engine.clone(), ServerConfig::default()))
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
    let admin = init.admin_key.expose().to_owned();
    let (status, created) = call(
        &app,
        "POST",
        "/v1/workspaces/acme/keys",
        &admin,
        Some(json!({"name": "svc", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    engine.checkpoint_now().await.unwrap();
    let (_, checkpoint) = call(&app, "GET", "/v1/log/checkpoint", &admin, None).await;
    let size = checkpoint["size"].as_u64().unwrap();
    assert!(size >= 2);

    for seq in 0..size {
        let (status, entry) = call(&app, "GET", &format!("/v1/log/entries/{seq}"), &admin, None).await;
        assert_eq!(status, StatusCode::OK, "{entry}");
        assert_eq!(entry["seq"], seq);
        let raw = base64::engine::general_purpose::STANDARD.decode(entry["raw"].as_str().unwrap()).unwrap();
        assert_eq!(raw, engine.log().raw(seq).unwrap());
        assert_eq!(keyledger_core::decode_event(&raw).unwrap().seq, seq);
        assert_eq!(hash(&entry["leaf_hash"]), TreeHash::Rfc6962.leaf(&raw));
        let (_, proof) =
            call(&app, "GET", &format!("/v1/log/proofs/inclusion?seq={seq}&size={size}"), &admin, None).await;
        let proof: Vec<Hash> = proof["hashes"].as_array().unwrap().iter().map(hash).collect();
        let signed = open_checkpoint(checkpoint["note"].as_str().unwrap(), engine.public_key()).unwrap();
        verify_inclusion(TreeHash::Rfc6962, seq, size, &TreeHash::Rfc6962.leaf(&raw), &proof, &signed.root)
            .unwrap();
    }

    // Bad input: a clear error body, nothing else.
    let (status, body) = call(&app, "GET", "/v1/log/entries/-1", &admin, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("seq"), "{body}");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"), "{body}");
    let (status, body) = call(&app, "GET", "/v1/log/entries/18446744073709551616", &admin, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call(&app, "GET", "/v1/log/entries/100000", &admin, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "not_found");

    // Only an admin key over all workspaces holding ledger:audit:read.
    let limited = json!({"name": "acme auditor", "scopes": ["ledger:audit:read"], "resources": ["acme"]});
    let (status, limited) = call(&app, "POST", "/v1/workspaces/_ledger/keys", &admin, Some(limited)).await;
    assert_eq!(status, StatusCode::CREATED, "{limited}");
    let (status, body) =
        call(&app, "GET", "/v1/log/entries/0", limited["secret"].as_str().unwrap(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let writer = json!({"name": "writer", "scopes": ["ledger:keys:write"]});
    let (status, writer) = call(&app, "POST", "/v1/workspaces/_ledger/keys", &admin, Some(writer)).await;
    assert_eq!(status, StatusCode::CREATED, "{writer}");
    let (status, body) =
        call(&app, "GET", "/v1/log/entries/0", writer["secret"].as_str().unwrap(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = call(&app, "GET", "/v1/log/entries/0", "nope", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
