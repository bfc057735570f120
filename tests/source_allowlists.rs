//! Source allow-lists through the real binary (docs/api.md, "Source allow-lists";
//! docs/gateways.md, "Trusted proxies"): JSON mode with and without a trusted proxy,
//! forward-auth behind `--trust-forwarded-for`/`--trusted-proxy`, the policy requirement,
//! narrowing-only updates, rotation, the `denied` event, imports, and admin keys with a
//! list on keyledger's own API.

use keyledger_e2e::{Env, Resp, keyledger, path_str, text};
use serde_json::{Value, json};

fn create(env: &Env, workspace: &str, body: Value) -> Value {
    let resp = env.http.post(&format!("/v1/workspaces/{workspace}/keys"), env.root(), &body);
    assert_eq!(resp.status, 201, "create {body}: {}", resp.dump());
    resp.body
}

fn verify_json(env: &Env, secret: &str, ip: &str) -> Resp {
    let body = json!({"key": secret, "context": {"ip": ip}});
    env.http.send("POST", "/v1/verify", &[], Some(&body))
}

fn forward(env: &Env, secret: &str, forwarded_for: &str) -> Resp {
    let auth = format!("Bearer {secret}");
    env.http.send("GET", "/v1/verify", &[("authorization", &auth), ("x-forwarded-for", forwarded_for)], None)
}

fn assert_source_denied(resp: &Resp, address: &str) {
    assert_eq!(resp.status, 403, "{}", resp.dump());
    assert_eq!(resp.body["error"], "forbidden", "{}", resp.dump());
    assert_eq!(resp.body["reason"], "source_not_allowed", "{}", resp.dump());
    assert_eq!(resp.body["valid"], false, "{}", resp.dump());
    let message = resp.body["message"].as_str().unwrap_or_default();
    assert!(message.contains(address), "the message names {address}: {}", resp.dump());
}

fn usage_events(env: &Env, key_id: &str) -> Vec<Value> {
    let resp = env.http.get(&format!("/v1/keys/{key_id}/events?kind=usage"), env.root());
    assert_eq!(resp.status, 200, "{}", resp.dump());
    resp.body["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_untrusted_caller_is_checked_by_its_own_address_and_the_policy_holds() {
    let env = Env::start(&[]);
    // A key issued before the policy: shown as an exception to it.
    let before = create(&env, "acme", json!({"name": "legacy"}));
    assert_eq!(before["allowed_sources"], json!([]));
    assert_eq!(before["allowed_sources_from"], Value::Null);

    let policy =
        env.http.put("/v1/workspaces/acme/policy", env.root(), &json!({"require_allowed_sources": true}));
    assert_eq!(policy.status, 200, "{}", policy.dump());
    assert_eq!(policy.body["require_allowed_sources"], true);
    assert_eq!(policy.body["allowed_sources_exceptions"], json!([text(&before, "key_id")]));
    assert_eq!(policy.body["allowed_sources_exception_count"], 1);

    // A live key without a list is refused, and nothing is appended; a test key is not.
    let size = env.log_size();
    let refused = env.http.post("/v1/workspaces/acme/keys", env.root(), &json!({"name": "bare"}));
    assert_eq!(refused.status, 409, "a policy refusal, like require_expiry: {}", refused.dump());
    assert_eq!(refused.body["error"], "conflict");
    assert!(
        refused.body["message"].as_str().unwrap_or_default().contains("allowed_sources"),
        "{}",
        refused.dump()
    );
    let bad = env.http.post(
        "/v1/workspaces/acme/keys",
        env.root(),
        &json!({"name": "bad", "allowed_sources": ["10.0.0.0/33"]}),
    );
    assert_eq!(bad.status, 400, "{}", bad.dump());
    assert!(
        bad.body["message"].as_str().unwrap_or_default().starts_with("`allowed_sources`"),
        "{}",
        bad.dump()
    );
    let rotate =
        env.http.post(&format!("/v1/keys/{}/rotate", text(&before, "key_id")), env.root(), &json!({}));
    assert_eq!(rotate.status, 409, "rotating the unlisted live key: {}", rotate.dump());
    assert_eq!(env.log_size(), size, "refusals appended nothing");
    create(&env, "acme", json!({"name": "test-env", "environment": "test"}));

    let key = create(&env, "acme", json!({"name": "ci", "allowed_sources": ["10.0.0.0/8", "2001:db8::/32"]}));
    assert_eq!(key["allowed_sources"], json!(["10.0.0.0/8", "2001:db8::/32"]));
    assert_eq!(key["allowed_sources_from"], "key");
    let (key_id, secret) = (text(&key, "key_id"), text(&key, "secret"));

    // JSON mode from a caller that is not a trusted proxy: its stated address is recorded,
    // but its own (127.0.0.1) is checked.
    let denied = verify_json(&env, &secret, "10.1.2.3");
    assert_source_denied(&denied, "127.0.0.1");
    // Forward-auth without --trust-forwarded-for ignores the header.
    assert_source_denied(&forward(&env, &secret, "10.1.2.3"), "127.0.0.1");
    let events = usage_events(&env, &key_id);
    let last = events.last().expect("a usage event");
    assert_eq!(last["kind"], "denied", "{last}");
    assert_eq!(last["reason"], "source_not_allowed", "{last}");
    assert!(last["detail"].as_str().unwrap_or_default().contains("127.0.0.1"), "{last}");

    // A key restricted to the caller's own address is allowed, whatever it states.
    let local = create(&env, "acme", json!({"name": "local", "allowed_sources": ["127.0.0.1"]}));
    let allowed = verify_json(&env, &text(&local, "secret"), "192.0.2.1");
    assert_eq!(allowed.status, 200, "{}", allowed.dump());

    // Updates only narrow.
    let path = format!("/v1/keys/{key_id}");
    for widening in [json!(["0.0.0.0/0"]), json!([]), json!(["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"])] {
        let resp = env.http.patch(&path, env.root(), &json!({"allowed_sources": widening}));
        assert_eq!(resp.status, 400, "{widening}: {}", resp.dump());
    }
    let narrowed = env.http.patch(&path, env.root(), &json!({"allowed_sources": ["10.1.0.0/16"]}));
    assert_eq!(narrowed.status, 200, "{}", narrowed.dump());
    assert_eq!(narrowed.body["allowed_sources"], json!(["10.1.0.0/16"]));

    // Rotation inherits the list.
    let rotated = env.http.post(&format!("/v1/keys/{key_id}/rotate"), env.root(), &json!({}));
    assert_eq!(rotated.status, 201, "{}", rotated.dump());
    assert_eq!(rotated.body["key"]["allowed_sources"], json!(["10.1.0.0/16"]));

    // Hygiene lists keys without one.
    let hygiene = env.http.get("/v1/audit/hygiene?workspace=acme", env.root());
    assert_eq!(hygiene.status, 200, "{}", hygiene.dump());
    let unlisted: Vec<&str> = hygiene.body["no_allowed_sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert!(unlisted.contains(&"legacy") && unlisted.contains(&"test-env"), "{unlisted:?}");
    assert!(!unlisted.contains(&"local"), "{unlisted:?}");

    let ledger_dir = env.ledger.data_dir.clone();
    env.server.stop();
    let verified = keyledger_e2e::log_verify(&ledger_dir);
    assert!(verified.success(), "log verify: {}", verified.stderr);
}

#[test]
fn a_trusted_proxy_is_believed_and_revocation_still_comes_first() {
    let env = Env::start(&["--trust-forwarded-for", "--trusted-proxy", "127.0.0.1/32"]);
    let policy = env.http.put(
        "/v1/workspaces/acme/policy",
        env.root(),
        &json!({"allowed_sources": ["10.0.0.0/8"], "require_allowed_sources": true}),
    );
    assert_eq!(policy.status, 200, "{}", policy.dump());
    assert_eq!(policy.body["allowed_sources"], json!(["10.0.0.0/8"]));
    // Issued without a list: the workspace default.
    let key = create(&env, "acme", json!({"name": "gw"}));
    assert_eq!(key["allowed_sources"], json!(["10.0.0.0/8"]));
    assert_eq!(key["allowed_sources_from"], "policy");
    let secret = text(&key, "secret");

    // JSON mode: the trusted caller's `context.ip` is the source.
    assert_eq!(verify_json(&env, &secret, "10.1.2.3").status, 200);
    assert_eq!(verify_json(&env, &secret, "::ffff:10.1.2.3").status, 200, "IPv4-mapped IPv6");
    assert_source_denied(&verify_json(&env, &secret, "192.0.2.1"), "192.0.2.1");
    // Forward-auth: the forwarded client address is the source.
    assert_eq!(forward(&env, &secret, "10.9.9.9").status, 200);
    assert_source_denied(&forward(&env, &secret, "198.51.100.7"), "198.51.100.7");

    let revoked = env.http.post(&format!("/v1/keys/{}/revoke", text(&key, "key_id")), env.root(), &json!({}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    for resp in [verify_json(&env, &secret, "192.0.2.1"), forward(&env, &secret, "10.9.9.9")] {
        assert_eq!(resp.status, 401, "{}", resp.dump());
        assert_eq!(
            resp.body["error"],
            "invalid_api_key",
            "a revoked key is reported as revoked: {}",
            resp.dump()
        );
    }
}

/// An admin key's list holds on keyledger's own API, its address determined as for
/// forward-auth; `_ledger`'s default list binds new admin keys but not the break-glass
/// recovery, so an operator can always get back in.
#[test]
fn an_admin_key_is_refused_outside_its_sources_but_recovery_is_never_bound_by_a_default() {
    let env = Env::start(&["--trust-forwarded-for", "--trusted-proxy", "127.0.0.1/32"]);
    let body = json!({"name": "ops", "scopes": ["ledger:keys:read"], "allowed_sources": ["10.0.0.0/8"]});
    let secret = text(&create(&env, "_ledger", body), "secret");
    let list_keys = |from: &str| {
        let auth = format!("Bearer {secret}");
        env.http.send(
            "GET",
            "/v1/workspaces/acme/keys",
            &[("authorization", &auth), ("x-forwarded-for", from)],
            None,
        )
    };
    let inside = list_keys("10.1.2.3");
    assert_eq!(inside.status, 200, "{}", inside.dump());
    let outside = list_keys("192.0.2.1");
    assert_eq!(outside.status, 403, "{}", outside.dump());
    assert_eq!(outside.body["error"], "forbidden", "{}", outside.dump());
    assert_eq!(outside.body["reason"], "source_not_allowed", "{}", outside.dump());
    assert!(outside.body["message"].as_str().unwrap_or_default().contains("192.0.2.1"), "{}", outside.dump());

    // An import takes lists as a create does: its own, or the workspace default.
    let policy =
        env.http.put("/v1/workspaces/acme/policy", env.root(), &json!({"allowed_sources": ["10.0.0.0/8"]}));
    assert_eq!(policy.status, 200, "{}", policy.dump());
    let digest = |n: u8| hex_digest(n);
    let import = json!({"keys": [
        {"name": "own", "allowed_sources": ["192.0.2.0/24"], "hash": {"algorithm": "sha256", "value": digest(1)}},
        {"name": "default", "hash": {"algorithm": "sha256", "value": digest(2)}},
    ]});
    let imported = env.http.post("/v1/workspaces/acme/keys/import", env.root(), &import);
    assert_eq!(imported.status, 201, "{}", imported.dump());
    assert_eq!(imported.body["keys"][0]["allowed_sources"], json!(["192.0.2.0/24"]));
    assert_eq!(imported.body["keys"][0]["allowed_sources_from"], "key");
    assert_eq!(imported.body["keys"][1]["allowed_sources"], json!(["10.0.0.0/8"]));
    assert_eq!(imported.body["keys"][1]["allowed_sources_from"], "policy");

    let policy = env.http.put(
        "/v1/workspaces/_ledger/policy",
        env.root(),
        &json!({"allowed_sources": ["10.0.0.0/8"]}),
    );
    assert_eq!(policy.status, 200, "{}", policy.dump());
    let defaulted = create(&env, "_ledger", json!({"name": "ops2", "scopes": ["ledger:keys:read"]}));
    assert_eq!(defaulted["allowed_sources"], json!(["10.0.0.0/8"]), "the `_ledger` default applies");

    let dir = path_str(&env.ledger.data_dir).to_owned();
    let Env { ledger, server, .. } = env;
    server.stop();
    let run = keyledger(&["admin", "recover", "--data-dir", &dir]);
    assert!(run.success(), "recover failed: {}", run.stderr);
    let out: Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{:?}: {e}", run.stdout));
    let (key, key_id) = (text(&out, "admin_key"), text(&out, "admin_key_id"));
    // `--trust-forwarded-for` alone (no trusted proxy): a forwarded address is not believed
    // for an admin key, whatever the caller claims.
    let server = ledger.serve(&["--trust-forwarded-for"]);
    let http = server.client();
    let shown = http.get(&format!("/v1/keys/{key_id}"), &key);
    assert_eq!(shown.status, 200, "the recovered key works from 127.0.0.1: {}", shown.dump());
    assert_eq!(shown.body["allowed_sources"], json!([]), "{}", shown.dump());
    let auth = format!("Bearer {secret}");
    let headers = [("authorization", auth.as_str()), ("x-forwarded-for", "10.1.2.3")];
    let spoofed = http.send("GET", "/v1/workspaces/acme/keys", &headers, None);
    assert_eq!(spoofed.status, 403, "{}", spoofed.dump());
    assert!(spoofed.body["message"].as_str().unwrap_or_default().contains("127.0.0.1"), "{}", spoofed.dump());
}

/// A SHA-256 digest (hex) standing for an imported key's secret.
fn hex_digest(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}
