//! Shared by the middleware's test files: a fake keyledger on loopback and a small service
//! protected by the layer.
#![allow(dead_code)] // each test file uses a part

use axum::extract::State;
use axum::handler::Handler;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use keyledger_tower::{KeyId, KeyledgerClient, KeyledgerLayer, RequestId, Timestamp, VerifiedKey};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

pub const GOOD: &str = "kl_live_GoodKeyGoodKeyGoodKeyGoodKeyGoodKeyGoo123456";
pub const REVOKABLE: &str = "kl_live_RevokableRevokableRevokableRevokableRe123456";
pub const NO_SCOPE: &str = "kl_live_NoScopeNoScopeNoScopeNoScopeNoScopeNoS123456";
pub const THROTTLED: &str = "kl_live_ThrottledThrottledThrottledThrottledThr123456";
pub const SLOW: &str = "kl_live_SlowSlowSlowSlowSlowSlowSlowSlowSlowSlo123456";
pub const FIVE_HUNDRED: &str = "kl_live_FiveHundredFiveHundredFiveHundredFiveH123456";
pub const GARBAGE: &str = "kl_live_GarbageGarbageGarbageGarbageGarbageGar123456";
pub const BAD_REQUEST: &str = "kl_live_BadRequestBadRequestBadRequestBadReque123456";

/// A stand-in for keyledger's `POST /v1/verify`: the key decides the answer, and every
/// body it receives is kept.
#[derive(Default)]
pub struct Fake {
    pub seen: Mutex<Vec<Value>>,
    pub revoked: AtomicBool,
    key_id: Mutex<Option<KeyId>>,
}

impl Fake {
    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
    pub fn key_id(&self) -> KeyId {
        *self.key_id.lock().unwrap().get_or_insert_with(|| KeyId::generate(Timestamp::now().millis()))
    }
}

pub fn denial(status: StatusCode, code: &str, reason: &str) -> Response {
    let request_id = RequestId::generate(Timestamp::now().millis()).to_string();
    let body = json!({"error": code, "message": format!("denied: {reason}"), "request_id": request_id, "valid": false, "reason": reason});
    (status, [("request-id", request_id)], Json(body)).into_response()
}

pub async fn fake_verify(State(fake): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    fake.seen.lock().unwrap().push(body.clone());
    let key = body["key"].as_str().unwrap_or_default();
    match key {
        GOOD | REVOKABLE if !(key == REVOKABLE && fake.revoked.load(Ordering::SeqCst)) => Json(json!({
            "valid": true,
            "key_id": fake.key_id().to_string(),
            "workspace": "acme",
            "environment": "live",
            "scopes": ["reports:read", "reports:write"],
            "owner": "team-a",
            "expires_at": "2030-01-02T03:04:05.000000Z",
            "request_id": RequestId::generate(Timestamp::now().millis()).to_string(),
        }))
        .into_response(),
        REVOKABLE => denial(StatusCode::UNAUTHORIZED, "invalid_api_key", "revoked"),
        NO_SCOPE => denial(StatusCode::FORBIDDEN, "forbidden", "scope"),
        THROTTLED => {
            let mut response = denial(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "throttled");
            response.headers_mut().insert("retry-after", "7".parse().unwrap());
            response
        }
        SLOW => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Json(json!({"valid": true})).into_response()
        }
        FIVE_HUNDRED => denial(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "log"),
        GARBAGE => (StatusCode::OK, "<html>not keyledger</html>").into_response(),
        BAD_REQUEST => denial(StatusCode::BAD_REQUEST, "invalid_request", "field"),
        _ => denial(StatusCode::UNAUTHORIZED, "unauthorized", "unknown"),
    }
}

/// Starts the fake keyledger on a loopback port; returns its URL.
pub async fn start_fake(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/verify", post(fake_verify)).with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// What the protected handler saw.
#[derive(Default)]
pub struct Seen {
    pub calls: AtomicUsize,
    pub headers: Mutex<Vec<String>>,
}

pub async fn handler(
    State(seen): State<Arc<Seen>>,
    Extension(key): Extension<VerifiedKey>,
    headers: HeaderMap,
) -> Json<Value> {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    seen.headers.lock().unwrap().push(format!("{headers:?} {key:?}"));
    Json(json!({"key_id": key.key_id, "workspace": key.workspace, "scopes": key.scopes}))
}

/// A service with `GET /reports` (reports:read) and `POST /reports` (reports:write).
pub fn service(auth: KeyledgerLayer, seen: Arc<Seen>) -> Router {
    Router::new()
        .route(
            "/reports",
            get(handler.layer(auth.clone().require_scopes(["reports:read"])))
                .post(handler.layer(auth.require_scopes(["reports:write"]))),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(seen)
}

pub struct Env {
    pub fake: Arc<Fake>,
    pub seen: Arc<Seen>,
    pub app: Router,
}

pub async fn env_with(url_of: impl FnOnce(String) -> KeyledgerClient) -> Env {
    let fake = Arc::new(Fake::default());
    let url = start_fake(fake.clone()).await;
    let seen = Arc::new(Seen::default());
    let app = service(KeyledgerLayer::new(url_of(url)), seen.clone());
    Env { fake, seen, app }
}

pub async fn env() -> Env {
    env_with(|url| KeyledgerClient::new(&url).unwrap()).await
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

pub async fn send(app: &Router, request: Request<axum::body::Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, headers, body }
}

pub fn get_with(path: &str, key: &str) -> Request<axum::body::Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(axum::body::Body::empty())
        .unwrap()
}

pub fn assert_error_shape(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["error"], code, "{}", answer.body);
    assert!(answer.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", answer.body);
    let request_id = answer.body["request_id"].as_str().expect("request_id");
    assert!(request_id.starts_with("req_"), "{request_id}");
    assert_eq!(answer.headers["request-id"], request_id, "the header is the body's request id");
    assert_eq!(answer.headers["content-type"], "application/json");
}
