//! Webhooks end to end: the HTTP API configures them, the engine's threads deliver signed
//! notifications to a real receiver on loopback, retry, record, survive a restart.

use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use keyledger_ledger::{EngineOptions, WebhookOptions};
use keyledger_server::ServerConfig;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod support;

use support::{Api, DataDir};

// ----- a receiver on loopback ----------------------------------------------------------

#[derive(Clone, Debug)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap().to_owned()
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A minimal HTTP/1.1 server: records every request, answers the next scripted status
/// (then `default_status`), closes each connection.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    default_status: Arc<Mutex<u16>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/keyledger", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let default_status = Arc::new(Mutex::new(200));
        let (r, s, d) = (received.clone(), script.clone(), default_status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.is_empty() {
                    continue;
                }
                let mut headers = BTreeMap::new();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
                }
                let length: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                r.lock().unwrap().push(Received { headers, body, at: Instant::now() });
                let status = s.lock().unwrap().pop_front().unwrap_or(*d.lock().unwrap());
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Self { url, received, script, default_status }
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn of_kind(&self, kind: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.kind() == kind).collect()
    }

    /// Waits until `done` holds for what was received, or fails after 10 s.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.all();
            if done(&all) {
                return all;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; received {:?}", kinds(&all));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn kinds(all: &[Received]) -> Vec<String> {
    all.iter().map(Received::kind).collect()
}

// ----- keyledger in-process ------------------------------------------------------------

fn fast() -> WebhookOptions {
    WebhookOptions {
        poll_interval: Duration::from_millis(20),
        first_retry: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        expiring_scan_interval: Duration::from_millis(100),
        // The receivers of these tests are on loopback (`--webhook-allow-private`).
        allow_private: true,
        ..WebhookOptions::default()
    }
}

/// Opens `data` with `webhooks` as the engine's webhook options.
fn open(data: &DataDir, webhooks: WebhookOptions) -> Api {
    support::open(data, EngineOptions { webhooks, ..EngineOptions::default() }, ServerConfig::default())
}

fn api() -> Api {
    open(&support::init(), fast())
}

impl Api {
    async fn call_with(
        &self,
        key: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let answer = self.call_as(Some(key), method, uri, body).await;
        (answer.status, answer.body)
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with(&self.admin.clone(), method, uri, body).await
    }

    async fn set_webhook(&self, workspace: &str, body: Value) -> String {
        let (status, answer) =
            self.call("PUT", &format!("/v1/workspaces/{workspace}/webhook"), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["secret"].as_str().unwrap().to_owned()
    }

    async fn create(&self, workspace: &str, body: Value) -> (String, String) {
        let (status, key) = self.call("POST", &format!("/v1/workspaces/{workspace}/keys"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        (key["key_id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned())
    }

    async fn verify(&self, secret: &str, ip: &str) -> StatusCode {
        let body = json!({"key": secret, "context": {"ip": ip, "user_agent": "test/1"}});
        self.call("POST", "/v1/verify", Some(body)).await.0
    }

    async fn deliveries(&self, workspace: &str) -> Value {
        let (status, list) =
            self.call("GET", &format!("/v1/workspaces/{workspace}/webhook/deliveries"), None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list
    }
}

// ----- checking a delivery independently -----------------------------------------------

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The signature a receiver expects, computed here with RustCrypto, not keyledger's code.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks signature, timestamp and envelope of a delivery as a receiver would.
fn assert_authentic(received: &Received, secret: &str, workspace: &str) {
    let id = received.header("keyledger-webhook-id");
    let timestamp = received.header("keyledger-webhook-timestamp");
    assert!(id.starts_with("whd_") && id.len() == 4 + 32, "{id}");
    let sent: i64 = timestamp.parse().unwrap();
    assert!((unix_now() - sent).abs() <= 5, "timestamp {sent} is not now");
    assert_eq!(
        received.header("keyledger-signature"),
        expected_signature(secret, id, timestamp, &received.body)
    );
    assert_eq!(received.header("content-type"), "application/json");
    let body = received.json();
    assert_eq!(body["id"], id);
    assert_eq!(body["workspace"], workspace);
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(body["data"].is_object());
    let text = String::from_utf8_lossy(&received.body);
    assert!(!text.contains("whsec_") && !text.contains("\"hash\""), "{text}");
    // Altering the body (one byte) breaks the signature.
    let mut altered = received.body.clone();
    let last = altered.len() - 2;
    altered[last] ^= 1;
    assert_ne!(received.header("keyledger-signature"), expected_signature(secret, id, timestamp, &altered));
}

/// The documented Python snippet, run against a real delivery.
fn python_snippet_accepts(received: &Received, secret: &str) -> Option<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/webhooks.md")).unwrap();
    let after = doc.split("<!-- webhook-snippet: python").nth(1).expect("the Python snippet marker");
    let code = after.split("```python\n").nth(1).unwrap().split("\n```").next().unwrap();
    let harness = r#"
import json, sys
case = json.load(sys.stdin)
body = bytes.fromhex(case["body"])
headers = case["headers"]
seen = set()
results = [
    verify_keyledger_webhook(case["secret"], headers, body, seen),
    verify_keyledger_webhook(case["secret"], headers, body, seen),  # the same id again: a replay
    verify_keyledger_webhook(case["secret"], headers, body + b" ", set()),  # altered body
    verify_keyledger_webhook(case["secret"] + "x", headers, body, set()),  # another secret
    verify_keyledger_webhook(case["secret"], headers, body, set(), now=int(headers["keyledger-webhook-timestamp"]) + 301),
]
print(" ".join(str(r) for r in results))
"#;
    let case = json!({"secret": secret, "headers": received.headers, "body": hex::encode(&received.body)});
    let mut child = match std::process::Command::new("python3")
        .arg("-c")
        .arg(format!("{code}\n{harness}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(_) => return None, // no python3 on this machine
    };
    child.stdin.take().unwrap().write_all(case.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Some(String::from_utf8(output.stdout).unwrap().trim().to_owned())
}

fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

// ----- tests ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_and_signals_arrive_signed_and_only_for_the_configured_workspace() {
    let receiver = Receiver::start();
    let api = api();
    let secret = api.set_webhook("acme", json!({"url": receiver.url})).await;
    assert!(secret.starts_with("whsec_"));
    // Another workspace without a webhook: nothing of it may be sent.
    let (_, other_secret) = api.create("other", json!({"name": "quiet"})).await;
    assert_eq!(api.verify(&other_secret, "198.51.100.1").await, StatusCode::OK);

    let (key_id, key_secret) = api.create("acme", json!({"name": "ci"})).await;
    assert_eq!(api.verify(&key_secret, "203.0.113.5").await, StatusCode::OK); // new source
    assert_eq!(api.verify(&key_secret, "203.0.113.5").await, StatusCode::OK); // seen before
    assert_eq!(api.verify(&key_secret, "203.0.113.6").await, StatusCode::OK); // new source
    let (status, rotation) = api.call("POST", &format!("/v1/keys/{key_id}/rotate"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{rotation}");
    let new_id = rotation["key"]["key_id"].as_str().unwrap().to_owned();
    assert_eq!(api.verify(&key_secret, "203.0.113.5").await, StatusCode::UNAUTHORIZED); // revoked
    let (status, _) =
        api.call("POST", &format!("/v1/keys/{new_id}/revoke"), Some(json!({"reason": "t"}))).await;
    assert_eq!(status, StatusCode::OK);

    let all = receiver
        .wait_for("every notification", |all| {
            all.iter().filter(|r| r.kind() == "key.revoked").count() == 2
                && all.iter().any(|r| r.kind() == "key.revoked_used")
        })
        .await;
    // Give stray (wrong) notifications a moment to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!all.is_empty());
    let all = receiver.all();
    for received in &all {
        assert_authentic(received, &secret, "acme");
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for received in &all {
        *counts.entry(received.kind()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [
        ("webhook.updated", 1),
        ("key.created", 2),
        ("key.new_source", 2),
        ("key.rotated", 1),
        ("key.revoked", 2),
        ("key.revoked_used", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, expected, "{:?}", kinds(&all));

    let created = &receiver.of_kind("key.created")[0].json();
    assert_eq!(created["data"]["key_id"], key_id);
    assert_eq!(created["data"]["kind"], "created");
    assert!(created["seq"].as_u64().is_some());
    let sources: Vec<Value> =
        receiver.of_kind("key.new_source").iter().map(|r| r.json()["data"]["source"].clone()).collect();
    assert_eq!(sources, [json!("203.0.113.5"), json!("203.0.113.6")]);
    let revoked_used = receiver.of_kind("key.revoked_used")[0].json();
    assert_eq!(revoked_used["data"]["key_id"], key_id);
    assert_eq!(revoked_used["data"]["event"]["reason"], "revoked");
    assert_eq!(revoked_used["data"]["allowed"], false);
    let rotated = receiver.of_kind("key.rotated")[0].json();
    assert_eq!(rotated["data"]["rotated_to"], new_id);

    // The documented Python receiver accepts a real delivery once, and nothing tampered.
    if let Some(verdicts) = python_snippet_accepts(&receiver.of_kind("key.rotated")[0], &secret) {
        assert_eq!(verdicts, "True False False False False");
    }

    // The deliveries listing records them, never the secret; GET never shows it either.
    let list = api.deliveries("acme").await;
    let attempts = list["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), all.len(), "{list}");
    assert!(attempts.iter().all(|a| a["outcome"] == "delivered" && a["status"] == 200 && a["attempt"] == 1));
    assert_eq!(list["pending"], 0);
    let (_, config) = api.call("GET", "/v1/workspaces/acme/webhook", None).await;
    assert_eq!(config["url"], receiver.url.as_str());
    assert_eq!(config["enabled"], true);
    for text in [list.to_string(), config.to_string()] {
        assert!(!text.contains(&secret) && !text.contains("whsec_"), "{text}");
    }
    // Nor is it anywhere on disk: log, projections, outbox.
    api.engine.shutdown().await;
    assert!(!files_contain(&api.path, secret.as_bytes()), "the webhook secret was written to the data dir");
    assert!(!files_contain(&api.path, &secret.as_bytes()["whsec_".len()..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_with_growing_delays_and_every_attempt_is_listed() {
    let receiver = Receiver::start();
    receiver.script.lock().unwrap().extend([500, 500]);
    let api = api();
    let secret = api.set_webhook("acme", json!({"url": receiver.url, "events": ["key.created"]})).await;
    let (key_id, _) = api.create("acme", json!({"name": "ci"})).await;
    let all = receiver.wait_for("three attempts", |all| all.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.all().len(), 3, "a delivered notification was sent again");
    let id = all[0].header("keyledger-webhook-id");
    assert!(all.iter().all(|r| r.header("keyledger-webhook-id") == id), "retries keep the delivery id");
    assert!(all.iter().all(|r| r.body == all[0].body), "retries send the same body");
    for received in &all {
        assert_authentic(received, &secret, "acme");
    }
    assert_eq!(all[0].json()["data"]["key_id"], key_id);
    let first_gap = all[1].at - all[0].at;
    let second_gap = all[2].at - all[1].at;
    assert!(first_gap >= Duration::from_millis(190), "first retry after {first_gap:?}");
    assert!(second_gap >= Duration::from_millis(390), "second retry after {second_gap:?}");
    assert!(second_gap > first_gap, "{first_gap:?} then {second_gap:?}");

    let list = api.deliveries("acme").await;
    let attempts = list["attempts"].as_array().unwrap();
    let summary: Vec<(u64, Value, String)> = attempts
        .iter()
        .map(|a| {
            (a["attempt"].as_u64().unwrap(), a["status"].clone(), a["outcome"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (3, json!(200), "delivered".to_owned()),
            (2, json!(500), "retrying".to_owned()),
            (1, json!(500), "retrying".to_owned())
        ],
        "{list}"
    );
    assert!(attempts.iter().all(|a| a["delivery_id"] == id && a["type"] == "key.created"));
    assert!(attempts[1]["next_retry_at"].is_string() && attempts[0]["next_retry_at"].is_null());
    assert_eq!(list["pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_undelivered_notifications_and_resends_nothing_delivered() {
    let receiver = Receiver::start();
    let data = support::init();
    let events = json!({"url": receiver.url, "events": ["key.created"]});

    // 1. A delivered notification.
    let api = open(&data, fast());
    let secret = api.set_webhook("acme", events).await;
    let (first, _) = api.create("acme", json!({"name": "first"})).await;
    receiver.wait_for("the first key", |all| all.len() == 1).await;
    // 2. One that fails and waits for its retry when keyledger stops.
    *receiver.default_status.lock().unwrap() = 503;
    let (second, _) = api.create("acme", json!({"name": "second"})).await;
    receiver.wait_for("a failed attempt", |all| all.len() == 2).await;
    api.engine.shutdown().await;
    drop(api);

    // 3. One sequenced while no dispatcher ran (as after a crash before dispatching it).
    let api = open(&data, WebhookOptions { enabled: false, ..fast() });
    let (third, _) = api.create("acme", json!({"name": "third"})).await;
    api.engine.shutdown().await;
    drop(api);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.all().len(), 2, "nothing is sent while webhooks are off");

    *receiver.default_status.lock().unwrap() = 200;
    let api = open(&data, fast());
    receiver.wait_for("the resumed deliveries", |all| all.len() >= 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by_key: Vec<String> =
        receiver.all().iter().map(|r| r.json()["data"]["key_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(by_key.iter().filter(|k| **k == first).count(), 1, "a delivered notification was resent");
    assert_eq!(by_key.iter().filter(|k| **k == second).count(), 2, "the failed one is retried once more");
    assert_eq!(by_key.iter().filter(|k| **k == third).count(), 1, "the undispatched one is sent");
    assert_eq!(by_key.len(), 4);
    for received in receiver.all() {
        assert_authentic(&received, &secret, "acme");
    }
    assert_eq!(api.deliveries("acme").await["pending"], 0);
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_webhook_sends_nothing_more_and_expiring_keys_are_announced_once() {
    let receiver = Receiver::start();
    let api = api();
    api.set_webhook("acme", json!({"url": receiver.url, "events": ["key.expiring", "key.created"]})).await;
    let (soon, _) = api.create("acme", json!({"name": "soon", "expires_in": "2d"})).await;
    api.create("acme", json!({"name": "later", "expires_in": "30d"})).await;
    receiver.wait_for("the expiry notice", |all| all.iter().any(|r| r.kind() == "key.expiring")).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // several more scans
    let expiring = receiver.of_kind("key.expiring");
    assert_eq!(expiring.len(), 1, "announced once");
    assert_eq!(expiring[0].json()["data"]["key_id"], soon);
    assert!(expiring[0].json()["seq"].is_null());

    let (status, disabled) = api.call("DELETE", "/v1/workspaces/acme/webhook", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(disabled["enabled"], false);
    assert!(disabled.get("secret").is_none());
    let before = receiver.all().len();
    api.create("acme", json!({"name": "after"})).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.all().len(), before, "a disabled webhook sent {:?}", kinds(&receiver.all()));
    let (status, _) = api.call("DELETE", "/v1/workspaces/acme/webhook", None).await;
    assert_eq!(status, StatusCode::OK, "disabling twice changes nothing");
    let (status, body) = api.call("DELETE", "/v1/workspaces/never/webhook", None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_is_validated_and_workspace_scoped() {
    let receiver = Receiver::start();
    let api = api();
    let (status, body) =
        api.call("PUT", "/v1/workspaces/acme/webhook", Some(json!({"url": "ftp://x/"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("url"), "{body}");
    let (status, body) = api
        .call(
            "PUT",
            "/v1/workspaces/acme/webhook",
            Some(json!({"url": receiver.url, "events": ["key.exploded"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("events"), "{body}");
    let (status, _) = api.call("GET", "/v1/workspaces/acme/webhook", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was configured");

    // An admin key limited to `acme` cannot see or configure `other`'s webhook.
    let (_, limited) = api
        .create("_ledger", json!({"name": "acme admin", "scopes": ["ledger:admin"], "resources": ["acme"]}))
        .await;
    api.set_webhook("other", json!({"url": receiver.url})).await;
    for (method, uri, body) in [
        ("PUT", "/v1/workspaces/other/webhook", Some(json!({"url": receiver.url}))),
        ("GET", "/v1/workspaces/other/webhook", None),
        ("DELETE", "/v1/workspaces/other/webhook", None),
        ("GET", "/v1/workspaces/other/webhook/deliveries", None),
    ] {
        let (status, answer) = api.call_with(&limited, method, uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {answer}");
        assert!(answer.get("url").is_none());
    }
    let (status, _) = api.call("GET", "/v1/workspaces/other/webhook", None).await;
    assert_eq!(status, StatusCode::OK, "`other`'s webhook is untouched");
    let (status, answer) = api
        .call_with(&limited, "PUT", "/v1/workspaces/acme/webhook", Some(json!({"url": receiver.url})))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Without `ledger:admin`, 403.
    let (_, reader) = api
        .create("_ledger", json!({"name": "reader", "scopes": ["ledger:keys:read"], "resources": ["acme"]}))
        .await;
    let (status, _) = api.call_with(&reader, "GET", "/v1/workspaces/acme/webhook", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

// ----- destinations (docs/security.md, "Webhook destinations") --------------------------

/// Webhook options of a deployment without `--webhook-allow-private`.
fn strict() -> WebhookOptions {
    WebhookOptions { allow_private: false, ..fast() }
}

/// A listener on loopback that only counts the connections it accepts.
fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_and_metadata_destinations_are_refused_at_configuration() {
    let data = support::init();
    let api = open(&data, strict());
    let (port, connections) = counting_listener();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://0.0.0.0/".to_owned(),
        "http://[::1]/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://[::ffff:127.0.0.1]/".to_owned(),
        "http://[fd00:ec2::254]/".to_owned(),
        "http://100.100.100.200/".to_owned(),
        "http://metadata.google.internal/computeMetadata/v1/".to_owned(),
    ] {
        let (status, body) = api.call("PUT", "/v1/workspaces/acme/webhook", Some(json!({"url": url}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["error"], "invalid_request", "{url}: {body}");
        assert!(body["message"].as_str().unwrap().contains("`url`"), "{url}: {body}");
        assert!(body["request_id"].as_str().unwrap().starts_with("req_"), "{body}");
    }
    let (status, _) = api.call("GET", "/v1/workspaces/acme/webhook", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was configured");
    // A syntactically bad URL is still a 400, as before.
    let (status, _) = api.call("PUT", "/v1/workspaces/acme/webhook", Some(json!({"url": "ftp://x/"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_loopback_is_refused_when_connecting_and_never_reached() {
    let data = support::init();
    let api = open(&data, strict());
    let (port, connections) = counting_listener();
    // Names are resolved by the sender on every attempt, so the check cannot be dodged by a
    // name that resolves elsewhere at configuration time (DNS rebinding). `2130706433` is
    // 127.0.0.1 in the decimal form the system resolver accepts.
    for (workspace, url) in
        [("acme", format!("http://localhost:{port}/hook")), ("beta", format!("http://2130706433:{port}/"))]
    {
        api.set_webhook(workspace, json!({"url": url, "events": ["key.created"]})).await;
        api.create(workspace, json!({"name": "ci"})).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for workspace in ["acme", "beta"] {
        let attempt = loop {
            let list = api.deliveries(workspace).await;
            if let Some(attempt) = list["attempts"].as_array().unwrap().first() {
                break attempt.clone();
            }
            assert!(Instant::now() < deadline, "no attempt recorded for {workspace}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(attempt["error"], "refused destination", "{workspace}: {attempt}");
        assert!(attempt["status"].is_null(), "{attempt}");
        assert_eq!(attempt["outcome"], "retrying", "{attempt}");
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0, "a refused destination was reached");
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_failures_are_recorded_as_a_class_without_the_os_error() {
    let api = api();
    // A closed port on loopback (allowed here, as with `--webhook-allow-private`).
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    api.set_webhook("acme", json!({"url": format!("http://127.0.0.1:{closed}/"), "events": ["key.created"]}))
        .await;
    api.create("acme", json!({"name": "ci"})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let attempt = loop {
        let list = api.deliveries("acme").await;
        if let Some(attempt) = list["attempts"].as_array().unwrap().first() {
            break attempt.clone();
        }
        assert!(Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(attempt["error"], "connection failed", "{attempt}");
    api.engine.shutdown().await;
}

/// A listener on loopback that accepts every connection and never answers: a receiver that
/// hangs. The connections stay open while the returned list lives.
fn silent_listener() -> (String, Arc<Mutex<Vec<std::net::TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let holding = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            holding.lock().unwrap().push(stream);
        }
    });
    (url, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_hold_up_another_workspaces_deliveries() {
    let (silent, _held) = silent_listener();
    let receiver = Receiver::start();
    // Each attempt at the silent receiver takes the whole 5 s timeout.
    let api = open(&support::init(), WebhookOptions { timeout: Duration::from_secs(5), ..fast() });
    api.set_webhook("stuck", json!({"url": silent})).await;
    for i in 0..30 {
        api.create("stuck", json!({"name": format!("k{i}")})).await;
    }
    // Thirty-one deliveries of `stuck` are due before anything of `acme`: one sender at a
    // time would take them all, 5 s each, before acme's.
    api.set_webhook("acme", json!({"url": receiver.url})).await;
    let (key_id, _) = api.create("acme", json!({"name": "leaked"})).await;
    let (status, _) =
        api.call("POST", &format!("/v1/keys/{key_id}/revoke"), Some(json!({"reason": "leak"}))).await;
    assert_eq!(status, StatusCode::OK);
    receiver
        .wait_for("acme's key.revoked while stuck's receiver hangs", |all| {
            all.iter().any(|r| r.kind() == "key.revoked")
        })
        .await;
    assert_eq!(kinds(&receiver.all())[0], "webhook.updated", "acme's deliveries keep their order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_past_the_maximum_age_is_still_attempted_once() {
    let receiver = Receiver::start();
    // Every delivery is older than the maximum age by the time a sender takes it.
    let api = open(&support::init(), WebhookOptions { max_age: Duration::from_millis(1), ..fast() });
    api.set_webhook("acme", json!({"url": receiver.url})).await;
    receiver.wait_for("the first delivery", |all| all.iter().any(|r| r.kind() == "webhook.updated")).await;
    // A failed attempt past the maximum age is given up, not retried.
    *receiver.default_status.lock().unwrap() = 500;
    api.create("acme", json!({"name": "ci"})).await;
    receiver
        .wait_for("one attempt of key.created", |all| all.iter().any(|r| r.kind() == "key.created"))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.of_kind("key.created").len(), 1, "given up after its first attempt");
}
