//! Importing keys by a foreign SHA-256 hash through the real binary (docs/import.md): the
//! CLI imports a hex and a base64 digest, each secret verifies in JSON and forward-auth
//! mode, the first use appears as `rehashed` in the audit, a restart keeps both keys, and a
//! revoked imported key is refused.

use base64::Engine as _;
use keyledger_e2e::{Env, Resp, keyledger_bin, text};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::process::Command;

const HEX_SECRET: &str = "sk_live_legacy_4f9Qw2ZrT8xLp0VbN6mYc";
const B64_SECRET: &str = "unkey_3ZbV8vQeWm9kq7LrT2pNxYcHs5";

fn verify_json(env: &Env, secret: &str) -> Resp {
    env.http.send("POST", "/v1/verify", &[], Some(&json!({"key": secret})))
}

fn forward(env: &Env, secret: &str) -> Resp {
    env.http.send("GET", "/v1/verify", &[("authorization", &format!("Bearer {secret}"))], None)
}

fn events(env: &Env, key_id: &str) -> Vec<String> {
    let page = env.http.get(&format!("/v1/keys/{key_id}/events?limit=1000"), env.root());
    assert_eq!(page.status, 200, "{}", page.dump());
    page.body["events"].as_array().unwrap().iter().map(|e| text(e, "kind")).collect()
}

fn import_cli(env: &Env, file: &std::path::Path) -> std::process::Output {
    Command::new(keyledger_bin())
        .args(["keys", "import", file.to_str().unwrap(), "--workspace", "acme", "--url", &env.server.url])
        .env("KEYLEDGER_ADMIN_KEY", env.root())
        .output()
        .expect("run keyledger keys import")
}

#[test]
fn imported_keys_verify_are_rehashed_survive_a_restart_and_are_refused_once_revoked() {
    let env = Env::start(&[]);
    let hex = hex::encode(Sha256::digest(HEX_SECRET));
    let b64 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(B64_SECRET));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.jsonl");
    let lines = [
        json!({"name": "legacy", "scopes": ["read"], "external_id": "k-1",
               "hash": {"algorithm": "sha256", "encoding": "hex", "value": hex}}),
        json!({"name": "from-unkey", "hash": {"algorithm": "sha256_base64", "value": b64}}),
    ];
    let text_lines: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&file, text_lines.join("\n")).unwrap();

    let run = import_cli(&env, &file);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("Imported 2 keys") && stdout.contains("0 already present"), "{stdout}");
    // Again: nothing new.
    let again = import_cli(&env, &file);
    assert!(String::from_utf8_lossy(&again.stdout).contains("Imported 0 keys"), "{again:?}");
    // A bad file: a clear message, a non-zero exit, nothing imported.
    std::fs::write(&file, r#"{"name": "x", "hash": {"algorithm": "md5", "value": "00"}}"#).unwrap();
    let bad = import_cli(&env, &file);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("keys[0]"), "{bad:?}");

    let list = env.http.get("/v1/workspaces/acme/keys", env.root());
    let keys = list.body["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "{}", list.dump());
    assert!(keys.iter().all(|k| k["imported"] == true && k["rehashed_at"].is_null()), "{keys:?}");
    assert!(!list.dump().contains(&hex) && !list.dump().contains(&b64), "the digest is never shown");
    let id_of = |name: &str| text(keys.iter().find(|k| k["name"] == name).unwrap(), "key_id");
    let (legacy, unkey) = (id_of("legacy"), id_of("from-unkey"));

    for secret in [HEX_SECRET, B64_SECRET] {
        let answer = verify_json(&env, secret);
        assert_eq!(answer.status, 200, "{}", answer.dump());
        assert_eq!(forward(&env, secret).status, 200);
    }
    assert_eq!(verify_json(&env, "unkey_not_imported").status, 401);
    for id in [&legacy, &unkey] {
        let kinds = events(&env, id);
        assert_eq!(kinds.iter().filter(|k| *k == "rehashed").count(), 1, "{kinds:?}");
        assert!(env.key(id)["rehashed_at"].is_string());
    }

    let Env { server, ledger, .. } = env;
    server.stop();
    let server = ledger.serve(&[]);
    let http = server.client();
    let env = Env { server, ledger, http };
    for secret in [HEX_SECRET, B64_SECRET] {
        assert_eq!(verify_json(&env, secret).status, 200, "after a restart");
    }
    let revoked = env.http.post(&format!("/v1/keys/{unkey}/revoke"), env.root(), &json!({"reason": "moved"}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    assert_eq!(verify_json(&env, B64_SECRET).status, 401);
    assert_eq!(forward(&env, B64_SECRET).status, 401);
    let Env { server, ledger, .. } = env;
    server.stop();
    let check = ledger.log_verify();
    assert!(check.success(), "the log and registry still verify: {}{}", check.stdout, check.stderr);
}

fn digest_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret))
}

fn entry(name: &str, secret: &str) -> Value {
    json!({"name": name, "scopes": ["read"], "hash": {"algorithm": "sha256", "value": digest_hex(secret)}})
}

#[test]
fn the_import_route_is_all_or_nothing_bounded_idempotent_and_never_wider_than_its_caller() {
    let env = Env::start(&[]);
    let path = "/v1/workspaces/acme/keys/import";
    let size = env.log_size();

    // Entry 2 of 3 is bad: the contract's error body names it, nothing is written.
    let mut bad = entry("b", "s-b");
    bad["hash"]["value"] = json!("abcd");
    let refused =
        env.http.post(path, env.root(), &json!({"keys": [entry("a", "s-a"), entry("c", "s-c"), bad]}));
    assert_eq!(refused.status, 400, "{}", refused.dump());
    assert_eq!(refused.body["error"], "invalid_request");
    assert!(
        refused.body["message"].as_str().unwrap().starts_with("keys[2]: `hash.value`"),
        "{}",
        refused.dump()
    );
    let secret_given = env.http.post(path, env.root(), &json!({"keys": [{"secret": "s", "name": "x"}]}));
    assert_eq!(secret_given.status, 400, "a secret is never accepted: {}", secret_given.dump());
    // What an import cannot honour is refused, never silently dropped.
    for (field, value) in
        [("credits", json!({"remaining": 5})), ("ratelimits", json!([])), ("expires_in", json!("1d"))]
    {
        let mut extra = entry("x", "s-x");
        extra[field] = value;
        let refused = env.http.post(path, env.root(), &json!({"keys": [extra]}));
        assert_eq!(refused.status, 400, "{field}: {}", refused.dump());
        assert!(refused.body["message"].as_str().unwrap_or_default().contains(field), "{}", refused.dump());
    }
    let empty = env.http.post(path, env.root(), &json!({"keys": []}));
    assert_eq!(empty.status, 400, "{}", empty.dump());
    let too_many: Vec<Value> = (0..1001).map(|n| entry(&format!("k{n}"), &format!("s-{n}"))).collect();
    let over = env.http.post(path, env.root(), &json!({"keys": too_many}));
    assert_eq!(over.status, 400, "{}", over.dump());
    assert_eq!(env.log_size(), size, "nothing was written");

    // 1,000 keys (a body far above the general 64 KiB limit) in one request.
    let keys: Vec<Value> = (0..1000).map(|n| entry(&format!("k{n}"), &format!("s-{n}"))).collect();
    let first = env.http.post(path, env.root(), &json!({ "keys": keys }));
    assert_eq!(first.status, 201, "{}", first.dump());
    assert_eq!(first.body["imported"], 1000);
    // With an Idempotency-Key, a retry replays the answer and writes nothing.
    let auth = format!("Bearer {}", env.root());
    let headers = [("authorization", auth.as_str()), ("idempotency-key", "import-1")];
    let body = json!({"keys": [entry("idem", "s-idem")]});
    let once = env.http.send("POST", path, &headers, Some(&body));
    assert_eq!(once.status, 201, "{}", once.dump());
    let after = env.log_size();
    let retry = env.http.send("POST", path, &headers, Some(&body));
    assert_eq!(retry.status, 201, "{}", retry.dump());
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body["keys"], once.body["keys"]);
    assert_eq!(env.log_size(), after, "the retry wrote nothing");
    // The same hashes without the header: the existing keys, nothing new.
    let again = env.http.post(path, env.root(), &json!({"keys": [entry("k7", "s-7")]}));
    assert_eq!(again.status, 201, "{}", again.dump());
    assert_eq!(again.body["already_present"], 1);
    assert_eq!(again.body["keys"][0]["key_id"], first.body["keys"][7]["key_id"]);
    assert_eq!(env.log_size(), after);
    // Also once the key was used (re-hashed): still that key, nothing new.
    assert_eq!(verify_json(&env, "s-7").status, 200);
    let used = env.log_size();
    let again = env.http.post(path, env.root(), &json!({"keys": [entry("k7b", "s-7")]}));
    assert_eq!(again.status, 201, "{}", again.dump());
    assert_eq!(again.body["already_present"], 1, "{}", again.dump());
    assert_eq!(again.body["keys"][0]["key_id"], first.body["keys"][7]["key_id"]);
    assert_eq!(env.log_size(), used);

    // An admin key of `beta` only cannot import into `acme`.
    let created = env.http.post(
        "/v1/workspaces/_ledger/keys",
        env.root(),
        &json!({"name": "beta-admin", "scopes": ["ledger:keys:write"], "resources": ["beta"]}),
    );
    assert_eq!(created.status, 201, "{}", created.dump());
    let narrow = text(&created.body, "secret");
    let outside = env.http.post(path, &narrow, &json!({"keys": [entry("z", "s-z")]}));
    assert_eq!(outside.status, 404, "{}", outside.dump());
    let own =
        env.http.post("/v1/workspaces/beta/keys/import", &narrow, &json!({"keys": [entry("z", "s-z")]}));
    assert_eq!(own.status, 201, "{}", own.dump());
    assert_eq!(verify_json(&env, "s-z").status, 200);
}
