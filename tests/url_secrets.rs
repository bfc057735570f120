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
