//! The access log: one `info` line per request with keyledger's request id, except
//! successful verifications (each is already a `used` event in the log) and successful
//! `/healthz` probes, which are logged at `debug` and come back with
//! `keyledger_server::request_id=debug`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use keyledger_ledger::{Engine, EngineOptions};
use keyledger_server::ServerConfig;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

mod support;

/// Captures formatted log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap().lines().map(str::to_owned).collect()
    }
}

/// The `request-id`s of the requests [`run`] makes.
struct Ids {
    allowed: String,
    denied: String,
    healthy: String,
    healthz_refused: String,
}

/// Creates a key, verifies it successfully and with a missing scope, asks `/healthz` without
/// a key and with an unknown one, under `filter`; returns the request lines, the secret, and
/// the `request-id`s.
fn run(filter: &str) -> (Vec<String>, String, Ids) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let data = support::init();
    let (path, admin) = (&data.path, &data.admin);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (secret, ids) = runtime.block_on(async {
        let engine = Arc::new(Engine::open(path, EngineOptions::default()).unwrap());
        let app = support::app(engine.clone(), ServerConfig::default());
        let create = Request::post("/v1/workspaces/acme/keys")
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"name": "k", "scopes": ["read"]}"#))
            .unwrap();
        let response = app.clone().oneshot(create).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let secret = body["secret"].as_str().unwrap().to_owned();
        let mut ids = Vec::new();
        for (scope, status) in [("read", StatusCode::OK), ("write", StatusCode::FORBIDDEN)] {
            let verify = Request::get(format!("/v1/verify?scope={scope}"))
                .header("x-api-key", &secret)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(verify).await.unwrap();
            assert_eq!(response.status(), status);
            ids.push(response.headers()["request-id"].to_str().unwrap().to_owned());
        }
        for (bearer, status) in
            [(None, StatusCode::OK), (Some("Bearer kl_live_nope"), StatusCode::UNAUTHORIZED)]
        {
            let mut health = Request::get("/healthz");
            if let Some(bearer) = bearer {
                health = health.header("authorization", bearer);
            }
            let response = app.clone().oneshot(health.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), status);
            ids.push(response.headers()["request-id"].to_str().unwrap().to_owned());
        }
        engine.shutdown().await;
        let mut ids = ids.into_iter();
        let mut next = || ids.next().unwrap();
        (secret, Ids { allowed: next(), denied: next(), healthy: next(), healthz_refused: next() })
    });
    let lines = captured.lines().into_iter().filter(|l| l.contains(" request request_id=")).collect();
    (lines, secret, ids)
}

fn line_of<'a>(lines: &'a [String], request_id: &str) -> Option<&'a String> {
    lines.iter().find(|l| l.contains(&format!("request_id={request_id} ")))
}

#[test]
fn successful_verifications_and_health_probes_are_logged_only_at_debug() {
    let (lines, secret, Ids { allowed, denied, healthy, healthz_refused }) = run("info");
    assert!(
        lines.iter().any(|l| l.contains("INFO")
            && l.contains("route=/v1/workspaces/{ws}/keys")
            && l.contains("status=201")),
        "the admin call has its line: {lines:#?}"
    );
    let line = line_of(&lines, &denied).expect("a denied verification has its line");
    assert!(
        line.contains("INFO") && line.contains("route=/v1/verify") && line.contains("status=403"),
        "{line}"
    );
    assert!(line_of(&lines, &allowed).is_none(), "a successful verification logged at info: {lines:#?}");
    assert!(line_of(&lines, &healthy).is_none(), "a successful health probe logged at info: {lines:#?}");
    let line = line_of(&lines, &healthz_refused).expect("a refused /healthz has its line");
    assert!(
        line.contains("INFO") && line.contains("route=/healthz") && line.contains("status=401"),
        "{line}"
    );
    assert!(lines.iter().all(|l| !l.contains(&secret)), "a secret in the log");
}

#[test]
fn the_verify_access_line_comes_back_with_a_debug_filter() {
    let (lines, secret, Ids { allowed, denied, healthy, .. }) =
        run("info,keyledger_server::request_id=debug");
    let line = line_of(&lines, &allowed).expect("the successful verification has its line");
    assert!(
        line.contains("DEBUG") && line.contains("route=/v1/verify") && line.contains("status=200"),
        "{line}"
    );
    assert!(line_of(&lines, &denied).is_some_and(|l| l.contains("INFO")));
    let line = line_of(&lines, &healthy).expect("the health probe has its line");
    assert!(
        line.contains("DEBUG") && line.contains("route=/healthz") && line.contains("status=200"),
        "{line}"
    );
    assert!(lines.iter().all(|l| !l.contains(&secret)), "a secret in the log");
}
