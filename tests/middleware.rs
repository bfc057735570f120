//! The tower middleware end to end: the real `keyledger` binary and the example axum service
//! (`examples/axum-service`, its real binary) on real TCP ports.

use keyledger_e2e::{Client, Ledger, Resp, cargo_bin, free_port, poll};
use serde_json::{Value, json};
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example service, run as `axum-service --listen 127.0.0.1:PORT --keyledger-url URL`
/// with every log level on (so that the test can check the key is never logged).
struct Service {
    child: Child,
    url: String,
    logs: tempfile::TempDir,
}

impl Service {
    fn start(keyledger_url: &str) -> Service {
        let bin = cargo_bin("keyledger-example-axum", "axum-service");
        for _attempt in 0..5 {
            let listen = format!("127.0.0.1:{}", free_port());
            let logs = tempfile::tempdir().expect("tempdir");
            let child = Command::new(&bin)
                .args(["--listen", &listen, "--keyledger-url", keyledger_url])
                .env("RUST_LOG", "trace")
                .stdin(Stdio::null())
                .stdout(File::create(logs.path().join("stdout")).expect("log file"))
                .stderr(File::create(logs.path().join("stderr")).expect("log file"))
                .spawn()
                .expect("cannot start the example service");
            let mut service = Service { child, url: format!("http://{listen}"), logs };
            let client = Client::new(&service.url);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(status) = service.child.try_wait().expect("try_wait") {
                    if service.logs().contains("cannot listen") {
                        break; // lost the race for the port: try another
                    }
                    panic!("the example service exited with {status}:\n{}", service.logs());
                }
                if std::net::TcpStream::connect(&listen).is_ok() {
                    let health = client.send("GET", "/healthz", &[], None);
                    assert_eq!(health.status, 200, "{}", health.dump());
                    return service;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if service.child.try_wait().expect("try_wait").is_none() {
                panic!("the example service did not become healthy:\n{}", service.logs());
            }
        }
        panic!("could not find a free port for the example service");
    }

    fn client(&self) -> Client {
        Client::new(&self.url)
    }

    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bearer(key: &str) -> [(&'static str, String); 1] {
    [("authorization", format!("Bearer {key}"))]
}

fn send(client: &Client, method: &str, path: &str, headers: &[(&str, String)]) -> Resp {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let body = json!({});
    client.send(method, path, &headers, (method == "POST").then_some(&body))
}

fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.dump());
    assert_eq!(resp.body["error"], code, "{}", resp.dump());
    let request_id = resp.body["request_id"].as_str().unwrap_or_else(|| panic!("{}", resp.dump()));
    assert!(request_id.starts_with("req_"), "{}", resp.dump());
    assert_eq!(resp.header("request-id"), Some(request_id), "{}", resp.dump());
}

/// The key's usage events, once keyledger's audit index has `count` of them.
fn usage_events(admin: &Client, admin_key: &str, key_id: &str, count: usize) -> Vec<Value> {
    poll(Duration::from_secs(10), "the usage events", || {
        let resp = admin.get(&format!("/v1/keys/{key_id}/events?kind=usage"), admin_key);
        assert_eq!(resp.status, 200, "{}", resp.dump());
        let events = resp.body["events"].as_array().cloned().unwrap_or_default();
        (events.len() >= count).then_some(events)
    })
}

#[test]
fn the_example_service_verifies_every_request_with_the_real_keyledger() {
    let ledger = Ledger::init();
    let keyledger = ledger.serve(&[]);
    let admin = keyledger.client();
    let created = admin.post(
        "/v1/workspaces/acme/keys",
        &ledger.admin_key,
        &json!({"name": "reports reader", "scopes": ["reports:read"]}),
    );
    assert_eq!(created.status, 201, "{}", created.dump());
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    let key_id = created.body["key_id"].as_str().expect("key_id").to_owned();

    let service = Service::start(&keyledger.url);
    let http = service.client();

    // reports:read: GET is allowed, and the handler sees the verified identity.
    let mut headers = bearer(&secret).to_vec();
    headers.push(("user-agent", "e2e-reports/1.0".to_owned()));
    headers.push(("x-request-id", "svc-req-0001".to_owned()));
    let list = send(&http, "GET", "/reports?page=2", &headers);
    assert_eq!(list.status, 200, "{}", list.dump());
    assert_eq!(list.body["caller"]["key_id"], key_id.as_str(), "{}", list.dump());
    assert_eq!(list.body["caller"]["workspace"], "acme", "{}", list.dump());
    assert_eq!(list.body["caller"]["environment"], "live", "{}", list.dump());

    // …but not reports:write: keyledger's 403 and body.
    let create = send(&http, "POST", "/reports", &[("x-api-key", secret.clone())]);
    assert_error(&create, 403, "forbidden");
    assert_eq!(create.body["valid"], false, "{}", create.dump());

    // No key: 401 from the middleware, keyledger not asked; the open route needs nothing.
    assert_error(&send(&http, "GET", "/reports", &[]), 401, "unauthorized");
    assert_eq!(send(&http, "GET", "/healthz", &[]).status, 200);

    // keyledger recorded what the service saw: method, path (no query), client address,
    // user agent and the service's request id; the POST as a denial.
    let events = usage_events(&admin, &ledger.admin_key, &key_id, 2);
    assert_eq!(events.len(), 2, "one event per verification of this key: {events:?}");
    let used = &events[0];
    assert_eq!(used["kind"], "used", "{used}");
    let context = &used["context"];
    assert_eq!(context["method"], "GET", "{used}");
    assert_eq!(context["path"], "/reports", "{used}");
    assert_eq!(context["ip"], "127.0.0.1", "{used}");
    assert_eq!(context["user_agent"], "e2e-reports/1.0", "{used}");
    assert_eq!(context["request_id"], "svc-req-0001", "{used}");
    assert_eq!(context["scopes"], json!(["reports:read"]), "{used}");
    assert_eq!(
        used["request_id"], list.body["caller"]["request_id"],
        "VerifiedKey::request_id is the event's"
    );
    let denied = &events[1];
    assert_eq!(denied["kind"], "denied", "{denied}");
    assert_eq!(denied["context"]["method"], "POST", "{denied}");
    assert_eq!(denied["context"]["scopes"], json!(["reports:write"]), "{denied}");

    // Revocation: once the revoke call has returned, the very next request is refused.
    let revoked = admin.post(&format!("/v1/keys/{key_id}/revoke"), &ledger.admin_key, &json!({}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    assert_error(&send(&http, "GET", "/reports", &bearer(&secret)), 401, "invalid_api_key");

    // keyledger stopped: fail closed.
    let fresh = admin.post(
        "/v1/workspaces/acme/keys",
        &ledger.admin_key,
        &json!({"name": "second", "scopes": ["reports:read"]}),
    );
    assert_eq!(fresh.status, 201, "{}", fresh.dump());
    let fresh_secret = fresh.body["secret"].as_str().expect("secret").to_owned();
    assert_eq!(send(&http, "GET", "/reports", &bearer(&fresh_secret)).status, 200);
    keyledger.stop();
    let down = send(&http, "GET", "/reports", &bearer(&fresh_secret));
    assert_error(&down, 503, "unavailable");

    // Every log level was on: the keys never appear in the service's output.
    let logs = service.logs();
    assert!(logs.contains("no verdict"), "the 503 is explained in the log:\n{logs}");
    for secret in [&secret, &fresh_secret] {
        let body = &secret[secret.len() - 49..];
        assert!(!logs.contains(body), "a key is in the service's log:\n{logs}");
    }
}
