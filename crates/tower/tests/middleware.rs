//! The middleware against a fake keyledger on loopback: what it sends, what it answers, and
//! that it fails closed.

mod support;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use keyledger_tower::{Environment, KeyledgerClient, KeyledgerLayer, Timestamp, VerifiedKey, WorkspaceId};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

#[tokio::test]
async fn a_valid_key_reaches_the_handler_with_its_identity_and_the_request_context() {
    let env = env().await;
    let request = Request::get("/reports?secret_query=1")
        .header("x-api-key", GOOD)
        .header("user-agent", "report-bot/1.0")
        .header("x-request-id", "gw-123")
        .body(axum::body::Body::empty())
        .unwrap();
    let answer = send(&env.app, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["key_id"], env.fake.key_id().to_string());
    assert_eq!(answer.body["workspace"], "acme");
    assert_eq!(answer.body["scopes"], json!(["reports:read", "reports:write"]));
    assert_eq!(env.seen.calls.load(Ordering::SeqCst), 1);

    let seen = env.fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0],
        json!({
            "key": GOOD,
            "scopes": ["reports:read"],
            "context": {"method": "GET", "path": "/reports", "user_agent": "report-bot/1.0", "request_id": "gw-123"},
        }),
        "no query, no address (no ConnectInfo in-process)"
    );

    // The key's header is gone before the handler runs.
    let handler_saw = env.seen.headers.lock().unwrap().join("\n");
    assert!(!handler_saw.contains("x-api-key") && !handler_saw.contains(GOOD), "{handler_saw}");
    assert!(handler_saw.contains("report-bot/1.0"), "other headers are kept: {handler_saw}");
}

#[tokio::test]
async fn each_method_of_a_route_sends_its_own_scopes() {
    let env = env().await;
    let post = Request::post("/reports")
        .header("authorization", format!("Api-Key {GOOD}"))
        .body(axum::body::Body::from("{}"))
        .unwrap();
    assert_eq!(send(&env.app, post).await.status, StatusCode::OK);
    assert_eq!(send(&env.app, get_with("/reports", GOOD)).await.status, StatusCode::OK);
    let seen = env.fake.seen();
    assert_eq!(seen[0]["scopes"], json!(["reports:write"]));
    assert_eq!(seen[0]["context"]["method"], "POST");
    assert_eq!(seen[1]["scopes"], json!(["reports:read"]));
}

#[tokio::test]
async fn resource_environment_workspace_and_the_client_address_are_sent() {
    let fake = Arc::new(Fake::default());
    let url = start_fake(fake.clone()).await;
    let seen = Arc::new(Seen::default());
    let auth = KeyledgerLayer::new(KeyledgerClient::new(&url).unwrap())
        .resource("reports-db")
        .environment(Environment::Test)
        .workspace("acme".parse::<WorkspaceId>().unwrap());
    let app = service(auth.clone(), seen.clone());

    // Default: axum's ConnectInfo.
    let mut request = get_with("/reports", GOOD);
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([203, 0, 113, 7], 4711))));
    assert_eq!(send(&app, request).await.status, StatusCode::OK);

    // A resolver of the service's own.
    let from_header = auth.client_ip_from(|headers, _| {
        headers.get("x-client-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<IpAddr>().ok())
    });
    let app = service(from_header, seen);
    let mut request = get_with("/reports", GOOD);
    request.headers_mut().insert("x-client-ip", "2001:db8::5".parse().unwrap());
    assert_eq!(send(&app, request).await.status, StatusCode::OK);

    let seen = fake.seen();
    for body in &seen {
        assert_eq!(body["resource"], "reports-db");
        assert_eq!(body["environment"], "test");
        assert_eq!(body["workspace"], "acme");
    }
    assert_eq!(seen[0]["context"]["ip"], "203.0.113.7");
    assert_eq!(seen[1]["context"]["ip"], "2001:db8::5");
}

#[tokio::test]
async fn the_verified_key_carries_everything_the_verify_answer_gives() {
    let fake = Arc::new(Fake::default());
    let url = start_fake(fake.clone()).await;
    let captured = Arc::new(Mutex::new(None));
    let sink = captured.clone();
    let app = Router::new().route(
        "/",
        get(move |Extension(key): Extension<VerifiedKey>| async move {
            *sink.lock().unwrap() = Some(key);
        })
        .route_layer(KeyledgerLayer::new(KeyledgerClient::new(&url).unwrap())),
    );
    assert_eq!(send(&app, get_with("/", GOOD)).await.status, StatusCode::OK);
    let key = captured.lock().unwrap().clone().expect("the handler ran");
    assert_eq!(key.key_id, fake.key_id());
    assert_eq!(key.workspace.as_str(), "acme");
    assert_eq!(key.environment, Environment::Live);
    assert!(key.has_scope("reports:write") && !key.has_scope("reports"));
    assert_eq!(key.owner.as_deref(), Some("team-a"));
    assert_eq!(key.expires_at, Timestamp::parse_rfc3339("2030-01-02T03:04:05Z"));
    assert!(key.request_id.to_string().starts_with("req_"));
    assert_eq!(fake.seen()[0]["scopes"], json!([]), "no scope required");
}

#[tokio::test]
async fn denials_answer_keyledgers_status_and_body_and_skip_the_handler() {
    let env = env().await;
    env.fake.revoked.store(true, Ordering::SeqCst);
    for (key, status, code) in [
        (REVOKABLE, StatusCode::UNAUTHORIZED, "invalid_api_key"),
        ("kl_live_unknown", StatusCode::UNAUTHORIZED, "unauthorized"),
        (NO_SCOPE, StatusCode::FORBIDDEN, "forbidden"),
        (THROTTLED, StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
    ] {
        let answer = send(&env.app, get_with("/reports", key)).await;
        assert_error_shape(&answer, status, code);
        assert_eq!(answer.body["valid"], false, "keyledger's body, as it is: {}", answer.body);
        assert!(answer.body["reason"].is_string(), "keyledger's body, as it is: {}", answer.body);
    }
    let throttled = send(&env.app, get_with("/reports", THROTTLED)).await;
    assert_eq!(throttled.headers["retry-after"], "7");
    assert_eq!(env.seen.calls.load(Ordering::SeqCst), 0, "the handler never ran");
}

#[tokio::test]
async fn a_missing_key_is_refused_without_asking_keyledger() {
    let env = env().await;
    for request in [
        Request::get("/reports").body(axum::body::Body::empty()).unwrap(),
        Request::get("/reports")
            .header("authorization", "Basic dTpw")
            .body(axum::body::Body::empty())
            .unwrap(),
        Request::get("/reports").header("x-api-key", "").body(axum::body::Body::empty()).unwrap(),
    ] {
        let answer = send(&env.app, request).await;
        assert_error_shape(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(answer.body["valid"], false);
    }
    assert!(env.fake.seen().is_empty());
    assert_eq!(env.seen.calls.load(Ordering::SeqCst), 0);
    // An open route needs nothing.
    let health = send(&env.app, Request::get("/healthz").body(axum::body::Body::empty()).unwrap()).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn every_request_is_verified_so_a_revocation_holds_on_the_next_one() {
    let env = env().await;
    for _ in 0..3 {
        assert_eq!(send(&env.app, get_with("/reports", REVOKABLE)).await.status, StatusCode::OK);
    }
    env.fake.revoked.store(true, Ordering::SeqCst);
    let answer = send(&env.app, get_with("/reports", REVOKABLE)).await;
    assert_error_shape(&answer, StatusCode::UNAUTHORIZED, "invalid_api_key");
    assert_eq!(env.fake.seen().len(), 4, "one verification per request");
    assert_eq!(env.seen.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn keyledger_down_answers_503_and_never_calls_the_handler() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let client = KeyledgerClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let app = service(KeyledgerLayer::new(client), seen.clone());
    let answer = send(&app, get_with("/reports", GOOD)).await;
    assert_error_shape(&answer, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_slow_keyledger_times_out_into_503() {
    let env =
        env_with(|url| KeyledgerClient::builder(&url).timeout(Duration::from_millis(300)).build().unwrap())
            .await;
    let started = Instant::now();
    let answer = send(&env.app, get_with("/reports", SLOW)).await;
    let took = started.elapsed();
    assert_error_shape(&answer, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(env.seen.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_5xx_an_unexpected_status_or_a_garbled_answer_is_503() {
    let env = env().await;
    for key in [FIVE_HUNDRED, BAD_REQUEST, GARBAGE] {
        let answer = send(&env.app, get_with("/reports", key)).await;
        assert_error_shape(&answer, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    assert_eq!(env.seen.calls.load(Ordering::SeqCst), 0);
}
