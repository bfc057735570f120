//! Integrity routes: the signed checkpoint, the log's public key, and Merkle proofs
//! (docs/api.md, "Integrity"; proof shapes of RFC 9162 §2.1.3 and §2.1.4).

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::{ApiError, ErrorCode};
use crate::extract::QueryPairs;
use crate::schema::*;
use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use keyledger_log::proof::ProofGenError;

fn number(query: &QueryPairs, name: &str) -> Result<u64, ApiError> {
    let text = query.get(name).ok_or_else(|| ApiError::invalid(name, "is required"))?;
    text.parse().map_err(|_| ApiError::invalid(name, "must be a non-negative integer"))
}

fn proof_error<E: std::fmt::Display>(error: ProofGenError<E>) -> ApiError {
    match error {
        ProofGenError::Source(e) => ApiError::invalid("size", format!("is beyond the log: {e}")),
        other => ApiError::new(ErrorCode::InvalidRequest, other.to_string()),
    }
}

#[utoipa::path(
    get,
    path = "/v1/log/checkpoint",
    operation_id = "getCheckpoint",
    summary = "Get the latest signed checkpoint",
    tag = "integrity",
    description = "The latest signed checkpoint (`ledger:audit:read`), with the cosignatures of the witnesses that cosigned it, each witness's status and any fork alarm.",
    responses(
        (status = 200, description = "The checkpoint, its C2SP signed note (with cosignature lines when witnessed) and its witnessing", body = CheckpointView),
        AdminErrors,
        (status = 404, description = "no checkpoint signed yet", body = ErrorBody)
    )
)]
pub async fn checkpoint(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<CheckpointView>, ApiError> {
    admin.require(scope::AUDIT_READ)?;
    let checkpoint = state
        .engine
        .log()
        .latest_checkpoint()
        .ok_or_else(|| ApiError::not_found("no checkpoint has been signed yet"))?;
    let view = state.engine.witness_view();
    // The cosignatures are served only when they are of this very checkpoint
    // (docs/api.md, "Integrity").
    let cosigned = view.cosigned.filter(|c| c.size == checkpoint.size && c.root == checkpoint.root);
    let (note, witnesses, quorum_met) = match cosigned {
        Some(c) => (c.note, c.witnesses, c.quorum_met),
        None => (checkpoint.note, Vec::new(), view.quorum == 0),
    };
    let witness_status = view
        .statuses
        .iter()
        .map(|s| WitnessStatusView {
            name: s.name.clone(),
            acknowledged_size: s.acknowledged_size,
            last_error: s.last_error.map(str::to_owned),
            last_success: s.last_success.map(|t| t.to_rfc3339()),
        })
        .collect();
    Ok(Json(CheckpointView {
        size: checkpoint.size,
        root_hash: hex::encode(checkpoint.root),
        timestamp: checkpoint.timestamp.to_rfc3339(),
        note,
        cosignatures: witnesses.len() as u64,
        witnesses,
        quorum: view.quorum as u64,
        quorum_met,
        fork_alarm: view.fork_alarm.map(|a| ForkAlarmView {
            witness: a.witness.clone(),
            kind: a.kind.to_string(),
            log_size: a.log_size,
            log_root_hash: hex::encode(a.log_root),
            witness_size: a.witness_size,
            detected_at: a.detected_at.to_rfc3339(),
        }),
        witness_status,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/log/public-key",
    operation_id = "getPublicKey",
    summary = "Get the log's public key",
    tag = "integrity",
    description = "The log's Ed25519 public key as a C2SP verifier key (`ledger:audit:read`).",
    responses(
        (status = 200, description = "The public key", body = PublicKeyView),
        AdminErrors
    )
)]
pub async fn public_key(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<PublicKeyView>, ApiError> {
    admin.require(scope::AUDIT_READ)?;
    let key = state.engine.public_key();
    Ok(Json(PublicKeyView {
        algorithm: "ed25519",
        public_key: key.to_string(),
        public_key_base64: base64::engine::general_purpose::STANDARD.encode(key.public_key().as_bytes()),
        origin: key.name().map(str::to_owned),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/log/proofs/inclusion",
    operation_id = "getInclusionProof",
    summary = "Get an inclusion proof",
    tag = "integrity",
    description = concat!(
        "RFC 9162 inclusion proof of event `seq` in the tree of `size` events ",
        "(`ledger:audit:read`)."
    ),
    params(
        ("seq" = u64, Query, description = "Event seq"),
        ("size" = u64, Query, description = "Tree size")
    ),
    responses(
        (status = 200, description = "The proof", body = ProofView),
        AdminErrors,
        InvalidParameter
    )
)]
pub async fn inclusion(
    State(state): State<AppState>,
    admin: Admin,
    query: QueryPairs,
) -> Result<Json<ProofView>, ApiError> {
    admin.require(scope::AUDIT_READ)?;
    query.only(&["seq", "size"])?;
    let (seq, size) = (number(&query, "seq")?, number(&query, "size")?);
    let proof = state.engine.log().tree().inclusion_proof(seq, size).map_err(proof_error)?;
    Ok(Json(ProofView::new(&proof)))
}

#[utoipa::path(
    get,
    path = "/v1/log/proofs/consistency",
    operation_id = "getConsistencyProof",
    summary = "Get a consistency proof",
    tag = "integrity",
    description = "RFC 9162 consistency proof between tree sizes `from` and `to` (`ledger:audit:read`).",
    params(
        ("from" = u64, Query, description = "Older size"),
        ("to" = u64, Query, description = "Newer size")
    ),
    responses(
        (status = 200, description = "The proof", body = ProofView),
        AdminErrors,
        InvalidParameter
    )
)]
pub async fn consistency(
    State(state): State<AppState>,
    admin: Admin,
    query: QueryPairs,
) -> Result<Json<ProofView>, ApiError> {
    admin.require(scope::AUDIT_READ)?;
    query.only(&["from", "to"])?;
    let (from, to) = (number(&query, "from")?, number(&query, "to")?);
    let proof = state.engine.log().tree().consistency_proof(from, to).map_err(proof_error)?;
    Ok(Json(ProofView::new(&proof)))
}
