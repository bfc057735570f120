//! The error body of docs/api.md, "Errors", and the sets of error answers that the
//! operations share (each a `utoipa::IntoResponses`, named in `#[utoipa::path(responses(…))]`).
//!
//! Answers every operation may give whatever its annotation says (431, 429 for admin
//! operations, and the framework's 400/413/415/422 for a JSON body) are added to the
//! document by [`crate::openapi`].

use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

/// Every error: `{"error", "message", "request_id"}` (verify denials add `"valid": false`).
#[derive(Serialize, ToSchema, Debug)]
#[schema(example = json!({"error": "not_found", "message": "no key key_01…", "request_id": "req_01…"}))]
pub struct ErrorBody {
    /// One of unauthorized, invalid_api_key, expired_api_key, forbidden, not_found,
    /// invalid_request, conflict, payload_too_large, unavailable, internal; and, as an
    /// extension of the API, rate_limited (429 from verify when throttling is on);
    /// usage_exceeded (429 from verify: the key's credits do not cover the cost).
    pub error: &'static str,
    pub message: String,
    pub request_id: String,
    /// Present (false) on verification denials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid: Option<bool>,
    /// On verification denials: the reason code (revoked, expired, disabled, missing_scope…);
    /// on an admin key refused outside its source allow-list: `source_not_allowed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On an idempotent retry that was already carried out: the keys it produced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_ids: Option<Vec<String>>,
}

/// The optional fields of [`ErrorBody`] that an error adds (`crate::error::ApiError::with_extra`).
#[derive(Deserialize, Debug, Default, Clone, PartialEq)]
pub struct ErrorExtra {
    pub valid: Option<bool>,
    pub reason: Option<String>,
    pub key_ids: Option<Vec<String>>,
}

impl ErrorExtra {
    /// `more`'s fields over this one's.
    pub fn merge(&mut self, more: ErrorExtra) {
        self.valid = more.valid.or(self.valid);
        self.reason = more.reason.or(self.reason.take());
        self.key_ids = more.key_ids.or(self.key_ids.take());
    }
}

/// An admin key refused: every admin operation may answer these.
#[derive(IntoResponses)]
pub enum AdminErrors {
    /// missing, malformed, unknown (unauthorized), revoked or disabled (invalid_api_key) or expired (expired_api_key) admin key
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// the admin key lacks the scope, or is not a `_ledger` key, or is used from outside its source allow-list (forbidden; `reason: source_not_allowed`)
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// An admin key refused, on an operation that reads every workspace's events (the raw log).
#[derive(IntoResponses)]
pub enum AllWorkspacesAdminErrors {
    /// missing, malformed, unknown (unauthorized), revoked or disabled (invalid_api_key) or expired (expired_api_key) admin key
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// the admin key lacks the scope, is limited to some workspaces, is not a `_ledger` key, or is used from outside its source allow-list (forbidden; `reason: source_not_allowed`)
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// An admin key refused, on a tile (a hash tile needs the scope; an entry bundle, which holds
/// every workspace's events, an admin key over all workspaces).
#[derive(IntoResponses)]
pub enum TileAdminErrors {
    /// missing, malformed, unknown (unauthorized), revoked or disabled (invalid_api_key) or expired (expired_api_key) admin key
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// the admin key lacks the scope, is not a `_ledger` key, is used from outside its source allow-list (`reason: source_not_allowed`), or (entry bundles) is limited to some workspaces (forbidden)
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// An admin key refused, on an operation that acts on one key (the authority rule of
/// docs/security.md).
#[derive(IntoResponses)]
pub enum AuthorityErrors {
    /// missing, malformed, unknown (unauthorized), revoked or disabled (invalid_api_key) or expired (expired_api_key) admin key
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = concat!(
        "the admin key lacks the scope, is not a `_ledger` key, is used from outside its source ",
        "allow-list (`reason: source_not_allowed`), or may not act on this key: for a `_ledger` ",
        "key it lacks one of the key's scopes, does not cover its resources or its source ",
        "allow-list; or it would give a key a later expiry than its own, or none (forbidden)"
    ))]
    Forbidden(ErrorBody),
}

#[derive(IntoResponses)]
#[response(status = 404)]
/// no such key or workspace, or one the admin key may not see (not_found)
pub struct KeyNotFound(pub ErrorBody);

#[derive(IntoResponses)]
#[response(status = 404)]
/// no webhook was ever configured, or a workspace the admin key may not see (not_found)
pub struct WebhookNotFound(pub ErrorBody);

#[derive(IntoResponses)]
#[response(status = 400)]
/// a parameter is invalid; the message names it (invalid_request)
pub struct InvalidParameter(pub ErrorBody);

#[derive(IntoResponses)]
#[response(status = 503)]
/// the log cannot be written; keyledger fails closed (unavailable)
pub struct Unavailable(pub ErrorBody);

/// The denials of `/v1/verify`, each with `valid: false`.
#[derive(IntoResponses)]
pub enum VerifyDenials {
    /// malformed, unknown (unauthorized), revoked or disabled (invalid_api_key) or expired (expired_api_key) key; body has `valid: false`
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// scope, resource, environment or workspace not allowed (forbidden); body has `valid: false`
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// too many failed verifications from this source (rate_limited; only with --throttle-failed-verifications, off by default, with Retry-After), or the key's credits do not cover the cost (usage_exceeded); body has `valid: false`
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds until this source may verify again")))]
    Throttled(ErrorBody),
    /// the log cannot be written; keyledger fails closed (unavailable)
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

#[derive(IntoResponses)]
#[response(status = 400)]
/// a query parameter is invalid or unknown, or a requirement header is invalid or has several values; the message names it (invalid_request); body has `valid: false`
pub struct InvalidRequirement(pub ErrorBody);
