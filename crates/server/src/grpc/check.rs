//! One Envoy `CheckRequest` in, one `CheckResponse` out: the translation between Envoy's
//! ext_authz messages and keyledger's verification (docs/gateways.md, "Envoy (gRPC
//! ext_authz)"; docs/api.md, "gRPC ext_authz").
//!
//! * **Requirements** come from the route's `context_extensions`: `scope` (one or more,
//!   comma- or space-separated, all required), `resource`, `environment`, `workspace`. An
//!   extension keyledger does not know is refused (400 `invalid_request`): a misspelled
//!   requirement must not silently require nothing.
//! * **The key** comes from the original request's headers by the one rule of
//!   `keyledger_core::credentials` (the HTTP path's).
//! * **The context** recorded in the usage event: the original method and path (query
//!   included, secrets in it redacted), user agent, the request id (`x-request-id`, which
//!   Envoy generates or forwards, else Envoy's own stream id) and the downstream source
//!   address as Envoy determined it.
//! * **The answer**: allowed is gRPC OK with `x-keyledger-key-id`, `x-keyledger-workspace`
//!   and `x-keyledger-request-id` added to the upstream request and the key's headers
//!   removed from it; anything else is a `DeniedHttpResponse` with the status and JSON error
//!   body the HTTP path answers (401, 403, 429, 503, 400).

use crate::error::{ApiError, ErrorCode};
use crate::verify::MAX_CONTEXT_CHARS;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, address};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc;
use keyledger_core::{Environment, UsageContext, WorkspaceId, validate};
use keyledger_ledger::{VerifiedKey, VerifyRequirements};
use std::net::IpAddr;

/// The context extensions keyledger reads.
const EXTENSIONS: [&str; 6] = ["scope", "resource", "environment", "workspace", "cost", "ratelimit"];

/// A check, parsed: the presented key, what the route requires, what the event records.
/// Its `Debug` never shows the key.
pub(crate) struct Check {
    pub key: String,
    pub wants: VerifyRequirements,
    pub context: UsageContext,
    /// The downstream client's address, when Envoy gave one (for the failure throttle).
    pub source: Option<IpAddr>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("key", &"[redacted]")
            .field("wants", &self.wants)
            .field("context", &self.context)
            .field("source", &self.source)
            .finish()
    }
}

/// Reads a `CheckRequest`; a refusal is the error to answer with (nothing looked up).
pub(crate) fn parse(request: &CheckRequest) -> Result<Check, ApiError> {
    let empty = AttributeContext::default();
    let attributes = request.attributes.as_ref().unwrap_or(&empty);
    let extensions = &attributes.context_extensions;
    let mut names: Vec<&String> = extensions.keys().collect();
    names.sort();
    if let Some(unknown) = names.into_iter().find(|name| !EXTENSIONS.contains(&name.as_str())) {
        return Err(ApiError::invalid(
            "context_extensions",
            format!(
                "has `{}`, which keyledger does not know (it reads {})",
                crate::verify::context_text(unknown),
                EXTENSIONS.join(", ")
            ),
        ));
    }
    let scopes = extensions
        .get("scope")
        .map(|s| s.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let scopes = validate::normalize(scopes);
    validate::scopes(&scopes)?;
    let environment = extensions
        .get("environment")
        .map(|e| {
            e.parse::<Environment>().map_err(|_| ApiError::invalid("environment", "must be `live` or `test`"))
        })
        .transpose()?;
    let workspace = extensions
        .get("workspace")
        .map(|w| {
            w.parse::<WorkspaceId>().map_err(|_| ApiError::invalid("workspace", "is not a workspace id"))
        })
        .transpose()?;
    let resource = match extensions.get("resource") {
        Some(r) if r.chars().count() > MAX_CONTEXT_CHARS => {
            return Err(ApiError::invalid(
                "resource",
                format!("must be at most {MAX_CONTEXT_CHARS} characters"),
            ));
        }
        other => other.cloned(),
    };
    let cost = crate::credits::parse_cost(extensions.get("cost").map(String::as_str))?;
    let ratelimits = crate::ratelimit_headers::from_notation(
        "ratelimit",
        extensions.get("ratelimit").map(String::as_str),
    )?;
    let wants = VerifyRequirements { scopes, resource, environment, workspace, cost, ratelimits };

    let http = attributes.request.as_ref().and_then(|r| r.http.as_ref());
    let header = |name: &str| -> Option<String> {
        let http = http?;
        if let Some(value) = http.headers.get(name) {
            return Some(value.clone());
        }
        // With `encode_raw_headers`, Envoy sends `header_map` instead.
        let raw = http.header_map.as_ref()?.headers.iter().find(|h| h.key.eq_ignore_ascii_case(name))?;
        Some(if raw.raw_value.is_empty() {
            raw.value.clone()
        } else {
            String::from_utf8_lossy(&raw.raw_value).into_owned()
        })
    };
    let (authorization, x_api_key) = (header("authorization"), header("x-api-key"));
    let key = keyledger_core::credentials::presented_key(authorization.as_deref(), x_api_key.as_deref())
        .map(|(key, _)| key.to_owned())
        .unwrap_or_default();
    let source = source_address(attributes);
    let text =
        |value: Option<String>| value.filter(|v| !v.is_empty()).map(|v| crate::verify::context_text(&v));
    let context = UsageContext {
        ip: source,
        user_agent: text(header("user-agent")),
        method: text(http.map(|h| h.method.clone())),
        path: text(http.map(|h| h.path.clone())),
        // Envoy's `id` is its own stream id; the request id it generates or forwards is
        // the `x-request-id` header, which the backend sees too.
        request_id: text(header("x-request-id").or_else(|| http.map(|h| h.id.clone()))),
        scopes: wants.scopes.clone(),
        resource: wants.resource.clone(),
    };
    Ok(Check { key, wants, context, source })
}

/// The downstream peer's IP address as Envoy reports it (its `source`).
fn source_address(attributes: &AttributeContext) -> Option<IpAddr> {
    let address = attributes.source.as_ref()?.address.as_ref()?.address.as_ref()?;
    match address {
        address::Address::SocketAddress(socket) => socket.address.parse().ok(),
        _ => None,
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_owned(), value: value.to_owned(), raw_value: Vec::new() }),
        ..Default::default()
    }
}

/// gRPC OK: Envoy forwards the request, with the identity added and the key removed.
pub(crate) fn allowed(key: &VerifiedKey, request_id: &str) -> CheckResponse {
    let key_id = key.key_id.to_string();
    let ok = OkHttpResponse {
        headers: vec![
            header("x-keyledger-key-id", &key_id),
            header("x-keyledger-workspace", key.workspace.as_str()),
            header("x-keyledger-request-id", request_id),
        ],
        // The upstream never needs the key itself.
        headers_to_remove: vec!["authorization".to_owned(), "x-api-key".to_owned()],
        ..Default::default()
    };
    CheckResponse {
        status: Some(rpc::Status { code: tonic::Code::Ok as i32, ..Default::default() }),
        http_response: Some(HttpResponse::OkResponse(ok)),
        ..Default::default()
    }
}

/// Adds the `RateLimit-Policy` and `RateLimit` headers of the applied limits (docs/api.md,
/// "Rate limits") to an allowed check (for the upstream) or a denied one (for the client).
pub(crate) fn with_ratelimit_headers(
    mut response: CheckResponse,
    statuses: &[keyledger_ledger::ratelimit::LimitStatus],
) -> CheckResponse {
    let Some((policy, state)) =
        crate::ratelimit_headers::header_values(statuses, keyledger_core::Timestamp::now())
    else {
        return response;
    };
    let added = [header("ratelimit-policy", &policy), header("ratelimit", &state)];
    match response.http_response.as_mut() {
        Some(HttpResponse::OkResponse(ok)) => ok.headers.extend(added),
        Some(HttpResponse::DeniedResponse(denied)) => denied.headers.extend(added),
        _ => {}
    }
    response
}

/// A denial: Envoy answers the client with `error`'s status and JSON body, never the upstream.
pub(crate) fn denied(error: &ApiError, request_id: &str, retry_after: Option<u64>) -> CheckResponse {
    // As the HTTP path's denials: the error body with `"valid": false`.
    let error = error.clone().with_extra(serde_json::json!({"valid": false}));
    let body = serde_json::to_string(&error.body(request_id)).unwrap_or_default();
    let status = error.status.as_u16();
    let code = match error.code {
        ErrorCode::Unauthorized | ErrorCode::InvalidApiKey | ErrorCode::ExpiredApiKey => {
            tonic::Code::Unauthenticated
        }
        ErrorCode::RateLimited | ErrorCode::UsageExceeded => tonic::Code::ResourceExhausted,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::InvalidRequest => tonic::Code::InvalidArgument,
        _ => tonic::Code::PermissionDenied,
    };
    let mut headers = vec![header("content-type", "application/json"), header("request-id", request_id)];
    if let Some(seconds) = retry_after {
        headers.push(header("retry-after", &seconds.to_string()));
    }
    let denied = DeniedHttpResponse { status: Some(HttpStatus { code: i32::from(status) }), headers, body };
    CheckResponse {
        status: Some(rpc::Status { code: code as i32, message: error.message.clone(), details: Vec::new() }),
        http_response: Some(HttpResponse::DeniedResponse(denied)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};

    fn request(extensions: &[(&str, &str)], headers: &[(&str, &str)]) -> CheckRequest {
        let secret =
            keyledger_core::Secret::generate(&keyledger_core::KeyPrefix::default_prefix(), Environment::Live)
                .expect("entropy");
        let http = HttpRequest {
            id: "envoy-request-1".into(),
            method: "POST".into(),
            path: format!("/api/orders?api_key={}", secret.expose()),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let source = Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "203.0.113.9".into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(source),
                request: Some(Request { http: Some(http), ..Default::default() }),
                context_extensions: extensions.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn requirements_come_from_the_route_and_the_context_from_the_request() {
        let check = parse(&request(
            &[("scope", "orders:write, orders:read"), ("workspace", "acme"), ("environment", "live")],
            &[("authorization", "Bearer kl_x"), ("user-agent", "curl/8")],
        ))
        .expect("parsed");
        assert_eq!(check.key, "kl_x");
        assert_eq!(check.wants.scopes, ["orders:read", "orders:write"]);
        assert_eq!(check.wants.workspace, Some("acme".parse().expect("workspace")));
        assert_eq!(check.wants.environment, Some(Environment::Live));
        assert_eq!(check.context.method.as_deref(), Some("POST"));
        assert_eq!(check.context.request_id.as_deref(), Some("envoy-request-1"), "without x-request-id");
        let with_id = parse(&request(&[], &[("x-request-id", "gw-7")])).expect("parsed");
        assert_eq!(with_id.context.request_id.as_deref(), Some("gw-7"), "x-request-id first");
        assert_eq!(check.context.ip, Some("203.0.113.9".parse().expect("ip")));
        let path = check.context.path.as_deref().expect("path");
        assert!(path.starts_with("/api/orders?api_key=") && !path.contains("kl_live_"), "{path}");
        assert!(!format!("{check:?}").contains("kl_x"));
    }

    #[test]
    fn the_key_follows_the_http_rule_and_unknown_extensions_are_refused() {
        let check =
            parse(&request(&[], &[("authorization", "Basic abc"), ("x-api-key", "kl_y")])).expect("parsed");
        assert_eq!(check.key, "", "another Authorization scheme means no key, as over HTTP");
        let check = parse(&request(&[], &[("x-api-key", "kl_y")])).expect("parsed");
        assert_eq!(check.key, "kl_y");
        for extensions in
            [&[("scopes", "a")][..], &[("environment", "prod")], &[("workspace", "Not A Workspace")]]
        {
            let error = parse(&request(extensions, &[])).expect_err("refused");
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{extensions:?}");
        }
    }

    #[test]
    fn a_denial_carries_the_http_status_and_the_json_error_body() {
        let error = ApiError::new(ErrorCode::Forbidden, "the key lacks a required scope");
        let response = denied(&error, "req_1", None);
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(tonic::Code::PermissionDenied as i32));
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else { panic!("not denied") };
        assert_eq!(denied.status.map(|s| s.code), Some(403));
        let body: serde_json::Value = serde_json::from_str(&denied.body).expect("JSON body");
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["request_id"], "req_1");
        assert!(body["message"].is_string());
    }

    #[test]
    fn a_rate_limit_refusal_is_429_with_retry_after_and_the_draft_headers() {
        let check = parse(&request(&[("ratelimit", "api, heavy:5")], &[])).expect("parsed");
        assert_eq!(check.wants.ratelimits, [("api".to_owned(), 1), ("heavy".to_owned(), 5)]);
        for bad in ["API", "api:x", "api,api"] {
            let error = parse(&request(&[("ratelimit", bad)], &[])).expect_err("refused");
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{bad}");
        }
        let now = keyledger_core::Timestamp::now();
        let status = keyledger_ledger::ratelimit::LimitStatus {
            name: "api".into(),
            limit: 100,
            duration: 60_000_000,
            remaining: 0,
            reset: keyledger_core::Timestamp::from_micros(now.micros() + 12_000_000),
        };
        let error = crate::verify::deny_error(keyledger_core::DenyReason::RateLimited("api".into()));
        let response = with_ratelimit_headers(denied(&error, "req_1", Some(12)), &[status]);
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(tonic::Code::ResourceExhausted as i32));
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else { panic!("not denied") };
        assert_eq!(denied.status.map(|s| s.code), Some(429));
        let header = |name: &str| {
            denied
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == name)
                .map(|h| h.value.clone())
        };
        assert_eq!(header("retry-after").as_deref(), Some("12"));
        assert_eq!(header("ratelimit-policy").as_deref(), Some("\"api\";q=100;w=60"));
        assert!(header("ratelimit").is_some_and(|h| h.starts_with("\"api\";r=0;t=")));
        let body: serde_json::Value = serde_json::from_str(&denied.body).expect("JSON body");
        assert_eq!(
            (body["error"].as_str(), body["reason"].as_str()),
            (Some("rate_limited"), Some("rate_limited"))
        );
        assert!(body["message"].as_str().is_some_and(|m| m.contains("`api`")));
    }
}
