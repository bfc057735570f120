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
    /// invalid_request, conflict, payload_too_large, unavailable, internal; and, as an
    /// extension of the API, rate_limited (429 from verify when throttling is on).
    pub error: String,
    pub message: String,
    pub request_id: String,
    /// Present (false) on verification denials.
    pub valid: Option<bool>,
    /// On verification denials: the reason code (revoked, expired, disabled, missing_scope…).
    pub reason: Option<String>,
    /// On an idempotent retry that was already carried out: the keys it produced.
    pub key_ids: Option<Vec<String>>,
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
    /// Unrevoked keys left alone: in `_ledger`, the calling key, keys it does not dominate
    /// and the last full admin key without expiry (docs/security.md).
    pub skipped: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    pub workspace: String,
    /// At most this many active keys; null = no limit.
    #[schema(minimum = 1, maximum = 2147483647)]
    pub max_active_keys: Option<u32>,
    pub require_expiry: bool,
    /// A duration such as `90d`.
    pub max_lifetime: Option<String>,
    pub key_prefix: Option<String>,
}

/// A workspace's webhook (never its secret).
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub workspace: String,
    pub url: String,
    /// Subscribed notification types; empty means all.
    pub events: Vec<String>,
    /// False once disabled (DELETE).
    pub enabled: bool,
    pub updated_at: String,
    /// `system` or the admin key id that configured it.
    pub updated_by: String,
}

/// A webhook plus its signing secret: returned once, by the PUT that issues it.
#[derive(Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// HMAC-SHA256 key of the `keyledger-signature` header (the whole text is the key).
    #[schema(example = "whsec_3kTq…")]
    pub secret: String,
}

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
pub struct WebhookAttempt {
    /// The `keyledger-webhook-id` of the delivery (the same on every retry).
    pub delivery_id: String,
    /// The notification type, e.g. `key.revoked`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: String,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed without an answer, or why it was cancelled.
    pub error: Option<String>,
    /// delivered, retrying, failed (given up) or cancelled.
    pub outcome: String,
    pub duration_ms: u64,
    pub next_retry_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookDeliveries {
    pub workspace: String,
    /// Deliveries waiting for a first attempt or a retry.
    pub pending: u64,
    /// Newest first.
    pub attempts: Vec<WebhookAttempt>,
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
    /// The C2SP signed note, followed by the witnesses' cosignature lines when they
    /// cosigned this very checkpoint.
    pub note: String,
    /// How many configured witnesses cosigned this checkpoint.
    pub cosignatures: u64,
    /// The names of the witnesses that cosigned it.
    pub witnesses: Vec<String>,
    /// Cosignatures the witness policy asks for (0: none required or no witnesses).
    pub quorum: u64,
    /// Whether the cosignatures meet the policy's quorum.
    pub quorum_met: bool,
    /// Evidence that a witness has seen another view of this log, or null.
    pub fork_alarm: Option<ForkAlarmView>,
    /// Each configured witness's last submission.
    pub witness_status: Vec<WitnessStatusView>,
}

#[derive(Serialize, ToSchema)]
pub struct ForkAlarmView {
    /// The configured witness's name.
    pub witness: String,
    /// `witness_ahead` or `foreign_cosignature`.
    pub kind: String,
    pub log_size: u64,
    /// Hex of the root keyledger signed at `log_size`.
    pub log_root_hash: String,
    /// The size the witness claims to have cosigned (`witness_ahead`), else null.
    pub witness_size: Option<u64>,
    pub detected_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct WitnessStatusView {
    pub name: String,
    /// The size the witness last cosigned (or reported), null if unknown.
    pub acknowledged_size: Option<u64>,
    /// The class of the last failed submission (docs/operations.md, "Witnesses"), null
    /// after a success.
    pub last_error: Option<String>,
    /// When the witness last cosigned, null if not since start.
    pub last_success: Option<String>,
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
    /// Events in the log (every tenant's): only to an admin key holding `ledger:audit:read`,
    /// or to anyone with `--healthz-details`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_size: Option<u64>,
}

/// Where a verification came from, as recorded on `used`/`denied` events.
#[derive(Serialize, ToSchema)]
pub struct EventContext {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// The gateway's request id.
    pub request_id: Option<String>,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
}

/// An event of the log. The common fields come first; the others appear on the kinds
/// that carry them (see docs/log-format.md).
#[derive(Serialize, ToSchema)]
pub struct EventView {
    pub seq: u64,
    pub at: String,
    /// created, used, denied, rotated, revoked, expired, policy_set, updated, disabled,
    /// enabled, lookup or idempotency.
    pub kind: String,
    pub workspace: String,
    pub key_id: Option<String>,
    /// `system`, `verifier` or the admin key id.
    pub actor: String,
    /// keyledger's request id.
    pub request_id: String,
    pub name: Option<String>,
    pub hint: Option<String>,
    pub environment: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
    pub owner: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub expires_at: Option<String>,
    pub rotated_from: Option<String>,
    pub rotated_to: Option<String>,
    pub valid_until: Option<String>,
    pub context: Option<EventContext>,
    /// On denied: the reason code; on revoked/disabled: the caller's reason.
    pub reason: Option<String>,
    /// On denied: a sentence naming what was refused.
    pub detail: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub changes: Option<Value>,
    /// On lookup: the key the candidate secret matched, if any.
    pub found: Option<String>,
    /// On idempotency: the keys the idempotent request issued or revoked.
    pub key_ids: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// How often a value (address or user agent) was seen with a key.
#[derive(Serialize, ToSchema)]
pub struct ValueStats {
    pub value: String,
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    pub allowed: u64,
    pub denied: u64,
    /// True when the value was never seen with this key before `since`.
    pub new_since: bool,
}

#[derive(Serialize, ToSchema)]
pub struct PathCount {
    pub value: String,
    pub count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ReportWindow {
    pub since: Option<String>,
    pub until: String,
}

#[derive(Serialize, ToSchema)]
pub struct UseCounts {
    pub allowed: u64,
    pub denied: u64,
    pub first: Option<String>,
    pub last: Option<String>,
}

/// Attempts after the key's revocation or expiry.
#[derive(Serialize, ToSchema)]
pub struct AfterRevocation {
    pub since: Option<String>,
    pub count: u64,
    pub first: Option<String>,
    pub last: Option<String>,
    pub sources: Vec<ValueStats>,
}

/// The leak report of one key over a window.
#[derive(Serialize, ToSchema)]
pub struct CompromiseReport {
    pub key: KeyView,
    pub lifecycle: Vec<EventView>,
    pub window: ReportWindow,
    pub uses: UseCounts,
    pub sources: Vec<ValueStats>,
    pub user_agents: Vec<ValueStats>,
    pub paths: Vec<PathCount>,
    pub after_revocation: AfterRevocation,
}

#[derive(Serialize, ToSchema)]
pub struct RequestTrace {
    pub request_id: String,
    pub events: Vec<EventView>,
    pub key: Option<KeyView>,
    pub keys: Vec<KeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct SourceKey {
    pub key_id: String,
    pub workspace: String,
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    pub allowed: u64,
    pub denied: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SourceKeys {
    pub source: String,
    pub keys: Vec<SourceKey>,
}

/// A key as it stood at an instant, reconstructed from the log.
#[derive(Serialize, ToSchema)]
pub struct KeyAtInstant {
    pub key_id: String,
    pub workspace: String,
    pub name: String,
    pub hint: String,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub environment: String,
    pub owner: Option<String>,
    pub status: String,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub rotated_from: Option<String>,
    pub rotated_to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveKeys {
    pub workspace: String,
    pub active_at: String,
    pub keys: Vec<KeyAtInstant>,
}

#[derive(Serialize, ToSchema)]
pub struct Hygiene {
    pub workspace: String,
    pub never_used: Vec<KeyView>,
    pub unused: Vec<KeyView>,
    pub no_expiry: Vec<KeyView>,
    pub older_than: Vec<KeyView>,
    pub expiring_within_7d: Vec<KeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct LookupAnswer {
    pub key_id: String,
    pub workspace: String,
    pub status: String,
    pub report: CompromiseReport,
}

/// Answers every operation may give whatever its annotation says: 431 (URI and headers
/// over the limit, see [`crate::throttle`]); 429 for admin operations (failed admin
/// authentications throttled per source); and, for operations with a JSON request body,
/// the framework's rejections of it (400, 413, 415 without `Content-Type: application/json`,
/// 422 for a body that does not match the schema). Found missing by schemathesis.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        let always = [("431", error("the URI and headers exceed the limit (invalid_request)"))];
        let with_body = [
            ("400", error("a field is invalid; the message names it (invalid_request)")),
            ("413", error("the body exceeds the limit (payload_too_large)")),
            ("415", error("the body is not `Content-Type: application/json` (invalid_request)")),
            ("422", error("the body does not match the schema (invalid_request)")),
        ];
        let throttled = [(
            "429",
            error("too many failed admin authentications from this address (rate_limited); see Retry-After"),
        )];
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                let extra = if operation.request_body.is_some() { &with_body[..] } else { &[] };
                // Operations under the document's security (admin keys) are throttled.
                let admin = if operation.security.is_none() { &throttled[..] } else { &[] };
                for (status, response) in always.iter().chain(extra).chain(admin) {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| response.clone().into());
                }
            }
        }
    }
}

/// `POST /v1/verify` takes a JSON body (JSON mode) or none (forward-auth mode, see
/// docs/api.md "Verify"). utoipa writes an optional body as `oneOf: [null, …]`, which says a
/// JSON `null` is accepted (it is not, and generated clients then send it); so the body is
/// annotated as required and made optional here.
struct OptionalVerifyBody;

impl Modify for OptionalVerifyBody {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let body = openapi
            .paths
            .paths
            .get_mut("/v1/verify")
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut());
        if let Some(body) = body {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("keyledger API key").build(),
            ),
        );
        components.add_security_scheme(
            "x_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "keyledger", description = "A self-hosted, tamper-evident ledger of API keys (contract v1)."),
    modifiers(&Security, &CommonResponses, &OptionalVerifyBody),
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
        crate::webhooks::set,
        crate::webhooks::show,
        crate::webhooks::disable,
        crate::webhooks::deliveries,
        crate::verify::verify_get_doc,
        crate::verify::verify_post_doc,
        crate::verify::verify_suffix_doc,
        crate::verify::verify_suffix_post_doc,
        crate::integrity::checkpoint,
        crate::integrity::public_key,
        crate::integrity::inclusion,
        crate::integrity::consistency,
        crate::audit::key_events,
        crate::audit::compromise,
        crate::audit::request,
        crate::audit::sources,
        crate::audit::sources_query,
        crate::audit::active_keys,
        crate::audit::hygiene,
        crate::audit::lookup,
        crate::export::export,
        crate::console::console_doc,
        crate::console::console_slash_doc,
        crate::console::console_file_doc,
    ),
    components(schemas(EventContext, EventView, EventList, ValueStats, PathCount, ReportWindow, UseCounts, AfterRevocation, CompromiseReport, RequestTrace, SourceKey, SourceKeys, KeyAtInstant, ActiveKeys, Hygiene, LookupAnswer, ErrorBody, KeyView, IssuedKey, KeyList, Rotation, RevokedAll, PolicyView, WebhookView, WebhookWithSecret, WebhookAttempt, WebhookDeliveries, Verified, CheckpointView, ForkAlarmView, WitnessStatusView, PublicKeyView, ProofView, Health))
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null)
}
