//! RFC 7662 token introspection (`POST /oauth2/introspect`, docs/api.md "Token
//! introspection") through the real binary: the answers, the events, who may ask; then a
//! real OAuth-aware gateway nobody here wrote, Apache httpd with Debian's mod_auth_openidc
//! as an OAuth 2.0 resource server, in front of a backend (docs/gateways.md).
//!
//! Apache runs from `tests/gateways/httpd-oauth.conf` in a private temp dir, on loopback,
//! in the foreground (`apache2 -X`). It is installed by `scripts/install-gateways.sh`; a
//! missing binary fails the test with that hint instead of skipping it.

#[path = "gateways/support.rs"]
mod support;

use keyledger_e2e::{Client, Env, Ledger, Resp, keyledger_bin, path_str, poll, text};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Backend, Gateway, require_binary};

/// Whether the test runs as root (Apache then drops to `nobody` for its worker).
fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

const WORKSPACE: &str = "acme";

/// `POST /oauth2/introspect` with a form body and the given headers.
fn introspect(base: &str, headers: &[(&str, &str)], content_type: &str, body: &str) -> Resp {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut request = agent.post(&format!("{base}/oauth2/introspect")).header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body).expect("POST /oauth2/introspect");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let text = response.body_mut().read_to_string().expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Resp { status, headers, body }
}

const FORM: &str = "application/x-www-form-urlencoded";

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn create(http: &Client, admin: &str, workspace: &str, body: Value) -> Value {
    let resp = http.post(&format!("/v1/workspaces/{workspace}/keys"), admin, &body);
    assert_eq!(resp.status, 201, "create {body}: {}", resp.dump());
    resp.body
}

/// The events of a key, oldest first.
fn events(http: &Client, admin: &str, key_id: &str) -> Vec<Value> {
    let resp = http.get(&format!("/v1/keys/{key_id}/events"), admin);
    assert_eq!(resp.status, 200, "{}", resp.dump());
    resp.body["events"].as_array().cloned().unwrap_or_default()
}

fn usage(http: &Client, admin: &str, key_id: &str) -> Vec<Value> {
    events(http, admin, key_id).into_iter().filter(|e| e["kind"] == "used" || e["kind"] == "denied").collect()
}

fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.dump());
    assert_eq!(resp.body["error"], code, "{}", resp.dump());
    assert!(resp.body["message"].is_string(), "{}", resp.dump());
    assert!(resp.body["request_id"].as_str().is_some_and(|id| id.starts_with("req_")), "{}", resp.dump());
}

#[test]
fn introspection_answers_rfc_7662_and_records_each_use() {
    let env = Env::start(&[]);
    let (http, root) = (&env.http, env.root());
    let base = env.server.url.clone();
    let introspector =
        create(http, root, "_ledger", json!({"name": "gateway", "scopes": ["ledger:introspect"]}));
    let gateway_key = text(&introspector, "secret");
    let good = create(
        http,
        root,
        WORKSPACE,
        json!({"name": "app", "scopes": ["orders:write", "orders:read"], "owner": "alice", "expires_in": "30d"}),
    );
    let no_owner = create(http, root, WORKSPACE, json!({"name": "plain", "scopes": ["orders:read"]}));
    let revoked = create(http, root, WORKSPACE, json!({"name": "revoked"}));
    let resp = http.post(&format!("/v1/keys/{}/revoke", text(&revoked, "key_id")), root, &json!({}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let disabled = create(http, root, WORKSPACE, json!({"name": "disabled"}));
    let resp = http.post(&format!("/v1/keys/{}/disable", text(&disabled, "key_id")), root, &json!({}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let expiring = create(http, root, WORKSPACE, json!({"name": "short", "expires_in": "1s"}));
    let expiring_created = Instant::now();

    // A valid key: RFC 7662's members, by Bearer and by Basic with any user name.
    let good_id = text(&good, "key_id");
    let form = format!("token={}&token_type_hint=access_token", text(&good, "secret"));
    for auth in [bearer(&gateway_key), basic("anyone", &gateway_key), basic("", &gateway_key)] {
        let resp = introspect(&base, &[("authorization", &auth), ("x-request-id", "gw-1")], FORM, &form);
        assert_eq!(resp.status, 200, "{}", resp.dump());
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{}", resp.dump());
        let body = &resp.body;
        assert_eq!(body["active"], true, "{body}");
        assert_eq!(body["scope"], "orders:read orders:write", "{body}");
        assert_eq!(body["client_id"], good_id.as_str(), "{body}");
        assert_eq!(body["sub"], "alice", "{body}");
        assert_eq!(body["token_type"], "api_key", "{body}");
        assert_eq!(body["workspace"], WORKSPACE, "{body}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
            as i64;
        let iat = body["iat"].as_i64().expect("iat");
        assert!((now - 120..=now + 5).contains(&iat), "{body}");
        let exp = body["exp"].as_i64().expect("exp");
        assert!((exp - iat - 30 * 86_400).abs() <= 5, "exp is 30 days after iat: {body}");
    }
    // Without owner or expiry: `sub` is the key id and there is no `exp`.
    let resp = introspect(
        &base,
        &[("authorization", &bearer(&gateway_key))],
        FORM,
        &format!("token={}", text(&no_owner, "secret")),
    );
    assert_eq!(resp.body["sub"], text(&no_owner, "key_id").as_str(), "{}", resp.dump());
    assert!(resp.body.get("exp").is_none(), "{}", resp.dump());

    // Each introspection of a known key is one `used` event, with the gateway's request id.
    let used = usage(http, root, &good_id);
    assert_eq!(used.len(), 3, "{used:?}");
    assert!(used.iter().all(|e| e["kind"] == "used" && e["context"]["request_id"] == "gw-1"), "{used:?}");

    // Anything else: exactly `{"active": false}`, and a `denied` event for a known key.
    let left = Duration::from_millis(1_500).saturating_sub(expiring_created.elapsed());
    std::thread::sleep(left);
    let inactive = [
        (text(&revoked, "secret"), Some(("revoked", text(&revoked, "key_id")))),
        (text(&disabled, "secret"), Some(("disabled", text(&disabled, "key_id")))),
        (text(&expiring, "secret"), Some(("expired", text(&expiring, "key_id")))),
        ("kl_live_not_a_key".to_owned(), None),
        (format!("{}x", text(&good, "secret")), None),
    ];
    for (token, known) in &inactive {
        let size = env.log_size();
        let resp =
            introspect(&base, &[("authorization", &bearer(&gateway_key))], FORM, &format!("token={token}"));
        assert_eq!(resp.status, 200, "{}", resp.dump());
        assert_eq!(resp.body, json!({"active": false}), "{token}: {}", resp.dump());
        match known {
            Some((reason, key_id)) => {
                let denied: Vec<Value> =
                    usage(http, root, key_id).into_iter().filter(|e| e["kind"] == "denied").collect();
                assert_eq!(denied.len(), 1, "{denied:?}");
                assert!(denied[0]["reason"].as_str().is_some_and(|r| r.contains(reason)), "{denied:?}");
            }
            None => assert_eq!(env.log_size(), size, "an unknown token appended something"),
        }
    }

    // Who may ask: no key 401, a key without the scope 403, a workspace key 403; bad forms 400/415.
    let token = format!("token={}", text(&good, "secret"));
    let before = usage(http, root, &good_id).len();
    assert_error(&introspect(&base, &[], FORM, &token), 401, "unauthorized");
    assert_error(
        &introspect(&base, &[("authorization", &basic("u", "kl_live_nope"))], FORM, &token),
        401,
        "unauthorized",
    );
    assert_error(&introspect(&base, &[("authorization", "Basic !!!")], FORM, &token), 401, "unauthorized");
    assert_error(&introspect(&base, &[("authorization", &bearer(root))], FORM, &token), 403, "forbidden");
    assert_error(
        &introspect(&base, &[("authorization", &bearer(&text(&good, "secret")))], FORM, &token),
        403,
        "forbidden",
    );
    let gateway_auth = [("authorization", bearer(&gateway_key))];
    let gateway_auth: Vec<(&str, &str)> = gateway_auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_error(&introspect(&base, &gateway_auth, FORM, "token_type_hint=x"), 400, "invalid_request");
    assert_error(
        &introspect(&base, &gateway_auth, FORM, &format!("{token}&{token}")),
        400,
        "invalid_request",
    );
    assert_error(&introspect(&base, &gateway_auth, "application/json", &token), 415, "invalid_request");
    assert_eq!(usage(http, root, &good_id).len(), before, "a refused introspection verified the key");

    // The introspection key can do nothing else.
    for path in ["/v1/workspaces/acme/keys", "/v1/audit/hygiene?workspace=acme", "/v1/workspaces/acme/policy"]
    {
        let resp = http.get(path, &gateway_key);
        assert_eq!(resp.status, 403, "GET {path}: {}", resp.dump());
    }
    let resp = http.post("/v1/workspaces/acme/keys", &gateway_key, &json!({"name": "x"}));
    assert_eq!(resp.status, 403, "{}", resp.dump());
    let resp = http.post(&format!("/v1/keys/{good_id}/revoke"), &gateway_key, &json!({}));
    assert_eq!(resp.status, 403, "{}", resp.dump());

    // A key limited to other workspaces sees acme's keys as inactive, and verifies nothing.
    let elsewhere = create(
        http,
        root,
        "_ledger",
        json!({"name": "other-gateway", "scopes": ["ledger:introspect"], "resources": ["other"]}),
    );
    let size = env.log_size();
    let resp = introspect(&base, &[("authorization", &bearer(&text(&elsewhere, "secret")))], FORM, &token);
    assert_eq!(resp.body, json!({"active": false}), "{}", resp.dump());
    assert_eq!(env.log_size(), size, "a key the caller may not see was verified");

    // The verifications count in the metrics by outcome.
    let metrics = http.send("GET", "/metrics", &[], None);
    let metrics = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("keyledger_verifications_total{outcome=\"denied\",reason=\"revoked\"}")),
        "{metrics}"
    );
    let Env { server, ledger, .. } = env;
    server.stop();
    assert!(ledger.log_verify().success());
}

// ---------------------------------------------------------------------------------------
// Apache httpd with mod_auth_openidc, live.
// ---------------------------------------------------------------------------------------

/// `keyledger serve` over TLS (mod_auth_openidc accepts only an https introspection
/// endpoint), with the test certificate of `crates/server/tests/fixtures`.
struct TlsServer {
    child: Child,
    addr: SocketAddr,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/server/tests/fixtures")
}

impl TlsServer {
    fn start(ledger: &Ledger, logs: &Path) -> TlsServer {
        let port =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("port").port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let child = Command::new(keyledger_bin())
            .args(["serve", "--data-dir", path_str(&ledger.data_dir), "--listen", &addr.to_string()])
            .arg("--tls-cert")
            .arg(fixtures().join("tls-cert.pem"))
            .arg("--tls-key")
            .arg(fixtures().join("tls-key.pem"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.join("keyledger.out")).expect("log"))
            .stderr(std::fs::File::create(logs.join("keyledger.err")).expect("log"))
            .spawn()
            .expect("start keyledger serve");
        let mut server = TlsServer { child, addr };
        poll(Duration::from_secs(30), "keyledger to listen over TLS", || {
            assert!(server.child.try_wait().expect("try_wait").is_none(), "keyledger serve exited");
            TcpStream::connect(addr).ok()
        });
        server
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_apache(keyledger: SocketAddr, backend: SocketAddr, introspect_key: &str) -> Gateway {
    let binary = require_binary("apache2");
    for _attempt in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let port =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("port").port();
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateways/httpd-oauth.conf");
        // As root, Apache will not serve as root: its worker runs as `nobody`.
        let user = if is_root() { "User nobody\nGroup nogroup" } else { "" };
        let config = std::fs::read_to_string(&template)
            .expect("read httpd-oauth.conf")
            .replace("@DIR@", path_str(dir.path()))
            .replace("@PORT@", &port.to_string())
            .replace("@USER@", user)
            .replace("@KEYLEDGER@", &keyledger.to_string())
            .replace("@BACKEND@", &backend.to_string())
            .replace("@INTROSPECT_KEY@", introspect_key)
            .replace("@CA@", path_str(&fixtures().join("ca-cert.pem")));
        let path = dir.path().join("httpd.conf");
        std::fs::write(&path, config).expect("write httpd.conf");
        let child = Command::new(&binary)
            .arg("-X")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut gateway = Gateway { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = gateway.child.try_wait().expect("try_wait") {
                let logs = gateway.logs(&["stdout", "stderr", "error.log"]);
                if logs.contains("in use") {
                    break; // lost the race for the port
                }
                panic!("apache2 exited with {status} before it was ready:\n{logs}");
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return gateway;
            }
            assert!(Instant::now() < deadline, "apache2 did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    panic!("could not start apache2 on a free port");
}

#[test]
fn apache_mod_auth_openidc_asks_keyledger() {
    require_binary("apache2");
    let ledger = Ledger::init();
    let root = ledger.admin_key.clone();
    // Keys are issued over plain HTTP; the gateway then talks to keyledger over TLS.
    let (gateway_key, good, revoked) = {
        let server = ledger.serve(&[]);
        let http = server.client();
        let gateway =
            create(&http, &root, "_ledger", json!({"name": "apache", "scopes": ["ledger:introspect"]}));
        let good = create(&http, &root, WORKSPACE, json!({"name": "app", "scopes": ["orders:read"]}));
        let revoked = create(&http, &root, WORKSPACE, json!({"name": "gone", "scopes": ["orders:read"]}));
        let resp = http.post(&format!("/v1/keys/{}/revoke", text(&revoked, "key_id")), &root, &json!({}));
        assert_eq!(resp.status, 200, "{}", resp.dump());
        server.stop();
        (text(&gateway, "secret"), good, revoked)
    };
    let logs = tempfile::tempdir().expect("tempdir");
    let mut keyledger = TlsServer::start(&ledger, logs.path());
    let backend = Backend::start();
    let apache = start_apache(keyledger.addr, backend.addr, &gateway_key);
    let client = Client::new(&apache.url());
    let apache_logs = || apache.logs(&["stdout", "stderr", "error.log"]);
    let good_id = text(&good, "key_id");

    // A valid key: the backend is reached, with the identity and without the key.
    for _ in 0..2 {
        let before = backend.hits();
        let resp =
            client.send("GET", "/api/orders", &[("authorization", &bearer(&text(&good, "secret")))], None);
        assert_eq!(resp.status, 200, "{}\n{}", resp.dump(), apache_logs());
        assert_eq!(backend.hits(), before + 1);
        let got = &resp.body["headers"];
        assert!(got.get("authorization").is_none(), "the key reached the backend: {got}");
        assert!(
            got.as_object().is_some_and(|h| h.values().any(|v| v == good_id.as_str())),
            "mod_auth_openidc passes the key id on: {got}"
        );
    }
    // A revoked, an unknown and no key: 401 from Apache, the backend untouched.
    let before = backend.hits();
    for auth in [Some(bearer(&text(&revoked, "secret"))), Some(bearer("kl_live_not_a_key")), None] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let resp = client.send("GET", "/api/orders", &headers, None);
        assert_eq!(resp.status, 401, "{auth:?}: {}\n{}", resp.dump(), apache_logs());
    }
    assert_eq!(backend.hits(), before, "a refused request reached the backend");

    // keyledger down: fail closed.
    keyledger.kill();
    let resp = client.send("GET", "/api/orders", &[("authorization", &bearer(&text(&good, "secret")))], None);
    assert!(resp.status == 401 || resp.status >= 500, "keyledger down answered {}", resp.dump());
    assert_eq!(backend.hits(), before, "keyledger down, yet the backend was reached");
    drop(apache);

    // What keyledger recorded: two uses of the good key (Apache asks on every request),
    // a denial of the revoked one, each from the gateway's address.
    let server = ledger.serve(&[]);
    let http = server.client();
    let used = usage(&http, &root, &good_id);
    assert_eq!(used.len(), 2, "{used:?}");
    assert!(used.iter().all(|e| e["kind"] == "used" && e["context"]["ip"] == "127.0.0.1"), "{used:?}");
    let denied = usage(&http, &root, &text(&revoked, "key_id"));
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["kind"], "denied", "{denied:?}");
}
