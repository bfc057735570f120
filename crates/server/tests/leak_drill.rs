//! A leak drill through the HTTP API, in-process: a key is used from a few places, leaks,
//! is revoked, is still tried; the audit endpoints must tell the story, and only to admins
//! who may see it.

use axum::http::StatusCode;
use keyledger_core::{Payload, Timestamp};
use keyledger_ledger::Engine;
use keyledger_server::ServerConfig;
use serde_json::{Value, json};

mod support;

use support::Api;

fn api() -> Api {
    support::api(ServerConfig::default())
}

impl Api {
    async fn call_with(
        &self,
        admin: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let answer = self.call_as(admin, method, uri, body).await;
        (answer.status, answer.body)
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with(Some(&self.admin.clone()), method, uri, body).await
    }

    async fn create(&self, workspace: &str, body: Value) -> Value {
        let (status, key) = self.call("POST", &format!("/v1/workspaces/{workspace}/keys"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        key
    }

    async fn verify(&self, secret: &str, ip: &str, agent: &str, path: &str, gateway_id: &str) -> Value {
        let body = json!({"key": secret, "context": {"ip": ip, "user_agent": agent, "path": path, "method": "GET", "request_id": gateway_id}});
        self.call_with(None, "POST", "/v1/verify", Some(body)).await.1
    }
}

fn values(list: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        list.as_array().unwrap().iter().map(|v| v["value"].as_str().unwrap().to_owned()).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_drill() {
    let api = api();
    let leaky = api.create("acme", json!({"name": "billing", "scopes": ["read"]})).await;
    let other = api.create("beta", json!({"name": "beta key"})).await;
    let auditor = api
        .create(
            "_ledger",
            json!({"name": "acme auditor", "scopes": ["ledger:audit:read"], "resources": ["acme"]}),
        )
        .await;
    let reader = api.create("_ledger", json!({"name": "reader", "scopes": ["ledger:keys:read"]})).await;
    let (leaky_id, leaky_secret) = (leaky["key_id"].as_str().unwrap(), leaky["secret"].as_str().unwrap());
    let other_id = other["key_id"].as_str().unwrap();
    let auditor_secret = auditor["secret"].as_str().unwrap();

    let first = api.verify(leaky_secret, "198.51.100.7", "billing-svc/1.0", "/v1/invoices", "gw-1").await;
    assert_eq!(first["valid"], true, "{first}");
    api.verify(leaky_secret, "198.51.100.7", "billing-svc/1.0", "/v1/invoices", "gw-2").await;
    let between = Timestamp::now();
    api.verify(leaky_secret, "203.0.113.9", "curl/8.5", "/v1/customers", "gw-3").await;
    api.verify(other["secret"].as_str().unwrap(), "203.0.113.10", "curl/8.5", "/", "gw-4").await;
    let (status, _) = api
        .call(
            "POST",
            &format!("/v1/keys/{leaky_id}/revoke"),
            Some(json!({"reason": "leaked on a paste site"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let late = api.verify(leaky_secret, "203.0.113.9", "curl/8.5", "/v1/customers", "gw-5").await;
    assert_eq!(late["valid"], false);
    // Usage events are group-committed: audit reads see them once durable (≤ 10 ms).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // Events of the key, paginated, oldest first.
    let (status, page) =
        api.call("GET", &format!("/v1/keys/{leaky_id}/events?kind=usage&limit=2"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) =
        api.call("GET", &format!("/v1/keys/{leaky_id}/events?kind=usage&cursor={cursor}"), None).await;
    let kinds: Vec<&str> =
        rest["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["used", "denied"]);
    assert!(rest["next_cursor"].is_null());
    let (_, lifecycle) = api.call("GET", &format!("/v1/keys/{leaky_id}/events?kind=lifecycle"), None).await;
    let kinds: Vec<&str> =
        lifecycle["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "revoked"]);
    let (status, _) = api.call("GET", &format!("/v1/keys/{leaky_id}/events?limit=1001"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The leak report since `between`.
    let since = between.to_rfc3339();
    let (status, report) = api
        .call(
            "GET",
            &format!("/v1/audit/keys/{leaky_id}/compromise?since={}", since.replace('+', "%2B")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["key"]["status"], "revoked");
    assert_eq!(report["uses"]["allowed"], 1);
    assert_eq!(report["uses"]["denied"], 1);
    assert_eq!(values(&report["sources"]), ["203.0.113.9"]);
    assert_eq!(report["sources"][0]["new_since"], true);
    assert_eq!(report["sources"][0]["count"], 2);
    assert_eq!(values(&report["user_agents"]), ["curl/8.5"]);
    assert_eq!(report["paths"][0], json!({"value": "/v1/customers", "count": 2}));
    assert_eq!(report["after_revocation"]["count"], 1);
    assert_eq!(values(&report["after_revocation"]["sources"]), ["203.0.113.9"]);
    let actors: Vec<&str> =
        report["lifecycle"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors.len(), 2);
    assert!(actors.iter().all(|a| a.starts_with("key_")));
    let (_, whole) = api.call("GET", &format!("/v1/audit/keys/{leaky_id}/compromise"), None).await;
    assert_eq!(whole["uses"]["allowed"], 3);
    assert_eq!(values(&whole["sources"]), ["198.51.100.7", "203.0.113.9"]);

    // Request ids: the gateway's and keyledger's own.
    let (status, by_gateway) = api.call("GET", "/v1/audit/requests/gw-3", None).await;
    assert_eq!(status, StatusCode::OK, "{by_gateway}");
    assert_eq!(by_gateway["key"]["key_id"], leaky_id);
    let own = first["request_id"].as_str().unwrap();
    let (status, by_own) = api.call("GET", &format!("/v1/audit/requests/{own}"), None).await;
    assert_eq!(status, StatusCode::OK, "{by_own}");
    assert_eq!(by_own["events"][0]["context"]["request_id"], "gw-1");
    assert_eq!(api.call("GET", "/v1/audit/requests/gw-unknown", None).await.0, StatusCode::NOT_FOUND);

    // Sources: one address, a network in the path (%2F) and in the query.
    let (_, single) = api.call("GET", "/v1/audit/sources/203.0.113.9", None).await;
    assert_eq!(single["keys"].as_array().unwrap().len(), 1, "{single}");
    assert_eq!(single["keys"][0]["count"], 2);
    assert_eq!(single["keys"][0]["denied"], 1);
    let (_, network) = api.call("GET", "/v1/audit/sources/203.0.113.0%2F24", None).await;
    assert_eq!(network["keys"].as_array().unwrap().len(), 2, "{network}");
    let (_, query_form) = api.call("GET", "/v1/audit/sources?cidr=203.0.113.0/24", None).await;
    assert_eq!(query_form["keys"], network["keys"]);
    assert_eq!(api.call("GET", "/v1/audit/sources/not-an-ip", None).await.0, StatusCode::BAD_REQUEST);

    // Active at an instant before the revocation, and now.
    let (_, then) = api
        .call("GET", &format!("/v1/audit/keys?workspace=acme&active_at={}", since.replace('+', "%2B")), None)
        .await;
    assert_eq!(then["keys"].as_array().unwrap().len(), 1, "{then}");
    assert_eq!(then["keys"][0]["key_id"], leaky_id);
    let (_, now) = api.call("GET", "/v1/audit/keys?workspace=acme", None).await;
    assert!(now["keys"].as_array().unwrap().is_empty(), "{now}");

    // Hygiene.
    let (status, hygiene) = api.call("GET", "/v1/audit/hygiene?workspace=beta&unused_for=1d", None).await;
    assert_eq!(status, StatusCode::OK, "{hygiene}");
    assert_eq!(hygiene["no_expiry"][0]["key_id"], other_id);
    assert!(hygiene["never_used"].as_array().unwrap().is_empty());

    // Lookup of the leaked secret, an unknown one, and by an admin who may not see it.
    let lookups_before = count_lookups(&api.engine);
    let (status, found) = api.call("POST", "/v1/audit/lookup", Some(json!({"secret": leaky_secret}))).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!((found["key_id"].as_str(), found["status"].as_str()), (Some(leaky_id), Some("revoked")));
    assert_eq!(found["report"]["uses"]["allowed"], 3);
    assert!(!found.to_string().contains(leaky_secret));
    let (status, missing) =
        api.call("POST", "/v1/audit/lookup", Some(json!({"secret": "kl_live_nothing"}))).await;
    assert_eq!((status, missing["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = api
        .call_with(Some(auditor_secret), "POST", "/v1/audit/lookup", Some(json!({"secret": other["secret"]})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(count_lookups(&api.engine), lookups_before + 3);
    for seq in 0..api.engine.log().len() {
        let raw = api.engine.log().raw(seq).unwrap();
        assert!(!raw.windows(leaky_secret.len()).any(|w| w == leaky_secret.as_bytes()), "secret in the log");
    }

    // Visibility and scope.
    let (status, _) = api
        .call_with(Some(auditor_secret), "GET", &format!("/v1/audit/keys/{other_id}/compromise"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        api.call_with(Some(auditor_secret), "GET", &format!("/v1/keys/{other_id}/events"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call_with(Some(auditor_secret), "GET", "/v1/audit/requests/gw-4", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, seen) =
        api.call_with(Some(auditor_secret), "GET", "/v1/audit/sources/203.0.113.0%2F24", None).await;
    assert_eq!(seen["keys"].as_array().unwrap().len(), 1, "{seen}");
    let (status, _) = api.call_with(Some(auditor_secret), "GET", "/v1/audit/keys?workspace=beta", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, ok) = api
        .call_with(Some(auditor_secret), "GET", &format!("/v1/audit/keys/{leaky_id}/compromise"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    let (status, _) = api
        .call_with(
            Some(reader["secret"].as_str().unwrap()),
            "GET",
            &format!("/v1/audit/keys/{leaky_id}/compromise"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    api.engine.shutdown().await;
}

fn count_lookups(engine: &Engine) -> usize {
    engine.log().events_from(0).filter(|e| matches!(e.as_ref().unwrap().payload, Payload::Lookup(_))).count()
}
