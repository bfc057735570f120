//! The OpenAPI 3 document served at `/openapi.json`, generated from the code with utoipa.
//!
//! Handlers carry `#[utoipa::path]` annotations; the types below describe request and
//! response bodies. Tests keep the document true: every `.route(` of the router must be in
//! it, and real responses are validated against its schemas.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error: `{"error", "message", "request_id"}` (verify denials add `"valid": false`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": "not_found", "message": "no key key_01…", "request_id": "req_01…"}))]
pub struct ErrorBody {
    /// One of unauthorized, invalid_api_key, expired_api_key, forbidden, not_found,
    /// invalid_request, conflict, payload_too_large, unavailable, internal.
    pub error: String,
    pub message: String,
    pub request_id: String,
    /// Present (false) on verification denials.
    pub valid: Option<bool>,
    /// On verification denials: the reason code (revoked, expired, disabled, missing_scope…).
    pub reason: Option<String>,
}

/// A key as the API shows it. Never the secret or its hash.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    #[schema(example = "key_01jd2m3n4p5q6r7s8t9v0w1x2y")]
    pub key_id: String,
    pub workspace: String,
    pub name: String,
    /// `<prefix>_<env>_…` and the last four characters.
    #[schema(example = "kl_live_…a1B2")]
    pub hint: String,
    pub scopes: Vec<String>,
    /// Allow-list of resources; empty means all.
    pub resources: Vec<String>,
    /// `live` or `test`.
    pub environment: String,
    pub owner: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// active, revoked, expired or disabled.
    pub status: String,
    pub created_at: String,
    /// `system` or the admin key id that issued it.
    pub created_by: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_reason: Option<String>,
    pub disabled_reason: Option<String>,
    pub rotated_from: Option<String>,
    pub rotated_to: Option<String>,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    pub use_count: u64,
}

/// A KeyView plus the secret: returned once, by the call that issues the key.
#[derive(Serialize, ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub key: KeyView,
    #[schema(example = "kl_live_4Qk…")]
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct Rotation {
    pub key: IssuedKey,
    pub previous: KeyView,
}

#[derive(Serialize, ToSchema)]
pub struct RevokedAll {
    pub revoked: u64,
    pub key_ids: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    pub workspace: String,
    pub max_active_keys: Option<u32>,
    pub require_expiry: bool,
    /// A duration such as `90d`.
    pub max_lifetime: Option<String>,
    pub key_prefix: Option<String>,
}

/// A successful verification.
#[derive(Serialize, ToSchema)]
pub struct Verified {
    pub valid: bool,
    pub key_id: String,
    pub workspace: String,
    pub environment: String,
    pub scopes: Vec<String>,
    pub owner: Option<String>,
    pub expires_at: Option<String>,
    pub request_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct CheckpointView {
    pub size: u64,
    /// Hex of the BLAKE3 tree root.
    pub root_hash: String,
    pub timestamp: String,
    /// The C2SP signed note.
    pub note: String,
}

#[derive(Serialize, ToSchema)]
pub struct PublicKeyView {
    pub algorithm: String,
    /// C2SP note verifier key `<name>+<hex key id>+<base64(0x01‖key)>`.
    pub public_key: String,
    pub public_key_base64: String,
    pub origin: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ProofView {
    /// Hex hashes, RFC 9162 proof order.
    pub hashes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub log_size: u64,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("keyledger API key").build()),
        );
        components.add_security_scheme("x_api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "keyledger", description = "A self-hosted, tamper-evident ledger of API keys (contract v1)."),
    modifiers(&Security),
    security(("bearer" = []), ("x_api_key" = [])),
    paths(
        crate::health_doc,
        crate::metrics_doc,
        crate::openapi_doc,
        crate::keys::create,
        crate::keys::list,
        crate::keys::show,
        crate::keys::update,
        crate::keys::rotate,
        crate::keys::revoke,
        crate::keys::disable,
        crate::keys::enable,
        crate::keys::revoke_all,
        crate::keys::get_policy,
        crate::keys::put_policy,
        crate::verify::verify_get_doc,
        crate::verify::verify_post_doc,
        crate::verify::verify_suffix_doc,
        crate::verify::verify_suffix_post_doc,
        crate::integrity::checkpoint,
        crate::integrity::public_key,
        crate::integrity::inclusion,
        crate::integrity::consistency,
    ),
    components(schemas(ErrorBody, KeyView, IssuedKey, KeyList, Rotation, RevokedAll, PolicyView, Verified, CheckpointView, PublicKeyView, ProofView, Health))
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null)
}
