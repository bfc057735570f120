//! The HTTP layer driven in-process: idempotency, metrics, the error model.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use keyledger_ledger::{Engine, EngineOptions};
use keyledger_server::ServerConfig;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

mod support;

use support::{Api, api};

impl Api {
    /// `method uri` with the init admin key, extra `headers` and a raw body.
    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value, String) {
        let answer = self
            .send(support::request(method, uri, Some(&self.admin), headers, body.map(str::to_owned)))
            .await;
        (answer.status, answer.headers, answer.body, answer.text)
    }
}

fn assert_error_shape(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["request_id"].as_str().is_some_and(|r| r.starts_with("req_")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_create_replays_and_never_creates_twice() {
    let api = api(ServerConfig::default());
    let body = r#"{"name": "billing", "scopes": ["read"]}"#;
    let headers = [("idempotency-key", "create-billing-1")];
    let (status, _, first, _) = api.call("POST", "/v1/workspaces/acme/keys", &headers, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, replay_headers, second, _) =
        api.call("POST", "/v1/workspaces/acme/keys", &headers, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replay_headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(first, second, "the replay is the original response");
    let (_, _, list, _) = api.call("GET", "/v1/workspaces/acme/keys", &[], None).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 1, "a retry created a second key");

    let (status, _, conflict, _) =
        api.call("POST", "/v1/workspaces/acme/keys", &headers, Some(r#"{"name": "other"}"#)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error_shape(&conflict, "conflict");

    // A failed request is not remembered: fixing the body under the same key works.
    let bad = [("idempotency-key", "k2")];
    let (status, _, _, _) = api.call("POST", "/v1/workspaces/acme/keys", &bad, Some(r#"{"name": ""}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _, _) = api.call("POST", "/v1/workspaces/acme/keys", &bad, Some(r#"{"name": ""}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Rotation too.
    let key_id = first["key_id"].as_str().unwrap();
    let rotate = format!("/v1/keys/{key_id}/rotate");
    let headers = [("idempotency-key", "rotate-1")];
    let (status, _, rotated, _) = api.call("POST", &rotate, &headers, Some(r#"{"overlap": "1h"}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, again, _) = api.call("POST", &rotate, &headers, Some(r#"{"overlap": "1h"}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(rotated["key"]["key_id"], again["key"]["key_id"]);
    let (_, _, list, _) = api.call("GET", "/v1/workspaces/acme/keys", &[], None).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_verifications_and_show_no_secret() {
    let api = api(ServerConfig::default());
    let (_, _, key, _) =
        api.call("POST", "/v1/workspaces/acme/keys", &[], Some(r#"{"name": "m", "scopes": ["a"]}"#)).await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {secret}");
    for scope in ["a", "b"] {
        let request = Request::builder()
            .uri(format!("/v1/verify?scope={scope}"))
            .header("authorization", &auth)
            .body(Body::empty())
            .unwrap();
        api.app.clone().oneshot(request).await.unwrap();
    }
    let unknown = Request::builder()
        .uri("/v1/verify")
        .header("x-api-key", "kl_live_nothing")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.app.clone().oneshot(unknown).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let (status, _, _, text) = api.call("GET", "/metrics", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        r#"keyledger_verifications_total{outcome="allowed",reason="ok"}"#,
        r#"keyledger_verifications_total{outcome="denied",reason="missing_scope"}"#,
        r#"keyledger_verify_rejected_total{reason="malformed"}"#,
        "keyledger_log_events",
        "keyledger_log_batch_events_bucket",
        r#"route="/v1/workspaces/{ws}/keys""#,
        r#"keyledger_http_requests_total{route="/v1/verify",method="GET",status="200"}"#,
        r#"keyledger_http_requests_total{route="/v1/verify",method="GET",status="401"}"#,
        r#"keyledger_http_request_seconds_count{route="/v1/verify"}"#,
    ] {
        assert!(text.contains(expected), "metrics lack {expected}:\n{text}");
    }
    assert!(!text.contains(&secret) && !text.contains(&api.admin), "a secret in the metrics");
    assert!(!text.contains(&secret[secret.len() - 4..]) || !text.contains("…"), "a hint in the metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_errors_answer_in_the_contract_shape() {
    let api = api(ServerConfig { body_limit: 1024, ..ServerConfig::default() });
    let (status, headers, body, _) = api.call("GET", "/v1/nowhere", &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_shape(&body, "not_found");
    assert!(headers.get("request-id").unwrap().to_str().unwrap().starts_with("req_"));

    let (status, _, body, _) = api.call("DELETE", "/v1/workspaces/acme/keys", &[], None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error_shape(&body, "invalid_request");

    let (status, _, body, _) = api.call("POST", "/v1/workspaces/acme/keys", &[], Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error_shape(&body, "invalid_request");

    let (status, _, body, _) =
        api.call("POST", "/v1/workspaces/acme/keys", &[], Some(r#"{"name": "x", "colour": 1}"#)).await;
    assert!(status.is_client_error());
    assert_error_shape(&body, "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("colour"), "{body}");

    let big = format!(r#"{{"name": "x", "metadata": {{"pad": "{}"}}}}"#, "x".repeat(2000));
    let (status, _, body, _) = api.call("POST", "/v1/workspaces/acme/keys", &[], Some(&big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_shape(&body, "payload_too_large");

    let (status, _, body, _) =
        api.call("POST", "/v1/workspaces/Bad%20Name/keys", &[], Some(r#"{"name": "x"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("workspace"), "{body}");

    // A caller's X-Request-Id is never adopted as keyledger's own.
    let (_, headers, _, _) =
        api.call("GET", "/v1/workspaces/acme/keys", &[("x-request-id", "req_spoofed")], None).await;
    assert_ne!(headers.get("request-id").unwrap(), "req_spoofed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_after_a_restart_creates_nothing() {
    let data = support::init();
    let (path, admin) = (&data.path, &data.admin);
    let serve = |engine: Arc<Engine>| support::app(engine, ServerConfig::default());
    let create = |body: &'static str| {
        Request::builder()
            .method("POST")
            .uri("/v1/workspaces/acme/keys")
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "order-7")
            .body(Body::from(body))
            .unwrap()
    };
    let engine = Arc::new(Engine::open(path, EngineOptions::default()).unwrap());
    let first = serve(engine.clone()).oneshot(create(r#"{"name": "payments"}"#)).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value =
        serde_json::from_slice(&first.into_body().collect().await.unwrap().to_bytes()).unwrap();
    engine.shutdown().await;
    drop(engine);

    let engine = Arc::new(Engine::open(path, EngineOptions::default()).unwrap());
    let app = serve(engine.clone());
    let retry = app.clone().oneshot(create(r#"{"name": "payments"}"#)).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    let retry: Value =
        serde_json::from_slice(&retry.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(retry["error"], "conflict");
    assert_eq!(retry["key_ids"], serde_json::json!([first["key_id"]]), "{retry}");
    assert!(
        !retry.to_string().contains(first["secret"].as_str().unwrap()),
        "a replay after restart showed the secret"
    );
    let other = app.clone().oneshot(create(r#"{"name": "other"}"#)).await.unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT, "same key, different body");
    assert_eq!(engine.keys(&"acme".parse().unwrap(), |_| true).len(), 1, "a retry created a second key");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_takes_too_long_answers_408_in_the_error_shape() {
    let api = api(ServerConfig {
        request_timeout: std::time::Duration::from_millis(100),
        ..ServerConfig::default()
    });
    // A body that trickles in far slower than the timeout allows (a slow-loris upload).
    let slow = futures_util::stream::once(async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(br#"{"name": "late"}"#))
    });
    let request = Request::builder()
        .method("POST")
        .uri("/v1/workspaces/acme/keys")
        .header("authorization", format!("Bearer {}", api.admin))
        .header("content-type", "application/json")
        .body(Body::from_stream(slow))
        .unwrap();
    let started = std::time::Instant::now();
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "the timeout did not fire");
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_error_shape(&body, "invalid_request");
    let (_, _, list, _) = api.call("GET", "/v1/workspaces/acme/keys", &[], None).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 0, "a timed-out create took effect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envoy_suffix_form_keeps_the_original_query_and_takes_requirements_from_headers() {
    let api = api(ServerConfig::default());
    let (_, _, key, _) = api
        .call("POST", "/v1/workspaces/acme/keys", &[], Some(r#"{"name": "svc", "scopes": ["orders:read"]}"#))
        .await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let verify = |uri: &str, required: Option<&str>| {
        let mut request = Request::builder().uri(uri).header("x-api-key", secret.as_str());
        if let Some(scope) = required {
            request = request.header("x-keyledger-require-scope", scope);
        }
        api.app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    // The original request's query string is not keyledger's: no 400, recorded with the path.
    let ok = verify("/v1/verify/api/orders?page=2&scope=admin", Some("orders:read")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let refused = verify("/v1/verify/api/orders", Some("orders:write")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // The plain forward-auth form takes the header too.
    let refused = verify("/v1/verify", Some("orders:read, orders:write")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // A single-valued requirement given twice with different values (the client's, then
    // the gateway's) is refused, never decided by the first; the same value twice is one.
    for (values, status) in
        [(["store-1", "store-2"], StatusCode::BAD_REQUEST), (["store-1", "store-1"], StatusCode::OK)]
    {
        let mut request = Request::builder().uri("/v1/verify").header("x-api-key", secret.as_str());
        for value in values {
            request = request.header("x-keyledger-require-resource", value);
        }
        let answer = api.app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(answer.status(), status, "{values:?}");
    }
    let key_id = key["key_id"].as_str().unwrap();
    let (_, _, events, _) = api.call("GET", &format!("/v1/keys/{key_id}/events?kind=usage"), &[], None).await;
    let first = &events["events"][0];
    assert_eq!(first["kind"], "used");
    assert_eq!(first["context"]["path"], "/api/orders?page=2&scope=admin", "{first}");
    assert_eq!(
        first["context"]["scopes"],
        json!(["orders:read"]),
        "the original query's `scope` is not a requirement"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_answers_with_and_without_a_trailing_slash_under_a_strict_csp() {
    let api = api(ServerConfig::default());
    for path in ["/console", "/console/"] {
        let response =
            api.app.clone().oneshot(Request::builder().uri(path).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(response.headers().get("x-frame-options").unwrap(), "DENY");
    }
}
