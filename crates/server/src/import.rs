//! `POST /v1/workspaces/{ws}/keys/import`: keys known only by a foreign SHA-256 hash of
//! their secret (docs/import.md, docs/api.md "Importing keys").
//!
//! Each entry is a create body (same fields and rules, checked by the same
//! [`crate::keys::key_spec`]) plus the foreign `hash` and an optional `external_id`; no
//! secret is ever needed or accepted. Every entry is validated here before the engine sees
//! any, and the engine decides the rest (authority, policy, duplicates) all or nothing, so
//! a bad entry changes nothing and the error names it by index (`keys[3]: …`).

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::schema::{ErrorBody, KeyView};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine as _;
use keyledger_core::{ForeignAlgorithm, ForeignHash, Timestamp, WorkspaceId};
use keyledger_ledger::IdempotencyTag;
use keyledger_ledger::import::{ImportSpec, MAX_IMPORT_KEYS};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Body limit of the import route: 1,000 entries of up to ~4 KiB each.
pub const IMPORT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Longest `external_id` kept (characters).
const MAX_EXTERNAL_ID_CHARS: usize = 256;

/// A foreign hash of a secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForeignHashBody {
    /// `sha256`, or `sha256_base64` (Unkey's name: SHA-256, base64-encoded).
    #[schema(example = "sha256")]
    pub algorithm: String,
    /// `hex` or `base64` (standard alphabet, padded or not); default `hex` (`base64` for
    /// `sha256_base64`).
    pub encoding: Option<String>,
    /// The 32-byte digest in that encoding.
    pub value: String,
}

/// One key to import: the fields of a create body (except `credits`, `ratelimits` and
/// `expires_in`), plus `hash` and `external_id`.
#[derive(Deserialize, ToSchema)]
pub struct ImportEntry {
    pub hash: ForeignHashBody,
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    pub owner: Option<String>,
    pub environment: Option<String>,
    pub expires_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The key's id in the system it comes from (at most 256 characters).
    pub external_id: Option<String>,
    /// IP addresses and CIDR networks the key may be verified from (at most 64); absent or
    /// empty takes the workspace's default list.
    pub allowed_sources: Option<Vec<String>>,
}

/// `{"keys": [...]}`, 1 to 1,000 entries.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    #[schema(value_type = Vec<ImportEntry>)]
    pub keys: Vec<Value>,
}

/// The answer: one key view per entry, in order.
#[derive(Serialize, ToSchema)]
pub struct ImportResult {
    pub keys: Vec<KeyView>,
    /// Entries that created a key.
    pub imported: usize,
    /// Entries whose hash was already imported into the workspace (their existing key).
    pub already_present: usize,
}

/// Decodes a foreign hash: SHA-256 only, 32 bytes.
pub fn parse_hash(hash: &ForeignHashBody) -> Result<ForeignHash, ApiError> {
    let default_encoding = match hash.algorithm.as_str() {
        "sha256" => "hex",
        "sha256_base64" => "base64",
        _ => return Err(ApiError::invalid("hash.algorithm", "must be `sha256` or `sha256_base64`")),
    };
    let encoding = hash.encoding.as_deref().unwrap_or(default_encoding);
    let value = hash.value.trim();
    let bytes = match encoding {
        "hex" => hex::decode(value).ok(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
            .ok(),
        _ => return Err(ApiError::invalid("hash.encoding", "must be `hex` or `base64`")),
    };
    let digest: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
        ApiError::invalid("hash.value", format!("must be a 32-byte SHA-256 digest in {encoding}"))
    })?;
    Ok(ForeignHash { algorithm: ForeignAlgorithm::Sha256, digest })
}

fn at_entry(index: usize, mut error: ApiError) -> ApiError {
    error.message = format!("keys[{index}]: {}", error.message);
    error
}

/// Validates one entry (a create body plus `hash` and `external_id`).
fn entry_spec(workspace: &WorkspaceId, mut entry: Value) -> Result<ImportSpec, ApiError> {
    let Some(object) = entry.as_object_mut() else {
        return Err(ApiError::invalid("keys[]", "must be an object"));
    };
    for refused in ["secret", "key", "credits", "ratelimits", "expires_in"] {
        if object.contains_key(refused) {
            return Err(ApiError::invalid(refused, "is not accepted by an import"));
        }
    }
    let hash = object.remove("hash").ok_or_else(|| ApiError::invalid("hash", "is required"))?;
    let hash: ForeignHashBody = serde_json::from_value(hash).map_err(|e| {
        ApiError::invalid(
            "hash",
            format!("is invalid: {}", crate::json_error::without_values(&e.to_string())),
        )
    })?;
    let external_id = match object.remove("external_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_EXTERNAL_ID_CHARS => Some(id),
        Some(_) => {
            return Err(ApiError::invalid(
                "external_id",
                format!("must be a string of 1 to {MAX_EXTERNAL_ID_CHARS} characters"),
            ));
        }
    };
    let mut body: crate::keys::CreateKey = serde_json::from_value(entry).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("is invalid: {}", crate::json_error::without_values(&e.to_string())),
        )
    })?;
    let allowed_sources = body.allowed_sources.take();
    let key = crate::keys::key_spec(workspace, body)?;
    let allowed_sources =
        allowed_sources.map(|list| crate::sources::parse_list("allowed_sources", &list)).transpose()?;
    Ok(ImportSpec { key, foreign: parse_hash(&hash)?, external_id, allowed_sources })
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/keys/import",
    operation_id = "importKeys",
    summary = "Import keys by a foreign hash",
    tag = "keys",
    description = concat!(
        "Import up to 1,000 keys known only by the SHA-256 digest of their secret ",
        "(`ledger:keys:write`; docs/import.md). All or nothing; a digest already imported into ",
        "the workspace answers its existing key. No secret is accepted: an imported key verifies ",
        "with its secret and is re-hashed on its first successful verification."
    ),
    request_body = ImportBody,
    params(
        ("ws" = String, Path, description = "Workspace id, `[a-z0-9][a-z0-9_-]{0,62}`"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key: the same key and body within 24 h replays the original response")
    ),
    responses(
        (status = 201, description = "The keys, one per entry, in order", body = ImportResult),
        crate::schema::AdminErrors,
        crate::schema::KeyNotFound,
        crate::schema::Unavailable,
        (status = 409, description = "a policy refuses an entry, or its hash is imported into another workspace", body = ErrorBody)
    )
)]
pub async fn import(
    State(state): State<AppState>,
    admin: Admin,
    tag: Option<Extension<IdempotencyTag>>,
    Path(workspace): Path<String>,
    JsonBody(body): JsonBody<ImportBody>,
) -> Result<(StatusCode, Json<ImportResult>), ApiError> {
    let workspace: WorkspaceId = crate::extract::path_param("workspace", &workspace)?;
    admin.allow(scope::KEYS_WRITE, &workspace)?;
    if body.keys.is_empty() || body.keys.len() > MAX_IMPORT_KEYS {
        return Err(ApiError::invalid("keys", format!("must hold 1 to {MAX_IMPORT_KEYS} keys")));
    }
    let mut specs = Vec::with_capacity(body.keys.len());
    for (index, entry) in body.keys.into_iter().enumerate() {
        specs.push(entry_spec(&workspace, entry).map_err(|e| at_entry(index, e))?);
    }
    let tag = tag.map(|Extension(t)| t);
    let answers = state.engine.import(admin.caller, workspace, specs, tag).await?;
    let now = Timestamp::now();
    let already_present = answers.iter().filter(|a| a.existed).count();
    let keys = answers.iter().map(|a| crate::key_view::of(&state, &a.record, now)).collect();
    let imported = answers.len() - already_present;
    Ok((StatusCode::CREATED, Json(ImportResult { keys, imported, already_present })))
}

/// `view` with what the registry knows of the key's import (`imported`, `rehashed_at`,
/// `external_id`); unchanged for a key issued here.
pub fn with_import(state: &AppState, view: KeyView, key_id: &keyledger_core::KeyId) -> KeyView {
    match state.engine.import_mark(key_id) {
        Some(mark) => KeyView {
            imported: true,
            rehashed_at: mark.rehashed_at.map(|t| t.to_rfc3339()),
            external_id: mark.external_id,
            ..view
        },
        None => view,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(algorithm: &str, encoding: Option<&str>, value: &str) -> ForeignHashBody {
        ForeignHashBody {
            algorithm: algorithm.into(),
            encoding: encoding.map(Into::into),
            value: value.into(),
        }
    }

    #[test]
    fn hex_and_base64_digests_decode_to_the_same_bytes() {
        let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let b64 = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
        let a = parse_hash(&body("sha256", None, hex)).unwrap();
        let b = parse_hash(&body("sha256", Some("base64"), b64)).unwrap();
        let c = parse_hash(&body("sha256_base64", None, b64.trim_end_matches('='))).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert!(parse_hash(&body("md5", None, hex)).is_err());
        assert!(parse_hash(&body("sha256", None, &hex[..62])).is_err(), "31 bytes");
        assert!(parse_hash(&body("sha256", Some("base32"), hex)).is_err());
    }
}
