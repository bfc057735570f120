//! `POST /v1/leaks/github` in process: a report signed as GitHub signs is recorded once,
//! anything unsigned or signed by an unknown key records nothing (docs/leaks.md).

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use keyledger_server::leaks::github_keys::GithubKeys;
use keyledger_server::{AppState, ServerConfig, router};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::json;
use std::sync::Arc;

fn signed(body: &str, identifier: &str, signing: &SigningKey) -> Request<Body> {
    let signature: Signature = signing.sign(body.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    Request::builder()
        .method("POST")
        .uri("/v1/leaks/github")
        .header("content-type", "application/json")
        .header("Github-Public-Key-Identifier", identifier)
        .header("Github-Public-Key-Signature", signature)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn a_signed_report_is_recorded_once_and_an_unsigned_one_not_at_all() {
    let api = support::api(ServerConfig::default());
    let signing = SigningKey::from_bytes(&[5; 32].into()).unwrap();
    let stranger = SigningKey::from_bytes(&[6; 32].into()).unwrap();
    let pem = signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let document = json!({"public_keys": [{"key_identifier": "gh1", "key": pem, "is_current": true}]});
    std::fs::write(&path, document.to_string()).unwrap();

    // Not configured: 404.
    let unconfigured = api.send(signed("[]", "gh1", &signing)).await;
    assert_eq!(unconfigured.status, StatusCode::NOT_FOUND, "{}", unconfigured.text);

    let mut state = AppState::new(api.engine.clone(), ServerConfig::default());
    state.github_keys = Some(Arc::new(GithubKeys::load(&path).unwrap()));
    let app = router(state);

    let created = api.admin("POST", "/v1/workspaces/acme/keys", Some(json!({"name": "leaky"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let key_id = created.body["key_id"].as_str().unwrap().to_owned();
    let body = json!([
        {"token": secret, "type": "keyledger_key", "url": "https://github.com/o/r/blob/x", "source": "content"},
        {"token": "ghp_notoursatall", "type": "keyledger_key", "url": "https://github.com/o/r", "source": "content"},
    ])
    .to_string();

    let events = || async {
        let answer = api.admin("GET", &format!("/v1/keys/{key_id}/events"), None).await;
        answer.text.matches("leak_reported").count()
    };
    // A stranger's signature and an unknown identifier: 401, nothing recorded.
    let forged = support::send(&app, signed(&body, "gh1", &stranger)).await;
    forged.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let unknown = support::send(&app, signed(&body, "gh2", &signing)).await;
    unknown.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(events().await, 0);

    let answer = support::send(&app, signed(&body, "gh1", &signing)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body[0]["label"], "true_positive");
    assert_eq!(answer.body[1]["label"], "false_positive");
    assert_eq!(answer.body[0]["token_hash"].as_str().unwrap().len(), 64);
    assert!(!answer.text.contains(&secret));
    assert_eq!(events().await, 1);
    // The same report again: recorded once.
    let replay = support::send(&app, signed(&body, "gh1", &signing)).await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(events().await, 1);
}
