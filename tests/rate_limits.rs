//! Named rate limits through the real binary (docs/api.md, "Rate limits"): limits on create,
//! PATCH and rotation, JSON and forward-auth verification with the `RateLimit-Policy` /
//! `RateLimit` headers, 429 `rate_limited` with `Retry-After`, the `denied` event, revoked
//! before rate-limited, the windows in progress recounted from the log after a restart, and
//! no spends in the log during a rolling upgrade.

use keyledger_e2e::{Client, Env, Ledger, Resp, text};
use serde_json::{Value, json};

const ACME_KEYS: &str = "/v1/workspaces/acme/keys";

fn create(http: &Client, admin: &str, ratelimits: Value) -> (String, String, Value) {
    let created = http.post(ACME_KEYS, admin, &json!({"name": "svc", "ratelimits": ratelimits}));
    assert_eq!(created.status, 201, "{}", created.dump());
    (text(&created.body, "key_id"), text(&created.body, "secret"), created.body)
}

fn verify_json(http: &Client, secret: &str, ratelimits: Option<Value>) -> Resp {
    let mut body = json!({"key": secret});
    if let Some(ratelimits) = ratelimits {
        body["ratelimits"] = ratelimits;
    }
    http.send("POST", "/v1/verify", &[], Some(&body))
}

fn remaining(resp: &Resp) -> Vec<(String, u64)> {
    resp.body["ratelimits"]
        .as_array()
        .map(|list| {
            list.iter().map(|l| (text(l, "name"), l["remaining"].as_u64().unwrap_or(u64::MAX))).collect()
        })
        .unwrap_or_default()
}

fn assert_refused(resp: &Resp, name: &str) {
    assert_eq!(resp.status, 429, "{}", resp.dump());
    assert_eq!(resp.body["error"], "rate_limited", "{}", resp.dump());
    assert_eq!(resp.body["reason"], "rate_limited");
    assert_eq!(resp.body["valid"], false);
    assert!(text(&resp.body, "message").contains(&format!("`{name}`")), "{}", resp.dump());
    let retry: u64 = resp.header("retry-after").and_then(|r| r.parse().ok()).expect("Retry-After");
    assert!(retry >= 1, "{}", resp.dump());
    let state = resp.header("ratelimit").expect("RateLimit header");
    assert!(state.contains(&format!("\"{name}\";r=0;t=")), "{state}");
}

fn denied_reasons(http: &Client, admin: &str, key_id: &str) -> Vec<Value> {
    let page = http.get(&format!("/v1/keys/{key_id}/events?kind=usage&limit=1000"), admin);
    assert_eq!(page.status, 200, "{}", page.dump());
    let events = page.body["events"].as_array().cloned().unwrap_or_default();
    events.iter().filter(|e| e["kind"] == "denied").map(|e| e["reason"].clone()).collect()
}

#[test]
fn json_mode_create_patch_rotate_and_revoke() {
    let env = Env::start(&[]);
    let admin = env.root();

    // A bad list is refused, naming the field, and appends nothing.
    let before = env.log_size();
    // A bad value is 400, a body of the wrong shape 422 (as for every admin body).
    for (bad, status) in [
        (json!([{"name": "API", "limit": 1, "duration": "1m"}]), 400),
        (json!([{"name": "api", "limit": 0, "duration": "1m"}]), 400),
        (json!([{"name": "api", "limit": 1, "duration": "31d"}]), 400),
        (
            json!([{"name": "api", "limit": 1, "duration": "1m"}, {"name": "api", "limit": 2, "duration": "1m"}]),
            400,
        ),
        (json!([{"name": "api", "limit": 1, "duration": "1m", "burst": 3}]), 422),
    ] {
        let refused = env.http.post(ACME_KEYS, admin, &json!({"name": "x", "ratelimits": bad}));
        assert_eq!(refused.status, status, "{bad}: {}", refused.dump());
        assert_eq!(refused.body["error"], "invalid_request");
    }
    assert_eq!(env.log_size(), before, "a refused create appended something");

    let (key_id, secret, view) = create(
        &env.http,
        admin,
        json!([
            {"name": "api", "limit": 3, "duration": "30d"},
            {"name": "heavy", "limit": 2, "duration": "30d", "auto_apply": false}
        ]),
    );
    assert_eq!(view["ratelimits_from"], "key");
    assert_eq!(
        view["ratelimits"][0],
        json!({"name": "api", "limit": 3, "duration": "30d", "auto_apply": true})
    );
    assert_eq!(env.key(&key_id)["ratelimits"][1]["auto_apply"], false);

    // Allowed: the applied limits in the body and the draft's headers.
    let ok = verify_json(&env.http, &secret, None);
    assert_eq!(ok.status, 200, "{}", ok.dump());
    assert_eq!(remaining(&ok), vec![("api".into(), 2)]);
    assert_eq!(ok.body["ratelimits"][0]["limit"], 3);
    assert!(ok.body["ratelimits"][0]["reset"].as_str().is_some_and(|r| r.ends_with('Z')), "{}", ok.dump());
    assert_eq!(ok.header("ratelimit-policy"), Some("\"api\";q=3;w=2592000"));
    assert!(ok.header("ratelimit").is_some_and(|h| h.starts_with("\"api\";r=2;t=")), "{}", ok.dump());
    // Cost 0 checks without spending; a named limit applies only when named.
    let check = verify_json(&env.http, &secret, Some(json!([{"name": "api", "cost": 0}])));
    assert_eq!(remaining(&check), vec![("api".into(), 2)]);
    let heavy = verify_json(&env.http, &secret, Some(json!([{"name": "heavy"}])));
    assert_eq!(remaining(&heavy), vec![("api".into(), 1), ("heavy".into(), 1)]);
    assert!(heavy.header("ratelimit-policy").is_some_and(|h| h.contains("\"heavy\";q=2")));
    // A name the key has no limit of is ignored (not in the answer).
    let unknown = verify_json(&env.http, &secret, Some(json!([{"name": "nope"}])));
    assert_eq!((unknown.status, remaining(&unknown)), (200, vec![("api".into(), 0)]));
    // Exactly reached: the next one is refused, and recorded.
    assert_refused(&verify_json(&env.http, &secret, None), "api");
    assert_eq!(denied_reasons(&env.http, admin, &key_id), vec![json!("rate_limited")]);

    // A bad request shape: 400, nothing spent or recorded.
    let many: Vec<Value> = (0..17).map(|i| json!({"name": format!("l{i}")})).collect();
    for bad in [json!([{"name": "api", "x": 1}]), json!([{"name": "API"}]), json!(many), json!("api")] {
        let refused = verify_json(&env.http, &secret, Some(bad.clone()));
        assert_eq!(refused.status, 400, "{bad}: {}", refused.dump());
        assert_eq!(refused.body["error"], "invalid_request");
    }
    assert_eq!(denied_reasons(&env.http, admin, &key_id).len(), 1);

    // PATCH raises the limit (the counter is kept): one more allowed.
    let patched = env.http.patch(
        &format!("/v1/keys/{key_id}"),
        admin,
        &json!({"ratelimits": [{"name": "api", "limit": 4, "duration": "30d"}]}),
    );
    assert_eq!(patched.status, 200, "{}", patched.dump());
    assert_eq!(
        patched.body["ratelimits"],
        json!([{"name": "api", "limit": 4, "duration": "30d", "auto_apply": true}])
    );
    let bad_patch = env.http.patch(
        &format!("/v1/keys/{key_id}"),
        admin,
        &json!({"ratelimits": [{"name": "api", "limit": 0, "duration": "1m"}]}),
    );
    assert_eq!(bad_patch.status, 400, "{}", bad_patch.dump());
    assert_eq!(env.key(&key_id)["ratelimits"][0]["limit"], 4);
    assert_eq!(remaining(&verify_json(&env.http, &secret, None)), vec![("api".into(), 0)]);
    assert_refused(&verify_json(&env.http, &secret, None), "api");

    // Rotation: the successor inherits the limits (with its own counter).
    let rotated = env.http.post(&format!("/v1/keys/{key_id}/rotate"), admin, &json!({"overlap": "0s"}));
    assert_eq!(rotated.status, 201, "{}", rotated.dump());
    assert_eq!(rotated.body["key"]["ratelimits"], patched.body["ratelimits"]);
    assert_eq!(rotated.body["key"]["ratelimits_from"], "key");
    let (new_id, new_secret) = (text(&rotated.body["key"], "key_id"), text(&rotated.body["key"], "secret"));
    for left in [3, 2, 1, 0] {
        assert_eq!(remaining(&verify_json(&env.http, &new_secret, None)), vec![("api".into(), left)]);
    }
    assert_refused(&verify_json(&env.http, &new_secret, None), "api");
    // Revoked beats rate-limited: 401, no rate-limit headers.
    let revoked = env.http.post(&format!("/v1/keys/{new_id}/revoke"), admin, &json!({}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    let after = verify_json(&env.http, &new_secret, None);
    assert_eq!(
        (after.status, after.body["error"].as_str()),
        (401, Some("invalid_api_key")),
        "{}",
        after.dump()
    );
    assert!(after.header("ratelimit").is_none() && after.header("retry-after").is_none());
}

#[test]
fn forward_auth_names_limits_by_query_and_header() {
    let env = Env::start(&[]);
    let (_, secret, _) = create(
        &env.http,
        env.root(),
        json!([
            {"name": "api", "limit": 2, "duration": "30d"},
            {"name": "search", "limit": 1, "duration": "30d", "auto_apply": false}
        ]),
    );
    let bearer = format!("Bearer {secret}");
    let get = |query: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        env.http.send("GET", &format!("/v1/verify{query}"), &headers, None)
    };
    let first = get("?ratelimit=search", &[]);
    assert_eq!(first.status, 200, "{}", first.dump());
    assert_eq!(first.header("ratelimit-policy"), Some("\"api\";q=2;w=2592000, \"search\";q=1;w=2592000"));
    assert!(
        first
            .header("ratelimit")
            .is_some_and(|h| h.contains("\"api\";r=1;t=") && h.contains("\"search\";r=0;t="))
    );
    // `search` used up: refused when named (nothing spent on `api`), allowed when not.
    assert_refused(&get("", &[("x-keyledger-ratelimit", "search")]), "search");
    assert_refused(&get("?ratelimit=search:1", &[]), "search");
    let plain = get("", &[]);
    assert_eq!(plain.status, 200, "{}", plain.dump());
    assert!(plain.header("ratelimit").is_some_and(|h| h.starts_with("\"api\";r=0;t=")), "{}", plain.dump());
    // A cost-0 check of a used-up window is refused too.
    assert_refused(&get("?ratelimit=api:0", &[]), "api");
    // A cost of 0 in a header, which the client behind nginx or Traefik can send, is refused:
    // a key that never spends from its window is never limited.
    for header in ["api:0", "search:2, api:0"] {
        let free = get("", &[("x-keyledger-ratelimit", header)]);
        assert_eq!(
            (free.status, free.body["error"].as_str()),
            (400, Some("invalid_request")),
            "{}",
            free.dump()
        );
        assert!(
            free.body["message"].as_str().is_some_and(|m| m.contains("x-keyledger-ratelimit")),
            "{}",
            free.dump()
        );
    }
    for bad in ["?ratelimit=API", "?ratelimit=api:x", "?ratelimit=a,a"] {
        let refused = get(bad, &[]);
        assert_eq!(refused.status, 400, "{bad}: {}", refused.dump());
    }
}

#[test]
fn a_restart_recounts_the_windows_in_progress_from_the_log() {
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    let http = server.client();
    let (key_id, secret, _) =
        create(&http, &ledger.admin_key, json!([{"name": "api", "limit": 2, "duration": "30d"}]));
    assert_eq!(verify_json(&http, &secret, None).status, 200);
    // The `used` event names what it spent, which is what a restart counts again.
    let page = http.get(&format!("/v1/keys/{key_id}/events?kind=usage&limit=10"), &ledger.admin_key);
    assert_eq!(
        page.body["events"][0]["ratelimits_spent"],
        json!([{"name": "api", "cost": 1, "duration": "30d"}]),
        "{}",
        page.dump()
    );
    server.stop();
    let server = ledger.serve(&[]);
    let http = server.client();
    let view = http.get(&format!("/v1/keys/{key_id}"), &ledger.admin_key);
    assert_eq!(view.body["ratelimits"][0]["limit"], 2, "{}", view.dump());
    assert_eq!(verify_json(&http, &secret, None).status, 200);
    assert_refused(&verify_json(&http, &secret, None), "api");
    server.stop();
}

/// `serve --rolling-upgrade`: the `used` event stays as older nodes read it (no
/// `ratelimits_spent`) and the limit still holds on this node.
#[test]
fn a_rolling_upgrade_names_no_spends_in_the_log() {
    let ledger = Ledger::init();
    let server = ledger.serve(&["--rolling-upgrade"]);
    let http = server.client();
    let (key_id, secret, _) =
        create(&http, &ledger.admin_key, json!([{"name": "api", "limit": 1, "duration": "30d"}]));
    assert_eq!(verify_json(&http, &secret, None).status, 200);
    assert_refused(&verify_json(&http, &secret, None), "api");
    let page = http.get(&format!("/v1/keys/{key_id}/events?kind=usage&limit=10"), &ledger.admin_key);
    let used: Vec<&Value> =
        page.body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "used").collect();
    assert_eq!(used.len(), 1, "{}", page.dump());
    assert!(used[0].get("ratelimits_spent").is_none(), "{}", page.dump());
    server.stop();
}

#[test]
fn the_workspace_policy_gives_a_default() {
    let env = Env::start(&[]);
    let admin = env.root();
    let policy = "/v1/workspaces/beta/policy";
    let bad =
        env.http.put(policy, admin, &json!({"ratelimits": [{"name": "api", "limit": 0, "duration": "1m"}]}));
    assert_eq!(bad.status, 400, "{}", bad.dump());
    let set =
        env.http.put(policy, admin, &json!({"ratelimits": [{"name": "api", "limit": 1, "duration": "30d"}]}));
    assert_eq!(set.status, 200, "{}", set.dump());
    assert_eq!(set.body["ratelimits"][0]["limit"], 1);
    assert_eq!(env.http.get(policy, admin).body["ratelimits"], set.body["ratelimits"]);
    let created = env.http.post("/v1/workspaces/beta/keys", admin, &json!({"name": "svc"}));
    assert_eq!(created.status, 201, "{}", created.dump());
    assert_eq!(created.body["ratelimits_from"], "policy");
    let secret = text(&created.body, "secret");
    assert_eq!(verify_json(&env.http, &secret, None).status, 200);
    assert_refused(&verify_json(&env.http, &secret, None), "api");
    // A PUT without `ratelimits` removes the default.
    let cleared = env.http.put(policy, admin, &json!({}));
    assert_eq!(cleared.body["ratelimits"], json!([]), "{}", cleared.dump());
    assert_eq!(env.key(&text(&created.body, "key_id"))["ratelimits_from"], Value::Null);
}

#[test]
fn the_cli_sets_a_default_beside_the_leak_policy() {
    let env = Env::start(&[]);
    let admin_flags = ["--url", env.server.url.as_str(), "--admin-key", env.root()];
    let mut args = vec!["policy", "set", "beta", "--on-leak", "revoke", "--rate-limit", "api=5/1m", "--json"];
    args.extend(admin_flags);
    let run = keyledger_e2e::keyledger(&args);
    assert!(run.success(), "{}", run.stderr);
    let policy: Value = serde_json::from_str(&run.stdout).expect("policy set --json prints the policy");
    assert_eq!(policy["on_leak"], "revoke", "{policy}");
    assert_eq!(
        policy["ratelimits"],
        json!([{"name": "api", "limit": 5, "duration": "1m", "auto_apply": true}])
    );
    let mut args = vec!["policy", "get", "beta"];
    args.extend(admin_flags);
    let shown = keyledger_e2e::keyledger(&args);
    assert!(shown.stdout.contains("api=5/1m"), "{}", shown.stdout);
    let mut args = vec!["policy", "set", "beta", "--rate-limit", "api=0/1m"];
    args.extend(admin_flags);
    let bad = keyledger_e2e::keyledger(&args);
    assert!(!bad.success() && bad.stderr.contains("api=0/1m"), "{}", bad.stderr);
    assert_eq!(env.http.get("/v1/workspaces/beta/policy", env.root()).body["ratelimits"][0]["limit"], 5);
}

#[test]
fn every_view_of_a_key_shows_its_limits_and_credits() {
    let env = Env::start(&[]);
    let admin = env.root();
    let body = json!({"name": "svc", "ratelimits": [{"name": "api", "limit": 7, "duration": "1h"}],
                      "credits": {"remaining": 50}});
    let created = env.http.post(ACME_KEYS, admin, &body);
    assert_eq!(created.status, 201, "{}", created.dump());
    let key_id = text(&created.body, "key_id");
    let expected = json!([{"name": "api", "limit": 7, "duration": "1h", "auto_apply": true}]);
    let views = [
        ("compromise report", env.http.get(&format!("/v1/audit/keys/{key_id}/compromise"), admin), "/key"),
        ("hygiene", env.http.get("/v1/audit/hygiene?workspace=acme", admin), "/never_used/0"),
        ("top-up", env.http.post(&format!("/v1/keys/{key_id}/credits"), admin, &json!({"add": 1})), ""),
    ];
    for (what, resp, at) in views {
        assert_eq!(resp.status, 200, "{what}: {}", resp.dump());
        let key = resp.body.pointer(at).unwrap_or_else(|| panic!("{what}: {}", resp.dump()));
        assert_eq!(key["key_id"], key_id.as_str(), "{what}: {}", resp.dump());
        assert_eq!(key["ratelimits"], expected, "{what}: {}", resp.dump());
        assert_eq!(key["ratelimits_from"], "key", "{what}");
        assert!(key["credits"]["remaining"].as_u64().is_some(), "{what}: {}", resp.dump());
    }
}
