//! `GET /v1/log/entries/{seq}` (docs/api.md, "Integrity"): one event's stored bytes and
//! leaf hash, so that a client can build an offline proof of it (`keyledger audit prove`,
//! docs/proof-bundles.md) together with the checkpoint and the inclusion proof.
//!
//! An event of any workspace is readable here, so the route requires `ledger:audit:read`
//! on an admin key over all workspaces (no `resources`), like the tlog entry bundles. The
//! bytes are exactly what the log stores and hashes; the leaf hash comes from
//! `keyledger_verify::merkle`, the one definition of the tree hash.

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::ApiError;
use crate::schema::EntryView;
use axum::Json;
use axum::extract::{Path, State};
use base64::Engine as _;

#[utoipa::path(
    get,
    path = "/v1/log/entries/{seq}",
    operation_id = "getLogEntry",
    summary = "Get one event's stored bytes",
    tag = "integrity",
    description = "The stored bytes of event `seq` (base64) and their leaf hash (`ledger:audit:read`, on an admin key over all workspaces).",
    params(("seq" = u64, Path, description = "Event seq")),
    responses(
        (status = 200, description = "The entry", body = EntryView),
        (status = 400, description = "`seq` is not a non-negative integer (invalid_request)", body = crate::schema::ErrorBody),
        crate::schema::errors::AllWorkspacesAdminErrors,
        (status = 404, description = "no event with this seq yet (not_found)", body = crate::schema::ErrorBody)
    )
)]
pub async fn entry(
    State(state): State<AppState>,
    admin: Admin,
    Path(seq): Path<String>,
) -> Result<Json<EntryView>, ApiError> {
    admin.require(scope::AUDIT_READ)?;
    if !admin.key.resources.is_empty() {
        return Err(ApiError::forbidden(
            "log entries hold every workspace's events: this needs an admin key over all workspaces",
        ));
    }
    let seq: u64 = seq.parse().map_err(|_| ApiError::invalid("seq", "must be a non-negative integer"))?;
    let log = state.engine.log();
    if seq >= log.len() {
        return Err(ApiError::not_found(format!("no event {seq}: the log holds {} events", log.len())));
    }
    let raw = log.raw(seq).map_err(|error| {
        tracing::error!(%error, seq, "cannot read a log entry");
        ApiError::new(crate::error::ErrorCode::Internal, "internal error")
    })?;
    Ok(Json(EntryView {
        seq,
        raw: base64::engine::general_purpose::STANDARD.encode(&raw),
        leaf_hash: hex::encode(log.tree_hash().leaf(&raw)),
    }))
}
