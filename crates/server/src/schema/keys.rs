//! Keys and policies (docs/api.md, "Keys"): the KeyView, the one answer that carries an
//! issued secret, and a workspace's policy.
//!
//! A body that carries an issued secret ([`IssuedKey`]) never copies the secret into a
//! `serde_json::Value` or a `String`, whose bytes are freed without being zeroed: it holds
//! it as a [`Secret`] (zeroed on drop) and writes it straight into the response body.

use super::rfc3339;
use keyledger_core::json::{actor_text, metadata_json};
use keyledger_core::time::format_duration;
use keyledger_core::{Policy, Secret, Timestamp};
use keyledger_ledger::KeyRecord;
use serde::{Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

/// A key as the API shows it. Never the secret or its hash.
#[derive(Serialize, ToSchema, Clone, Debug)]
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
    /// The addresses and CIDR networks the key may be verified from; empty = any
    /// (docs/api.md, "Source allow-lists").
    #[schema(example = json!(["10.0.0.0/8"]))]
    pub allowed_sources: Vec<String>,
    /// Where the list came from: `key` (given to this key or a predecessor) or `policy`
    /// (the workspace default when it was issued); null without a list.
    pub allowed_sources_from: Option<String>,
    /// Usage credits (docs/credits.md); `null` for a key without credits.
    pub credits: Option<super::CreditsView>,
    /// Imported by a foreign hash of its secret (docs/import.md).
    pub imported: bool,
    /// When an imported key was first verified and given keyledger's keyed hash; `null`
    /// before, and for a key issued here.
    pub rehashed_at: Option<String>,
    /// An imported key's id in the system it came from, as given.
    pub external_id: Option<String>,
    /// The named rate limits the key is under (docs/api.md, "Rate limits"); empty = none.
    pub ratelimits: Vec<crate::schema::RateLimitView>,
    /// Where they come from: `key` (set on this key or a predecessor) or `policy` (the
    /// workspace default); null without limits.
    pub ratelimits_from: Option<String>,
}

impl KeyView {
    /// `key` as it stands at `now` (its status depends on the time).
    pub fn new(key: &KeyRecord, now: Timestamp) -> Self {
        Self {
            key_id: key.key_id.to_string(),
            workspace: key.workspace.as_str().to_owned(),
            name: key.name.clone(),
            hint: key.hint.clone(),
            scopes: key.scopes.clone(),
            resources: key.resources.clone(),
            environment: key.environment.as_str().to_owned(),
            owner: key.owner.clone(),
            metadata: metadata_json(&key.metadata),
            status: key.status(now).as_str().to_owned(),
            created_at: key.created_at.to_rfc3339(),
            created_by: actor_text(&key.created_by),
            expires_at: rfc3339(key.expires_at),
            revoked_at: rfc3339(key.revoked_at),
            revoked_reason: key.revoked_reason.clone(),
            disabled_reason: key.disabled.clone().flatten(),
            rotated_from: key.rotated_from.map(|k| k.to_string()),
            rotated_to: key.rotated_to.map(|k| k.to_string()),
            last_used_at: rfc3339(key.last_used.at),
            last_used_ip: key.last_used.ip.map(|ip| ip.to_string()),
            use_count: key.last_used.count,
            allowed_sources: key
                .allowed_sources
                .iter()
                .flat_map(|list| list.sources.iter().map(ToString::to_string))
                .collect(),
            allowed_sources_from: key
                .allowed_sources
                .as_ref()
                .map(|list| if list.from_policy { "policy" } else { "key" }.to_owned()),
            credits: None,
            imported: false,
            rehashed_at: None,
            external_id: None,
            ratelimits: Vec::new(),
            ratelimits_from: None,
        }
    }
}

/// Writes an issued secret from the zeroizing [`Secret`] itself.
pub(crate) fn expose<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

/// A KeyView plus the secret: returned once, by the call that issues the key.
#[derive(Serialize, ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub key: KeyView,
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String, example = "kl_live_4Qk…")]
    pub secret: Secret,
}

impl IssuedKey {
    pub fn new(key: &KeyRecord, secret: &Secret, now: Timestamp) -> Self {
        Self { key: KeyView::new(key, now), secret: secret.clone() }
    }
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// The answer of a rotation: the new key with its secret, and the previous key.
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
    /// The source allow-list given to keys issued without one; empty = none.
    pub allowed_sources: Vec<String>,
    /// Whether a `live` key may only be issued with an allow-list.
    pub require_allowed_sources: bool,
    /// Active `live` keys without an allow-list (issued before the requirement), at most
    /// 100 ids.
    pub allowed_sources_exceptions: Vec<String>,
    /// How many such keys there are in all.
    pub allowed_sources_exception_count: u64,
    /// What a leak report of one of the workspace's keys does: `notify` (record it and send
    /// `key.leaked`) or `revoke` (also revoke the key at once); docs/leaks.md.
    #[schema(value_type = String, example = "notify")]
    pub on_leak: &'static str,
    /// The rate limits of keys without their own (docs/api.md, "Rate limits"); empty = none.
    pub ratelimits: Vec<crate::schema::RateLimitView>,
}

impl PolicyView {
    pub fn new(workspace: &str, policy: &Policy) -> Self {
        Self {
            workspace: workspace.to_owned(),
            max_active_keys: policy.max_active_keys,
            require_expiry: policy.require_expiry,
            max_lifetime: policy.max_lifetime.map(format_duration),
            key_prefix: policy.key_prefix.as_ref().map(ToString::to_string),
            allowed_sources: Vec::new(),
            require_allowed_sources: false,
            allowed_sources_exceptions: Vec::new(),
            allowed_sources_exception_count: 0,
            on_leak: keyledger_core::OnLeak::default().as_str(),
            ratelimits: Vec::new(),
        }
    }
}
