//! `POST /v1/audit/lookup/bulk`: which of up to [`MAX_CANDIDATES`] candidate leaked secrets
//! are keys, and their status, in one call (what `keyledger scan --lookup` asks;
//! docs/api.md, "Bulk lookup").
//!
//! The bulk form of `POST /v1/audit/lookup` keeps its guarantees: the candidates are only
//! hashed with the pepper (never stored, logged or echoed; the request bytes and the parsed
//! list are zeroed), every candidate is recorded by one `lookup` event with what it found
//! (all in one batch, durable before the answer), and a key outside the admin key's
//! workspaces answers exactly like no key at all.

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::ApiError;
use crate::secret_body::SecretJson;
use axum::Json;
use axum::extract::State;
use keyledger_core::Timestamp;
use serde::{Deserialize, Serialize};

/// Most candidates per request (the body limit allows about 900 keys of the longest prefix).
pub const MAX_CANDIDATES: usize = 500;

/// Zeroed on drop, like the request bytes it was parsed from ([`SecretJson`]).
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkLookupBody {
    /// Candidate secrets, 1 to 500.
    secrets: Vec<String>,
}

/// One answer per candidate, in the order of the request.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkLookupAnswer {
    pub results: Vec<BulkLookupResult>,
}

/// What one candidate is.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkLookupResult {
    /// Whether the candidate is (or was) a key the caller may see.
    pub found: bool,
    /// The key's id, when found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// `active`, `revoked`, `expired` or `disabled`, when found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The key's hint (`kl_live_…abcd`), when found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/audit/lookup/bulk",
    operation_id = "lookupSecrets",
    summary = "Which of many leaked secrets are keys",
    tag = "audit",
    description = concat!(
        "The bulk form of `POST /v1/audit/lookup`: up to 500 candidate secrets, one result each, ",
        "in order. A candidate is only hashed, never stored, logged or echoed; each is recorded by ",
        "one `lookup` event (`ledger:audit:read`). A key outside the admin key's workspaces is ",
        "`found: false`, exactly as no key at all."
    ),
    request_body = BulkLookupBody,
    responses(
        (status = 200, description = "One result per candidate, in the request's order", body = BulkLookupAnswer),
        (status = 400, description = "no candidates, or more than 500 (invalid_request)", body = crate::schema::ErrorBody),
        crate::schema::errors::AdminErrors,
        crate::schema::errors::Unavailable
    )
)]
pub async fn lookup_bulk(
    State(state): State<AppState>,
    admin: Admin,
    SecretJson(body): SecretJson<BulkLookupBody>,
) -> Result<Json<BulkLookupAnswer>, ApiError> {
    admin.require(scope::AUDIT_READ)?;
    if body.secrets.is_empty() || body.secrets.len() > MAX_CANDIDATES {
        return Err(ApiError::invalid("secrets", "must hold 1 to 500 candidates"));
    }
    let engine = &state.engine;
    let found: Vec<_> = body.secrets.iter().map(|candidate| engine.find_by_secret(candidate)).collect();
    drop(body); // zeroes the candidates
    engine
        .record_lookups(admin.caller.clone(), &found.iter().map(Option::as_ref).collect::<Vec<_>>())
        .await?;
    let now = Timestamp::now();
    let results = found
        .into_iter()
        .map(|key| match key.filter(|k| admin.can_see(&k.workspace)) {
            None => {
                BulkLookupResult { found: false, key_id: None, workspace: None, status: None, hint: None }
            }
            Some(key) => {
                // The registry's current record: a revocation that answered before is seen.
                let key = engine.key(&key.key_id).unwrap_or(key);
                BulkLookupResult {
                    found: true,
                    key_id: Some(key.key_id.to_string()),
                    workspace: Some(key.workspace.as_str().to_owned()),
                    status: Some(key.status(now).as_str().to_owned()),
                    hint: Some(key.hint.clone()),
                }
            }
        })
        .collect();
    Ok(Json(BulkLookupAnswer { results }))
}
