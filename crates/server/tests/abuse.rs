//! Abuse (docs/security.md, "Slow clients and oversized requests"), in-process like `api.rs` and
//! over a real socket for header limits: unknown-key and bad-checksum floods append nothing and are
//! counted; per-source throttling of failed verifications (off by default) answers 429 with
//! `Retry-After`; oversized headers answer 431, never crash; over a real socket, a client dribbling
//! its request head (slow loris) and idle connections are cut off after the header-read timeout
//! while others are served.

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use keyledger_core::{Environment, KeyPrefix, Secret};
use keyledger_server::{AppState, ServerConfig};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::{Answer, Api, api};

impl Api {
    /// A request from `peer` (the TCP client address axum would see).
    async fn call(
        &self,
        peer: [u8; 4],
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Answer {
        let mut request = support::request(method, uri, None, headers, body);
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40_000))));
        self.send(request).await
    }

    /// Forward-auth verification of `key` from `peer`, with optional extra query.
    async fn verify(&self, peer: [u8; 4], key: &str, query: &str) -> Answer {
        let bearer = format!("Bearer {key}");
        self.call(peer, "GET", &format!("/v1/verify{query}"), &[("authorization", &bearer)], None).await
    }

    async fn key(&self, workspace: &str, scopes: &[&str]) -> String {
        let answer = self
            .admin(
                "POST",
                &format!("/v1/workspaces/{workspace}/keys"),
                Some(json!({"name": "k", "scopes": scopes})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        answer.body["secret"].as_str().unwrap().to_owned()
    }

    fn log_len(&self) -> u64 {
        self.engine.log().len()
    }
}

/// A well-formed secret (good checksum) that no data dir knows.
fn unknown_key() -> String {
    Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).unwrap().expose().to_owned()
}

/// A secret whose last checksum character is wrong.
fn bad_checksum(key: &str) -> String {
    let mut bad = key.to_owned();
    let last = bad.pop().unwrap();
    bad.push(if last == 'a' { 'b' } else { 'a' });
    bad
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_and_bad_checksum_floods_append_nothing_and_are_counted() {
    let api = api(ServerConfig::default());
    let real = api.key("acme", &["read"]).await;
    let before = api.log_len();
    let metrics = || async { api.call([127, 0, 0, 1], "GET", "/metrics", &[], None).await.text };
    let malformed = r#"keyledger_verify_rejected_total{reason="malformed"}"#;
    let unknown = r#"keyledger_verify_rejected_total{reason="unknown"}"#;
    let metrics_before = metrics().await;
    const FLOOD: u64 = 150;
    for i in 0..FLOOD {
        let peer = [203, 0, 113, (i % 250) as u8];
        // Forward-auth and JSON mode, unknown keys and a known key with a bad checksum.
        let unknown = unknown_key();
        let answer = api.verify(peer, &unknown, "").await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
        let answer =
            api.call(peer, "POST", "/v1/verify", &[], Some(json!({"key": unknown_key()}).to_string())).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
        assert_eq!(answer.body["valid"], false);
        let answer = api.verify(peer, &bad_checksum(&real), "?scope=read").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
        let json = json!({"key": bad_checksum(&unknown), "scopes": ["read"]}).to_string();
        let answer = api.call(peer, "POST", "/v1/verify", &[], Some(json)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
        assert!(!answer.text.contains(&unknown), "the candidate key is echoed");
    }
    assert_eq!(api.log_len(), before, "a flood of unknown or malformed keys grew the log");
    // Counted in /metrics (process-wide, shared with the other tests of this binary: at
    // least this flood's count).
    let after = metrics().await;
    let grew = |series: &str| {
        let earlier = metrics_before.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok());
        metric(&after, series) - earlier.unwrap_or(0.0)
    };
    assert!(grew(malformed) >= (2 * FLOOD) as f64, "malformed: {}", grew(malformed));
    assert!(grew(unknown) >= (2 * FLOOD) as f64, "unknown: {}", grew(unknown));
    // The real key still works, and is the first thing appended.
    assert_eq!(api.verify([203, 0, 113, 1], &real, "?scope=read").await.status, StatusCode::OK);
    assert_eq!(api.log_len(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_off_by_default() {
    let api = api(ServerConfig::default());
    let real = api.key("acme", &["read"]).await;
    for _ in 0..100 {
        assert_eq!(api.verify([198, 51, 100, 7], &unknown_key(), "").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(api.verify([198, 51, 100, 7], &real, "").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_sources_get_429_with_retry_after_and_append_nothing() {
    const PER_MINUTE: u32 = 3;
    let api = api(ServerConfig { throttle_failed_verifications: PER_MINUTE, ..ServerConfig::default() });
    let real = api.key("acme", &["read"]).await;
    let attacker = [198, 51, 100, 66];
    let neighbour = [198, 51, 100, 67];

    // N failures are answered as usual (401), the next gets 429.
    for _ in 0..PER_MINUTE {
        assert_eq!(api.verify(attacker, &unknown_key(), "").await.status, StatusCode::UNAUTHORIZED);
    }
    let before = api.log_len();
    let answer = api.verify(attacker, &unknown_key(), "").await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{}", answer.text);
    assert_eq!(answer.body["error"], "rate_limited");
    assert_eq!(answer.body["valid"], false);
    assert!(answer.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(answer.body["request_id"].as_str().is_some_and(|r| r.starts_with("req_")));
    // One token refills every 60/N = 20 s.
    assert_eq!(answer.headers.get("retry-after").unwrap(), "20");

    // A throttled source is refused even with a valid key (documented: until the bucket
    // refills), in JSON mode too, and nothing is appended for it.
    let answer = api.verify(attacker, &real, "?scope=read").await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    let json = json!({"key": real, "scopes": ["read"]}).to_string();
    assert_eq!(
        api.call(attacker, "POST", "/v1/verify", &[], Some(json)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(api.log_len(), before, "a throttled verification appended");

    // Another address is unaffected, for valid and invalid keys alike.
    assert_eq!(api.verify(neighbour, &real, "?scope=read").await.status, StatusCode::OK);
    assert_eq!(api.verify(neighbour, &unknown_key(), "").await.status, StatusCode::UNAUTHORIZED);

    // 403 denials of a known key count as failures too (and are recorded, being real uses).
    let scoped = [192, 0, 2, 5];
    for _ in 0..PER_MINUTE {
        assert_eq!(api.verify(scoped, &real, "?scope=admin").await.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(api.verify(scoped, &real, "?scope=read").await.status, StatusCode::TOO_MANY_REQUESTS);

    // Successes and malformed requests (400) take nothing from the budget.
    let good = [192, 0, 2, 6];
    for _ in 0..10 {
        assert_eq!(api.verify(good, &real, "?scope=read").await.status, StatusCode::OK);
        assert_eq!(api.verify(good, &real, "?environment=prod").await.status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(api.verify(good, &real, "?scope=read").await.status, StatusCode::OK);

    let metrics = api.call([127, 0, 0, 1], "GET", "/metrics", &[], None).await.text;
    assert!(
        metric(&metrics, r#"keyledger_verifications_total{outcome="throttled",reason="rate_limited"}"#)
            >= 4.0
    );
    // Admin calls are never throttled by it.
    assert_eq!(api.admin("GET", "/v1/workspaces/acme/keys", None).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_gateway_the_forwarded_address_is_the_source() {
    let api = api(ServerConfig {
        throttle_failed_verifications: 2,
        trust_forwarded_for: true,
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..ServerConfig::default()
    });
    let real = api.key("acme", &[]).await;
    let gateway = [10, 0, 0, 2];
    let from = |client: &'static str| [("authorization", ""), ("x-forwarded-for", client)];
    let call = |key: String, client: &'static str| {
        let api = &api;
        async move {
            let bearer = format!("Bearer {key}");
            let mut headers = from(client);
            headers[0].1 = &bearer;
            api.call(gateway, "GET", "/v1/verify", &headers, None).await.status
        }
    };
    for _ in 0..2 {
        assert_eq!(call(unknown_key(), "203.0.113.50").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(call(unknown_key(), "203.0.113.50").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(call(real.clone(), "203.0.113.51").await, StatusCode::OK, "another client behind the gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_answer_431_in_process() {
    let api = api(ServerConfig { max_header_bytes: 8 * 1024, ..ServerConfig::default() });
    let filler = "a".repeat(9 * 1024);
    let answer = api.call([127, 0, 0, 1], "GET", "/v1/verify", &[("x-filler", &filler)], None).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{}", answer.text);
    assert_eq!(answer.body["error"], "invalid_request");
    let long_uri = format!("/v1/verify?scope={filler}");
    assert_eq!(
        api.call([127, 0, 0, 1], "GET", &long_uri, &[], None).await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let answer = api.call([127, 0, 0, 1], "GET", "/healthz", &[("x-filler", &filler[..4096])], None).await;
    assert_eq!(answer.status, StatusCode::OK);
}

/// Sends raw bytes over TCP and returns the status code of the answer (0 if none).
async fn raw_status(address: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_over_a_real_socket_are_4xx_not_a_crash() {
    let api = api(ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(keyledger_server::serve(
        listener,
        AppState::new(api.engine.clone(), ServerConfig::default()),
        async move {
            let _ = stopped.await;
        },
    ));

    // 100 KB in one header: under hyper's read buffer, so keyledger's 32 KiB cap answers.
    let big = "b".repeat(100 * 1024);
    let request =
        format!("GET /v1/verify HTTP/1.1\r\nhost: x\r\nx-filler: {big}\r\nconnection: close\r\n\r\n");
    let (status, text) = raw_status(address, request.as_bytes()).await;
    assert_eq!(status, 431, "{}", &text[..text.len().min(300)]);
    assert!(text.contains("\"error\":\"invalid_request\""), "{text}");

    // 600 KB: past hyper's buffer; hyper refuses it itself (431) or closes. Never a 5xx.
    let huge = "h".repeat(600 * 1024);
    let request =
        format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: {huge}\r\nconnection: close\r\n\r\n");
    let (status, _) = raw_status(address, request.as_bytes()).await;
    assert!(status == 0 || (400..500).contains(&status), "status {status}");

    // 200 small headers: over hyper's header count limit.
    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}connection: close\r\n\r\n");
    let (status, _) = raw_status(address, request.as_bytes()).await;
    assert!(status == 0 || (400..500).contains(&status), "status {status}");

    // The server is still up.
    let (status, text) =
        raw_status(address, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert_eq!(status, 200, "{text}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// A server on a real loopback socket (`keyledger_server::serve`), stopped by [`Live::stop`].
struct Live {
    address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    api: Api,
}

impl Live {
    async fn start(config: ServerConfig) -> Live {
        let api = api(config.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(keyledger_server::serve(
            listener,
            AppState::new(api.engine.clone(), config),
            async move {
                let _ = stopped.await;
            },
        ));
        Live { address, stop, server, api }
    }

    /// Stops the server; it must stop cleanly even with slow or idle connections around.
    async fn stop(self) {
        let _ = self.stop.send(());
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        stopped.expect("the server did not stop").unwrap().unwrap();
    }
}

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Allowed lateness of the cut-off (timer granularity, scheduling on a loaded machine).
const CUT_MARGIN: Duration = Duration::from_millis(1500);
/// Allowed earliness (the server's clock starts a little before the client's).
const CUT_EARLY: Duration = Duration::from_millis(150);

/// Waits until the server closes `stream` (EOF or reset), at most `limit`; returns what the
/// server sent before closing, or `None` if the connection is still open.
async fn until_closed(stream: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut received)).await {
        Ok(_) => Some(received),
        Err(_) => None,
    }
}

fn assert_cut_in_time(what: &str, waited: Duration) {
    assert!(
        waited + CUT_EARLY >= HEADER_TIMEOUT,
        "{what} was closed after {waited:?}, before the {HEADER_TIMEOUT:?} header timeout"
    );
    assert!(
        waited <= HEADER_TIMEOUT + CUT_MARGIN,
        "{what} was closed after {waited:?}, long after the {HEADER_TIMEOUT:?} header timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_headers_is_cut_off_while_others_are_served() {
    let live =
        Live::start(ServerConfig { header_read_timeout: HEADER_TIMEOUT, ..ServerConfig::default() }).await;
    let address = live.address;

    // The slow loris: a request head that never ends, one byte every 200 ms (so a limit on
    // the time between bytes would never fire; only one on the whole head does).
    let opened = Instant::now();
    let (mut slow_read, mut slow_write) = tokio::net::TcpStream::connect(address).await.unwrap().into_split();
    let dribbler = tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if slow_write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // Meanwhile other connections are served, including one whose head arrives in pieces
    // but within the timeout.
    let mut served = 0;
    while opened.elapsed() + Duration::from_millis(600) < HEADER_TIMEOUT {
        let (status, text) =
            raw_status(address, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
        assert_eq!(status, 200, "{text}");
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut pieces = tokio::net::TcpStream::connect(address).await.unwrap();
    pieces.write_all(b"GET /healthz HTTP/1.1\r\nho").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    pieces.write_all(b"st: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    pieces.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(served >= 3, "only {served} requests served beside the slow client");

    let received = until_closed(&mut slow_read, HEADER_TIMEOUT + CUT_MARGIN).await;
    let waited = opened.elapsed();
    let received = received.unwrap_or_else(|| panic!("the slow client is still connected after {waited:?}"));
    assert_cut_in_time("the slow client", waited);
    assert!(received.is_empty(), "the slow client got an answer: {}", String::from_utf8_lossy(&received));
    dribbler.abort();
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let live =
        Live::start(ServerConfig { header_read_timeout: HEADER_TIMEOUT, ..ServerConfig::default() }).await;

    // A connection that never sends anything.
    let opened = Instant::now();
    let (mut silent, _silent_write) =
        tokio::net::TcpStream::connect(live.address).await.unwrap().into_split();

    // A keep-alive connection: two requests answered on it, then it idles.
    let (mut read, mut write) = tokio::net::TcpStream::connect(live.address).await.unwrap().into_split();
    let mut buffer = Vec::new();
    for _ in 0..2 {
        write.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let before = buffer.len();
        loop {
            let mut chunk = [0u8; 1024];
            let n =
                tokio::time::timeout(Duration::from_secs(5), read.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "the keep-alive connection was closed after one response");
            buffer.extend_from_slice(&chunk[..n]);
            if buffer[before..].ends_with(b"}") {
                break;
            }
        }
        assert!(buffer[before..].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buffer));
    }
    let idle_since = Instant::now();

    let received = until_closed(&mut silent, HEADER_TIMEOUT + CUT_MARGIN).await;
    assert_eq!(received.as_deref(), Some(&b""[..]), "the silent connection is open or got an answer");
    assert_cut_in_time("the silent connection", opened.elapsed());

    let received = until_closed(&mut read, HEADER_TIMEOUT + CUT_MARGIN).await;
    assert_eq!(received.as_deref(), Some(&b""[..]), "the idle keep-alive connection is still open");
    assert_cut_in_time("the idle keep-alive connection", idle_since.elapsed());
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_still_reaches_verify_over_a_real_socket() {
    // `serve` supplies ConnectInfo itself: a verification over TCP records the peer.
    let live = Live::start(ServerConfig::default()).await;
    let key = live.api.key("acme", &["read"]).await;
    let request = format!(
        "GET /v1/verify?scope=read HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n"
    );
    let (status, text) = raw_status(live.address, request.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let listed = live.api.admin("GET", "/v1/workspaces/acme/keys", None).await;
    assert_eq!(listed.body["keys"][0]["last_used_ip"], "127.0.0.1", "{}", listed.text);
    live.stop().await;
}
