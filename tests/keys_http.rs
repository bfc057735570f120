//! The keys API and `/v1/verify` over real HTTP against the real binary (docs/api.md, "Keys" and
//! "Verify").

use keyledger_e2e::{Env, Ledger, Resp, files_under, frames, poll, text};
use serde_json::{Value, json};
use std::time::Duration;

/// What these tests do often, on top of [`Env`].
trait KeysApi {
    /// Creates a key; asserts 201 and returns the body (KeyView + secret).
    fn create(&self, workspace: &str, body: Value) -> Value;
    /// `POST /v1/verify` with `body` (JSON mode).
    fn verify(&self, body: Value) -> Resp;
    /// Forward-auth GET /v1/verify{suffix} with the given headers.
    fn forward(&self, suffix: &str, headers: &[(&str, &str)]) -> Resp;
}

impl KeysApi for Env {
    fn create(&self, workspace: &str, body: Value) -> Value {
        let resp = self.http.post(&format!("/v1/workspaces/{workspace}/keys"), self.root(), &body);
        assert_eq!(resp.status, 201, "create {body}: {}", resp.dump());
        assert_request_id(&resp);
        resp.body
    }

    fn verify(&self, body: Value) -> Resp {
        self.http.send("POST", "/v1/verify", &[], Some(&body))
    }

    fn forward(&self, suffix: &str, headers: &[(&str, &str)]) -> Resp {
        self.http.send("GET", &format!("/v1/verify{suffix}"), headers, None)
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Every response carries `request-id: req_…`; a JSON body's `request_id`, if any, is it.
fn assert_request_id(resp: &Resp) {
    let id = resp.header("request-id").unwrap_or_else(|| panic!("no request-id header: {}", resp.dump()));
    assert!(id.starts_with("req_"), "request-id {id}");
    if let Some(body_id) = resp.body.get("request_id").and_then(Value::as_str) {
        assert_eq!(body_id, id, "the body's request_id is the header's");
    }
}

/// The error shape of docs/api.md: `{"error", "message", "request_id"}` (plus, for verify,
/// `"valid": false` and a `reason`), with `status` and `code`.
fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.dump());
    assert_eq!(resp.body["error"], code, "{}", resp.dump());
    assert!(resp.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", resp.dump());
    assert!(resp.body["request_id"].as_str().is_some_and(|r| r.starts_with("req_")), "{}", resp.dump());
    let allowed = ["error", "message", "request_id", "valid", "reason"];
    for field in resp.body.as_object().expect("error body is an object").keys() {
        assert!(allowed.contains(&field.as_str()), "unexpected field `{field}` in {}", resp.dump());
    }
    assert_request_id(resp);
}

/// A verify denial: the error shape plus `"valid": false`.
fn assert_denied(resp: &Resp, status: u16, code: &str) {
    assert_error(resp, status, code);
    assert_eq!(resp.body["valid"], false, "{}", resp.dump());
}

/// A 400/422 `invalid_request` whose message names `field`.
fn assert_invalid(resp: &Resp, field: &str) {
    assert!(resp.status == 400 || resp.status == 422, "expected 400/422 for `{field}`: {}", resp.dump());
    assert_error(resp, resp.status, "invalid_request");
    let message = resp.body["message"].as_str().unwrap();
    assert!(message.contains(field), "the message must name `{field}`: {message}");
}

fn assert_verified(resp: &Resp, key_id: &str, workspace: &str) {
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body["valid"], true, "{}", resp.dump());
    assert_eq!(resp.body["key_id"], key_id);
    assert_eq!(resp.body["workspace"], workspace);
    assert_eq!(resp.header("x-keyledger-key-id"), Some(key_id), "{}", resp.dump());
    assert_eq!(resp.header("x-keyledger-workspace"), Some(workspace), "{}", resp.dump());
    assert_request_id(resp);
}

/// Whether any string anywhere in `value` contains `needle`.
fn json_contains(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => s.contains(needle),
        Value::Array(items) => items.iter().any(|v| json_contains(v, needle)),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains(needle) || json_contains(v, needle)),
        _ => false,
    }
}

const KEY_VIEW_FIELDS: [&str; 20] = [
    "key_id",
    "workspace",
    "name",
    "hint",
    "scopes",
    "resources",
    "environment",
    "owner",
    "metadata",
    "status",
    "created_at",
    "created_by",
    "expires_at",
    "revoked_at",
    "revoked_reason",
    "rotated_from",
    "rotated_to",
    "last_used_at",
    "last_used_ip",
    "use_count",
];

fn assert_key_view(view: &Value) {
    for field in KEY_VIEW_FIELDS {
        assert!(view.get(field).is_some(), "KeyView lacks `{field}` (absent values are null): {view}");
    }
}

#[test]
fn create_with_every_field_shows_the_secret_only_once() {
    let env = Env::start(&["--usage-durability", "strict"]);
    let created = env.create(
        "acme",
        json!({
            "name": "billing worker",
            "scopes": ["write", "read"],
            "resources": ["proj-2", "proj-1"],
            "expires_at": "2099-01-02T03:04:05Z",
            "environment": "test",
            "owner": "alice@example.com",
            "metadata": {"team": "billing", "ticket": 42},
        }),
    );
    assert_key_view(&created);
    let secret = text(&created, "secret");
    let key_id = text(&created, "key_id");
    assert!(secret.starts_with("kl_test_"), "{secret}");
    assert_eq!(secret.len(), "kl_test_".len() + 43 + 6, "body 43 + check 6 base62 chars: {secret}");
    assert!(secret["kl_test_".len()..].chars().all(|c| c.is_ascii_alphanumeric()), "{secret}");
    assert!(key_id.starts_with("key_") && key_id.len() == 30, "{key_id}");
    let hint = text(&created, "hint");
    assert!(hint.starts_with("kl_test_") && hint.ends_with(&secret[secret.len() - 4..]), "hint {hint}");
    assert!(!hint.contains(&secret[8..20]), "the hint must not reveal the body: {hint}");
    assert_eq!(created["workspace"], "acme");
    assert_eq!(created["name"], "billing worker");
    let mut scopes: Vec<&str> =
        created["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    scopes.sort();
    assert_eq!(scopes, ["read", "write"]);
    let mut resources: Vec<&str> =
        created["resources"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    resources.sort();
    assert_eq!(resources, ["proj-1", "proj-2"]);
    assert_eq!(created["environment"], "test");
    assert_eq!(created["owner"], "alice@example.com");
    assert_eq!(created["metadata"], json!({"team": "billing", "ticket": 42}));
    assert_eq!(created["status"], "active");
    assert!(text(&created, "expires_at").starts_with("2099-01-02T03:04:05"), "{}", created["expires_at"]);
    for field in
        ["revoked_at", "revoked_reason", "rotated_from", "rotated_to", "last_used_at", "last_used_ip"]
    {
        assert!(created[field].is_null(), "`{field}` must be null on a new key: {created}");
    }
    assert_eq!(created["use_count"], 0);

    // The secret is never shown again: not by show, not by list (any status).
    let shown = env.key(&key_id);
    assert_key_view(&shown);
    assert!(shown.get("secret").is_none(), "{shown}");
    assert!(!json_contains(&shown, &secret), "GET /v1/keys/{{id}} leaks the secret: {shown}");
    assert_eq!(shown["name"], "billing worker");
    for status in ["all", "active"] {
        let list = env.http.get(&format!("/v1/workspaces/acme/keys?status={status}"), env.root());
        assert_eq!(list.status, 200, "{}", list.dump());
        let keys = list.body["keys"].as_array().expect("keys array");
        assert!(keys.iter().any(|k| k["key_id"] == key_id.as_str()), "{}", list.dump());
        assert!(!json_contains(&list.body, &secret), "the list leaks the secret: {}", list.dump());
    }

    // It works, then it leaves no trace of itself on disk or in the server's output.
    let verified = env.verify(json!({"key": secret, "scopes": ["read"], "resource": "proj-1"}));
    assert_verified(&verified, &key_id, "acme");
    assert_eq!(verified.body["environment"], "test");
    assert_eq!(verified.body["owner"], "alice@example.com");
    let denied = env.verify(json!({"key": secret, "scopes": ["delete"]}));
    assert_denied(&denied, 403, "forbidden");
    let logs = env.server.stop();
    assert!(!logs.contains(&secret), "the server's output contains the secret");
    let needle = secret.as_bytes();
    for file in files_under(&env.ledger.data_dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            keyledger_e2e::find_bytes(&bytes, needle, 0).is_none(),
            "{} contains the secret",
            file.display()
        );
    }
    // The admin key of init is not stored either.
    for file in files_under(&env.ledger.data_dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            keyledger_e2e::find_bytes(&bytes, env.ledger.admin_key.as_bytes(), 0).is_none(),
            "{}",
            file.display()
        );
    }
}

#[test]
fn invalid_fields_are_named() {
    let env = Env::start(&[]);
    let long = |n: usize| "x".repeat(n);
    let many = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    let big_metadata = json!({"blob": "y".repeat(5000)});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": ""}), "name"),
        (json!({"name": long(101)}), "name"),
        (json!({"name": "a", "scopes": many(65)}), "scopes"),
        (json!({"name": "a", "scopes": [long(129)]}), "scopes"),
        (json!({"name": "a", "resources": [long(300)]}), "resources"),
        (json!({"name": "a", "expires_in": "soon"}), "expires_in"),
        (json!({"name": "a", "expires_in": "-5m"}), "expires_in"),
        (json!({"name": "a", "expires_at": "next tuesday"}), "expires_at"),
        // Past the year 9999, which no view could write as a time.
        (json!({"name": "a", "expires_in": "15000000w"}), "expires_at"),
        (json!({"name": "a", "environment": "prod"}), "environment"),
        (json!({"name": "a", "owner": ""}), "owner"),
        (json!({"name": "a", "metadata": [1, 2]}), "metadata"),
        (json!({"name": "a", "metadata": big_metadata}), "metadata"),
    ];
    let before = env.log_size();
    for (body, field) in cases {
        let resp = env.http.post("/v1/workspaces/acme/keys", env.root(), &body);
        assert_invalid(&resp, field);
    }
    // Boundaries that are valid.
    env.create("acme", json!({"name": long(100), "scopes": many(64), "owner": "o", "metadata": {}}));
    assert_eq!(env.log_size(), before + 1, "refused creates append nothing");
    // A bad workspace id in the path.
    let resp = env.http.post("/v1/workspaces/Not%20A%20Workspace/keys", env.root(), &json!({"name": "a"}));
    assert!(resp.status == 400 || resp.status == 422 || resp.status == 404, "{}", resp.dump());
    assert_request_id(&resp);
}

#[test]
fn verify_modes_header_forms_and_success_shape() {
    let env = Env::start(&["--usage-durability", "strict"]);
    let key = env.create(
        "acme",
        json!({"name": "gw", "scopes": ["read", "write"], "resources": ["proj-1"], "owner": "ops"}),
    );
    let (secret, key_id) = (text(&key, "secret"), text(&key, "key_id"));

    let ok = env.verify(json!({"key": secret, "scopes": ["read", "write"], "resource": "proj-1",
        "context": {"ip": "198.51.100.4", "user_agent": "curl/8", "method": "GET", "path": "/x", "request_id": "gw-1"}}));
    assert_verified(&ok, &key_id, "acme");
    let mut scopes: Vec<&str> =
        ok.body["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    scopes.sort();
    assert_eq!(scopes, ["read", "write"]);
    assert_eq!(ok.body["environment"], "live");
    assert_eq!(ok.body["owner"], "ops");
    assert!(ok.body["expires_at"].is_null());
    assert_eq!(ok.body["request_id"].as_str(), ok.header("request-id"));

    // Forward-auth: each header form, GET and body-less POST.
    let bearer_header = bearer(&secret);
    let api_key_header = format!("Api-Key {secret}");
    for headers in [
        vec![("authorization", bearer_header.as_str())],
        vec![("authorization", api_key_header.as_str())],
        vec![("x-api-key", secret.as_str())],
    ] {
        assert_verified(&env.forward("", &headers), &key_id, "acme");
        let post = env.http.send("POST", "/v1/verify", &headers, None);
        assert_verified(&post, &key_id, "acme");
    }
    let auth = [("authorization", bearer_header.as_str())];
    assert_verified(&env.forward("?scope=read&scope=write", &auth), &key_id, "acme");
    assert_verified(&env.forward("?scope=read&resource=proj-1", &auth), &key_id, "acme");
    let missing = env.forward("?scope=read&scope=admin", &auth);
    assert_denied(&missing, 403, "forbidden");
    assert!(missing.body["message"].as_str().unwrap().contains("admin"), "{}", missing.dump());
    let elsewhere = env.forward("?resource=proj-2", &auth);
    assert_denied(&elsewhere, 403, "forbidden");
    assert!(elsewhere.body["message"].as_str().unwrap().contains("proj-2"), "{}", elsewhere.dump());
    let json_missing = env.verify(json!({"key": secret, "scopes": ["delete"]}));
    assert_denied(&json_missing, 403, "forbidden");
    let json_elsewhere = env.verify(json!({"key": secret, "resource": "proj-9"}));
    assert_denied(&json_elsewhere, 403, "forbidden");

    // The Envoy suffix form: the path is recorded.
    let suffixed = env.forward("/some/path", &auth);
    assert_verified(&suffixed, &key_id, "acme");
    let suffixed_id = suffixed.header("request-id").unwrap().to_owned();

    // Denials of keys that are not (valid) keys: 401 unauthorized, and nothing appended.
    let size = env.log_size();
    let mut bad_check = secret.clone();
    let last = bad_check.pop().unwrap();
    bad_check.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = keyledger_core::Secret::generate(
        &keyledger_core::KeyPrefix::default_prefix(),
        keyledger_core::Environment::Live,
    )
    .unwrap()
    .expose()
    .to_owned();
    for candidate in ["garbage", "kl_live_short", bad_check.as_str(), unknown.as_str(), ""] {
        let json_mode = env.verify(json!({"key": candidate}));
        assert_denied(&json_mode, 401, "unauthorized");
        let header = bearer(candidate);
        let forward = env.forward("", &[("authorization", header.as_str())]);
        assert_denied(&forward, 401, "unauthorized");
    }
    let no_key = env.forward("", &[]);
    assert_denied(&no_key, 401, "unauthorized");
    assert_eq!(env.log_size(), size, "verifications of unknown keys append nothing");
    // A known key's denial appends one `denied` event; a success one `used` event.
    assert_denied(&env.forward("?scope=nope", &auth), 403, "forbidden");
    assert_eq!(env.log_size(), size + 1);
    assert_verified(&env.forward("", &auth), &key_id, "acme");
    assert_eq!(env.log_size(), size + 2);

    // From the log itself: the suffix verification recorded its path and request id.
    let data_dir = env.ledger.data_dir.clone();
    env.server.stop();
    let mut found = false;
    for file in files_under(&data_dir.join("log/events")) {
        for frame in frames::parse(&std::fs::read(&file).unwrap()) {
            let event = keyledger_core::decode_event(&frame.record).expect("decode");
            if let keyledger_core::Payload::Used(used) = &event.payload
                && event.request_id.to_string() == suffixed_id
            {
                assert_eq!(used.key_id.to_string(), key_id);
                assert_eq!(used.context.path.as_deref(), Some("/some/path"), "{:?}", used.context);
                found = true;
            }
        }
    }
    assert!(found, "the `used` event of request {suffixed_id} is in the log");
}

#[test]
fn revoked_expired_and_disabled_keys_are_refused() {
    let env = Env::start(&[]);
    let short = env.create("acme", json!({"name": "short", "expires_in": "2s"}));
    let revokee = env.create("acme", json!({"name": "revokee"}));
    let toggled = env.create("acme", json!({"name": "toggled"}));
    let started = std::time::Instant::now();
    let expires_at = text(&short, "expires_at");
    assert!(!expires_at.is_empty());
    assert_verified(&env.verify(json!({"key": short["secret"]})), &text(&short, "key_id"), "acme");

    // Revoke: immediate, 401 invalid_api_key on every path; idempotent.
    let revokee_id = text(&revokee, "key_id");
    let revoked =
        env.http.post(&format!("/v1/keys/{revokee_id}/revoke"), env.root(), &json!({"reason": "leaked"}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    assert_eq!(revoked.body["status"], "revoked");
    assert_eq!(revoked.body["revoked_reason"], "leaked");
    let revoked_at = text(&revoked.body, "revoked_at");
    let size = env.log_size();
    let again =
        env.http.post(&format!("/v1/keys/{revokee_id}/revoke"), env.root(), &json!({"reason": "again"}));
    assert_eq!(again.status, 200, "{}", again.dump());
    assert_eq!(again.body["revoked_at"].as_str(), Some(revoked_at.as_str()), "the same revocation");
    assert_eq!(again.body["revoked_reason"], "leaked", "the first reason stands");
    let empty = env.http.post_empty(&format!("/v1/keys/{revokee_id}/revoke"), env.root());
    assert_eq!(empty.status, 200, "{}", empty.dump());
    assert_eq!(env.log_size(), size, "a repeated revoke appends nothing");
    let secret = text(&revokee, "secret");
    assert_denied(&env.verify(json!({"key": secret})), 401, "invalid_api_key");
    let header = bearer(&secret);
    assert_denied(&env.forward("", &[("authorization", header.as_str())]), 401, "invalid_api_key");
    assert_denied(&env.forward("", &[("x-api-key", secret.as_str())]), 401, "invalid_api_key");
    assert_eq!(env.key(&revokee_id)["status"], "revoked");
    let rotate = env.http.post(&format!("/v1/keys/{revokee_id}/rotate"), env.root(), &json!({}));
    assert_error(&rotate, 409, "conflict");

    // Disable / enable.
    let toggled_id = text(&toggled, "key_id");
    let disabled =
        env.http.post(&format!("/v1/keys/{toggled_id}/disable"), env.root(), &json!({"reason": "audit"}));
    assert_eq!(disabled.status, 200, "{}", disabled.dump());
    let refused = env.verify(json!({"key": toggled["secret"]}));
    assert_denied(&refused, 401, "invalid_api_key");
    assert!(refused.body["message"].as_str().unwrap().contains("disabled"), "{}", refused.dump());
    let enabled = env.http.post_empty(&format!("/v1/keys/{toggled_id}/enable"), env.root());
    assert_eq!(enabled.status, 200, "{}", enabled.dump());
    assert_eq!(enabled.body["status"], "active");
    assert_verified(&env.verify(json!({"key": toggled["secret"]})), &toggled_id, "acme");

    // Expiry (2 s after creation).
    let wait = Duration::from_millis(2200).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    let expired = env.verify(json!({"key": short["secret"]}));
    assert_denied(&expired, 401, "expired_api_key");
    let header = bearer(short["secret"].as_str().unwrap());
    assert_denied(&env.forward("", &[("authorization", header.as_str())]), 401, "expired_api_key");
    assert_eq!(env.key(&text(&short, "key_id"))["status"], "expired");
    let expired_list = env.http.get("/v1/workspaces/acme/keys?status=expired", env.root());
    let ids: Vec<&str> =
        expired_list.body["keys"].as_array().unwrap().iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [short["key_id"].as_str().unwrap()], "{}", expired_list.dump());
}

#[test]
fn rotation_with_and_without_overlap() {
    let env = Env::start(&[]);
    let old = env.create(
        "acme",
        json!({"name": "rot", "scopes": ["read"], "resources": ["proj-1"], "environment": "test",
               "owner": "bob", "metadata": {"k": "v"}, "expires_in": "30d"}),
    );
    let (old_id, old_secret) = (text(&old, "key_id"), text(&old, "secret"));
    let rotated = env.http.post(&format!("/v1/keys/{old_id}/rotate"), env.root(), &json!({"overlap": "0s"}));
    assert_eq!(rotated.status, 201, "{}", rotated.dump());
    let new = &rotated.body["key"];
    let previous = &rotated.body["previous"];
    assert_key_view(new);
    assert_key_view(previous);
    let (new_id, new_secret) = (text(new, "key_id"), text(new, "secret"));
    assert_ne!(new_id, old_id);
    assert_ne!(new_secret, old_secret);
    assert!(new_secret.starts_with("kl_test_"), "the environment is inherited: {new_secret}");
    for field in ["scopes", "resources", "environment", "owner", "metadata", "workspace"] {
        assert_eq!(new[field], old[field], "`{field}` is inherited");
    }
    assert!(!new["expires_at"].is_null(), "the lifetime is inherited");
    assert_eq!(new["rotated_from"], old_id.as_str());
    assert_eq!(previous["rotated_to"], new_id.as_str());
    assert_eq!(previous["status"], "revoked", "overlap 0 revokes the old key in the same step");
    assert!(previous.get("secret").is_none());
    // Both views agree afterwards.
    assert_eq!(env.key(&old_id)["rotated_to"], new_id.as_str());
    assert_eq!(env.key(&new_id)["rotated_from"], old_id.as_str());
    assert_denied(&env.verify(json!({"key": old_secret})), 401, "invalid_api_key");
    assert_verified(
        &env.verify(json!({"key": new_secret, "scopes": ["read"], "resource": "proj-1"})),
        &new_id,
        "acme",
    );

    // With an overlap both stay valid.
    let rotated = env.http.post(&format!("/v1/keys/{new_id}/rotate"), env.root(), &json!({"overlap": "1h"}));
    assert_eq!(rotated.status, 201, "{}", rotated.dump());
    let newest = &rotated.body["key"];
    assert_eq!(rotated.body["previous"]["status"], "active");
    assert_eq!(rotated.body["previous"]["rotated_to"], newest["key_id"]);
    assert_verified(&env.verify(json!({"key": new_secret})), &new_id, "acme");
    assert_verified(
        &env.verify(json!({"key": newest["secret"]})),
        newest["key_id"].as_str().unwrap(),
        "acme",
    );
    // Rotating the already-revoked original: 409.
    let resp = env.http.post(&format!("/v1/keys/{old_id}/rotate"), env.root(), &json!({}));
    assert_error(&resp, 409, "conflict");
    let resp = env.http.post(&format!("/v1/keys/{new_id}/rotate"), env.root(), &json!({"overlap": "later"}));
    assert_invalid(&resp, "overlap");
}

#[test]
fn revoke_all_revokes_every_active_key_of_the_workspace_only() {
    let env = Env::start(&[]);
    let keys: Vec<Value> = (0..3).map(|i| env.create("burn", json!({"name": format!("k{i}")}))).collect();
    let bystander = env.create("other", json!({"name": "bystander"}));
    let resp =
        env.http.post("/v1/workspaces/burn/keys/revoke-all", env.root(), &json!({"reason": "incident 7"}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body["revoked"], 3);
    let mut ids: Vec<&str> =
        resp.body["key_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    ids.sort();
    let mut expected: Vec<&str> = keys.iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    expected.sort();
    assert_eq!(ids, expected);
    for key in &keys {
        assert_denied(&env.verify(json!({"key": key["secret"]})), 401, "invalid_api_key");
        assert_eq!(env.key(key["key_id"].as_str().unwrap())["revoked_reason"], "incident 7");
    }
    assert_verified(
        &env.verify(json!({"key": bystander["secret"]})),
        bystander["key_id"].as_str().unwrap(),
        "other",
    );
    let again = env.http.post("/v1/workspaces/burn/keys/revoke-all", env.root(), &json!({}));
    assert_eq!(again.status, 200, "{}", again.dump());
    assert_eq!(again.body["revoked"], 0, "nothing left to revoke: {}", again.dump());
}

#[test]
fn workspace_policies_are_enforced() {
    let env = Env::start(&[]);
    let put = |ws: &str, body: Value| {
        let resp = env.http.put(&format!("/v1/workspaces/{ws}/policy"), env.root(), &body);
        assert_eq!(resp.status, 200, "{}", resp.dump());
        resp.body
    };
    // max_active_keys 1.
    let policy = put("solo", json!({"max_active_keys": 1}));
    assert_eq!(policy["max_active_keys"], 1);
    let got = env.http.get("/v1/workspaces/solo/policy", env.root());
    assert_eq!(got.status, 200, "{}", got.dump());
    assert_eq!(got.body["max_active_keys"], 1);
    let only = env.create("solo", json!({"name": "only"}));
    let only_id = text(&only, "key_id");
    let second = env.http.post("/v1/workspaces/solo/keys", env.root(), &json!({"name": "second"}));
    assert_error(&second, 409, "conflict");
    let overlapping =
        env.http.post(&format!("/v1/keys/{only_id}/rotate"), env.root(), &json!({"overlap": "1h"}));
    assert_error(&overlapping, 409, "conflict");
    assert_verified(&env.verify(json!({"key": only["secret"]})), &only_id, "solo");
    let swapped = env.http.post(&format!("/v1/keys/{only_id}/rotate"), env.root(), &json!({"overlap": "0s"}));
    assert_eq!(swapped.status, 201, "a rotation without overlap swaps: {}", swapped.dump());
    assert_eq!(swapped.body["previous"]["status"], "revoked");
    let active = env.http.get("/v1/workspaces/solo/keys?status=active", env.root());
    let active: Vec<&str> =
        active.body["keys"].as_array().unwrap().iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert_eq!(active, [swapped.body["key"]["key_id"].as_str().unwrap()]);

    // require_expiry.
    put("strict", json!({"require_expiry": true}));
    let resp = env.http.post("/v1/workspaces/strict/keys", env.root(), &json!({"name": "forever"}));
    assert_error(&resp, 409, "conflict");
    env.create("strict", json!({"name": "mortal", "expires_in": "1h"}));

    // max_lifetime.
    put("short", json!({"max_lifetime": "1d"}));
    let resp =
        env.http.post("/v1/workspaces/short/keys", env.root(), &json!({"name": "long", "expires_in": "2d"}));
    assert_error(&resp, 409, "conflict");
    let resp = env.http.post("/v1/workspaces/short/keys", env.root(), &json!({"name": "never"}));
    assert_error(&resp, 409, "conflict");
    env.create("short", json!({"name": "brief", "expires_in": "12h"}));

    // key_prefix.
    put("abws", json!({"key_prefix": "ab"}));
    let prefixed = env.create("abws", json!({"name": "p"}));
    let secret = text(&prefixed, "secret");
    assert!(secret.starts_with("ab_live_"), "{secret}");
    assert!(text(&prefixed, "hint").starts_with("ab_live_"));
    assert_verified(&env.verify(json!({"key": secret})), &text(&prefixed, "key_id"), "abws");
    let rotated =
        env.http.post(&format!("/v1/keys/{}/rotate", text(&prefixed, "key_id")), env.root(), &json!({}));
    assert_eq!(rotated.status, 201, "{}", rotated.dump());
    assert!(text(&rotated.body["key"], "secret").starts_with("ab_live_"));

    // Invalid policies name their field.
    for (body, field) in [
        (json!({"key_prefix": "AB"}), "key_prefix"),
        (json!({"key_prefix": "1ab"}), "key_prefix"),
        (json!({"max_lifetime": "eventually"}), "max_lifetime"),
        (json!({"max_active_keys": 0}), "max_active_keys"),
    ] {
        let resp = env.http.put("/v1/workspaces/abws/policy", env.root(), &body);
        assert_invalid(&resp, field);
    }
    // Admin keys are never rate-limited: a `_ledger` policy with limits is refused whole,
    // its other fields not set either.
    let size = env.log_size();
    let body = json!({"require_expiry": true, "ratelimits": [{"name": "api", "limit": 5, "duration": "1m"}]});
    assert_invalid(&env.http.put("/v1/workspaces/_ledger/policy", env.root(), &body), "ratelimits");
    assert_eq!(env.log_size(), size, "nothing was set");
    // Nor a PATCH of an admin key that also renames it: refused before the rename.
    let admin = env.create("_ledger", json!({"name": "reader", "scopes": ["ledger:keys:read"]}));
    let size = env.log_size();
    let body = json!({"name": "renamed", "ratelimits": [{"name": "api", "limit": 5, "duration": "1m"}]});
    let path = format!("/v1/keys/{}", text(&admin, "key_id"));
    assert_invalid(&env.http.patch(&path, env.root(), &body), "ratelimits");
    assert_eq!(env.log_size(), size, "the rename was not applied either");
}

#[test]
fn patch_updates_and_narrows_but_never_widens() {
    let env = Env::start(&[]);
    let key =
        env.create("acme", json!({"name": "before", "scopes": ["read", "write"], "resources": ["a", "b"]}));
    let id = text(&key, "key_id");
    let path = format!("/v1/keys/{id}");
    let renamed = env.http.patch(&path, env.root(), &json!({"name": "after"}));
    assert_eq!(renamed.status, 200, "{}", renamed.dump());
    assert_eq!(renamed.body["name"], "after");
    assert_eq!(env.key(&id)["name"], "after");
    let narrowed = env.http.patch(&path, env.root(), &json!({"scopes": ["read"], "resources": ["a"]}));
    assert_eq!(narrowed.status, 200, "{}", narrowed.dump());
    assert_eq!(narrowed.body["scopes"], json!(["read"]));
    assert_eq!(narrowed.body["resources"], json!(["a"]));
    let header = bearer(key["secret"].as_str().unwrap());
    let auth = [("authorization", header.as_str())];
    assert_denied(&env.forward("?scope=write", &auth), 403, "forbidden");
    assert_denied(&env.forward("?resource=b", &auth), 403, "forbidden");
    assert_verified(&env.forward("?scope=read&resource=a", &auth), &id, "acme");
    let widened = env.http.patch(&path, env.root(), &json!({"scopes": ["read", "write"]}));
    assert_invalid(&widened, "scopes");
    let widened = env.http.patch(&path, env.root(), &json!({"resources": []}));
    assert_invalid(&widened, "resources");
    let widened = env.http.patch(&path, env.root(), &json!({"resources": ["a", "c"]}));
    assert_invalid(&widened, "resources");
    assert_eq!(env.key(&id)["scopes"], json!(["read"]), "a refused widening changes nothing");
    let bad = env.http.patch(&path, env.root(), &json!({"name": ""}));
    assert_invalid(&bad, "name");
}

#[test]
fn usage_is_tracked_with_the_peer_address_when_forwarded_headers_are_not_trusted() {
    let env = Env::start(&[]);
    let key = env.create("acme", json!({"name": "tracked"}));
    let id = text(&key, "key_id");
    let header = bearer(key["secret"].as_str().unwrap());
    for _ in 0..3 {
        let resp = env.forward(
            "",
            &[
                ("authorization", header.as_str()),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-real-ip", "203.0.113.10"),
            ],
        );
        assert_verified(&resp, &id, "acme");
    }
    let view = poll(Duration::from_secs(1), "use_count 3", || {
        let view = env.key(&id);
        (view["use_count"] == 3).then_some(view)
    });
    assert!(view["last_used_at"].as_str().is_some_and(|t| t.starts_with("20")), "{view}");
    assert_eq!(
        view["last_used_ip"], "127.0.0.1",
        "without --trust-forwarded-for the peer is recorded: {view}"
    );
    // A denial of a known key counts as a use of it too? Not required; but it must not be lost.
    let before = env.log_size();
    assert_denied(&env.forward("?scope=x", &[("authorization", header.as_str())]), 403, "forbidden");
    assert_eq!(env.log_size(), before + 1);
}

#[test]
fn trusted_forwarded_for_records_the_client() {
    let env = Env::start(&["--trust-forwarded-for"]);
    let key = env.create("acme", json!({"name": "proxied"}));
    let id = text(&key, "key_id");
    let header = bearer(key["secret"].as_str().unwrap());
    let resp = env.forward("", &[("authorization", header.as_str()), ("x-forwarded-for", "203.0.113.7")]);
    assert_verified(&resp, &id, "acme");
    let view = poll(Duration::from_secs(1), "last_used_ip", || {
        let view = env.key(&id);
        (view["use_count"] == 1).then_some(view)
    });
    assert_eq!(view["last_used_ip"], "203.0.113.7", "{view}");
}

/// Believing every peer's `X-Forwarded-For` lets any caller choose the address that
/// allow-lists check and events record: allowed (behind a proxy that strips the header it
/// is safe), but said at start, and not when the proxies are named.
#[test]
fn forwarded_for_without_trusted_proxies_is_warned_about_at_start() {
    let ledger = Ledger::init();
    let warning = "--trust-forwarded-for without --trusted-proxy";
    let logs = ledger.serve(&["--trust-forwarded-for", "--log-level", "info"]).stop();
    assert!(logs.contains(warning) && logs.contains("WARN"), "no warning:\n{logs}");
    let logs = ledger
        .serve(&["--trust-forwarded-for", "--trusted-proxy", "127.0.0.1/32", "--log-level", "info"])
        .stop();
    assert!(!logs.contains(warning), "warned although the proxies are named:\n{logs}");
}

#[test]
fn admin_keys_are_scoped_by_scope_and_workspace() {
    let env = Env::start(&[]);
    let acme = env.create("acme", json!({"name": "acme key"}));
    let globex = env.create("globex", json!({"name": "globex key"}));
    let reader = env.create(
        "_ledger",
        json!({"name": "acme reader", "scopes": ["ledger:keys:read"], "resources": ["acme"]}),
    );
    let reader_key = text(&reader, "secret");
    let (acme_id, globex_id) = (text(&acme, "key_id"), text(&globex, "key_id"));

    let list = env.http.get("/v1/workspaces/acme/keys", &reader_key);
    assert_eq!(list.status, 200, "{}", list.dump());
    assert!(list.body["keys"].as_array().unwrap().iter().any(|k| k["key_id"] == acme_id.as_str()));
    assert_eq!(env.http.get(&format!("/v1/keys/{acme_id}"), &reader_key).status, 200);
    // Another workspace's key answers exactly like a key that does not exist.
    let hidden = env.http.get(&format!("/v1/keys/{globex_id}"), &reader_key);
    assert_error(&hidden, 404, "not_found");
    assert!(!json_contains(&hidden.body, "globex"), "a hidden key reveals nothing: {}", hidden.dump());
    let mut absent_id = globex_id.clone();
    let last = absent_id.pop().unwrap();
    absent_id.push(if last == '0' { '1' } else { '0' });
    let absent = env.http.get(&format!("/v1/keys/{absent_id}"), &reader_key);
    assert_error(&absent, 404, "not_found");
    assert_eq!(
        hidden.body["message"].as_str().unwrap().replace(&globex_id, "ID"),
        absent.body["message"].as_str().unwrap().replace(&absent_id, "ID"),
        "hidden and absent keys must be indistinguishable"
    );
    let other_list = env.http.get("/v1/workspaces/globex/keys", &reader_key);
    assert_error(&other_list, 404, "not_found");
    // Read-only: no create, revoke or rotate.
    let create = env.http.post("/v1/workspaces/acme/keys", &reader_key, &json!({"name": "nope"}));
    assert_error(&create, 403, "forbidden");
    let revoke = env.http.post(&format!("/v1/keys/{acme_id}/revoke"), &reader_key, &json!({}));
    assert_error(&revoke, 403, "forbidden");
    assert_eq!(env.key(&acme_id)["status"], "active");
    // A key outside _ledger is no admin key; no key at all is unauthorized.
    let outsider = env.http.get("/v1/workspaces/acme/keys", acme["secret"].as_str().unwrap());
    assert_error(&outsider, 403, "forbidden");
    let anonymous = env.http.send("GET", "/v1/workspaces/acme/keys", &[], None);
    assert_error(&anonymous, 401, "unauthorized");
    let bogus = env.http.get("/v1/workspaces/acme/keys", "kl_live_nonsense");
    assert_error(&bogus, 401, "unauthorized");
    // The other accepted header forms work for admin keys too.
    let api_key = format!("Api-Key {reader_key}");
    assert_eq!(
        env.http.send("GET", "/v1/workspaces/acme/keys", &[("authorization", api_key.as_str())], None).status,
        200
    );
    assert_eq!(
        env.http.send("GET", "/v1/workspaces/acme/keys", &[("x-api-key", reader_key.as_str())], None).status,
        200
    );

    // An admin key cannot mint a _ledger key more powerful than itself.
    let minter = env.create(
        "_ledger",
        json!({"name": "minter", "scopes": ["ledger:keys:read", "ledger:keys:write", "ledger:admin"], "resources": ["_ledger", "acme"]}),
    );
    let minter_key = text(&minter, "secret");
    let wider_scope = env.http.post(
        "/v1/workspaces/_ledger/keys",
        &minter_key,
        &json!({"name": "w", "scopes": ["ledger:export"], "resources": ["acme"]}),
    );
    assert_error(&wider_scope, 403, "forbidden");
    let all_workspaces = env.http.post(
        "/v1/workspaces/_ledger/keys",
        &minter_key,
        &json!({"name": "w", "scopes": ["ledger:keys:read"]}),
    );
    assert_error(&all_workspaces, 403, "forbidden");
    let other_workspace = env.http.post(
        "/v1/workspaces/_ledger/keys",
        &minter_key,
        &json!({"name": "w", "scopes": ["ledger:keys:read"], "resources": ["globex"]}),
    );
    assert_error(&other_workspace, 403, "forbidden");
    let within = env.http.post(
        "/v1/workspaces/_ledger/keys",
        &minter_key,
        &json!({"name": "w", "scopes": ["ledger:keys:read"], "resources": ["acme"]}),
    );
    assert_eq!(within.status, 201, "a narrower admin key may be minted: {}", within.dump());
    // _ledger keys only carry keyledger's scopes.
    let resp =
        env.http.post("/v1/workspaces/_ledger/keys", env.root(), &json!({"name": "x", "scopes": ["read"]}));
    assert_invalid(&resp, "scopes");
}
