//! `POST /oauth2/introspect`: RFC 7662 token introspection, for OAuth-aware gateways
//! (Apache's mod_auth_openidc, Kong, …) that ask "is this token active" in OAuth's words
//! (docs/api.md, "Token introspection"; docs/gateways.md shows a tested configuration).
//!
//! What it guarantees:
//!
//! * **The caller is authenticated first.** An admin key holding `ledger:introspect`,
//!   presented as on every admin route or as the password of HTTP Basic (any user name, as
//!   RFC 6749's `client_secret_basic` sends it). Without one: 401/403 in the error body of
//!   docs/api.md, and the token is not looked at.
//! * **A verification like any other.** The token is decided by the engine's verify (no
//!   required scope), so revocation, expiry, disabling and every other verify-time control
//!   hold here too, and each call of a known key appends exactly one `used` or `denied`
//!   event; it counts in the verification metrics by outcome.
//! * **Nothing leaks.** Anything but a valid key (unknown, revoked, expired, disabled,
//!   malformed, or of a workspace outside the caller's resources) answers exactly
//!   `{"active": false}`. A key the caller may not see is not verified at all.

use crate::AppState;
use crate::auth::{Admin, authenticate};
use crate::error::{ApiError, ErrorCode};
use crate::forwarded::client_ip;
use crate::outcome::Outcome;
use crate::schema::Introspection;
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use keyledger_core::{RequestId, UsageContext};
use keyledger_ledger::{INTROSPECT, VerifyOutcome, VerifyRequirements};
use std::net::SocketAddr;
use zeroize::Zeroizing;

/// RFC 7662 token introspection.
#[utoipa::path(post,
    path = "/oauth2/introspect",
    operation_id = "introspectToken",
    summary = "Introspect a key (RFC 7662)",
    tag = "verify",
    security(("bearer" = []), ("x_api_key" = []), ("basic" = [])),
    description = concat!(
        "RFC 7662 token introspection. The caller is an admin key holding `ledger:introspect` ",
        "(Bearer, x-api-key, or the password of HTTP Basic with any user name). The form's ",
        "`token` is verified like `POST /v1/verify` without requirements, appending one `used` ",
        "or `denied` event for a known key. Anything but a valid key answers exactly ",
        "`{\"active\": false}`."
    ),
    request_body(content = IntrospectForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The token's state: `{\"active\": false}` and nothing else unless valid",
            body = Introspection,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "no `token`, or one given twice (invalid_request)", body = crate::schema::ErrorBody),
        (status = 401, description = concat!(
            "the caller presented no admin key, or one that is malformed, unknown (unauthorized), ",
            "revoked or disabled (invalid_api_key) or expired (expired_api_key)"
        ), body = crate::schema::ErrorBody),
        (status = 403, description = "the caller's key lacks `ledger:introspect` or is not a `_ledger` key (forbidden)",
            body = crate::schema::ErrorBody),
        (status = 415, description = "the body is not `application/x-www-form-urlencoded` (invalid_request)",
            body = crate::schema::ErrorBody),
        crate::schema::Unavailable
    )
)]
pub async fn introspect(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let admin = match caller(&mut parts, &state).await {
        Ok(admin) => admin,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = admin.require(INTROSPECT) {
        return refusal.into_response();
    }
    let is_form = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded")
    });
    if !is_form {
        return ApiError::new(
            ErrorCode::InvalidRequest,
            "the body must be application/x-www-form-urlencoded",
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .into_response();
    }
    let body = match axum::body::to_bytes(body, state.config.body_limit).await {
        Ok(body) => Zeroizing::new(body.to_vec()),
        Err(error) => return crate::extract::body_error(&error).into_response(),
    };
    let token = match token(&body) {
        Ok(token) => token,
        Err(refusal) => return refusal.into_response(),
    };
    let context = match context(&mut parts, &state).await {
        Ok(context) => context,
        Err(refusal) => return refusal,
    };
    match decide(&state, &admin, crate::current_request(&parts), &token, context).await {
        Ok(answer) => {
            let mut response = Json(answer).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        // The log cannot be written: no verification took place; fail closed.
        Err(error) => error.into_response(),
    }
}

// Described for the OpenAPI document only: `token` below reads the form.
/// The form of an introspection request.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct IntrospectForm {
    /// The API key to introspect.
    token: String,
    /// Accepted and ignored (RFC 7662 allows a server to).
    token_type_hint: Option<String>,
}

/// Authenticates the caller: as every admin route does, after putting the password of an
/// HTTP Basic `Authorization` (RFC 6749 form-encodes it) in its place as a Bearer key.
async fn caller(parts: &mut Parts, state: &AppState) -> Result<Admin, Response> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION)
        && let Some(encoded) = value.to_str().ok().and_then(basic_credentials)
    {
        let unknown = || ApiError::from(keyledger_ledger::AuthError::Unknown).into_response();
        let password = basic_password(encoded).ok_or_else(unknown)?;
        let bearer = Zeroizing::new(format!("Bearer {}", password.as_str()));
        let mut value = HeaderValue::from_str(&bearer).map_err(|_| unknown())?;
        value.set_sensitive(true);
        parts.headers.insert(header::AUTHORIZATION, value);
    }
    authenticate(parts, state).await
}

/// The credentials of `Basic <credentials>` (scheme case-insensitive), if it is Basic.
fn basic_credentials(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
}

/// The password of Basic credentials: base64 of `user:password`, each form-encoded as
/// RFC 6749 (section 2.3.1) has clients do. `None` if they are not of that form.
fn basic_password(encoded: &str) -> Option<Zeroizing<String>> {
    let decoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?);
    let text = std::str::from_utf8(&decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    let password: String =
        form_urlencoded::parse(format!("p={password}").as_bytes()).next().map(|(_, v)| v.into_owned())?;
    Some(Zeroizing::new(password))
}

/// The form's `token`: exactly once (RFC 6749: a parameter is never repeated). Other
/// parameters (`token_type_hint`, a client's own) are ignored.
fn token(body: &[u8]) -> Result<Zeroizing<String>, ApiError> {
    let mut found = None;
    for (name, value) in form_urlencoded::parse(body) {
        if name == "token" {
            if found.is_some() {
                return Err(ApiError::invalid("token", "is given more than once"));
            }
            found = Some(Zeroizing::new(value.into_owned()));
        }
    }
    found.ok_or_else(|| ApiError::invalid("token", "is required"))
}

/// What the usage event records of an introspection: the gateway's address (as verify
/// determines it), its user agent and its own request id, with any secret in them redacted.
async fn context(parts: &mut Parts, state: &AppState) -> Result<UsageContext, Response> {
    // The extractor, not the extension alone: tests supply the peer through `MockConnectInfo`.
    let peer = match ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await {
        Ok(ConnectInfo(peer)) => peer,
        Err(rejection) => return Err(rejection.into_response()),
    };
    let config = &state.config;
    let ip = client_ip(&parts.headers, peer.ip(), &config.trusted_proxies, config.trust_forwarded_for);
    Ok(UsageContext {
        ip: Some(ip),
        user_agent: text(&parts.headers, "user-agent"),
        request_id: text(&parts.headers, "x-request-id"),
        ..UsageContext::default()
    })
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    Some(crate::verify::context_text(value))
}

/// Verifies `token` for `admin` and says what RFC 7662 answers.
async fn decide(
    state: &AppState,
    admin: &Admin,
    request_id: RequestId,
    token: &str,
    context: UsageContext,
) -> Result<Introspection, ApiError> {
    // A key the caller may not see is inactive to it, and is not verified on its behalf.
    // Admin authentication has just followed the database (PostgreSQL store), so a key
    // issued anywhere before this request is found here; one issued on another node in
    // the instant since is verified below, but still answered inactive.
    if !admin.key.resources.is_empty()
        && let Some(key) = state.engine.find_by_secret(token)
        && !admin.can_see(&key.workspace)
    {
        return Ok(Introspection::inactive());
    }
    let outcome = state.engine.verify(request_id, token, VerifyRequirements::default(), context).await?;
    let (outcome, answer) = match outcome {
        VerifyOutcome::Malformed => (Outcome::Malformed, Introspection::inactive()),
        VerifyOutcome::Unknown => (Outcome::Unknown, Introspection::inactive()),
        VerifyOutcome::Known(verdict) => match verdict.outcome {
            Err(reason) => (Outcome::Denied(reason.code()), Introspection::inactive()),
            // The key was issued on another node after this one looked it up above: it is
            // still inactive to a caller that may not see it.
            Ok(()) if !admin.can_see(&verdict.key.workspace) => (Outcome::Unknown, Introspection::inactive()),
            Ok(()) => {
                let key = verdict.key;
                let key_id = key.key_id.to_string();
                let issued = state.engine.key(&key.key_id).map(|record| record.created_at);
                let answer = Introspection {
                    active: true,
                    scope: Some(key.scopes.join(" ")),
                    sub: Some(key.owner.as_deref().map_or_else(|| key_id.clone(), String::clone)),
                    client_id: Some(key_id),
                    exp: key.expires_at.map(|t| t.micros().div_euclid(1_000_000)),
                    iat: issued.map(|t| t.micros().div_euclid(1_000_000)),
                    token_type: Some("api_key"),
                    workspace: Some(key.workspace.as_str().to_owned()),
                    environment: Some(key.environment.as_str()),
                };
                (Outcome::Allowed, answer)
            }
        },
    };
    crate::metrics::record_verification(&outcome);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credentials: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(credentials)
    }

    #[test]
    fn the_basic_password_is_the_key_whatever_the_user() {
        let key = "kl_live_abc";
        for user in ["", "gateway", "key_0123"] {
            let password = basic_password(&basic(&format!("{user}:{key}"))).expect("password");
            assert_eq!(password.as_str(), key);
        }
        // Form-encoded as RFC 6749 has clients send it.
        assert_eq!(basic_password(&basic("a:k%5Fx+y")).expect("password").as_str(), "k_x y");
        assert!(basic_password("not base64!").is_none());
        assert!(basic_password(&basic("no colon")).is_none());
        assert_eq!(basic_credentials("bAsIc  abc "), Some("abc"));
        assert_eq!(basic_credentials("Bearer abc"), None);
    }

    #[test]
    fn the_token_is_required_once() {
        assert_eq!(token(b"token=kl_a&token_type_hint=access_token").expect("token").as_str(), "kl_a");
        assert_eq!(token(b"client_id=x&token=kl%5Fb").expect("token").as_str(), "kl_b");
        for body in [&b""[..], b"token_type_hint=x", b"token=a&token=b", b"tokens=a"] {
            assert_eq!(token(body).unwrap_err().code, ErrorCode::InvalidRequest, "{body:?}");
        }
    }

    #[test]
    fn a_recorded_header_is_cut_and_has_its_secrets_redacted() {
        let secret = keyledger_core::Secret::generate(
            &keyledger_core::KeyPrefix::default_prefix(),
            keyledger_core::Environment::Live,
        )
        .expect("entropy");
        let mut headers = HeaderMap::new();
        let agent = format!("curl/8 ({})", secret.expose());
        headers.insert("user-agent", agent.parse().expect("header"));
        headers.insert("x-request-id", "gw-1".parse().expect("header"));
        let long = "a".repeat(crate::verify::MAX_CONTEXT_CHARS + 7);
        headers.insert("x-long", long.parse().expect("header"));
        assert_eq!(text(&headers, "user-agent").as_deref(), Some("curl/8 ([redacted])"));
        assert_eq!(text(&headers, "x-request-id").as_deref(), Some("gw-1"));
        assert_eq!(text(&headers, "x-long").map(|t| t.len()), Some(crate::verify::MAX_CONTEXT_CHARS));
        assert_eq!(text(&headers, "x-absent"), None);
    }

    #[test]
    fn an_inactive_answer_is_active_false_and_nothing_else() {
        let text = serde_json::to_string(&Introspection::inactive()).expect("json");
        assert_eq!(text, r#"{"active":false}"#);
    }
}
