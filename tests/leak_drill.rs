//! The leak drill through the real binary (docs/api.md, "Audit"; docs/security.md, "Leak runbook"):
//! a key is used by its service from known addresses with a known user agent; at T_leak its secret
//! leaks and is used from a new address with a new user agent; the key is revoked; the attacker
//! keeps trying. The compromise report since T_leak must flag exactly the new source and agent,
//! count allowed, denied and after-revocation attempts; the lookup of the leaked secret must find
//! the key. Then the log verifies offline and a signed export verifies.

use keyledger_core::Timestamp;
use keyledger_e2e::{Client, Ledger, Resp, Run, Server, keyledger, keyledger_bin, path_str};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const SERVICE_IP: &str = "198.51.100.7";
const SERVICE_IP_2: &str = "198.51.100.8";
const SERVICE_AGENT: &str = "billing-svc/1.4.2";
const ATTACKER_IP: &str = "203.0.113.66";
const ATTACKER_AGENT: &str = "python-requests/2.31.0";

/// A forward-auth verification as nginx `auth_request` sends it.
fn gateway(http: &Client, secret: &str, scope: &str, ip: &str, agent: &str, path: &str) -> Resp {
    http.send(
        "GET",
        &format!("/v1/verify?scope={scope}"),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("x-forwarded-for", ip),
            ("user-agent", agent),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", path),
        ],
        None,
    )
}

fn expect(resp: &Resp, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.dump());
}

/// `keyledger ARGS --url U --admin-key K` (an admin command against `server`).
fn admin(server: &Server, ledger: &Ledger, args: &[&str]) -> Run {
    let mut args = args.to_vec();
    args.extend(["--url", &server.url, "--admin-key", &ledger.admin_key]);
    keyledger(&args)
}

fn admin_json(server: &Server, ledger: &Ledger, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let run = admin(server, ledger, &args);
    assert!(run.success(), "keyledger {args:?}: {}\n{}", run.status, run.stderr);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", run.stdout))
}

/// `keyledger audit lookup` with `input` on stdin.
fn cli_lookup(server: &Server, ledger: &Ledger, input: &str) -> Run {
    let mut child = Command::new(keyledger_bin())
        .args(["audit", "lookup", "--json", "--url", &server.url])
        .env("KEYLEDGER_ADMIN_KEY", &ledger.admin_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyledger audit lookup");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write the secret");
    drop(stdin);
    child.wait_with_output().expect("wait for keyledger").into()
}

/// `(value, new_since, count, allowed, denied)` of a report list, sorted by value.
fn stats(list: &Value) -> Vec<(String, bool, u64, u64, u64)> {
    let mut out: Vec<_> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|s| {
            (
                s["value"].as_str().expect("value").to_owned(),
                s["new_since"].as_bool().expect("new_since"),
                s["count"].as_u64().expect("count"),
                s["allowed"].as_u64().expect("allowed"),
                s["denied"].as_u64().expect("denied"),
            )
        })
        .collect();
    out.sort();
    out
}

fn time(value: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(value.as_str().unwrap_or_else(|| panic!("not a time: {value}")))
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {value}"))
}

/// An RFC 3339 time as a query value (`+` and `:` percent-encoded).
fn query_time(t: Timestamp) -> String {
    t.to_rfc3339().replace('+', "%2B").replace(':', "%3A")
}

/// Checks the report of the leaked key over `[t_leak, until)`.
fn check_report(report: &Value, key_id: &str, admin_key_id: &str, t_leak: Timestamp, revoked_at: Timestamp) {
    assert_eq!(report["key"]["key_id"], key_id, "{report}");
    assert_eq!(report["key"]["status"], "revoked");
    // The lifecycle with its actors: created and revoked by the init admin key.
    let lifecycle: Vec<(&str, &str)> = report["lifecycle"]
        .as_array()
        .expect("lifecycle")
        .iter()
        .map(|e| (e["kind"].as_str().expect("kind"), e["actor"].as_str().expect("actor")))
        .collect();
    assert_eq!(lifecycle, [("created", admin_key_id), ("revoked", admin_key_id)], "{report}");
    assert_eq!(report["lifecycle"][1]["reason"], "leaked on a paste site");

    // In the window: the service twice (allowed); the attacker 3 allowed, 1 denied for a
    // scope, 2 refused after the revocation.
    assert_eq!(report["uses"]["allowed"], 5, "{report}");
    assert_eq!(report["uses"]["denied"], 3, "{report}");
    let (first, last) = (time(&report["uses"]["first"]), time(&report["uses"]["last"]));
    assert!(t_leak <= first && first <= last && revoked_at < last, "{report}");

    // Exactly the attacker's address and agent are new; the service's are not (and its
    // second address, quiet in the window, is absent).
    assert_eq!(
        stats(&report["sources"]),
        [(SERVICE_IP.to_owned(), false, 2, 2, 0), (ATTACKER_IP.to_owned(), true, 6, 3, 3)],
        "{report}"
    );
    assert_eq!(
        stats(&report["user_agents"]),
        [(SERVICE_AGENT.to_owned(), false, 2, 2, 0), (ATTACKER_AGENT.to_owned(), true, 6, 3, 3)],
        "{report}"
    );
    let mut paths: Vec<(String, u64)> = report["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| (p["value"].as_str().expect("path").to_owned(), p["count"].as_u64().expect("count")))
        .collect();
    paths.sort();
    assert_eq!(paths, [("/v1/customers/export".to_owned(), 6), ("/v1/invoices".to_owned(), 2)]);

    // After the revocation: two attempts, both from the attacker.
    let after = &report["after_revocation"];
    assert_eq!(time(&after["since"]), revoked_at, "{report}");
    assert_eq!(after["count"], 2, "{report}");
    assert!(revoked_at < time(&after["first"]) && time(&after["first"]) <= time(&after["last"]));
    let sources = stats(&after["sources"]);
    assert_eq!(sources.len(), 1, "{report}");
    assert_eq!((sources[0].0.as_str(), sources[0].2, sources[0].4), (ATTACKER_IP, 2, 2), "{report}");
}

#[test]
fn leak_drill_through_the_binary() {
    let started = std::time::Instant::now();
    let ledger = Ledger::init();
    let server = ledger.serve(&["--trust-forwarded-for", "--checkpoint-interval-secs", "1"]);
    let http = server.client();
    let admin_key = ledger.admin_key.as_str();

    let key =
        http.post("/v1/workspaces/acme/keys", admin_key, &json!({"name": "billing", "scopes": ["read"]}));
    expect(&key, 201, "create the billing key");
    let (key_id, secret) = (key.body["key_id"].as_str().unwrap(), key.body["secret"].as_str().unwrap());
    let other =
        http.post("/v1/workspaces/acme/keys", admin_key, &json!({"name": "reports", "scopes": ["read"]}));
    expect(&other, 201, "create a bystander key");
    let other_secret = other.body["secret"].as_str().unwrap();

    // Baseline: the service, from its two addresses, always the same agent; one request
    // for a scope the key lacks. A bystander key is used from the address the attacker
    // will use: "new" is per key.
    for _ in 0..3 {
        expect(&gateway(&http, secret, "read", SERVICE_IP, SERVICE_AGENT, "/v1/invoices"), 200, "baseline");
    }
    expect(&gateway(&http, secret, "read", SERVICE_IP_2, SERVICE_AGENT, "/v1/invoices"), 200, "baseline");
    expect(&gateway(&http, secret, "admin", SERVICE_IP, SERVICE_AGENT, "/v1/invoices"), 403, "baseline");
    expect(&gateway(&http, other_secret, "read", ATTACKER_IP, ATTACKER_AGENT, "/"), 200, "bystander");

    std::thread::sleep(Duration::from_millis(50));
    let t_leak = Timestamp::now();
    std::thread::sleep(Duration::from_millis(50));

    // After the leak: the service carries on; the attacker uses the key, and probes.
    for _ in 0..2 {
        expect(&gateway(&http, secret, "read", SERVICE_IP, SERVICE_AGENT, "/v1/invoices"), 200, "service");
    }
    for _ in 0..3 {
        let resp = gateway(&http, secret, "read", ATTACKER_IP, ATTACKER_AGENT, "/v1/customers/export");
        expect(&resp, 200, "attacker");
    }
    let probe = gateway(&http, secret, "admin", ATTACKER_IP, ATTACKER_AGENT, "/v1/customers/export");
    expect(&probe, 403, "attacker probe");

    // Revocation through the CLI, then the attacker keeps trying.
    let revoked =
        admin_json(&server, &ledger, &["keys", "revoke", key_id, "--reason", "leaked on a paste site"]);
    assert_eq!(revoked["status"], "revoked");
    let revoked_at = time(&revoked["revoked_at"]);
    for _ in 0..2 {
        let resp = gateway(&http, secret, "read", ATTACKER_IP, ATTACKER_AGENT, "/v1/customers/export");
        expect(&resp, 401, "after revocation");
        assert_eq!(resp.body["error"], "invalid_api_key", "{}", resp.dump());
    }

    // The report since T_leak, over HTTP and through `keyledger audit compromise`.
    let until = Timestamp::now().plus_micros(1_000_000);
    let report = http.get(
        &format!(
            "/v1/audit/keys/{key_id}/compromise?since={}&until={}",
            query_time(t_leak),
            query_time(until)
        ),
        admin_key,
    );
    expect(&report, 200, "compromise report");
    check_report(&report.body, key_id, &ledger.admin_key_id, t_leak, revoked_at);
    let (since_text, until_text) = (t_leak.to_rfc3339(), until.to_rfc3339());
    let cli_report = admin_json(
        &server,
        &ledger,
        &["audit", "compromise", key_id, "--since", &since_text, "--until", &until_text],
    );
    assert_eq!(cli_report, report.body, "the CLI prints the server's report");
    let human = admin(&server, &ledger, &["audit", "compromise", key_id, "--since", &since_text]);
    assert!(human.success(), "{}", human.stderr);
    let line = |needle: &str| {
        human
            .stdout
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line for {needle}:\n{}", human.stdout))
            .to_owned()
    };
    assert!(line(ATTACKER_IP).contains(" NEW "), "{}", human.stdout);
    assert!(line(ATTACKER_AGENT).contains(" NEW "), "{}", human.stdout);
    assert!(!line(SERVICE_IP).contains("NEW") && !line(SERVICE_AGENT).contains("NEW"), "{}", human.stdout);
    assert!(human.stdout.contains("After revocation or expiry: 2 attempts since "), "{}", human.stdout);

    // The whole life, for contrast: the service's second address and the earlier denial.
    let whole = http.get(&format!("/v1/audit/keys/{key_id}/compromise"), admin_key);
    expect(&whole, 200, "whole-life report");
    assert_eq!(
        (whole.body["uses"]["allowed"].as_u64(), whole.body["uses"]["denied"].as_u64()),
        (Some(9), Some(4))
    );
    assert_eq!(whole.body["sources"].as_array().map(Vec::len), Some(3), "{}", whole.body);

    // The leaked secret, looked up: found, revoked, with its report; never echoed.
    let found = http.post("/v1/audit/lookup", admin_key, &json!({"secret": secret}));
    expect(&found, 200, "lookup");
    assert_eq!(found.body["key_id"], key_id);
    assert_eq!(found.body["workspace"], "acme");
    assert_eq!(found.body["status"], "revoked");
    assert_eq!(found.body["report"]["key"]["key_id"], key_id);
    assert_eq!(found.body["report"]["uses"]["allowed"], 9, "{}", found.body);
    assert_eq!(found.body["report"]["after_revocation"]["count"], 2, "{}", found.body);
    assert!(!found.dump().contains(secret), "the lookup answer repeats the secret");
    let unknown = "kl_live_NotARealKeyNotARealKeyNotARealKeyNotARealKey1234";
    let missing = http.post("/v1/audit/lookup", admin_key, &json!({"secret": unknown}));
    expect(&missing, 404, "lookup of a never-issued secret");
    assert_eq!(missing.body["error"], "not_found");
    let via_cli = cli_lookup(&server, &ledger, &format!("{secret}\n"));
    assert!(via_cli.success(), "{}", via_cli.stderr);
    let via_cli: Value = serde_json::from_str(&via_cli.stdout).expect("lookup JSON");
    assert_eq!((via_cli["key_id"].as_str(), via_cli["status"].as_str()), (Some(key_id), Some("revoked")));
    assert_eq!(cli_lookup(&server, &ledger, unknown).status.code(), Some(4));

    // Stop; the log verifies offline; no secret anywhere in the data dir or the logs.
    let logs = server.stop();
    assert!(!logs.contains(secret), "the secret is in the server's output");
    let verified = ledger.log_verify();
    assert!(verified.success(), "log verify: {}\n{}", verified.stdout, verified.stderr);
    assert!(verified.stdout.contains("log intact"), "{}", verified.stdout);
    for file in keyledger_e2e::files_under(&ledger.data_dir) {
        let bytes = std::fs::read(&file).expect("read data file");
        assert!(
            keyledger_e2e::find_bytes(&bytes, secret.as_bytes(), 0).is_none(),
            "the secret is in {}",
            file.display()
        );
    }

    // Restarted: the report is the same (the audit indexes persist), and a signed export of
    // the whole log verifies offline with init's public key.
    let server = ledger.serve(&["--trust-forwarded-for"]);
    let again = server.client().get(
        &format!(
            "/v1/audit/keys/{key_id}/compromise?since={}&until={}",
            query_time(t_leak),
            query_time(until)
        ),
        admin_key,
    );
    expect(&again, 200, "report after restart");
    check_report(&again.body, key_id, &ledger.admin_key_id, t_leak, revoked_at);
    let export = ledger.tmp.path().join("export.jsonl");
    let created = admin(&server, &ledger, &["export", "create", "--out", path_str(&export)]);
    assert!(created.success(), "export create: {}\n{}", created.status, created.stderr);
    server.stop();
    let lines = std::fs::read_to_string(&export).expect("export file");
    assert!(!lines.contains(secret), "the secret is in the export");
    let key_events = lines.lines().filter(|l| l.contains(key_id)).count();
    // created, 4 baseline uses + 1 denial, 5 uses + 1 denial, revoked, 2 attempts, lookups.
    assert!(key_events >= 15, "{key_events} lines of the key in the export");
    let checked = keyledger(&["export", "verify", path_str(&export), "--public-key", &ledger.log_public_key]);
    assert!(checked.success(), "export verify: {}\n{}{}", checked.status, checked.stdout, checked.stderr);
    eprintln!("leak drill done in {:.1}s", started.elapsed().as_secs_f64());
}
