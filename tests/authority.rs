//! The authority rule and the break-glass recovery, through the real binary
//! (docs/security.md, "Who may act on which key" and "Recovering admin access").
//!
//! An admin key may act only on keys it dominates (its scopes and resources cover the
//! target's), never gives a key a later expiry than its own, and nobody can remove the last
//! full admin key. `keyledger admin recover` issues a new full admin key offline, and the log
//! shows it.

use keyledger_e2e::{Env, Resp, keyledger, path_str, text};
use serde_json::{Value, json};

const ALL_SCOPES: [&str; 5] =
    ["ledger:keys:read", "ledger:keys:write", "ledger:audit:read", "ledger:export", "ledger:admin"];

/// Key creation as these tests do it, on top of [`Env`].
trait CreateKeys {
    /// Creates a key with the init admin key; asserts 201 and returns (id, secret).
    fn create(&self, workspace: &str, body: Value) -> (String, String);
    /// Creates a key with `admin`; asserts 201 and returns (id, secret).
    fn create_with(&self, admin: &str, workspace: &str, body: Value) -> (String, String);
}

impl CreateKeys for Env {
    fn create(&self, workspace: &str, body: Value) -> (String, String) {
        self.create_with(self.root(), workspace, body)
    }

    fn create_with(&self, admin: &str, workspace: &str, body: Value) -> (String, String) {
        let resp = self.http.post(&format!("/v1/workspaces/{workspace}/keys"), admin, &body);
        assert_eq!(resp.status, 201, "create {body}: {}", resp.dump());
        (text(&resp.body, "key_id"), text(&resp.body, "secret"))
    }
}

fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.dump());
    assert_eq!(resp.body["error"], code, "{}", resp.dump());
    assert!(resp.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", resp.dump());
    assert!(resp.body["request_id"].as_str().is_some_and(|r| r.starts_with("req_")), "{}", resp.dump());
}

/// Finding 1: a `_ledger`-only admin key rotated the init key and got a key with all five
/// scopes over every workspace.
#[test]
fn a_weaker_admin_key_cannot_rotate_a_stronger_one_into_its_own_hands() {
    let env = Env::start(&[]);
    let (_, weak) = env.create(
        "_ledger",
        json!({"name": "ledger-only", "scopes": ["ledger:keys:write", "ledger:admin"], "resources": ["_ledger"]}),
    );
    let before = env.log_size();
    let resp =
        env.http.post(&format!("/v1/keys/{}/rotate", env.root_id()), &weak, &json!({"overlap": "24h"}));
    assert_error(&resp, 403, "forbidden");
    assert!(
        resp.body["message"].as_str().unwrap().contains("ledger:"),
        "names what is missing: {}",
        resp.dump()
    );
    assert_eq!(env.log_size(), before, "a refused rotation appends nothing");
    let root = env.key(env.root_id());
    assert_eq!(root["status"], "active", "{root}");
    assert!(root["rotated_to"].is_null(), "{root}");
    // A key it dominates, it may rotate.
    let (lesser, _) = env.create(
        "_ledger",
        json!({"name": "lesser", "scopes": ["ledger:keys:write"], "resources": ["_ledger"]}),
    );
    let resp = env.http.post(&format!("/v1/keys/{lesser}/rotate"), &weak, &json!({"overlap": "0s"}));
    assert_eq!(resp.status, 201, "{}", resp.dump());
}

/// Finding 2: an admin key created with `expires_in: 1h` removed its own expiry.
#[test]
fn an_admin_key_cannot_lift_or_extend_its_own_expiry_nor_outlive_itself() {
    let env = Env::start(&[]);
    let (short_id, short) =
        env.create("_ledger", json!({"name": "one hour", "scopes": ALL_SCOPES, "expires_in": "1h"}));
    let expires_at = text(&env.key(&short_id), "expires_at");
    for body in [json!({"expires_at": null}), json!({"expires_in": "2h"})] {
        let resp = env.http.patch(&format!("/v1/keys/{short_id}"), &short, &body);
        assert_error(&resp, 403, "forbidden");
    }
    assert_eq!(text(&env.key(&short_id), "expires_at"), expires_at, "the expiry is unchanged");
    // Keys it issues (admin or not) cannot outlive it.
    for (workspace, body) in [
        ("_ledger", json!({"name": "forever", "scopes": ["ledger:keys:read"]})),
        ("acme", json!({"name": "forever"})),
        ("acme", json!({"name": "later", "expires_in": "2h"})),
    ] {
        let resp = env.http.post(&format!("/v1/workspaces/{workspace}/keys"), &short, &body);
        assert_error(&resp, 403, "forbidden");
    }
    let resp =
        env.http.post("/v1/workspaces/acme/keys", &short, &json!({"name": "sooner", "expires_in": "30m"}));
    assert_eq!(resp.status, 201, "{}", resp.dump());
    // Nor can it rotate itself into a key without its expiry's bound: the replacement
    // inherits its one-hour lifetime, which ends after the caller does.
    let resp = env.http.post(&format!("/v1/keys/{short_id}/rotate"), &short, &json!({"overlap": "0s"}));
    assert_error(&resp, 403, "forbidden");
    // Shortening its own expiry is fine.
    let resp = env.http.patch(&format!("/v1/keys/{short_id}"), &short, &json!({"expires_in": "30m"}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
}

/// Finding 3: a weaker admin revoked a stronger one, and `revoke-all` on `_ledger` revoked
/// every stronger admin key.
#[test]
fn a_weaker_admin_key_cannot_revoke_disable_or_mass_revoke_stronger_ones() {
    let env = Env::start(&[]);
    let (_, weak) = env.create(
        "_ledger",
        json!({"name": "ledger-only", "scopes": ["ledger:keys:write", "ledger:admin"], "resources": ["_ledger"]}),
    );
    let (strong_id, _) = env.create("_ledger", json!({"name": "second full", "scopes": ALL_SCOPES}));
    let (lesser_id, _) = env.create(
        "_ledger",
        json!({"name": "lesser", "scopes": ["ledger:keys:write"], "resources": ["_ledger"]}),
    );
    for target in [env.root_id(), strong_id.as_str()] {
        for action in ["revoke", "disable"] {
            let resp = env.http.post(&format!("/v1/keys/{target}/{action}"), &weak, &json!({}));
            assert_error(&resp, 403, "forbidden");
        }
        let resp = env.http.patch(&format!("/v1/keys/{target}"), &weak, &json!({"name": "renamed"}));
        assert_error(&resp, 403, "forbidden");
    }
    let resp = env.http.post("/v1/workspaces/_ledger/keys/revoke-all", &weak, &json!({"reason": "coup"}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body["key_ids"], json!([lesser_id]), "{}", resp.dump());
    assert_eq!(resp.body["revoked"], 1, "{}", resp.dump());
    // Left alone: the init key, the second full key and the caller itself.
    assert_eq!(resp.body["skipped"], 3, "{}", resp.dump());
    for id in [env.root_id(), strong_id.as_str()] {
        assert_eq!(env.key(id)["status"], "active");
    }
    // An admin key that may not see `_ledger` does not learn that the key exists.
    let (_, acme_admin) = env.create(
        "_ledger",
        json!({"name": "acme admin", "scopes": ["ledger:keys:write", "ledger:keys:read"], "resources": ["acme"]}),
    );
    let resp = env.http.post(&format!("/v1/keys/{}/revoke", env.root_id()), &acme_admin, &json!({}));
    assert_error(&resp, 404, "not_found");
}

/// Finding 7: the init key revoked itself, leaving nothing able to act.
#[test]
fn the_last_full_admin_key_cannot_be_removed() {
    let env = Env::start(&[]);
    let root = env.root_id().to_owned();
    let before = env.log_size();
    for (method, path, body) in [
        ("POST", format!("/v1/keys/{root}/revoke"), json!({})),
        ("POST", format!("/v1/keys/{root}/disable"), json!({})),
        ("PATCH", format!("/v1/keys/{root}"), json!({"expires_in": "1h"})),
        ("PATCH", format!("/v1/keys/{root}"), json!({"scopes": ["ledger:keys:read"]})),
        ("PATCH", format!("/v1/keys/{root}"), json!({"resources": ["acme"]})),
    ] {
        let auth = format!("Bearer {}", env.root());
        let resp = env.http.send(method, &path, &[("authorization", &auth)], Some(&body));
        assert_error(&resp, 409, "conflict");
        assert!(resp.body["message"].as_str().unwrap().contains("last"), "says why: {}", resp.dump());
    }
    assert_eq!(env.log_size(), before, "nothing was appended");
    assert_eq!(env.key(&root)["status"], "active");
    // Rotation hands the power on to the replacement: allowed.
    let resp = env.http.post(&format!("/v1/keys/{root}/rotate"), env.root(), &json!({"overlap": "0s"}));
    assert_eq!(resp.status, 201, "{}", resp.dump());
    let (new_id, new_secret) = (text(&resp.body["key"], "key_id"), text(&resp.body["key"], "secret"));
    // With a second full admin key, the first may go.
    let (_, other) = env.create_with(&new_secret, "_ledger", json!({"name": "second", "scopes": ALL_SCOPES}));
    let resp = env.http.post(&format!("/v1/keys/{new_id}/revoke"), &other, &json!({}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
}

/// `keyledger admin recover`: refused while a server holds the data dir; offline it issues
/// a new full admin key, recorded as `created` by `recovery`, and the log still verifies.
#[test]
fn admin_recover_issues_a_full_admin_key_offline_and_the_log_shows_it() {
    let env = Env::start(&[]);
    let dir = path_str(&env.ledger.data_dir).to_owned();
    let refused = keyledger(&["admin", "recover", "--data-dir", &dir]);
    assert!(!refused.success(), "recover must be refused while serve runs: {}", refused.stdout);
    assert!(refused.stdout.trim().is_empty(), "no key printed: {}", refused.stdout);
    assert!(refused.stderr.contains("in use"), "says why: {}", refused.stderr);
    let Env { ledger, server, .. } = env;
    server.stop();

    let run = keyledger(&["admin", "recover", "--data-dir", &dir]);
    assert!(run.success(), "recover failed: {}", run.stderr);
    let out: Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{:?}: {e}", run.stdout));
    let (key, key_id) = (text(&out, "admin_key"), text(&out, "admin_key_id"));
    assert_eq!(text(&out, "log_public_key"), ledger.log_public_key);
    assert_eq!(text(&out, "data_dir"), dir);
    assert!(!run.stderr.contains(&key), "the secret is printed once, on stdout");
    let verify = ledger.log_verify();
    assert!(verify.success(), "log verify after recover: {}{}", verify.stdout, verify.stderr);

    let server = ledger.serve(&[]);
    let http = server.client();
    let shown = http.get(&format!("/v1/keys/{key_id}"), &key);
    assert_eq!(shown.status, 200, "{}", shown.dump());
    assert_eq!(shown.body["created_by"], "recovery", "{}", shown.dump());
    assert_eq!(shown.body["resources"], json!([]), "{}", shown.dump());
    let mut scopes: Vec<&str> =
        shown.body["scopes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    scopes.sort_unstable();
    let mut all = ALL_SCOPES.to_vec();
    all.sort_unstable();
    assert_eq!(scopes, all);
    let events = http.get(&format!("/v1/keys/{key_id}/events"), &key);
    assert_eq!(events.status, 200, "{}", events.dump());
    assert_eq!(events.body["events"][0]["kind"], "created", "{}", events.dump());
    assert_eq!(events.body["events"][0]["actor"], "recovery", "{}", events.dump());
    // The recovered key acts: it may now revoke the old init key.
    let resp = http.post(&format!("/v1/keys/{}/revoke", ledger.admin_key_id), &key, &json!({}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    server.stop();
    let verify = ledger.log_verify();
    assert!(verify.success(), "log verify at the end: {}{}", verify.stdout, verify.stderr);
}

/// A rotation's overlap gives the old key an expiry: it is no survivor. Revoking the new
/// key would leave only a key that lapses within the hour.
#[test]
fn a_key_in_a_rotation_overlap_does_not_count_as_the_surviving_full_admin_key() {
    let env = Env::start(&[]);
    let resp =
        env.http.post(&format!("/v1/keys/{}/rotate", env.root_id()), env.root(), &json!({"overlap": "1h"}));
    assert_eq!(resp.status, 201, "{}", resp.dump());
    let new_id = text(&resp.body["key"], "key_id");
    let resp = env.http.post(&format!("/v1/keys/{new_id}/revoke"), env.root(), &json!({}));
    assert_error(&resp, 409, "conflict");
    assert!(resp.body["message"].as_str().unwrap().contains("last"), "says why: {}", resp.dump());
    assert_eq!(env.key(&new_id)["status"], "active");
}

/// Two full keys: giving each an expiry in turn would leave none that lasts.
#[test]
fn full_admin_keys_cannot_all_be_given_an_expiry_one_after_the_other() {
    let env = Env::start(&[]);
    let (other_id, other) = env.create("_ledger", json!({"name": "second full", "scopes": ALL_SCOPES}));
    let resp = env.http.patch(&format!("/v1/keys/{other_id}"), env.root(), &json!({"expires_in": "1h"}));
    assert_eq!(resp.status, 200, "the init key lasts: {}", resp.dump());
    let root = env.root_id().to_owned();
    for (method, path, body) in [
        ("PATCH", format!("/v1/keys/{root}"), json!({"expires_in": "30m"})),
        ("PATCH", format!("/v1/keys/{root}"), json!({"scopes": ["ledger:keys:read"]})),
        ("POST", format!("/v1/keys/{root}/revoke"), json!({})),
        ("POST", format!("/v1/keys/{root}/disable"), json!({})),
    ] {
        let auth = format!("Bearer {other}");
        let resp = env.http.send(method, &path, &[("authorization", &auth)], Some(&body));
        assert_error(&resp, 409, "conflict");
    }
    let root = env.key(&root);
    assert_eq!(root["status"], "active", "{root}");
    assert!(root["expires_at"].is_null(), "{root}");
}

/// A full key that expires is no survivor of its own revoke-all: one full key without
/// expiry is left alone.
#[test]
fn an_expiring_full_key_cannot_revoke_every_lasting_full_key() {
    let env = Env::start(&[]);
    let (_, short) =
        env.create("_ledger", json!({"name": "one hour", "scopes": ALL_SCOPES, "expires_in": "1h"}));
    let resp = env.http.post("/v1/workspaces/_ledger/keys/revoke-all", &short, &json!({"reason": "coup"}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body["revoked"], 0, "{}", resp.dump());
    // Left alone: the caller itself and the init key, the only full key without expiry.
    assert_eq!(resp.body["skipped"], 2, "{}", resp.dump());
    assert_eq!(env.key(env.root_id())["status"], "active");
}
