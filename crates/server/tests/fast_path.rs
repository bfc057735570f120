//! The lean path of `/v1/verify…` and `GET /healthz` over a real socket (`keyledger_server::
//! serve`, whose accept loop serves those routes without the router's layers): every answer
//! must be the router's (status, contract error body, `request-id` header and its agreement
//! with the body's id), the request timeout must still answer 408, and the request metrics
//! must keep their names and labels.

use axum::http::StatusCode;
use keyledger_server::{AppState, ServerConfig};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::Api;

/// A server on a loopback socket beside the same engine's in-process router.
struct Live {
    address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    api: Api,
}

impl Live {
    async fn start(config: ServerConfig) -> Live {
        let api = support::api(config.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = AppState::new(api.engine.clone(), config);
        let server = tokio::spawn(keyledger_server::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Live { address, stop, server, api }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.server).await.unwrap().unwrap().unwrap();
    }

    async fn key(&self, scopes: &[&str]) -> String {
        let answer = self
            .api
            .admin("POST", "/v1/workspaces/acme/keys", Some(json!({"name": "k", "scopes": scopes})))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        answer.body["secret"].as_str().unwrap().to_owned()
    }
}

/// An answer read off the socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
    text: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`connection: close`) and reads its whole answer.
async fn raw(address: SocketAddr, request: &[u8]) -> Raw {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 20 s");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw { status, headers, body: serde_json::from_str(body).unwrap_or(Value::Null), text: body.to_owned() }
}

/// The raw HTTP/1.1 text of a request.
fn http(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{method} {uri} HTTP/1.1\r\nhost: keyledger\r\nconnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

/// The body without its per-request fields.
fn comparable(mut body: Value) -> Value {
    if let Some(object) = body.as_object_mut() {
        object.remove("request_id");
    }
    body
}

/// Method, URI, headers, body and the status expected (0: whatever the router answers).
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, String, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_routes_answer_over_a_socket_exactly_as_the_router_does() {
    let config = ServerConfig { body_limit: 1024, ..ServerConfig::default() };
    let live = Live::start(config).await;
    let secret = live.key(&["read"]).await;
    let json = [("content-type", "application/json")];
    let good =
        json!({"key": secret, "scopes": ["read"], "context": {"ip": "203.0.113.9", "path": "/orders"}});
    let missing_scope = json!({"key": secret, "scopes": ["write"]});
    let too_big = json!({"key": secret, "context": {"user_agent": "u".repeat(1500)}});
    let big_header = "h".repeat(40 * 1024);
    let bearer = format!("Bearer {secret}");
    let cases: Vec<Case> = vec![
        ("POST", "/v1/verify", json.to_vec(), good.to_string(), 200),
        (
            "GET",
            "/v1/verify?scope=read",
            vec![("x-api-key", &secret), ("x-request-id", "gw-1")],
            String::new(),
            200,
        ),
        ("GET", "/v1/verify/orders/7?x=1", vec![("authorization", &bearer)], String::new(), 200),
        ("POST", "/v1/verify", json.to_vec(), missing_scope.to_string(), 403),
        ("GET", "/v1/verify", vec![], String::new(), 401),
        ("GET", "/v1/verify?scope=read", vec![("x-api-key", "kl_live_nope")], String::new(), 401),
        ("POST", "/v1/verify", json.to_vec(), "{".to_owned(), 400),
        ("POST", "/v1/verify", json.to_vec(), too_big.to_string(), 413),
        ("GET", "/v1/verify?colour=red", vec![("x-api-key", &secret)], String::new(), 400),
        ("GET", "/v1/verify", vec![("x-filler", &big_header)], String::new(), 431),
        ("GET", "/healthz", vec![], String::new(), 200),
        ("GET", "/healthz", vec![("authorization", "Bearer kl_live_nope")], String::new(), 401),
        ("POST", "/healthz", vec![], String::new(), 405),
        ("GET", "/v1/verify/", vec![("x-api-key", &secret)], String::new(), 0),
    ];
    for (method, uri, headers, body, expected) in cases {
        let over_socket = raw(live.address, &http(method, uri, &headers, &body)).await;
        let in_process = live
            .api
            .send(support::request(
                method,
                uri,
                None,
                &[&headers[..], &[("host", "keyledger")]].concat(),
                (!body.is_empty()).then(|| body.clone()),
            ))
            .await;
        let what = format!("{method} {uri}: {} / {}", over_socket.text, in_process.text);
        if expected != 0 {
            assert_eq!(over_socket.status, expected, "{what}");
        }
        assert_eq!(over_socket.status, in_process.status.as_u16(), "{what}");
        assert_eq!(comparable(over_socket.body.clone()), comparable(in_process.body.clone()), "{what}");
        let id = over_socket.header("request-id").unwrap_or_else(|| panic!("no request-id: {what}"));
        assert!(id.starts_with("req_"), "{what}");
        assert_ne!(id, in_process.header("request-id"), "a fresh id per request");
        if let Some(in_body) = over_socket.body.get("request_id") {
            assert_eq!(in_body, id, "the body's id is the header's: {what}");
        }
        for name in ["x-keyledger-key-id", "x-keyledger-workspace", "content-type", "retry-after", "allow"] {
            assert_eq!(
                over_socket.header(name),
                in_process.headers.get(name).map(|v| v.to_str().unwrap()),
                "{name}: {what}"
            );
        }
    }
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_whose_body_stalls_answers_408_with_the_contract_body() {
    let config = ServerConfig { request_timeout: Duration::from_millis(300), ..ServerConfig::default() };
    let live = Live::start(config).await;
    let mut stream = tokio::net::TcpStream::connect(live.address).await.unwrap();
    let head = "POST /v1/verify HTTP/1.1\r\nhost: k\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"key\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "answered before the timeout");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(body["message"].as_str().unwrap().contains("too long"), "{body}");
    let header = text.lines().find_map(|l| l.strip_prefix("request-id: ")).unwrap();
    assert_eq!(body["request_id"], header.trim());
    live.stop().await;
}

/// The value of the series `series` (exact text of name and labels) in `text`, 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_routes_are_counted_under_their_route_templates() {
    let live = Live::start(ServerConfig::default()).await;
    let secret = live.key(&["read"]).await;
    let series = [
        r#"keyledger_http_requests_total{route="/v1/verify",method="POST",status="200"}"#,
        r#"keyledger_http_requests_total{route="/v1/verify",method="GET",status="200"}"#,
        r#"keyledger_http_requests_total{route="/v1/verify/{*path}",method="GET",status="200"}"#,
        r#"keyledger_http_requests_total{route="/v1/verify",method="GET",status="401"}"#,
        r#"keyledger_http_requests_total{route="/healthz",method="GET",status="200"}"#,
        r#"keyledger_http_request_seconds_count{route="/v1/verify"}"#,
    ];
    // The recorder is process-wide and other tests of this binary count too: compare growth.
    let before = raw(live.address, &http("GET", "/metrics", &[], "")).await.text;
    let json = [("content-type", "application/json")];
    let body = json!({"key": secret, "scopes": ["read"]}).to_string();
    for _ in 0..3 {
        assert_eq!(raw(live.address, &http("POST", "/v1/verify", &json, &body)).await.status, 200);
        let forward = http("GET", "/v1/verify?scope=read", &[("x-api-key", &secret)], "");
        assert_eq!(raw(live.address, &forward).await.status, 200);
        let suffix = http("GET", "/v1/verify/a/b", &[("x-api-key", &secret)], "");
        assert_eq!(raw(live.address, &suffix).await.status, 200);
        assert_eq!(raw(live.address, &http("GET", "/v1/verify", &[], "")).await.status, 401);
        assert_eq!(raw(live.address, &http("GET", "/healthz", &[], "")).await.status, 200);
    }
    let after = raw(live.address, &http("GET", "/metrics", &[], "")).await.text;
    for (series, grown) in series.iter().zip([3.0, 3.0, 3.0, 3.0, 3.0, 9.0]) {
        assert!(metric(&after, series) - metric(&before, series) >= grown, "{series}:\n{after}");
    }
    live.stop().await;
}
