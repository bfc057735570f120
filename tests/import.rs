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
