//! `GET /metrics` of the real binary: Prometheus's own linter (`promtool check metrics`)
//! accepts it, and strangers cannot grow it. See docs/operations.md (Metrics).

use keyledger_core::{Environment, KeyPrefix, Secret};
use keyledger_e2e::{Client, Ledger, Server};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The methods `keyledger_http_requests_total` may carry; everything else is `other`.
const METHODS: [&str; 10] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other"];

fn metrics_text(http: &Client) -> String {
    let resp = http.send("GET", "/metrics", &[], None);
    assert_eq!(resp.status, 200, "{}", resp.dump());
    match resp.body {
        Value::String(text) => text,
        other => panic!("/metrics is not Prometheus text: {other}"),
    }
}

/// The series of a Prometheus text: each sample line without its value.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.rsplit_once(' ').map_or(line, |(name, _)| name).to_owned())
        .collect()
}

/// Sends `METHOD PATH` over a fresh connection (any method token, which the HTTP client
/// refuses to send) and returns the status code.
fn raw_status(addr: SocketAddr, method: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {answer:?}"))
}

/// Made-up method tokens, each one distinct.
fn made_up_method(i: usize) -> String {
    format!("ZRCZW{}NIZLSO", (b'A' + i as u8) as char)
}

/// Some traffic of every kind: a create, verifications allowed, denied, unknown and
/// malformed, a made-up method and a 404.
fn traffic(ledger: &Ledger, server: &Server) {
    let http = server.client();
    let created = http.post(
        "/v1/workspaces/acme/keys",
        &ledger.admin_key,
        &json!({"name": "metrics", "scopes": ["read"]}),
    );
    assert_eq!(created.status, 201, "{}", created.dump());
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    let allowed = http.send("POST", "/v1/verify", &[], Some(&json!({"key": secret, "scopes": ["read"]})));
    assert_eq!(allowed.status, 200, "{}", allowed.dump());
    let denied = http.send("POST", "/v1/verify", &[], Some(&json!({"key": secret, "scopes": ["write"]})));
    assert_eq!(denied.status, 403, "{}", denied.dump());
    let never_issued = Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).expect("entropy");
    let unknown = http.send("POST", "/v1/verify", &[], Some(&json!({"key": never_issued.expose()})));
    assert_eq!(unknown.status, 401, "{}", unknown.dump());
    let malformed = http.send("POST", "/v1/verify", &[], Some(&json!({"key": "kl_live_short"})));
    assert_eq!(malformed.status, 401, "{}", malformed.dump());
    let missing = http.get("/v1/no-such-route", &ledger.admin_key);
    assert_eq!(missing.status, 404, "{}", missing.dump());
    let status = raw_status(server.addr, "BREW", "/v1/verify");
    assert!((400..500).contains(&status), "BREW /v1/verify answered {status}");
}

/// Where `promtool` is; a missing promtool fails the test (CI installs it with
/// scripts/install-gateways.sh).
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!("promtool is not installed: run scripts/install-gateways.sh (Debian package `prometheus`)")
    })
}

#[test]
fn promtool_accepts_metrics_after_every_kind_of_traffic() {
    let promtool = promtool();
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    traffic(&ledger, &server);
    let text = metrics_text(&server.client());
    for name in
        ["keyledger_http_requests_total", "keyledger_verifications_total", "keyledger_log_fsync_seconds"]
    {
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{text}");
    }

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let output = child.wait_with_output().expect("promtool");
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- /metrics ---\n{text}",
        output.status
    );
}

#[test]
fn made_up_methods_add_no_series_beyond_other() {
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    let http = server.client();
    traffic(&ledger, &server);
    // Twice, so that the `/metrics` request itself is counted before the snapshot.
    metrics_text(&http);
    let before = series(&metrics_text(&http));

    for i in 0..20 {
        let method = made_up_method(i);
        let path = if i % 2 == 0 { "/v1/verify".to_owned() } else { format!("/nonexistent-{i}") };
        let status = raw_status(server.addr, &method, &path);
        assert!((400..500).contains(&status), "{method} {path} answered {status}");
    }
    let text = metrics_text(&http);
    let after = series(&text);

    let new: Vec<&String> = after.difference(&before).collect();
    assert!(
        new.iter()
            .all(|s| s.starts_with("keyledger_http_requests_total{") && s.contains(r#"method="other""#)),
        "20 made-up methods added series other than method=\"other\": {new:#?}"
    );
    assert!(new.len() <= 2, "one new series per (route, status) at most, got {new:#?}");
    assert!(after.len() - before.len() <= 2, "/metrics grew by {} series", after.len() - before.len());
    for i in 0..20 {
        assert!(!text.contains(&made_up_method(i)), "a made-up method is a label value:\n{text}");
    }
    for line in text.lines().filter(|l| l.starts_with("keyledger_http_requests_total{")) {
        assert!(
            METHODS.iter().any(|m| line.contains(&format!(r#"method="{m}""#))),
            "a method outside the closed set: {line}"
        );
    }
}
