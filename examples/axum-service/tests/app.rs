//! The example's router in-process: the open route needs no keyledger, the protected ones
//! never answer without one. (The whole flow against the real keyledger is
//! `tests/middleware.rs` in the keyledger-e2e package.)

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use keyledger_example_axum::{Config, app};
use keyledger_tower::KeyledgerClient;
use serde_json::Value;
use tower::ServiceExt;

fn router_without_keyledger() -> axum::Router {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    app(Config { keyledger: KeyledgerClient::new(&format!("http://127.0.0.1:{port}")).unwrap() })
}

async fn call(method: &str, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = router_without_keyledger().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn healthz_is_open() {
    let (status, body) = call("GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn protected_routes_refuse_without_a_key_and_fail_closed_without_keyledger() {
    for method in ["GET", "POST"] {
        let (status, body) = call(method, "/reports", None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{method}"
        );
        let (status, body) = call(method, "/reports", Some("kl_live_anything")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")),
            "{method}"
        );
    }
    let (status, _) = call("DELETE", "/reports", Some("kl_live_anything")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
