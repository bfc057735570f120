//! Keeps `/openapi.json` true to the code: every route is documented, and real responses
//! match the documented schemas exactly (no missing required field, no undocumented one).

use axum::http::StatusCode;
use keyledger_server::ServerConfig;
use serde_json::{Value, json};
use std::collections::BTreeSet;

mod support;

use support::{Answer, Api};

/// `(METHOD, path)` of every `.route(` in the router's source, axum's `{*rest}` written
/// as OpenAPI's `{rest}`.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let mut routes = BTreeSet::new();
    for chunk in source.split(".route(\"").skip(1) {
        let (path, rest) = chunk.split_once('"').unwrap();
        let call = &rest[..rest.find("\n        .").unwrap_or(rest.len())];
        let path = path.replace("{*", "{");
        for method in ["get", "post", "put", "patch", "delete"] {
            if call.contains(&format!("{method}(")) || call.contains(&format!(".{method}(")) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
        if call.contains("any(") {
            routes.insert(("GET".into(), path.clone()));
            routes.insert(("POST".into(), path.clone()));
        }
    }
    routes
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let routes = routes_in_source();
    assert!(routes.len() > 15, "route parsing broke: {routes:?}");
    let doc = keyledger_server::openapi::document();
    let documented = documented(&doc);
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(missing.is_empty(), "routes missing from the OpenAPI document: {missing:?}");
    // GET /v1/verify/{path} stands for every method of the suffix form.
    let phantom: Vec<_> = documented.difference(&routes).collect();
    assert!(phantom.is_empty(), "documented routes the router lacks: {phantom:?}");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with('3')), Some(true));
}

/// A strict validator for the subset of JSON Schema utoipa emits.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        return validate(doc, &doc["components"]["schemas"][name], value, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            return if options.iter().any(|o| validate(doc, o, value, at).is_ok()) {
                Ok(())
            } else {
                Err(format!("{at}: {value} matches none of {key}"))
            };
        }
    }
    if let Some(parts) = schema["allOf"].as_array() {
        // Merge the parts' properties, then validate once (so no part rejects the others').
        let mut merged = json!({"type": "object", "properties": {}, "required": []});
        for part in parts {
            let part = resolve(doc, part);
            for (k, v) in part["properties"].as_object().into_iter().flatten() {
                merged["properties"][k] = v.clone();
            }
            for r in part["required"].as_array().into_iter().flatten() {
                merged["required"].as_array_mut().unwrap().push(r.clone());
            }
        }
        return validate(doc, &merged, value, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_ok = types.is_empty()
        || types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        });
    if !type_ok {
        return Err(format!("{at}: {value} is not of type {types:?}"));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !value.is_null()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), value.as_object()) {
        for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(required) {
                return Err(format!("{at}: required field `{required}` missing"));
            }
        }
        for (key, field) in object {
            let field_schema =
                properties.get(key).ok_or_else(|| format!("{at}: field `{key}` is not in the document"))?;
            validate(doc, field_schema, field, &format!("{at}.{key}"))?;
        }
    }
    Ok(())
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => &doc["components"]["schemas"][reference.rsplit('/').next().unwrap()],
        None => schema,
    }
}

struct Harness {
    api: Api,
    doc: Value,
    checked: usize,
}

impl Harness {
    /// Calls the API and validates the answer against the documented response schema of
    /// `template` (the route as documented).
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        uri: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let Answer { status, body: value, .. } = self.api.call_as(auth, method, uri, body).await;
        let operation = &self.doc["paths"][template][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {template} is not documented");
        let documented = &operation["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{method} {template} answered {status}, which is not documented: {value}"
        );
        let schema = &documented["content"]["application/json"]["schema"];
        if schema.is_object() {
            if let Err(problem) = validate(&self.doc, schema, &value, "body") {
                panic!("{method} {template} {status}: {problem}");
            }
            self.checked += 1;
        }
        (status, value)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_conform_to_the_documented_schemas() {
    let api = support::api(ServerConfig::default());
    let answer = api.call_as(None, "GET", "/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.is_object(), "/openapi.json is not a JSON object: {}", answer.text);
    let admin = api.admin.clone();
    let mut h = Harness { api, doc: answer.body, checked: 0 };
    let a = Some(admin.as_str());

    let (s, created) = h
        .call("POST", "/v1/workspaces/{ws}/keys", "/v1/workspaces/acme/keys", a, Some(json!({"name": "doc", "scopes": ["read"], "owner": "ops", "metadata": {"team": "x"}, "expires_in": "30d"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    h.call("POST", "/v1/workspaces/{ws}/keys", "/v1/workspaces/acme/keys", a, Some(json!({"name": ""})))
        .await;
    h.call("POST", "/v1/workspaces/{ws}/keys", "/v1/workspaces/acme/keys", None, Some(json!({"name": "x"})))
        .await;
    h.call("GET", "/v1/workspaces/{ws}/keys", "/v1/workspaces/acme/keys?status=all", a, None).await;
    h.call("GET", "/v1/keys/{key_id}", &format!("/v1/keys/{key_id}"), a, None).await;
    h.call("GET", "/v1/keys/{key_id}", "/v1/keys/key_00000000000000000000000000", a, None).await;
    h.call("PATCH", "/v1/keys/{key_id}", &format!("/v1/keys/{key_id}"), a, Some(json!({"name": "renamed"})))
        .await;
    h.call("GET", "/v1/verify", "/v1/verify?scope=read", Some(&secret), None).await;
    h.call("GET", "/v1/verify", "/v1/verify?scope=write", Some(&secret), None).await;
    h.call("GET", "/v1/verify/{path}", "/v1/verify/orders/7", Some(&secret), None).await;
    h.call(
        "POST",
        "/v1/verify",
        "/v1/verify",
        None,
        Some(json!({"key": secret, "scopes": ["read"], "context": {"ip": "203.0.113.1"}})),
    )
    .await;
    h.call("POST", "/v1/verify", "/v1/verify", None, Some(json!({"key": "kl_live_x"}))).await;
    h.call("POST", "/v1/keys/{key_id}/disable", &format!("/v1/keys/{key_id}/disable"), a, None).await;
    h.call("POST", "/v1/keys/{key_id}/enable", &format!("/v1/keys/{key_id}/enable"), a, Some(json!({})))
        .await;
    let (s, _) = h
        .call(
            "POST",
            "/v1/keys/{key_id}/rotate",
            &format!("/v1/keys/{key_id}/rotate"),
            a,
            Some(json!({"overlap": "1h"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    h.call(
        "POST",
        "/v1/keys/{key_id}/revoke",
        &format!("/v1/keys/{key_id}/revoke"),
        a,
        Some(json!({"reason": "test"})),
    )
    .await;
    h.call("POST", "/v1/keys/{key_id}/rotate", &format!("/v1/keys/{key_id}/rotate"), a, None).await;
    let (_, denied) = h.call("GET", "/v1/verify", "/v1/verify", Some(&secret), None).await;
    assert_eq!(denied["valid"], false);
    assert_eq!(denied["reason"], "revoked", "a denial names its reason: {denied}");
    // Audit reads over what happened above.
    let since = "2000-01-01T00:00:00Z";
    h.call("GET", "/v1/keys/{key_id}/events", &format!("/v1/keys/{key_id}/events?kind=all&limit=3"), a, None)
        .await;
    h.call("GET", "/v1/keys/{key_id}/events", &format!("/v1/keys/{key_id}/events?kind=sideways"), a, None)
        .await;
    let (s, report) = h
        .call(
            "GET",
            "/v1/audit/keys/{key_id}/compromise",
            &format!("/v1/audit/keys/{key_id}/compromise?since={since}"),
            a,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(report["uses"]["allowed"].as_u64().unwrap() >= 2, "{report}");
    let (_, verified) = h.call("GET", "/v1/verify", "/v1/verify", Some(&secret), None).await;
    let request = verified["request_id"].as_str().unwrap().to_owned();
    h.call("GET", "/v1/audit/requests/{request_id}", &format!("/v1/audit/requests/{request}"), a, None).await;
    h.call("GET", "/v1/audit/requests/{request_id}", "/v1/audit/requests/req_nothing", a, None).await;
    h.call("GET", "/v1/audit/sources/{source}", "/v1/audit/sources/127.0.0.0%2F8", a, None).await;
    h.call("GET", "/v1/audit/sources", "/v1/audit/sources?cidr=127.0.0.1", a, None).await;
    h.call("GET", "/v1/audit/keys", "/v1/audit/keys?workspace=acme&active_at=2099-01-01T00:00:00Z", a, None)
        .await;
    h.call("GET", "/v1/audit/hygiene", "/v1/audit/hygiene?workspace=acme&unused_for=1d", a, None).await;
    let (s, _) =
        h.call("POST", "/v1/audit/lookup", "/v1/audit/lookup", a, Some(json!({"secret": secret}))).await;
    assert_eq!(s, StatusCode::OK);
    h.call("POST", "/v1/audit/lookup", "/v1/audit/lookup", a, Some(json!({"secret": "kl_live_unknown"})))
        .await;
    h.call(
        "PUT",
        "/v1/workspaces/{ws}/policy",
        "/v1/workspaces/acme/policy",
        a,
        Some(json!({"max_active_keys": 5, "max_lifetime": "90d"})),
    )
    .await;
    h.call("GET", "/v1/workspaces/{ws}/policy", "/v1/workspaces/acme/policy", a, None).await;
    let webhook = "/v1/workspaces/{ws}/webhook";
    let (s, _) = h
        .call(
            "PUT",
            webhook,
            "/v1/workspaces/acme/webhook",
            a,
            Some(json!({"url": "https://hooks.invalid/hook", "events": ["key.revoked"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // A loopback destination is refused (422; docs/webhooks.md, "Destinations").
    let url = json!({"url": "http://127.0.0.1:9/hook"});
    let (s, _) = h.call("PUT", webhook, "/v1/workspaces/acme/webhook", a, Some(url)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    h.call("PUT", webhook, "/v1/workspaces/acme/webhook", a, Some(json!({"url": "hook"}))).await;
    h.call("GET", webhook, "/v1/workspaces/acme/webhook", a, None).await;
    h.call("GET", webhook, "/v1/workspaces/nowhere/webhook", a, None).await;
    h.call(
        "GET",
        "/v1/workspaces/{ws}/webhook/deliveries",
        "/v1/workspaces/acme/webhook/deliveries?limit=5",
        a,
        None,
    )
    .await;
    h.call(
        "GET",
        "/v1/workspaces/{ws}/webhook/deliveries",
        "/v1/workspaces/acme/webhook/deliveries?limit=0",
        a,
        None,
    )
    .await;
    h.call("POST", "/v1/workspaces/{ws}/keys/revoke-all", "/v1/workspaces/acme/keys/revoke-all", a, None)
        .await;
    h.call("DELETE", webhook, "/v1/workspaces/acme/webhook", a, None).await;
    h.call("GET", "/v1/log/checkpoint", "/v1/log/checkpoint", a, None).await;
    h.call("GET", "/v1/log/public-key", "/v1/log/public-key", a, None).await;
    h.call("GET", "/v1/log/proofs/inclusion", "/v1/log/proofs/inclusion?seq=0&size=2", a, None).await;
    h.call("GET", "/v1/log/proofs/consistency", "/v1/log/proofs/consistency?from=1&to=2", a, None).await;
    h.call("GET", "/v1/log/proofs/inclusion", "/v1/log/proofs/inclusion?seq=5&size=2", a, None).await;
    h.call("GET", "/v1/log/entries/{seq}", "/v1/log/entries/0", a, None).await;
    h.call("GET", "/v1/log/entries/{seq}", "/v1/log/entries/99999", a, None).await;
    h.call("GET", "/v1/log/entries/{seq}", "/v1/log/entries/-1", a, None).await;
    h.call("GET", "/healthz", "/healthz", None, None).await;
    assert!(h.checked >= 35, "only {} responses were checked", h.checked);
}

/// Every operation of the document, as `(METHOD, path, operation)`.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), operation));
        }
    }
    out
}

/// What a generated SDK shows its users: method names from `operationId`, doc strings from
/// `summary` and `description`. Ids are lowerCamelCase verbs, one per operation; the texts
/// speak to API users, not of Rust items.
#[test]
fn operations_have_sdk_friendly_ids_and_texts() {
    let doc = keyledger_server::openapi::document();
    let mut seen = BTreeSet::new();
    for (method, path, operation) in operations(&doc) {
        let id = operation["operationId"].as_str().unwrap_or_default();
        let camel = id.starts_with(|c: char| c.is_ascii_lowercase())
            && id.len() > 1
            && id.chars().all(|c| c.is_ascii_alphabetic());
        assert!(camel, "{method} {path}: operationId `{id}` is not ^[a-z][a-zA-Z]+$");
        assert!(seen.insert(id.to_owned()), "{method} {path}: operationId `{id}` is used twice");
        let summary = operation["summary"].as_str().unwrap_or_default();
        assert!(!summary.trim().is_empty(), "{method} {path}: no summary");
        assert!(!summary.contains('\n'), "{method} {path}: the summary is one line: {summary:?}");
        for text in [summary, operation["description"].as_str().unwrap_or_default()] {
            for internal in ["[`", "documentation only", "documentation of", "_doc"] {
                assert!(
                    !text.to_lowercase().contains(internal),
                    "{method} {path}: `{internal}` in a text meant for API users: {text:?}"
                );
            }
        }
    }
    let id = |method: &str, path: &str| doc["paths"][path][method]["operationId"].as_str().map(str::to_owned);
    for (method, path, expected) in [
        ("post", "/v1/workspaces/{ws}/keys", "createKey"),
        ("get", "/v1/workspaces/{ws}/keys", "listKeys"),
        ("get", "/v1/keys/{key_id}", "getKey"),
        ("patch", "/v1/keys/{key_id}", "updateKey"),
        ("post", "/v1/keys/{key_id}/rotate", "rotateKey"),
        ("post", "/v1/keys/{key_id}/revoke", "revokeKey"),
        ("post", "/v1/keys/{key_id}/disable", "disableKey"),
        ("post", "/v1/keys/{key_id}/enable", "enableKey"),
        ("post", "/v1/workspaces/{ws}/keys/revoke-all", "revokeAllKeys"),
        ("get", "/v1/workspaces/{ws}/policy", "getPolicy"),
        ("put", "/v1/workspaces/{ws}/policy", "setPolicy"),
        ("post", "/v1/verify", "verifyKey"),
        ("get", "/v1/verify", "verifyKeyForwardAuth"),
        ("get", "/v1/keys/{key_id}/events", "getKeyEvents"),
        ("get", "/v1/audit/keys/{key_id}/compromise", "getCompromiseReport"),
        ("post", "/v1/audit/lookup", "lookupSecret"),
        ("get", "/healthz", "getHealth"),
        ("get", "/metrics", "getMetrics"),
    ] {
        assert_eq!(id(method, path).as_deref(), Some(expected), "{method} {path}");
    }
}

/// An admin key refused is described once (the sets of `schema/errors.rs`), so every admin
/// operation says the same of its 401; only the routes authenticated otherwise (no key or
/// an optional one, OAuth clients, GitHub's signature) and verify's denials differ.
#[test]
fn every_admin_operation_describes_a_refused_key_alike() {
    let doc = keyledger_server::openapi::document();
    let reference =
        doc["paths"]["/v1/workspaces/{ws}/keys"]["post"]["responses"]["401"]["description"].clone();
    assert!(reference.as_str().is_some_and(|text| text.contains("admin key")), "{reference}");
    let authenticated_otherwise = ["/healthz", "/oauth2/introspect", "/v1/leaks/github", "/v1/verify"];
    let mut admin_operations = 0;
    for (method, path, operation) in operations(&doc) {
        // Under the document's security (an admin key) unless the operation is public
        // (`security: [{}]`, nothing required).
        let public = operation["security"].as_array().is_some_and(|s| s.iter().all(|r| r == &json!({})));
        if public || authenticated_otherwise.iter().any(|other| path.starts_with(other)) {
            continue;
        }
        admin_operations += 1;
        let refused = &operation["responses"]["401"];
        assert!(refused.is_object(), "{method} {path} takes an admin key but documents no 401");
        assert_eq!(refused["description"], reference, "{method} {path} describes its 401 in its own words");
        // An admin key is authenticated against the database's state with the PostgreSQL
        // store: out of reach, every admin operation may answer 503.
        assert!(
            operation["responses"]["503"].is_object(),
            "{method} {path} takes an admin key but documents no 503"
        );
    }
    assert!(admin_operations > 30, "only {admin_operations} admin operations found");
}

/// Sends `method uri` with `Authorization: Bearer <auth>` and an optional JSON body.
async fn send(api: &Api, method: &str, uri: &str, auth: &str, body: Option<Value>) -> (StatusCode, Value) {
    let answer = api.call_as(Some(auth), method, uri, body).await;
    (answer.status, answer.body)
}

/// Every kind of event, in the JSON form the audit routes answer, is what the document
/// says an `EventView` is: no member undocumented, no kind outside the documented names.
#[test]
fn every_kind_of_event_conforms_to_the_event_schema() {
    let doc = keyledger_server::openapi::document();
    let schema = json!({"$ref": "#/components/schemas/EventView"});
    let mut kinds = BTreeSet::new();
    for (kind, event) in keyledger_core::examples::examples() {
        let value = keyledger_core::json::event_json(&event);
        if let Err(problem) = validate(&doc, &schema, &value, kind.as_str()) {
            panic!("{problem}");
        }
        kinds.insert(kind.as_str());
    }
    let documented: BTreeSet<&str> =
        resolve(&doc, &doc["components"]["schemas"]["EventView"]["properties"]["kind"])["enum"]
            .as_array()
            .expect("the event kinds are an enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
    assert_eq!(documented, kinds, "the documented kinds are exactly the kinds of the log");
}

/// Forward-auth mode is a POST without a body: the document must not require one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_by_post_documents_the_body_as_optional_as_the_server_takes_it() {
    let doc = keyledger_server::openapi::document();
    let body = &doc["paths"]["/v1/verify"]["post"]["requestBody"];
    assert!(body.is_object(), "JSON mode's body is documented");
    assert_ne!(body["required"], true, "POST /v1/verify without a body is forward-auth mode: {body}");
    let schema = &body["content"]["application/json"]["schema"];
    assert_eq!(schema["$ref"], "#/components/schemas/VerifyBody", "a JSON `null` is no body: {schema}");
    let app = support::api(ServerConfig::default());
    let admin = app.admin.clone();
    let (s, key) = send(
        &app,
        "POST",
        "/v1/workspaces/acme/keys",
        &admin,
        Some(json!({"name": "fa", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    let secret = key["secret"].as_str().unwrap();
    let (s, verified) = send(&app, "POST", "/v1/verify?scope=read", secret, None).await;
    assert_eq!(s, StatusCode::OK, "{verified}");
    assert_eq!(verified["valid"], true);
    let (s, body) = send(&app, "POST", "/v1/verify", secret, Some(json!({"key": secret}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// The documented bounds of an integer schema: `minimum`/`maximum`, else those its `format`
/// implies (what a generated client or a fuzzer takes as valid).
fn integer_bounds(schema: &Value) -> (i64, i64) {
    let implied = match schema["format"].as_str() {
        Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    (schema["minimum"].as_i64().unwrap_or(implied.0), schema["maximum"].as_i64().unwrap_or(implied.1))
}

/// `PUT …/policy` takes exactly the `max_active_keys` the document allows: the bounds
/// themselves are accepted, one past either is refused with 422 naming the field, and a
/// refused policy changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_max_active_keys_is_bounded_as_documented() {
    let doc = keyledger_server::openapi::document();
    let schema = &doc["components"]["schemas"]["SetPolicy"]["properties"]["max_active_keys"];
    let (min, max) = integer_bounds(schema);
    assert!(max < i64::MAX, "max_active_keys has a documented maximum: {schema}");
    let view = &doc["components"]["schemas"]["PolicyView"]["properties"]["max_active_keys"];
    assert_eq!(integer_bounds(view), (min, max), "the policy shows what it takes: {view}");
    let app = support::api(ServerConfig::default());
    let admin = app.admin.clone();
    let uri = "/v1/workspaces/acme/policy";
    for good in [min, max] {
        let (s, body) = send(&app, "PUT", uri, &admin, Some(json!({"max_active_keys": good}))).await;
        assert_eq!(s, StatusCode::OK, "{good}: {body}");
        assert_eq!(body["max_active_keys"], good);
    }
    for bad in [min - 1, max + 1, -1, i64::from(u32::MAX) + 1] {
        let (s, body) = send(&app, "PUT", uri, &admin, Some(json!({"max_active_keys": bad}))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert!(body["message"].as_str().unwrap().contains("max_active_keys"), "names the field: {body}");
        let (_, policy) = send(&app, "GET", uri, &admin, None).await;
        assert_eq!(policy["max_active_keys"], max, "a refused policy changes nothing: {policy}");
    }
}

/// The `limit` query parameters take exactly the documented range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_parameters_are_bounded_as_documented() {
    let doc = keyledger_server::openapi::document();
    let app = support::api(ServerConfig::default());
    let admin = app.admin.clone();
    let (_, key) = send(&app, "POST", "/v1/workspaces/acme/keys", &admin, Some(json!({"name": "l"}))).await;
    let key_id = key["key_id"].as_str().unwrap();
    for (template, uri) in [
        ("/v1/keys/{key_id}/events", format!("/v1/keys/{key_id}/events")),
        ("/v1/workspaces/{ws}/webhook/deliveries", "/v1/workspaces/acme/webhook/deliveries".to_owned()),
    ] {
        let parameters = doc["paths"][template]["get"]["parameters"].as_array().unwrap();
        let limit = parameters.iter().find(|p| p["name"] == "limit").unwrap();
        let (min, max) = integer_bounds(&limit["schema"]);
        assert!(max < i64::MAX, "{template}: `limit` has a documented maximum: {limit}");
        for good in [min, max] {
            let (s, body) = send(&app, "GET", &format!("{uri}?limit={good}"), &admin, None).await;
            assert!(s == StatusCode::OK || s == StatusCode::NOT_FOUND, "{template} limit={good}: {s} {body}");
        }
        for bad in [min - 1, max + 1] {
            let (s, body) = send(&app, "GET", &format!("{uri}?limit={bad}"), &admin, None).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{template} limit={bad}: {body}");
            assert!(body["message"].as_str().unwrap().contains("limit"), "{body}");
        }
    }
}

/// A cost of 0 is taken from forward auth's query only (a header can come from the client
/// behind the gateway): the document says so to generated clients and to fuzzers.
#[test]
fn the_cost_header_is_documented_as_at_least_one() {
    let doc = keyledger_server::openapi::document();
    let parameters = doc["paths"]["/v1/verify"]["get"]["parameters"].as_array().expect("parameters");
    let header = parameters.iter().find(|p| p["name"] == "x-keyledger-cost").expect("x-keyledger-cost");
    assert_eq!(header["in"], "header");
    assert_eq!(header["schema"]["minimum"], 1, "{header:#}");
    let query = parameters.iter().find(|p| p["name"] == "cost" && p["in"] == "query").expect("cost");
    assert!(query["schema"]["minimum"].as_u64().is_none_or(|m| m == 0), "{query:#}");
}
