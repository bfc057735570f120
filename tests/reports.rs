//! Compliance reports through the real binary (docs/compliance.md): `GET
//! /v1/reports/compliance`, `keyledger report compliance` (JSON, HTML, PDF) and `keyledger
//! report verify` against a saved export and against the entry bundles; tampered reports
//! fail, and the API refuses what it should.

use keyledger_core::Timestamp;
use keyledger_e2e::{Ledger, Run, keyledger, path_str};
use serde_json::{Value, json};
use std::path::Path;

const DAY: i64 = 86_400_000_000;

fn day(offset_days: i64) -> String {
    Timestamp::now().plus_micros(offset_days * DAY).to_rfc3339()[..10].to_owned()
}

fn assert_ok(run: &Run, what: &str) {
    assert!(
        run.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        run.status,
        run.stdout,
        run.stderr
    );
}

fn verify(file: &Path, key: &str, extra: &[&str]) -> Run {
    let mut args = vec!["report", "verify", path_str(file), "--public-key", key];
    args.extend_from_slice(extra);
    keyledger(&args)
}

#[test]
fn a_report_is_produced_read_and_checked_against_the_log() {
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    let http = server.client();
    let admin = ledger.admin_key.as_str();
    let create = |ws: &str, name: &str| {
        let created = http.post(
            &format!("/v1/workspaces/{ws}/keys"),
            admin,
            &json!({"name": name, "scopes": ["read"], "owner": "payments"}),
        );
        assert_eq!(created.status, 201, "{}", created.dump());
        (
            created.body["key_id"].as_str().unwrap().to_owned(),
            created.body["secret"].as_str().unwrap().to_owned(),
        )
    };
    let (busy_id, busy) = create("acme", "checkout <b>service</b>");
    let (_idle_id, _idle) = create("acme", "idle");
    let (gone_id, gone) = create("acme", "retired");
    let (_beta_id, beta) = create("beta", "other");
    for _ in 0..5 {
        assert_eq!(http.get("/v1/verify?scope=read", &busy).status, 200);
    }
    assert_eq!(http.get("/v1/verify?scope=write", &busy).status, 403);
    assert_eq!(http.get("/v1/verify", &gone).status, 200);
    assert_eq!(http.get("/v1/verify", &beta).status, 200);
    let revoked = http.post(&format!("/v1/keys/{gone_id}/revoke"), admin, &json!({"reason": "offboarded"}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    for _ in 0..2 {
        assert_eq!(http.get("/v1/verify", &gone).status, 401);
    }

    let dir = ledger.tmp.path();
    let (from, to) = (day(-1), day(1));
    let url = server.url.as_str();
    let fetch = |format: &str, out: &Path| {
        keyledger(&[
            "report",
            "compliance",
            "--url",
            url,
            "--admin-key",
            admin,
            "--workspace",
            "acme",
            "--from",
            &from,
            "--to",
            &to,
            "--format",
            format,
            "--out",
            path_str(out),
        ])
    };
    let json_file = dir.join("report.json");
    let html_file = dir.join("report.html");
    assert_ok(&fetch("json", &json_file), "report compliance --format json");
    assert_ok(&fetch("html", &html_file), "report compliance --format html");

    // The figures are those of the audit API.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    let figures = &report["figures"];
    let inventory = figures["inventory"].as_array().unwrap();
    assert_eq!(inventory.len(), 3, "acme's three keys, no other workspace's: {figures}");
    let compromise = http.get(
        &format!("/v1/audit/keys/{busy_id}/compromise?since={from}T00:00:00Z&until={to}T00:00:00Z"),
        admin,
    );
    assert_eq!(compromise.status, 200, "{}", compromise.dump());
    let busy_row = inventory.iter().find(|k| k["key_id"] == json!(busy_id)).unwrap();
    assert_eq!(busy_row["uses_in_period"], compromise.body["uses"]["allowed"]);
    assert_eq!(busy_row["denials_in_period"], compromise.body["uses"]["denied"]);
    assert_eq!(busy_row["uses_in_period"], json!(5));
    let after = figures["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "used_after_revocation")
        .unwrap();
    assert_eq!(after["key_id"], json!(gone_id));
    assert_eq!(after["count"], json!(2));
    assert_eq!(figures["exception_counts"]["never_used"], json!(1));
    assert_eq!(figures["usage"]["used"], json!(6));
    assert_eq!(figures["usage"]["denied"], json!(3));
    let revocation =
        figures["lifecycle"]["events"].as_array().unwrap().iter().find(|e| e["kind"] == "revoked").unwrap();
    assert_eq!(revocation["actor"], json!(ledger.admin_key_id));
    assert!(revocation["request_id"].as_str().unwrap().starts_with("req_"));
    assert_eq!(revocation["detail"], json!("revoked: offboarded"));

    // The HTML is one page with its charts, the names escaped, and the signed JSON inside.
    let html = std::fs::read_to_string(&html_file).unwrap();
    assert!(html.contains("id=\"chart-days\"") && html.contains("id=\"chart-keys\""));
    assert!(html.contains("checkout &lt;b&gt;service&lt;/b&gt;") && !html.contains("<b>service</b>"));
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script src"));
    assert!(!html.contains(&busy) && !html.contains(admin), "a secret in the report");

    // An export of the workspace and the entry bundles both support every figure. The log
    // grows past the report's checkpoint first: a later export of the workspace must then
    // prove that its tree extends the report's (`--consistency-from`), or it could be of a
    // forked history.
    let report_size = report["checkpoint"]["size"].as_u64().unwrap();
    create("acme", "later");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while checkpoint_size(&http, admin) <= report_size {
        assert!(std::time::Instant::now() < deadline, "no checkpoint past the report's");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let export_acme = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "export",
            "create",
            "--url",
            url,
            "--admin-key",
            admin,
            "--workspace",
            "acme",
            "--out",
            path_str(out),
        ];
        args.extend_from_slice(extra);
        assert_ok(&keyledger(&args), "export create");
    };
    let key = ledger.log_public_key.as_str();
    let unlinked = dir.join("acme-unlinked.jsonl");
    export_acme(&unlinked, &[]);
    let run = verify(&html_file, key, &["--export", path_str(&unlinked)]);
    assert_eq!(run.status.code(), Some(1), "an unlinked later export: {}", run.stdout);
    assert!(run.stderr.contains("consistency_from"), "{}", run.stderr);
    let export = dir.join("acme.jsonl");
    export_acme(&export, &["--consistency-from", &report_size.to_string()]);
    let run = verify(&html_file, key, &["--export", path_str(&export)]);
    assert_ok(&run, "report verify html --export");
    assert!(run.stdout.contains("every figure recomputed"), "{}", run.stdout);
    let run = verify(&json_file, key, &["--url", url, "--admin-key", admin, "--json"]);
    assert_ok(&run, "report verify json --url");
    let summary: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(summary["complete"], json!(true), "{summary}");
    let run = verify(&json_file, key, &[]);
    assert_ok(&run, "report verify (signature only)");
    assert!(run.stdout.contains("NOT recomputed"), "{}", run.stdout);

    // Tampering: a number in the JSON, a number in the embedded JSON, a visible cell.
    let text = std::fs::read_to_string(&json_file).unwrap();
    let tampered = dir.join("tampered.json");
    std::fs::write(&tampered, text.replacen("\"uses_in_period\":5", "\"uses_in_period\":4", 1)).unwrap();
    assert_ne!(std::fs::read_to_string(&tampered).unwrap(), text);
    let run = verify(&tampered, key, &["--export", path_str(&export)]);
    assert_eq!(run.status.code(), Some(1), "a tampered JSON report verified: {}", run.stdout);
    assert!(run.stderr.contains("report verify FAILED"), "{}", run.stderr);
    let embedded = html.replacen("\"uses_in_period\":5", "\"uses_in_period\":4", 1);
    assert_ne!(embedded, html);
    std::fs::write(dir.join("tampered.html"), &embedded).unwrap();
    assert_eq!(verify(&dir.join("tampered.html"), key, &[]).status.code(), Some(1));
    let visible = html.replacen("<td class=\"n\">5</td>", "<td class=\"n\">4</td>", 1);
    assert_ne!(visible, html);
    std::fs::write(dir.join("visible.html"), &visible).unwrap();
    let run = verify(&dir.join("visible.html"), key, &[]);
    assert_eq!(run.status.code(), Some(1), "an edited page verified");
    assert!(run.stderr.contains("visible content"), "{}", run.stderr);
    // Another log's key.
    let other = Ledger::init();
    assert_eq!(verify(&json_file, &other.log_public_key, &[]).status.code(), Some(1));

    // PDF through headless Chromium, or a clear error without it.
    let pdf = dir.join("report.pdf");
    let run = fetch("pdf", &pdf);
    if run.success() {
        assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF"), "not a PDF");
    } else {
        assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("Chromium"), "{}", run.stderr);
    }
}

#[test]
fn the_api_refuses_bad_parameters_and_hides_other_workspaces() {
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    let http = server.client();
    let admin = ledger.admin_key.as_str();
    let (from, to) = (day(-1), day(1));
    let narrow = http.post(
        "/v1/workspaces/_ledger/keys",
        admin,
        &json!({"name": "auditor", "scopes": ["ledger:audit:read"], "resources": ["beta"]}),
    );
    assert_eq!(narrow.status, 201, "{}", narrow.dump());
    let narrow = narrow.body["secret"].as_str().unwrap().to_owned();
    let error = |path: &str, key: &str, status: u16, code: &str| {
        let resp = http.get(path, key);
        assert_eq!(resp.status, status, "{path}: {}", resp.dump());
        assert_eq!(resp.body["error"], json!(code), "{path}: {}", resp.dump());
        assert!(resp.body["message"].is_string() && resp.body["request_id"].is_string());
    };
    let base = format!("/v1/reports/compliance?from={from}&to={to}");
    error(&format!("{base}&workspace=acme"), &narrow, 404, "not_found");
    error(&format!("/v1/reports/compliance?from={to}&to={from}"), admin, 400, "invalid_request");
    error("/v1/reports/compliance?from=2020-01-01&to=2022-01-01", admin, 400, "invalid_request");
    error(&format!("{base}&format=xml"), admin, 400, "invalid_request");
    error(&format!("{base}&unused_days=0"), admin, 400, "invalid_request");
    error(&format!("{base}&colour=red"), admin, 400, "invalid_request");
    error("/v1/reports/compliance?to=2026-01-01", admin, 400, "invalid_request");
    // The narrow key's report covers its workspaces only.
    let resp = http.get(&base, &narrow);
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body["parameters"]["workspaces"], json!(["beta"]));
    let html = http.get(&format!("{base}&format=html&workspace=beta"), &narrow);
    assert_eq!(html.status, 200);
    assert_eq!(html.header("content-type"), Some("text/html; charset=utf-8"));
}

/// The size of the server's latest checkpoint.
fn checkpoint_size(http: &keyledger_e2e::Client, admin: &str) -> u64 {
    let answer = http.get("/v1/log/checkpoint", admin);
    assert_eq!(answer.status, 200, "{}", answer.dump());
    answer.body["size"].as_u64().unwrap()
}
