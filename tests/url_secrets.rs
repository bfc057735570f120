//! A secret pasted into a URL (a path segment, a query name or value) is never repeated:
//! not in the answer, not in the server's log lines. See docs/security.md (Secrets in URLs).

use keyledger_e2e::{Ledger, Resp};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends `METHOD PATH` over a fresh connection (for methods the HTTP client does not send)
/// and returns the whole answer.
fn raw(addr: SocketAddr, method: &str, path: &str, key: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_secret_in_the_url_is_neither_answered_nor_logged() {
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    let http = server.client();
    let admin = ledger.admin_key.as_str();
    let created =
        http.post("/v1/workspaces/acme/keys", admin, &json!({"name": "pasted", "scopes": ["read"]}));
    assert_eq!(created.status, 201, "{}", created.dump());
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    let encoded = secret.replace('_', "%5F");

    let check = |what: &str, resp: Resp, status: u16| {
        assert_eq!(resp.status, status, "{what}: {}", resp.dump());
        let dump = resp.dump();
        assert!(!dump.contains(&secret), "{what} repeats the secret: {dump}");
        assert!(resp.body["message"].is_string(), "{what}: not a contract error body: {dump}");
    };
    // The finding itself: a secret where a key id belongs.
    check("GET /v1/keys/SECRET", http.get(&format!("/v1/keys/{secret}"), admin), 404);
    check("GET /v1/keys/SECRET (percent-encoded)", http.get(&format!("/v1/keys/{encoded}"), admin), 404);
    check(
        "PATCH /v1/keys/SECRET",
        http.patch(&format!("/v1/keys/{secret}"), admin, &json!({"name": "x"})),
        404,
    );
    check("GET /v1/keys/SECRET/events", http.get(&format!("/v1/keys/{secret}/events"), admin), 404);
    check(
        "GET /v1/audit/keys/SECRET/compromise",
        http.get(&format!("/v1/audit/keys/{secret}/compromise"), admin),
        404,
    );
    check("GET /v1/audit/requests/SECRET", http.get(&format!("/v1/audit/requests/{secret}"), admin), 404);
    check("GET /v1/audit/sources/SECRET", http.get(&format!("/v1/audit/sources/{secret}"), admin), 400);
    check(
        "GET /v1/audit/sources?cidr=SECRET",
        http.get(&format!("/v1/audit/sources?cidr={secret}"), admin),
        400,
    );
    check("GET /v1/workspaces/SECRET/keys", http.get(&format!("/v1/workspaces/{secret}/keys"), admin), 400);
    check(
        "GET /v1/audit/keys?workspace=SECRET",
        http.get(&format!("/v1/audit/keys?workspace={secret}"), admin),
        400,
    );
    check(
        "GET /v1/audit/hygiene?SECRET=1",
        http.get(&format!("/v1/audit/hygiene?workspace=acme&{secret}=1"), admin),
        400,
    );
    check("GET /SECRET", http.get(&format!("/{secret}"), admin), 404);
    check("GET /v1/verify/SECRET", http.send("GET", &format!("/v1/verify/{secret}"), &[], None), 401);

    // A method the route does not have: the framework's 405, whose message names the path.
    let answer = raw(server.addr, "DELETE", &format!("/v1/keys/{secret}"), admin);
    assert!(answer.starts_with("HTTP/1.1 405"), "DELETE /v1/keys/SECRET: {answer}");
    assert!(!answer.contains(&secret), "the 405 repeats the secret: {answer}");

    // Nothing went to the log either, though each of those requests has its access line.
    let logs = server.stop();
    assert!(!logs.contains(&secret), "the server logged the secret:\n{logs}");
    assert!(!logs.contains(&encoded), "the server logged the percent-encoded secret:\n{logs}");
    assert!(logs.contains("[redacted]"), "no access line shows the redacted path:\n{logs}");
}

/// Gateways forward what their clients sent: a secret in the original request's query
/// string or headers must not be recorded in the usage event (which is kept for ever and
/// exported), whichever verify mode carried it.
#[test]
fn a_secret_in_a_forwarded_request_is_not_recorded() {
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    let http = server.client();
    let admin = ledger.admin_key.as_str();
    let issue = |name: &str| {
        let created = http.post("/v1/workspaces/acme/keys", admin, &json!({"name": name}));
        assert_eq!(created.status, 201, "{}", created.dump());
        (
            created.body["key_id"].as_str().expect("key_id").to_owned(),
            created.body["secret"].as_str().expect("secret").to_owned(),
        )
    };
    let (key_id, key) = issue("caller");
    let (_, leaked) = issue("pasted into a URL");
    let encoded = leaked.replace('_', "%5F");

    let bearer = format!("Bearer {key}");
    let forwarded = format!("/orders?api_key={leaked}&page=2");
    let agent = format!("script ({leaked})");
    let resp = http.send(
        "GET",
        "/v1/verify",
        &[
            ("authorization", bearer.as_str()),
            ("x-forwarded-uri", forwarded.as_str()),
            ("user-agent", agent.as_str()),
        ],
        None,
    );
    assert_eq!(resp.status, 200, "forward-auth: {}", resp.dump());
    let suffix = format!("/v1/verify/orders?token={encoded}");
    let resp = http.send("GET", &suffix, &[("authorization", bearer.as_str())], None);
    assert_eq!(resp.status, 200, "path-suffix form: {}", resp.dump());
    let body = json!({"key": key, "context": {"path": format!("/orders/{leaked}"), "request_id": leaked}});
    let resp = http.send("POST", "/v1/verify", &[], Some(&body));
    assert_eq!(resp.status, 200, "JSON mode: {}", resp.dump());

    let events = http.get(&format!("/v1/keys/{key_id}/events?kind=usage"), admin);
    assert_eq!(events.status, 200, "{}", events.dump());
    let dump = events.dump();
    assert_eq!(events.body["events"].as_array().map(Vec::len), Some(3), "{dump}");
    assert!(!dump.contains(&leaked) && !dump.contains(&encoded), "an event holds the secret: {dump}");
    assert!(dump.contains("/orders?api_key=[redacted]&page=2"), "the path around it is kept: {dump}");

    // Nor is it anywhere in the data dir's bytes (log, tree, projections).
    drop(server.stop());
    let mut files = vec![ledger.data_dir.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).expect("read_dir").map(|e| e.expect("entry").path()));
        } else {
            let bytes = std::fs::read(&path).expect("read");
            for needle in [leaked.as_bytes(), encoded.as_bytes()] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds the secret",
                    path.display()
                );
            }
        }
    }
}

/// A secret sent in the wrong field of a JSON body: the parser's message would quote it
/// (`invalid type: string "kl_live_…"`), as a value, a field name or a map key on the path, so
/// no value of the body is repeated, whether the secret is keyledger's (checksummed) or
/// another system's (imported keys have none); nor by the checks of `_ledger` keys' scopes
/// and resources.
#[test]
fn a_secret_in_the_wrong_field_of_a_body_is_not_repeated() {
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    let http = server.client();
    let admin = ledger.admin_key.as_str();
    let created = http.post("/v1/workspaces/acme/keys", admin, &json!({"name": "pasted"}));
    assert_eq!(created.status, 201, "{}", created.dump());
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    let foreign = "sk_prod_6bN3xQ9vT2mK8pL5wR7yZ4cJ1hF0dG";

    for value in [secret.as_str(), foreign] {
        let check = |what: &str, resp: Resp, field: &str| {
            let dump = resp.dump();
            assert!(matches!(resp.status, 400 | 422), "{what}: {dump}");
            assert!(!dump.contains(value), "{what} repeats the value: {dump}");
            let message = resp.body["message"].as_str().unwrap_or_default();
            assert!(message.contains(field), "{what}: the message names no field: {dump}");
        };
        let verify = |body: serde_json::Value| http.send("POST", "/v1/verify", &[], Some(&body));
        check("verify, a string for scopes", verify(json!({"key": secret, "scopes": value})), "sequence");
        check("verify, an unknown field", verify(json!({"key": secret, value: 1})), "unknown field");
        check(
            "create, a string for scopes",
            http.post("/v1/workspaces/acme/keys", admin, &json!({"name": "x", "scopes": value})),
            "scopes",
        );
        check(
            "create, an unknown field",
            http.post("/v1/workspaces/acme/keys", admin, &json!({"name": "x", value: 1})),
            "unknown field",
        );
        check(
            "create, a string for metadata",
            http.post("/v1/workspaces/acme/keys", admin, &json!({"name": "x", "metadata": value})),
            "metadata",
        );
        check(
            "create, a metadata key and a wrong value under it",
            http.post(
                "/v1/workspaces/acme/keys",
                admin,
                &json!({"name": "x", "metadata": {value: 1}, "scopes": [value, 2]}),
            ),
            "scopes[1]",
        );
        check(
            "admin key, a scope that is no scope",
            http.post("/v1/workspaces/_ledger/keys", admin, &json!({"name": "x", "scopes": [value]})),
            "scopes",
        );
        check(
            "admin key, a resource that is no workspace",
            http.post(
                "/v1/workspaces/_ledger/keys",
                admin,
                &json!({"name": "x", "scopes": ["ledger:keys:read"], "resources": [value]}),
            ),
            "resources",
        );
        let key_id = created.body["key_id"].as_str().expect("key_id");
        check(
            "update, a scope the key does not hold",
            http.patch(&format!("/v1/keys/{key_id}"), admin, &json!({"scopes": [value]})),
            "scopes",
        );
        check(
            "create, an allowed source that is no address",
            http.post(
                "/v1/workspaces/acme/keys",
                admin,
                &json!({"name": "x", "allowed_sources": ["10.0.0.1", value]}),
            ),
            "number 2",
        );
        check(
            "webhook, an event type that is none",
            http.put(
                "/v1/workspaces/acme/webhook",
                admin,
                &json!({"url": "https://8.8.8.8/hook", "events": [value]}),
            ),
            "notification type",
        );
        let import = json!({"keys": [{"name": "x", "scopes": value, "hash": {"algorithm": "sha256", "value": "0".repeat(64)}}]});
        check(
            "import, a string for scopes",
            http.post("/v1/workspaces/acme/keys/import", admin, &import),
            "invalid",
        );
    }

    let logs = server.stop();
    assert!(!logs.contains(&secret), "the server logged the secret:\n{logs}");
    assert!(!logs.contains(foreign), "the server logged the foreign secret:\n{logs}");
}
