//! `keyledger scan` through the real binary (docs/leaks.md): a key planted in a repository's
//! history is found with its file, line and commit, and never printed; a corpus of random and
//! near-miss strings yields nothing; `--lookup` and `--revoke` act through the server; the
//! exit status tells a live key from none. Also the gitleaks and trufflehog rules of
//! docs/leaks.md, run over generated keys and near-misses with the checksum.

use keyledger_core::{Environment, KeyPrefix, Secret};
use keyledger_e2e::{Env, Run, keyledger, path_str, text, workspace_root};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn generated(prefix: &str, environment: Environment) -> Secret {
    Secret::generate(&prefix.parse::<KeyPrefix>().unwrap(), environment).unwrap()
}

/// Strings that look like keys and are not: every character of a real key's tail changed in
/// turn, cut short, and random strings of the right shape.
fn near_misses(good: &str) -> Vec<String> {
    let mut misses = Vec::new();
    for i in good.len() - 49..good.len() {
        let mut bytes = good.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'Z' { b'Y' } else { b'Z' };
        misses.push(String::from_utf8(bytes).unwrap());
    }
    misses.push(good[..good.len() - 1].to_owned());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..2000 {
        let body: String = (0..49)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                alphabet[(seed % 62) as usize] as char
            })
            .collect();
        misses.push(format!("kl_live_{body}"));
    }
    misses
}

fn assert_no_secret(run: &Run, secret: &str) {
    assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret), "the secret was printed");
}

#[test]
fn a_key_in_the_history_is_found_and_a_corpus_of_near_misses_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let secret = generated("kl", Environment::Live);
    std::fs::write(repo.join("app.env"), format!("NAME=billing\nAPI_KEY={}\n", secret.expose())).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "add config"]);
    let planted = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::remove_file(repo.join("app.env")).unwrap();
    std::fs::write(repo.join("README"), "nothing here\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "remove the key"]);

    // The working tree is clean: without --git nothing is found.
    let run = keyledger(&["scan", path_str(&repo)]);
    assert_eq!(run.status.code(), Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("0 finding(s)"), "{}", run.stdout);

    let run = keyledger(&["scan", "--git", path_str(&repo)]);
    assert_eq!(run.status.code(), Some(1), "a live key exits 1: {}{}", run.stdout, run.stderr);
    let location = format!("app.env:2 (commit {})", &planted[..12]);
    assert!(run.stdout.contains(&location), "{}", run.stdout);
    assert!(run.stdout.contains(&secret.hint()), "{}", run.stdout);
    assert!(run.stdout.contains("1 finding(s)"), "{}", run.stdout);
    assert_no_secret(&run, secret.expose());

    // Random and near-miss strings, one per line, in several files: nothing.
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    let misses = near_misses(generated("acme", Environment::Live).expose());
    for (i, chunk) in misses.chunks(500).enumerate() {
        std::fs::write(corpus.join(format!("strings-{i}.txt")), chunk.join("\n")).unwrap();
    }
    let run = keyledger(&["scan", "--json", path_str(&corpus)]);
    assert_eq!(run.status.code(), Some(0), "{}{}", run.stdout, run.stderr);
    let answer: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(answer["findings"], json!([]));

    // A test key alone does not fail the check; it is still reported.
    let test_key = generated("kl", Environment::Test);
    std::fs::write(corpus.join("fixture.rs"), format!("const KEY: &str = \"{}\";", test_key.expose()))
        .unwrap();
    let run = keyledger(&["scan", path_str(&corpus)]);
    assert_eq!(run.status.code(), Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("fixture.rs:1"), "{}", run.stdout);
}

#[test]
fn lookup_and_revoke_act_on_the_keys_found() {
    let env = Env::start(&[]);
    let create = |name: &str| {
        let resp = env.http.post("/v1/workspaces/acme/keys", env.root(), &json!({"name": name}));
        assert_eq!(resp.status, 201, "{}", resp.dump());
        resp.body
    };
    let active = create("leaked");
    let revoked = create("already revoked");
    let resp =
        env.http.post(&format!("/v1/keys/{}/revoke", text(&revoked, "key_id")), env.root(), &json!({}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let stranger = generated("kl", Environment::Live);

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("paste.txt"),
        format!(
            "a={}\nb={}\nc={}\nagain={}\n",
            text(&active, "secret"),
            text(&revoked, "secret"),
            stranger.expose(),
            text(&active, "secret")
        ),
    )
    .unwrap();
    let dir = path_str(tmp.path());
    let connection = ["--url", env.server.url.as_str(), "--admin-key", env.root()];
    let scan = |extra: &[&str]| {
        let mut args = vec!["scan", dir];
        args.extend_from_slice(extra);
        args.extend_from_slice(&connection);
        keyledger(&args)
    };

    let run = scan(&["--lookup", "--json"]);
    assert_eq!(run.status.code(), Some(1), "an active key exits 1: {}{}", run.stdout, run.stderr);
    let findings: Value = serde_json::from_str(&run.stdout).unwrap();
    let findings = findings["findings"].as_array().unwrap().clone();
    assert_eq!(findings.len(), 4);
    assert_eq!(findings[0]["status"], "active");
    assert_eq!(findings[0]["key_id"], active["key_id"]);
    assert_eq!(findings[0]["location"], json!(format!("{dir}/paste.txt:1")));
    assert_eq!(findings[1]["status"], "revoked");
    assert_eq!(findings[2].get("status"), None, "not a key of this ledger");
    assert_eq!(findings[3]["status"], "active", "a repeated secret shares its status");
    for secret in [text(&active, "secret"), text(&revoked, "secret")] {
        assert_no_secret(&run, &secret);
    }

    // No terminal and no --yes: refused, nothing revoked.
    let run = scan(&["--revoke"]);
    assert_eq!(run.status.code(), Some(2), "{}{}", run.stdout, run.stderr);
    assert_eq!(env.key(&text(&active, "key_id"))["status"], "active");

    let run = scan(&["--revoke", "--yes"]);
    assert_eq!(run.status.code(), Some(0), "nothing active remains: {}{}", run.stdout, run.stderr);
    let key = env.key(&text(&active, "key_id"));
    assert_eq!(key["status"], "revoked");
    let events =
        env.http.get(&format!("/v1/keys/{}/events?kind=lifecycle", text(&active, "key_id")), env.root());
    let last = events.body["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "revoked");
    assert_eq!(last["reason"], json!(format!("found by keyledger scan at {dir}/paste.txt:1")));
}

#[test]
fn bulk_lookup_hides_other_workspaces_and_bounds_its_input() {
    let env = Env::start(&[]);
    let resp = env.http.post("/v1/workspaces/acme/keys", env.root(), &json!({"name": "k"}));
    let acme = resp.body;
    let resp = env.http.post(
        "/v1/workspaces/_ledger/keys",
        env.root(),
        &json!({"name": "auditor of other", "scopes": ["ledger:audit:read"], "resources": ["other"]}),
    );
    assert_eq!(resp.status, 201, "{}", resp.dump());
    let auditor = text(&resp.body, "secret");

    let body = json!({"secrets": [text(&acme, "secret"), "not a key"]});
    let resp = env.http.post("/v1/audit/lookup/bulk", env.root(), &body);
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body["results"][0]["key_id"], acme["key_id"]);
    assert_eq!(resp.body["results"][0]["hint"], acme["hint"]);
    assert_eq!(resp.body["results"][1], json!({"found": false}));
    let resp = env.http.post("/v1/audit/lookup/bulk", &auditor, &body);
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body["results"][0], json!({"found": false}), "outside the caller's workspaces");

    let before = env.log_size();
    let too_many: Vec<String> = (0..501).map(|i| format!("kl_live_{i}")).collect();
    let resp = env.http.post("/v1/audit/lookup/bulk", env.root(), &json!({"secrets": too_many}));
    assert_eq!(resp.status, 400, "{}", resp.dump());
    let resp = env.http.post("/v1/audit/lookup/bulk", env.root(), &json!({"secrets": []}));
    assert_eq!(resp.status, 400, "{}", resp.dump());
    assert_eq!(env.log_size(), before, "a refused lookup records nothing");
}

/// The regular expression of each rule in docs/leaks.md.
fn documented_rules() -> Vec<regex::Regex> {
    let doc = std::fs::read_to_string(workspace_root().join("docs/leaks.md")).unwrap();
    let gitleaks = doc.split("regex = '''").nth(1).and_then(|rest| rest.split("'''").next()).unwrap();
    let trufflehog = doc.split("key: '").nth(1).and_then(|rest| rest.split('\'').next()).unwrap();
    assert_eq!(gitleaks, trufflehog, "both rules are the same expression");
    [gitleaks, trufflehog].iter().map(|pattern| regex::Regex::new(pattern).unwrap()).collect()
}

#[test]
fn the_documented_scanner_rules_with_the_checksum_find_keys_and_only_keys() {
    for rule in documented_rules() {
        for (i, prefix) in ["kl", "acme", "a", "abcdefghijklmnop", "x9"].iter().enumerate() {
            let environment = if i % 2 == 0 { Environment::Live } else { Environment::Test };
            let secret = generated(prefix, environment);
            let text = format!("token: \"{}\", next", secret.expose());
            let matched: Vec<&str> = rule.captures_iter(&text).map(|c| c.get(1).unwrap().as_str()).collect();
            assert_eq!(matched, vec![secret.expose()], "the rule finds a generated key");
            assert!(Secret::check(matched[0]).is_ok());
        }
        let good = generated("kl", Environment::Live);
        for miss in near_misses(good.expose()) {
            for found in rule.captures_iter(&miss) {
                assert!(
                    Secret::check(found.get(1).unwrap().as_str()).is_err(),
                    "the checksum rejects a near-miss"
                );
            }
        }
    }
}
