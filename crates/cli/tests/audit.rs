//! `keyledger audit …` end to end: `keyledger init` + `keyledger serve --trust-forwarded-for`
//! of the real binary on a free loopback port, a key verified by "gateways" (forward-auth
//! GETs with X-Forwarded-For and User-Agent), then every audit subcommand.

use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

mod support;

use support::{Server, parse_json, stderr, stdout};

/// `keyledger serve` with the flag these tests need: the "gateways" send `X-Forwarded-For`.
const SERVE: &[&str] = &["--trust-forwarded-for"];

impl Server {
    /// A forward-auth verification as a gateway sends it: `GET /v1/verify?scope=…` with the
    /// key, the client's address, its user agent and the original path. Returns the status.
    fn gateway(&self, secret: &str, ip: &str, agent: &str, path: &str, request_id: &str) -> u16 {
        let bearer = format!("Bearer {secret}");
        let headers = [
            ("authorization", bearer.as_str()),
            ("x-forwarded-for", ip),
            ("user-agent", agent),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", path),
            ("x-request-id", request_id),
        ];
        self.http().send("GET", "/v1/verify?scope=read", &headers, None).status
    }
}

fn kinds(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect()
}

/// The `value`s of a report's list, sorted, with their `new_since`.
fn flagged(list: &Value) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            (s["value"].as_str().expect("value").to_owned(), s["new_since"].as_bool().expect("new_since"))
        })
        .collect();
    out.sort();
    out
}

const OLD_IP: &str = "198.51.100.7";
const OLD_AGENT: &str = "billing-svc/1.0";
const NEW_IP: &str = "203.0.113.66";
const NEW_AGENT: &str = "python-requests/2.31";

#[test]
fn audit_subcommands_against_a_running_server() {
    let server = Server::start(SERVE);
    let created = server.json(&["keys", "create", "acme", "--name", "billing", "--scope", "read"]);
    let key_id = created["key_id"].as_str().expect("key_id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();

    // Baseline: the service itself, from its usual address.
    assert_eq!(server.gateway(&secret, OLD_IP, OLD_AGENT, "/v1/invoices", "gw-1"), 200);
    assert_eq!(server.gateway(&secret, OLD_IP, OLD_AGENT, "/v1/invoices", "gw-2"), 200);
    std::thread::sleep(Duration::from_millis(20));
    let since = keyledger_core::Timestamp::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(20));
    // After `since`: the service again, and someone new.
    assert_eq!(server.gateway(&secret, OLD_IP, OLD_AGENT, "/v1/invoices", "gw-3"), 200);
    assert_eq!(server.gateway(&secret, NEW_IP, NEW_AGENT, "/v1/customers/export", "gw-4"), 200);
    assert_eq!(server.gateway(&secret, NEW_IP, NEW_AGENT, "/v1/customers/export", "gw-5"), 200);

    // events: one page, all pages, lifecycle only; human pages point at the next cursor.
    let all = server.json(&["audit", "events", &key_id]);
    assert_eq!(kinds(&all), ["created", "used", "used", "used", "used", "used"], "{all}");
    assert!(all["next_cursor"].is_null());
    let page = server.json(&["audit", "events", &key_id, "--kind", "usage", "--limit", "2"]);
    assert_eq!(kinds(&page), ["used", "used"]);
    assert!(page["next_cursor"].is_string(), "{page}");
    let followed = server.json(&["audit", "events", &key_id, "--kind", "usage", "--limit", "2", "--all"]);
    assert_eq!(kinds(&followed).len(), 5, "{followed}");
    assert!(followed["next_cursor"].is_null());
    let seqs: Vec<u64> = followed["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first, no repeats: {seqs:?}");
    assert_eq!(followed["events"][4]["context"]["ip"], NEW_IP);
    assert_eq!(followed["events"][4]["context"]["user_agent"], NEW_AGENT);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let rest = server.json(&["audit", "events", &key_id, "--kind", "usage", "--cursor", cursor]);
    assert_eq!(kinds(&rest).len(), 3, "{rest}");
    let lifecycle = server.json(&["audit", "events", &key_id, "--kind", "lifecycle"]);
    assert_eq!(kinds(&lifecycle), ["created"]);
    let recent = server.json(&["audit", "events", &key_id, "--kind", "usage", "--from", &since]);
    assert_eq!(kinds(&recent).len(), 3, "{recent}");
    let human = server.cli(&["audit", "events", &key_id, "--kind", "usage", "--limit", "2"]);
    assert_eq!(human.status.code(), Some(0), "{}", stderr(&human));
    let text = stdout(&human);
    assert!(text.starts_with("SEQ"), "{text}");
    assert!(text.contains(OLD_IP) && text.contains(OLD_AGENT) && text.contains("/v1/invoices"), "{text}");
    assert!(text.contains("more events: --cursor "), "{text}");

    // compromise: the new address and agent are flagged, the old ones are not.
    let report = server.json(&["audit", "compromise", &key_id, "--since", &since]);
    assert_eq!(report["key"]["key_id"], key_id.as_str());
    assert_eq!(report["uses"]["allowed"], 3, "{report}");
    assert_eq!(report["uses"]["denied"], 0, "{report}");
    assert_eq!(flagged(&report["sources"]), [(OLD_IP.to_owned(), false), (NEW_IP.to_owned(), true)]);
    assert_eq!(
        flagged(&report["user_agents"]),
        [(OLD_AGENT.to_owned(), false), (NEW_AGENT.to_owned(), true)]
    );
    let human = server.cli(&["audit", "compromise", &key_id, "--since", &since]);
    assert_eq!(human.status.code(), Some(0), "{}", stderr(&human));
    let text = stdout(&human);
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line for {needle}:\n{text}"))
    };
    assert!(line(NEW_IP).contains(" NEW "), "{text}");
    assert!(!line(OLD_IP).contains("NEW"), "{text}");
    assert!(line(NEW_AGENT).contains(" NEW "), "{text}");
    assert!(text.contains("Uses in the window: 3 allowed, 0 denied"), "{text}");
    assert!(text.contains("After revocation: not revoked or expired"), "{text}");

    // Revoked, then tried again from the new address.
    server.json(&["keys", "revoke", &key_id, "--reason", "leaked"]);
    assert_eq!(server.gateway(&secret, NEW_IP, NEW_AGENT, "/v1/customers/export", "gw-6"), 401);
    let report = server.json(&["audit", "compromise", &key_id, "--since", "1h"]);
    assert_eq!(report["after_revocation"]["count"], 1, "{report}");
    assert_eq!(flagged(&report["after_revocation"]["sources"]).len(), 1);
    assert_eq!(report["after_revocation"]["sources"][0]["value"], NEW_IP);
    let actors: Vec<&str> = report["lifecycle"]
        .as_array()
        .expect("lifecycle")
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert_eq!(actors.len(), 2, "created and revoked, each with its actor: {report}");
    let text = stdout(&server.cli(&["audit", "compromise", &key_id, "--since", "1h"]));
    assert!(text.contains("After revocation or expiry: 1 attempt since "), "{text}");

    // source: one address, a network; the human table.
    let single = server.json(&["audit", "source", NEW_IP]);
    assert_eq!(single["keys"].as_array().expect("keys").len(), 1, "{single}");
    assert_eq!(single["keys"][0]["key_id"], key_id.as_str());
    assert_eq!(single["keys"][0]["count"], 3);
    assert_eq!(single["keys"][0]["denied"], 1);
    let network = server.json(&["audit", "source", "203.0.113.0/24"]);
    assert_eq!(network["keys"], single["keys"]);
    let nobody = server.json(&["audit", "source", "192.0.2.0/24"]);
    assert!(nobody["keys"].as_array().expect("keys").is_empty());
    let earlier = server.json(&["audit", "source", OLD_IP, "--to", &since]);
    assert_eq!(earlier["keys"][0]["count"], 2, "{earlier}");
    let text = stdout(&server.cli(&["audit", "source", "198.51.100.0/24"]));
    assert!(text.starts_with("Keys used from 198.51.100.0/24: 1"), "{text}");
    assert!(text.contains(&key_id), "{text}");

    // request: the gateway's request id leads to the event and the key.
    let request = server.json(&["audit", "request", "gw-4"]);
    assert_eq!(request["key"]["key_id"], key_id.as_str(), "{request}");
    assert_eq!(request["events"][0]["context"]["ip"], NEW_IP);
    let text = stdout(&server.cli(&["audit", "request", "gw-4"]));
    assert!(text.starts_with("Request gw-4: 1 event"), "{text}");
    let missing = server.cli(&["audit", "request", "gw-nope"]);
    assert_eq!(missing.status.code(), Some(4), "{}", stderr(&missing));

    // active-at: valid at `since`, not now.
    let then = server.json(&["audit", "active-at", "acme", "--at", &since]);
    assert_eq!(then["keys"][0]["key_id"], key_id.as_str(), "{then}");
    let now = server.json(&["audit", "active-at", "acme"]);
    assert!(now["keys"].as_array().expect("keys").is_empty(), "{now}");

    // hygiene: a fresh key without expiry.
    let other = server.json(&["keys", "create", "acme", "--name", "unused"]);
    let hygiene = server.json(&["audit", "hygiene", "acme", "--unused-for", "30d", "--older-than", "1d"]);
    let ids = |field: &str| -> Vec<String> {
        hygiene[field]
            .as_array()
            .expect(field)
            .iter()
            .map(|k| k["key_id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids("never_used"), [other["key_id"].as_str().expect("id")]);
    assert_eq!(ids("no_expiry"), [other["key_id"].as_str().expect("id")]);
    let text = stdout(&server.cli(&["audit", "hygiene", "acme"]));
    assert!(text.contains("Never used (1)") && text.contains("Not used for 90d (0)"), "{text}");

    // lookup: the secret from stdin only; the answer never repeats it.
    let found = server.cli_stdin(&["audit", "lookup", "--json"], &format!("{secret}\n"));
    let found = parse_json(&["audit", "lookup"], &found);
    assert_eq!(found["key_id"], key_id.as_str());
    assert_eq!(found["workspace"], "acme");
    assert_eq!(found["status"], "revoked");
    assert_eq!(found["report"]["uses"]["allowed"], 5, "{found}");
    assert!(!found.to_string().contains(&secret));
    let human = server.cli_stdin(&["audit", "lookup"], &secret);
    assert_eq!(human.status.code(), Some(0), "{}", stderr(&human));
    assert!(stdout(&human).starts_with(&format!("This secret is key {key_id} of workspace acme")));
    assert!(!stdout(&human).contains(&secret));

    let unknown = "kl_live_NotARealKeyNotARealKeyNotARealKeyNotARealKey1234";
    let not_found = server.cli_stdin(&["audit", "lookup"], unknown);
    assert_eq!(not_found.status.code(), Some(4), "{}", stderr(&not_found));
    assert!(stderr(&not_found).starts_with("keyledger: not_found: "), "{}", stderr(&not_found));
    assert!(!stderr(&not_found).contains(unknown) && !stdout(&not_found).contains(unknown));
    let empty = server.cli(&["audit", "lookup"]);
    assert_eq!(empty.status.code(), Some(2), "{}", stderr(&empty));
    assert!(stderr(&empty).contains("no secret"), "{}", stderr(&empty));
    let as_argument = server.cli(&["audit", "lookup", &secret]);
    assert_eq!(as_argument.status.code(), Some(2), "a secret is never an argument");
}

#[test]
fn audit_errors_map_to_exit_codes() {
    let server = Server::start(SERVE);
    let unknown = "key_01jzzzzzzzzzzzzzzzzzzzzzzz";
    for args in [
        vec!["audit", "events", unknown],
        vec!["audit", "compromise", unknown, "--since", "1d"],
        vec!["audit", "events", "not-a-key-id"],
    ] {
        let output = server.cli(&args);
        assert_eq!(output.status.code(), Some(4), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).starts_with("keyledger: not_found: "), "{}", stderr(&output));
        assert!(stdout(&output).is_empty());
    }
    // Bad admin key: 3, and it is never echoed.
    let bogus = "kl_live_NotARealKeyNotARealKeyNotARealKeyNotARealKey1234";
    let denied =
        server.command(bogus, &["audit", "hygiene", "acme"]).stdin(Stdio::null()).output().expect("run");
    assert_eq!(denied.status.code(), Some(3), "{}", stderr(&denied));
    assert!(!stderr(&denied).contains(bogus));
    // An admin key without ledger:audit:read: 403, exit 3.
    let reader =
        server.json(&["keys", "create", "_ledger", "--name", "reader", "--scope", "ledger:keys:read"]);
    let reader = reader["secret"].as_str().expect("secret");
    let forbidden =
        server.command(reader, &["audit", "source", "10.0.0.1"]).stdin(Stdio::null()).output().expect("run");
    assert_eq!(forbidden.status.code(), Some(3), "{}", stderr(&forbidden));
    // Refused locally: 2, nothing sent.
    assert_eq!(server.cli(&["audit", "source", "10.0.0.300"]).status.code(), Some(2));
    assert_eq!(server.cli(&["audit", "compromise", unknown]).status.code(), Some(2));
    // The server refuses: 5.
    let invalid = server.cli(&["audit", "hygiene", "Not A Workspace"]);
    assert_eq!(invalid.status.code(), Some(5), "{}", stderr(&invalid));
    // Nobody listening: 6.
    let port = keyledger_e2e::free_port();
    let unreachable = server.cli(&["audit", "hygiene", "acme", "--url", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(unreachable.status.code(), Some(6), "{}", stderr(&unreachable));
}
