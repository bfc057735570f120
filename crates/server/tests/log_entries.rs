//! `GET /v1/log/entries/{seq}`: an event's stored bytes and leaf hash, which with the
//! checkpoint and `GET /v1/log/proofs/inclusion` prove the event offline; only to an admin
//! key over all workspaces holding `ledger:audit:read`; bad input is a clear error.

use axum::http::StatusCode;
use base64::Engine as _;
use keyledger_server::ServerConfig;
use keyledger_verify::merkle::{Hash, TreeHash, verify_inclusion};
use keyledger_verify::note::open_checkpoint;
use serde_json::{Value, json};

mod support;

/// `method uri` as `key`, with an optional JSON body: the status and the parsed body.
async fn call(
    api: &support::Api,
    method: &str,
    uri: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let answer = api.call_as(Some(key), method, uri, body).await;
    (answer.status, answer.body)
}

fn hash(hex_text: &Value) -> Hash {
    hex::decode(hex_text.as_str().unwrap()).unwrap().try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_is_the_stored_event_and_proves_into_the_checkpoint() {
    let api = support::api(ServerConfig::default());
    let (engine, admin) = (&api.engine, api.admin.clone());
    let (status, created) = call(
        &api,
        "POST",
        "/v1/workspaces/acme/keys",
        &admin,
        Some(json!({"name": "svc", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    engine.checkpoint_now().await.unwrap();
    let (_, checkpoint) = call(&api, "GET", "/v1/log/checkpoint", &admin, None).await;
    let size = checkpoint["size"].as_u64().unwrap();
    assert!(size >= 2);

    for seq in 0..size {
        let (status, entry) = call(&api, "GET", &format!("/v1/log/entries/{seq}"), &admin, None).await;
        assert_eq!(status, StatusCode::OK, "{entry}");
        assert_eq!(entry["seq"], seq);
        let raw = base64::engine::general_purpose::STANDARD.decode(entry["raw"].as_str().unwrap()).unwrap();
        assert_eq!(raw, engine.log().raw(seq).unwrap());
        assert_eq!(keyledger_core::decode_event(&raw).unwrap().seq, seq);
        assert_eq!(hash(&entry["leaf_hash"]), TreeHash::Rfc6962.leaf(&raw));
        let (_, proof) =
            call(&api, "GET", &format!("/v1/log/proofs/inclusion?seq={seq}&size={size}"), &admin, None).await;
        let proof: Vec<Hash> = proof["hashes"].as_array().unwrap().iter().map(hash).collect();
        let signed = open_checkpoint(checkpoint["note"].as_str().unwrap(), engine.public_key()).unwrap();
        verify_inclusion(TreeHash::Rfc6962, seq, size, &TreeHash::Rfc6962.leaf(&raw), &proof, &signed.root)
            .unwrap();
    }

    // Bad input: a clear error body, nothing else.
    let (status, body) = call(&api, "GET", "/v1/log/entries/-1", &admin, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("seq"), "{body}");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"), "{body}");
    let (status, body) = call(&api, "GET", "/v1/log/entries/18446744073709551616", &admin, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call(&api, "GET", "/v1/log/entries/100000", &admin, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "not_found");

    // Only an admin key over all workspaces holding ledger:audit:read.
    let limited = json!({"name": "acme auditor", "scopes": ["ledger:audit:read"], "resources": ["acme"]});
    let (status, limited) = call(&api, "POST", "/v1/workspaces/_ledger/keys", &admin, Some(limited)).await;
    assert_eq!(status, StatusCode::CREATED, "{limited}");
    let (status, body) =
        call(&api, "GET", "/v1/log/entries/0", limited["secret"].as_str().unwrap(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let writer = json!({"name": "writer", "scopes": ["ledger:keys:write"]});
    let (status, writer) = call(&api, "POST", "/v1/workspaces/_ledger/keys", &admin, Some(writer)).await;
    assert_eq!(status, StatusCode::CREATED, "{writer}");
    let (status, body) =
        call(&api, "GET", "/v1/log/entries/0", writer["secret"].as_str().unwrap(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = call(&api, "GET", "/v1/log/entries/0", "nope", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
