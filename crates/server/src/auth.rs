//! Admin authentication and authorisation for keyledger's own API.
//!
//! An admin is a key of workspace `_ledger`, presented as `Authorization: Bearer K`,
//! `Authorization: Api-Key K` or `x-api-key: K`. Its scopes say what it may do; its
//! `resources` are the workspaces it may act on (empty = all). Anything the caller may not
//! see answers 404, exactly as if it did not exist.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use keyledger_core::{Actor, WorkspaceId};
use keyledger_ledger::{Caller, KeyRecord};

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
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    keyledger_core::credentials::presented_key(value("authorization"), value("x-api-key")).map(|(key, _)| key)
}

/// An authenticated admin key, with the current request's id.
pub struct Admin {
    pub key: KeyRecord,
    pub caller: Caller,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = presented_key(&parts.headers)
            .ok_or_else(|| ApiError::from(keyledger_ledger::AuthError::Unknown))?;
        let key = state.engine.authenticate_admin(presented)?;
        let request_id = crate::current_request(parts);
        Ok(Admin { caller: Caller { actor: Actor::Admin(key.key_id), request_id }, key })
    }
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
