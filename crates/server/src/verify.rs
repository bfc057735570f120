//! `/v1/verify`: the gateways' endpoint, in JSON mode and forward-auth mode.
//!
//! JSON mode is a POST with a JSON body. Forward-auth mode (nginx `auth_request`, Traefik
//! ForwardAuth, Envoy ext_authz) is a GET, or a POST without a JSON body: the key comes from
//! the `Authorization`/`x-api-key` headers, requirements from the query string, context from
//! the forwarded headers. Any path under `/v1/verify/` is accepted and taken as the original
//! request path (Envoy's HTTP ext_authz appends it).

use crate::AppState;
use crate::auth::presented_key;
use crate::error::{ApiError, ErrorCode};
use crate::extract::QueryPairs;
use crate::forwarded::client_ip;
use crate::outcome::Outcome;
use crate::schema::Verified;
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use keyledger_core::{DenyReason, Environment, RequestId, Timestamp, UsageContext, WorkspaceId, validate};
use keyledger_ledger::{LedgerError, VerifyOutcome, VerifyRequirements};
use serde::Deserialize;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};

/// Longest recorded context text (user agent, method, path, gateway request id), in
/// characters: a longer header is cut to it, a longer JSON field refused.
pub(crate) const MAX_CONTEXT_CHARS: usize = 2048;

/// A header's text as a usage event records it: each word holding a secret redacted
/// ([`crate::redact::words`]), then cut to its first [`MAX_CONTEXT_CHARS`] characters. In
/// that order: a cut first could leave a secret's first 49 characters, too short to be
/// recognised, and the rest of it follows from them. Copied once (a text of at most that
/// many bytes, the usual case, needs no character walk).
pub(crate) fn context_text(text: &str) -> String {
    let text = crate::redact::words(text);
    if text.len() <= MAX_CONTEXT_CHARS {
        return text.into_owned();
    }
    let end = text.char_indices().nth(MAX_CONTEXT_CHARS).map_or(text.len(), |(at, _)| at);
    text[..end].to_owned()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    #[serde(default)]
    key: String,
    #[serde(default)]
    scopes: Vec<String>,
    resource: Option<String>,
    environment: Option<String>,
    workspace: Option<String>,
    /// Credits to spend if the key has credits (default 1; 0 checks without spending).
    cost: Option<u64>,
    /// Rate limits to apply besides the key's auto-applied ones, at most 16 (docs/api.md,
    /// "Rate limits").
    #[serde(default)]
    ratelimits: Vec<crate::ratelimit_headers::RequestedLimit>,
    #[serde(default)]
    context: ContextBody,
}

/// Where the verified request came from (recorded in the usage event).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextBody {
    ip: Option<String>,
    user_agent: Option<String>,
    method: Option<String>,
    path: Option<String>,
    request_id: Option<String>,
}

/// The OpenAPI operation of forward-auth verification by GET (nginx `auth_request`, Traefik
/// ForwardAuth). [`verify`] serves every method and path form.
#[utoipa::path(get,
    path = "/v1/verify",
    operation_id = "verifyKeyForwardAuth",
    summary = "Verify a key (forward-auth mode)",
    tag = "verify",
    security(()),
    description = "Forward-auth mode: the key from the headers, requirements from the query (or the x-keyledger-require-* headers). Appends one `used` or `denied` event for a known key.",
    params(("scope" = Option<Vec<String>>, Query, description = "Required scope (repeatable: all are required)"),
    ("resource" = Option<String>, Query, description = "Resource the request is for"),
    ("environment" = Option<String>, Query, description = "Required environment: live or test"),
    ("workspace" = Option<String>, Query, description = "Required workspace"),
    ("cost" = Option<u64>, Query, description = "Credits to spend if the key has credits (default 1; 0 checks without spending)"),
    ("x-keyledger-cost" = Option<u64>, Header, minimum = 1, description = "Credits to spend, as `cost` (the query wins); at least 1, since a header can come from the client behind the gateway (0 only in the query)"),
    ("x-keyledger-require-scope" = Option<String>, Header, description = "Required scopes, comma-separated (repeatable): all are required"),
    ("x-keyledger-require-resource" = Option<String>, Header, description = "Resource the request is for (one value: repeated with different values, 400)"),
    ("x-keyledger-require-environment" = Option<String>, Header, description = "Required environment: live or test (one value: repeated with different values, 400)"),
    ("x-keyledger-require-workspace" = Option<String>, Header, description = "Required workspace (one value: repeated with different values, 400)"),
    ("Authorization" = Option<String>, Header, description = "`Bearer K` or `Api-Key K`"),
    ("x-api-key" = Option<String>, Header, description = "The key"),
    ("X-Forwarded-Uri" = Option<String>, Header, description = "Original path (recorded)"),
    ("X-Forwarded-Method" = Option<String>, Header, description = "Original method (recorded)"),
    ("X-Request-Id" = Option<String>, Header, description = "The gateway's request id (recorded as context)")),
    responses(
        (status = 200, description = "Valid; also headers x-keyledger-key-id and x-keyledger-workspace", body = crate::schema::Verified),
        crate::schema::VerifyDenials,
        crate::schema::InvalidRequirement
    )
)]
pub fn verify_get_doc() {}

/// The OpenAPI operation of verification by POST: JSON mode, or forward-auth mode without a
/// body. Served by [`verify`].
#[utoipa::path(post,
    path = "/v1/verify",
    operation_id = "verifyKey",
    summary = "Verify a key",
    tag = "verify",
    security(()),
    description = concat!(
        "JSON mode: the key, the requirements and the context in a JSON body. Without a body (or ",
        "without `Content-Type: application/json`) this is forward-auth mode, as `GET /v1/verify`: ",
        "the key from the headers, requirements from the query (or the x-keyledger-require-* ",
        "headers). Appends one `used` or `denied` event for a known key."
    ),
    request_body(content = VerifyBody,
    description = "JSON mode's request; absent in forward-auth mode",
    content_type = "application/json"),
    params(("scope" = Option<Vec<String>>, Query, description = "Forward-auth mode only: required scope (repeatable: all are required)"),
    ("resource" = Option<String>, Query, description = "Forward-auth mode only: resource the request is for"),
    ("environment" = Option<String>, Query, description = "Forward-auth mode only: required environment, live or test"),
    ("workspace" = Option<String>, Query, description = "Forward-auth mode only: required workspace"),
    ("Authorization" = Option<String>, Header, description = "Forward-auth mode only: `Bearer K` or `Api-Key K`"),
    ("x-api-key" = Option<String>, Header, description = "Forward-auth mode only: the key")),
    responses(
        (status = 200, description = "Valid", body = crate::schema::Verified),
        crate::schema::VerifyDenials
    )
)]
pub fn verify_post_doc() {}

/// The OpenAPI operation of Envoy ext_authz HTTP mode. Served by [`verify`].
#[utoipa::path(get,
    path = "/v1/verify/{path}",
    operation_id = "verifyKeyForwardAuthWithPath",
    summary = "Verify a key (Envoy ext_authz)",
    tag = "verify",
    security(()),
    description = "Forward-auth mode for Envoy ext_authz, which appends the original path and query (both recorded); requirements come from the x-keyledger-require-* headers; any method is accepted.",
    params(("path" = String, Path, description = "The original request path, recorded in the usage event"),
    ("x-keyledger-require-scope" = Option<String>, Header, description = "Required scopes, comma-separated (repeatable): all are required"),
    ("x-keyledger-require-resource" = Option<String>, Header, description = "Resource the request is for (one value: repeated with different values, 400)"),
    ("x-keyledger-require-environment" = Option<String>, Header, description = "Required environment: live or test (one value: repeated with different values, 400)"),
    ("x-keyledger-require-workspace" = Option<String>, Header, description = "Required workspace (one value: repeated with different values, 400)"),
    ("Authorization" = Option<String>, Header, description = "`Bearer K` or `Api-Key K`"),
    ("x-api-key" = Option<String>, Header, description = "The key"),
    ("X-Forwarded-Uri" = Option<String>, Header, description = "Original path (recorded)"),
    ("X-Forwarded-Method" = Option<String>, Header, description = "Original method (recorded)"),
    ("X-Request-Id" = Option<String>, Header, description = "The gateway's request id (recorded as context)")),
    responses(
        (status = 200, description = "Valid", body = crate::schema::Verified),
        crate::schema::VerifyDenials,
        crate::schema::InvalidRequirement
    )
)]
pub fn verify_suffix_doc() {}

/// The OpenAPI operation of the suffix form by POST. Served by [`verify`].
#[utoipa::path(post,
    path = "/v1/verify/{path}",
    operation_id = "verifyKeyForwardAuthWithPathPost",
    summary = "Verify a key (Envoy ext_authz, POST)",
    tag = "verify",
    security(()),
    description = "Forward-auth mode for Envoy ext_authz, which appends the original path and query (both recorded); requirements come from the x-keyledger-require-* headers; any method is accepted.",
    params(("path" = String, Path, description = "The original request path, recorded in the usage event"),
    ("x-keyledger-require-scope" = Option<String>, Header, description = "Required scopes, comma-separated (repeatable): all are required"),
    ("x-keyledger-require-resource" = Option<String>, Header, description = "Resource the request is for (one value: repeated with different values, 400)"),
    ("x-keyledger-require-environment" = Option<String>, Header, description = "Required environment: live or test (one value: repeated with different values, 400)"),
    ("x-keyledger-require-workspace" = Option<String>, Header, description = "Required workspace (one value: repeated with different values, 400)"),
    ("Authorization" = Option<String>, Header, description = "`Bearer K` or `Api-Key K`"),
    ("x-api-key" = Option<String>, Header, description = "The key"),
    ("X-Forwarded-Uri" = Option<String>, Header, description = "Original path (recorded)"),
    ("X-Forwarded-Method" = Option<String>, Header, description = "Original method (recorded)"),
    ("X-Request-Id" = Option<String>, Header, description = "The gateway's request id (recorded as context)")),
    responses(
        (status = 200, description = "Valid", body = crate::schema::Verified),
        crate::schema::VerifyDenials,
        crate::schema::InvalidRequirement
    )
)]
pub fn verify_suffix_post_doc() {}

fn bounded(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > MAX_CONTEXT_CHARS => {
            Err(ApiError::invalid(field, format!("must be at most {MAX_CONTEXT_CHARS} characters")))
        }
        other => Ok(other),
    }
}

/// The values of a requirement header (repeatable, each a comma-separated list).
/// The headers forward-auth mode reads and an answer sets, as parsed names: a lookup or
/// insert by `&str` parses the name again on every request.
mod names {
    use axum::http::HeaderName;
    pub const REQUIRE_SCOPE: HeaderName = HeaderName::from_static("x-keyledger-require-scope");
    pub const REQUIRE_RESOURCE: HeaderName = HeaderName::from_static("x-keyledger-require-resource");
    pub const REQUIRE_ENVIRONMENT: HeaderName = HeaderName::from_static("x-keyledger-require-environment");
    pub const REQUIRE_WORKSPACE: HeaderName = HeaderName::from_static("x-keyledger-require-workspace");
    pub const COST: HeaderName = HeaderName::from_static("x-keyledger-cost");
    pub const RATELIMIT: HeaderName = HeaderName::from_static("x-keyledger-ratelimit");
    pub const FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
    pub const FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const KEY_ID: HeaderName = HeaderName::from_static("x-keyledger-key-id");
    pub const WORKSPACE: HeaderName = HeaderName::from_static("x-keyledger-workspace");
}

fn required_from_headers(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(context_text)
}

fn requirements(
    scopes: Vec<String>,
    resource: Option<String>,
    environment: Option<String>,
    workspace: Option<String>,
) -> Result<VerifyRequirements, ApiError> {
    validate::scopes(&scopes)?;
    let environment = environment
        .map(|e| {
            e.parse::<Environment>().map_err(|_| ApiError::invalid("environment", "must be `live` or `test`"))
        })
        .transpose()?;
    let workspace = workspace
        .map(|w| {
            w.parse::<WorkspaceId>().map_err(|_| ApiError::invalid("workspace", "is not a workspace id"))
        })
        .transpose()?;
    Ok(VerifyRequirements {
        scopes,
        resource: bounded("resource", resource)?,
        environment,
        workspace,
        cost: None,
        ratelimits: Vec::new(),
    })
}

/// Handles every form of verification. It takes the request whole rather than through
/// extractors, which would clone its method, URI and headers and parse its query string
/// even in JSON mode; the body is read under the configured limit, as the `Bytes`
/// extractor would under [`axum::extract::DefaultBodyLimit`]. Its routes are outside
/// [`crate::metrics::remember_route`]: it puts the route template on its answer itself.
pub async fn verify(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let route = parts.extensions.get::<MatchedPath>().cloned();
    let mut response = verify_parts(&state, parts, body).await;
    if let Some(route) = route {
        response.extensions_mut().insert(crate::metrics::RouteTemplate(route));
    }
    response
}

pub(crate) async fn verify_parts(state: &AppState, mut parts: Parts, body: Body) -> Response {
    // The extractor, not the extension alone: tests supply the peer through `MockConnectInfo`.
    let peer = match ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, state).await {
        Ok(ConnectInfo(peer)) => peer,
        Err(rejection) => return rejection.into_response(),
    };
    let request_id = crate::current_request(&parts);
    let Parts { method, uri, headers, .. } = parts;
    let config = &state.config;
    // The client as verify records it, and as the throttle counts it.
    let client = client_ip(&headers, peer.ip(), &config.trusted_proxies, config.trust_forwarded_for);
    // Throttling (off by default) is decided before any parsing, lookup or append.
    if let Some(throttle) = &state.throttle
        && let Err(retry_after) = throttle.check(client)
    {
        crate::metrics::record_verification(&Outcome::Throttled);
        return crate::throttle::throttled(retry_after);
    }
    let body = match axum::body::to_bytes(body, config.body_limit).await {
        Ok(body) => body,
        Err(error) => return crate::extract::body_error(&error).into_response(),
    };
    let request = match parse_request(&method, &uri, &headers, &body, client) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    // JSON mode's `context.ip` is recorded as stated, but checked only from a trusted proxy.
    let source =
        crate::sources::checked_source(peer.ip(), &config.trusted_proxies, request.context.ip, client);
    let (outcome, response) = match decide(state, request, request_id, source).await {
        Ok(decided) => decided,
        // The log cannot be written: no verification took place.
        Err(error) => return denial(error.into()),
    };
    crate::metrics::record_verification(&outcome);
    if let Some(throttle) = &state.throttle
        && outcome.is_failure()
    {
        throttle.charge(client);
    }
    response
}

/// A verification request, parsed and checked: the presented key, what it must allow, and
/// the context its usage event records. Its `Debug` never shows the key.
#[doc(hidden)]
pub struct VerifyRequest {
    pub key: String,
    pub wants: VerifyRequirements,
    pub context: UsageContext,
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("key", &"[redacted]")
            .field("wants", &self.wants)
            .field("context", &self.context)
            .finish()
    }
}

fn denial(error: ApiError) -> Response {
    error.with_extra(json!({"valid": false})).into_response()
}

/// The complete answer refusing a request [`parse_request`] could not accept (boxed: the
/// refusal is the rare path, and the request the common one).
#[doc(hidden)]
#[derive(Debug)]
pub struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// Why forward-auth takes a cost of 0 (a check that spends nothing) from the query only.
const FREE_ONLY_IN_THE_QUERY: &str =
    "may not ask a cost of 0: a header can come from the client behind the gateway (ask it in the query)";

/// Parses a verification request in either mode (JSON body, or forward-auth from the
/// query, headers and path), checking every field; `client` is the source address verify
/// records in forward-auth mode. Reads no state: a refusal is the complete answer (400 or
/// 422 `invalid_request`), and nothing is looked up or appended. Public (doc-hidden) so the
/// `request_bodies` fuzz target runs these very checks.
#[doc(hidden)]
pub fn parse_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    client: IpAddr,
) -> Result<VerifyRequest, Refusal> {
    let is_json =
        headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let json_mode = method == Method::POST && is_json && !body.iter().all(u8::is_ascii_whitespace);
    let (key, wants, context) = if json_mode {
        let body: VerifyBody = serde_json::from_slice(body).map_err(|e| {
            let detail = crate::json_error::without_values(&e.to_string());
            ApiError::new(ErrorCode::InvalidRequest, format!("invalid JSON body: {detail}")).into_response()
        })?;
        let mut wants =
            requirements(body.scopes, body.resource, body.environment, body.workspace).map_err(denial)?;
        wants.cost = crate::credits::check_cost(body.cost).map_err(denial)?;
        wants.ratelimits = crate::ratelimit_headers::from_body(body.ratelimits).map_err(denial)?;
        let ip = match body.context.ip.as_deref() {
            None => None,
            Some(text) => Some(
                text.parse().map_err(|_| denial(ApiError::invalid("context.ip", "is not an IP address")))?,
            ),
        };
        let context = without_secrets(UsageContext {
            ip,
            user_agent: bounded("context.user_agent", body.context.user_agent).map_err(denial)?,
            method: bounded("context.method", body.context.method).map_err(denial)?,
            path: bounded("context.path", body.context.path).map_err(denial)?,
            request_id: bounded("context.request_id", body.context.request_id).map_err(denial)?,
            scopes: wants.scopes.clone(),
            resource: wants.resource.clone(),
        });
        (body.key, wants, context)
    } else {
        // In the path-suffix form (Envoy ext_authz appends the original path and query),
        // the query string is the original request's: it is recorded with the path, and the
        // requirements come only from `x-keyledger-require-*` headers.
        let query = QueryPairs::parse(uri.query());
        let suffix =
            uri.path().strip_prefix("/v1/verify").filter(|s| s.len() > 1).map(|path| match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            });
        let from_query =
            |name: &str| if suffix.is_some() { None } else { query.get(name).map(str::to_owned) };
        if suffix.is_none() {
            query
                .only(&["scope", "resource", "environment", "workspace", "cost", "ratelimit"])
                .map_err(denial)?;
        }
        let mut scopes = if suffix.is_some() { Vec::new() } else { query.all("scope") };
        scopes.extend(required_from_headers(headers, &names::REQUIRE_SCOPE));
        // One value per single-valued requirement: if the client's headers reach keyledger
        // (nginx and Traefik pass them on) and the gateway adds its own, the first would be
        // the client's, so differing values are refused rather than one chosen.
        let single = |name: &str, header: &HeaderName| -> Result<Option<String>, ApiError> {
            if let Some(value) = from_query(name) {
                return Ok(Some(value));
            }
            let mut values = required_from_headers(headers, header);
            values.dedup();
            if values.len() > 1 {
                return Err(ApiError::invalid(header.as_str(), "must have one value (it was given several)"));
            }
            Ok(values.pop())
        };
        let key = presented_key(headers).unwrap_or("").to_owned();
        let query_cost = from_query("cost");
        let header_cost = if query_cost.is_none() { header_text(headers, &names::COST) } else { None };
        let mut wants = requirements(
            validate::normalize(scopes),
            single("resource", &names::REQUIRE_RESOURCE).map_err(denial)?,
            single("environment", &names::REQUIRE_ENVIRONMENT).map_err(denial)?,
            single("workspace", &names::REQUIRE_WORKSPACE).map_err(denial)?,
        )
        .map_err(denial)?;
        wants.cost =
            crate::credits::parse_cost(query_cost.or(header_cost.clone()).as_deref()).map_err(denial)?;
        // A header may come from the client behind the gateway (nginx and Traefik pass the
        // client's headers on): it can make a verification spend more, never nothing. A
        // cost of 0 is the gateway's to ask, in the query.
        if header_cost.is_some() && wants.cost == Some(0) {
            return Err(denial(ApiError::invalid(names::COST.as_str(), FREE_ONLY_IN_THE_QUERY)).into());
        }
        let limit_headers: Vec<String> = headers
            .get_all(&names::RATELIMIT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        if !limit_headers.is_empty() {
            let asked = crate::ratelimit_headers::from_notation(
                names::RATELIMIT.as_str(),
                limit_headers.iter().map(String::as_str),
            )
            .map_err(denial)?;
            if asked.iter().any(|(_, cost)| *cost == 0) {
                return Err(
                    denial(ApiError::invalid(names::RATELIMIT.as_str(), FREE_ONLY_IN_THE_QUERY)).into()
                );
            }
        }
        let mut named = if suffix.is_some() { Vec::new() } else { query.all("ratelimit") };
        named.extend(limit_headers);
        wants.ratelimits =
            crate::ratelimit_headers::from_notation("ratelimit", named.iter().map(String::as_str))
                .map_err(denial)?;
        let context = UsageContext {
            ip: Some(client),
            user_agent: header_text(headers, &header::USER_AGENT),
            method: header_text(headers, &names::FORWARDED_METHOD),
            path: header_text(headers, &names::FORWARDED_URI).or_else(|| suffix.as_deref().map(context_text)),
            request_id: header_text(headers, &names::REQUEST_ID),
            scopes: wants.scopes.clone(),
            resource: wants.resource.clone(),
        };
        (key, wants, context)
    };
    // Every context text is redacted: JSON mode's fields above, forward-auth's by
    // `context_text`.
    Ok(VerifyRequest { key, wants, context })
}

/// Looks the parsed request's key up and has the engine decide it (recording a `used` or
/// `denied` event for a known key): its outcome and answer, or the engine's error.
async fn decide(
    state: &AppState,
    request: VerifyRequest,
    request_id: RequestId,
    source: IpAddr,
) -> Result<(Outcome, Response), LedgerError> {
    let VerifyRequest { key, wants, context } = request;
    let unknown = |outcome| {
        let error = ApiError::new(ErrorCode::Unauthorized, "missing, malformed or unknown API key");
        Ok((outcome, denial(error)))
    };
    match state.engine.verify_from(request_id, &key, wants, context, Some(source)).await? {
        VerifyOutcome::Malformed => unknown(Outcome::Malformed),
        VerifyOutcome::Unknown => unknown(Outcome::Unknown),
        VerifyOutcome::Known(verdict) => match verdict.outcome {
            Ok(()) => {
                let key = &verdict.key;
                let key_id = key.key_id.text();
                let body = Verified {
                    valid: true,
                    key_id: &key_id,
                    workspace: key.workspace.as_str(),
                    environment: key.environment.as_str(),
                    scopes: &key.scopes,
                    owner: key.owner.as_deref().map(String::as_str),
                    expires_at: key.expires_at.map(|t| t.to_rfc3339()),
                    request_id: request_id.text(),
                    credits_remaining: verdict.credits_remaining,
                    ratelimits: verdict.ratelimits.as_deref().map(|s| crate::ratelimit_headers::applied(s)),
                };
                let mut response = (StatusCode::OK, Json(body)).into_response();
                if let Some(statuses) = &verdict.ratelimits {
                    crate::ratelimit_headers::set_headers(response.headers_mut(), statuses, Timestamp::now());
                }
                // The key id's own buffer becomes its header value (`from_str` would copy it).
                let key_id = HeaderValue::from_maybe_shared(axum::body::Bytes::from(key_id));
                for (name, value) in [
                    (names::KEY_ID, key_id),
                    (names::WORKSPACE, HeaderValue::from_str(key.workspace.as_str())),
                ] {
                    if let Ok(value) = value {
                        response.headers_mut().insert(name, value);
                    }
                }
                Ok((Outcome::Allowed, response))
            }
            Err(DenyReason::RateLimited(name)) => {
                let statuses = verdict.ratelimits.as_deref().map_or(&[][..], Vec::as_slice);
                let response = crate::ratelimit_headers::refused(&name, statuses, Timestamp::now());
                Ok((Outcome::Denied("rate_limited"), response))
            }
            Err(reason) => Ok((Outcome::Denied(reason.code()), denial(deny_error(reason)))),
        },
    }
}

/// The error answering a known key's denial for `reason`: one mapping for every path that
/// verifies (this one, and Envoy's gRPC ext_authz in `crate::grpc`).
pub(crate) fn deny_error(reason: DenyReason) -> ApiError {
    let code = match reason {
        DenyReason::Revoked | DenyReason::Disabled => ErrorCode::InvalidApiKey,
        DenyReason::Expired => ErrorCode::ExpiredApiKey,
        DenyReason::UsageExceeded => ErrorCode::UsageExceeded,
        DenyReason::RateLimited(name) => return crate::ratelimit_headers::refusal_error(&name),
        _ => ErrorCode::Forbidden,
    };
    ApiError::new(code, reason.message()).with_extra(json!({"reason": reason.code()}))
}

/// The context a gateway sends is recorded in the log for ever, and a gateway forwards what
/// its client sent: a secret pasted into a query string (`/orders?api_key=kl_live_…`) or a
/// header is replaced by `[redacted]` before the event is decided, so no event, export or
/// audit answer holds it (see docs/security.md, Secrets in URLs).
fn without_secrets(mut context: UsageContext) -> UsageContext {
    for field in [&mut context.user_agent, &mut context.method, &mut context.path, &mut context.request_id] {
        if let Some(text) = field.as_mut()
            && let std::borrow::Cow::Owned(clean) = crate::redact::words(text)
        {
            *text = clean;
        }
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    /// A secret that the cut at `MAX_CONTEXT_CHARS` would split is redacted whole first:
    /// wherever it sits near the end, none of its body is kept.
    #[test]
    fn context_text_redacts_a_secret_before_it_cuts_the_text() {
        use keyledger_core::{KeyPrefix, Secret};
        let secret = Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).expect("entropy");
        let secret = secret.expose();
        let body = &secret[secret.len() - 49..secret.len() - 6];
        for cut_inside in 1..secret.len() {
            let pad = "p".repeat(MAX_CONTEXT_CHARS - (secret.len() - cut_inside) - "&api_key=".len());
            let text = context_text(&format!("/x?pad={pad}&api_key={secret}"));
            assert!(text.chars().count() <= MAX_CONTEXT_CHARS);
            assert!(!text.contains(&body[..20]), "{cut_inside}: {}", &text[text.len() - 60..]);
        }
    }

    #[test]
    fn context_text_keeps_the_first_characters_not_bytes() {
        assert_eq!(context_text("curl/8.5"), "curl/8.5");
        let ascii = "a".repeat(MAX_CONTEXT_CHARS);
        assert_eq!(context_text(&ascii), ascii);
        assert_eq!(context_text(&format!("{ascii}b")), ascii);
        // Two bytes a character: longer than the limit in bytes, within it in characters.
        let wide = "é".repeat(MAX_CONTEXT_CHARS);
        assert_eq!(context_text(&wide), wide);
        let cut = context_text(&format!("{wide}éé"));
        assert_eq!(cut.chars().count(), MAX_CONTEXT_CHARS);
        assert_eq!(cut, wide);
        let mixed = format!("{}€{}", "a".repeat(MAX_CONTEXT_CHARS - 1), "z".repeat(10));
        assert_eq!(context_text(&mixed), format!("{}€", "a".repeat(MAX_CONTEXT_CHARS - 1)));
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers
    }

    fn parse(
        method: Method,
        uri: &str,
        headers: &HeaderMap,
        body: &str,
    ) -> Result<VerifyRequest, StatusCode> {
        let uri: Uri = uri.parse().unwrap();
        parse_request(&method, &uri, headers, body.as_bytes(), CLIENT).map_err(|r| r.into_response().status())
    }

    #[test]
    fn a_json_body_gives_the_key_requirements_and_its_own_context() {
        let body = r#"{"key": "k", "scopes": ["write", "read"], "environment": "live",
            "context": {"ip": "203.0.113.1", "path": "/orders"}}"#;
        let request = parse(Method::POST, "/v1/verify", &json_headers(), body).unwrap();
        assert_eq!(request.key, "k");
        assert_eq!(request.wants.scopes, ["write", "read"]);
        assert_eq!(request.wants.environment, Some(Environment::Live));
        assert_eq!(request.context.ip, Some("203.0.113.1".parse().unwrap()), "the body's ip, not the client");
        assert_eq!(request.context.path.as_deref(), Some("/orders"));
    }

    #[test]
    fn forward_auth_takes_the_query_headers_and_client() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("k"));
        headers.insert("x-keyledger-require-scope", HeaderValue::from_static("write, admin"));
        let request = parse(Method::GET, "/v1/verify?scope=read&workspace=acme", &headers, "").unwrap();
        assert_eq!(request.key, "k");
        assert_eq!(request.wants.scopes, ["admin", "read", "write"]);
        assert_eq!(request.wants.workspace, Some("acme".parse().unwrap()));
        assert_eq!(request.context.ip, Some(CLIENT));
    }

    #[test]
    fn bad_fields_are_refused_before_any_lookup() {
        let headers = json_headers();
        assert_eq!(parse(Method::POST, "/v1/verify", &headers, "{").unwrap_err(), StatusCode::BAD_REQUEST);
        let unknown_field = r#"{"key": "k", "color": "red"}"#;
        assert!(parse(Method::POST, "/v1/verify", &headers, unknown_field).is_err());
        let bad_ip = r#"{"key": "k", "context": {"ip": "nope"}}"#;
        assert_eq!(parse(Method::POST, "/v1/verify", &headers, bad_ip).unwrap_err(), StatusCode::BAD_REQUEST);
        let long =
            format!(r#"{{"key": "k", "context": {{"path": "{}"}}}}"#, "a".repeat(MAX_CONTEXT_CHARS + 1));
        assert_eq!(parse(Method::POST, "/v1/verify", &headers, &long).unwrap_err(), StatusCode::BAD_REQUEST);
        let none = HeaderMap::new();
        assert_eq!(
            parse(Method::GET, "/v1/verify?colour=red", &none, "").unwrap_err(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse(Method::GET, "/v1/verify?environment=prod", &none, "").unwrap_err(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn a_parsed_request_never_shows_its_key() {
        let body = r#"{"key": "kl_live_supersecretvalue"}"#;
        let request = parse(Method::POST, "/v1/verify", &json_headers(), body).unwrap();
        let shown = format!("{request:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn only_401_and_403_outcomes_charge_the_throttle() {
        for outcome in [Outcome::Malformed, Outcome::Unknown, Outcome::Denied("missing_scope")] {
            assert!(outcome.is_failure(), "{outcome:?}");
        }
        for outcome in [
            Outcome::Allowed,
            Outcome::Throttled,
            Outcome::Denied("usage_exceeded"),
            Outcome::Denied("rate_limited"),
        ] {
            assert!(!outcome.is_failure(), "{outcome:?}");
        }
    }
}
