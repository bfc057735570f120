//! Admin authentication and authorisation for keyledger's own API.
//!
//! An admin is a key of workspace `_ledger`, presented as `Authorization: Bearer K`,
//! `Authorization: Api-Key K` or `x-api-key: K`. Its scopes say what it may do; its
//! `resources` are the workspaces it may act on (empty = all). Anything the caller may not
//! see answers 404, exactly as if it did not exist.
//!
//! Failed authentications are throttled per source (see [`crate::throttle`] and
//! docs/security.md, "Request bounds"). The key is always looked at first, and a key that
//! authenticates is never throttled: a source that has spent its budget gets 429 only in
//! place of a failed authentication, so a stranger sharing an address (a proxy, a NAT) can
//! slow guesses and log noise from it but never lock its admins out. A key with a source
//! allow-list is refused outside it (403), as a verification would be. The lookup is a keyed
//! hash and one map probe whatever the answer, so deciding the throttle after it reveals
//! nothing by timing.

use crate::AppState;
use crate::error::ApiError;
use crate::forwarded::client_ip;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, header};
use axum::response::{IntoResponse, Response};
use keyledger_core::{Actor, WorkspaceId};
use keyledger_ledger::{Caller, KeyRecord, LedgerError};
use std::net::{IpAddr, SocketAddr};

/// The scopes of keyledger's API.
pub mod scope {
    pub const KEYS_READ: &str = "ledger:keys:read";
    pub const KEYS_WRITE: &str = "ledger:keys:write";
    pub const AUDIT_READ: &str = "ledger:audit:read";
    pub const EXPORT: &str = "ledger:export";
    pub const ADMIN: &str = "ledger:admin";
}

/// The API key a request presents, from any of the three accepted headers.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    let value = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    keyledger_core::credentials::presented_key(value(&header::AUTHORIZATION), value(&X_API_KEY))
        .map(|(key, _)| key)
}

/// An authenticated admin key, with the current request's id.
pub struct Admin {
    pub key: KeyRecord,
    pub caller: Caller,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        authenticate(parts, state).await
    }
}

/// Authenticates the admin key `parts` present: 401 (no key, or one that is unknown,
/// revoked, disabled or expired) or 403 (not a `_ledger` key), answered as 429 instead when
/// this source has failed too often; 403 `source_not_allowed` for a key used from outside
/// its source allow-list. A key that authenticates is never throttled here.
pub async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Admin, Response> {
    let unknown = || ApiError::from(keyledger_ledger::AuthError::Unknown).into_response();
    let presented = presented_key(&parts.headers).ok_or_else(unknown)?;
    let error = match state.engine.authenticate_admin(presented).await {
        Ok(key) => {
            refuse_outside_sources(&key, parts, state).await?;
            let request_id = crate::current_request(parts);
            return Ok(Admin { caller: Caller { actor: Actor::Admin(key.key_id), request_id }, key });
        }
        Err(LedgerError::Unauthorized(error)) => error,
        // The database cannot be reached: whether the key is still valid is not known (503).
        Err(other) => return Err(ApiError::from(other).into_response()),
    };
    if let Some(throttle) = &state.admin_throttle
        && let Some(source) = admin_source(parts, state).await
    {
        if let Err(retry_after) = throttle.check(source) {
            return Err(crate::throttle::admin_throttled(retry_after));
        }
        throttle.charge(source);
    }
    Err(ApiError::from(error).into_response())
}

/// Refuses (403 `forbidden`, `"reason": "source_not_allowed"`) an admin key with a source
/// allow-list used from an address outside it; an unknown address is never inside a list
/// (docs/api.md, "Source allow-lists"). The address is the TCP peer, or the forwarded
/// client only when the peer is inside a `--trusted-proxy` range: `--trust-forwarded-for`
/// alone, meant for a gateway's forward-auth calls, would let any caller name its address.
/// A refusal is not a failed authentication: the key is right, so the source is not
/// throttled for it.
async fn refuse_outside_sources(
    key: &KeyRecord,
    parts: &mut Parts,
    state: &AppState,
) -> Result<(), Response> {
    let Some(allowed) = &key.allowed_sources else { return Ok(()) };
    let source = admin_source(parts, state).await;
    if keyledger_core::sources::source_allowed(&allowed.sources, source) {
        return Ok(());
    }
    let reason = keyledger_core::DenyReason::SourceNotAllowed(source);
    tracing::warn!(key_id = %key.key_id, source = ?source, "admin key used from outside its source allow-list");
    Err(ApiError::forbidden(reason.message())
        .with_extra(serde_json::json!({"reason": reason.code()}))
        .into_response())
}

/// The address of a caller of keyledger's own API: what an admin key's source allow-list
/// is checked against ([`refuse_outside_sources`]) and what failed admin authentications
/// are throttled by. The TCP peer, or the forwarded client only when the peer is inside a
/// `--trusted-proxy` range: a forwarded header from anyone else would let a caller pick
/// the address it is judged by.
async fn admin_source(parts: &mut Parts, state: &AppState) -> Option<IpAddr> {
    // The extractor, not the extension alone: tests supply the peer through `MockConnectInfo`.
    let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await.ok()?;
    let config = &state.config;
    if !crate::sources::is_trusted_proxy(peer.ip(), &config.trusted_proxies) {
        return Some(peer.ip());
    }
    Some(client_ip(&parts.headers, peer.ip(), &config.trusted_proxies, config.trust_forwarded_for))
}

impl Admin {
    /// Refuses (403) unless the key holds `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.key.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("this admin key lacks the scope `{scope}`")))
        }
    }

    pub fn can_see(&self, workspace: &WorkspaceId) -> bool {
        self.key.resources.is_empty() || self.key.resources.iter().any(|r| r == workspace.as_str())
    }

    /// Refuses (404, as if absent) a workspace outside the key's resources.
    pub fn workspace(&self, workspace: &WorkspaceId) -> Result<(), ApiError> {
        if self.can_see(workspace) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("no workspace {workspace}")))
        }
    }

    /// Requires `scope` and that the key may see `workspace`.
    pub fn allow(&self, scope: &str, workspace: &WorkspaceId) -> Result<(), ApiError> {
        self.workspace(workspace)?;
        self.require(scope)
    }
}
