//! The audit answers (docs/api.md, "Audit"): a key's events, the leak report, request
//! traces, sources, the keys valid at an instant, hygiene and leaked-secret lookup.
//!
//! An event is written by `keyledger_core::json::event_json`, the one writer of an event's
//! JSON form (docs/log-format.md), which exports share; [`EventView`] carries that value and
//! describes its fields to the OpenAPI document.

use super::{KeyView, rfc3339};
use keyledger_core::Timestamp;
use keyledger_core::event::Event;
use keyledger_core::json::event_json;
use keyledger_ledger::audit::ValueStat;
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

/// An event of the log in its JSON form (docs/log-format.md, "JSON form of an event").
#[derive(Serialize, Clone, Debug)]
#[serde(transparent)]
pub struct EventView(Value);

impl EventView {
    pub fn new(event: &Event) -> Self {
        Self(event_json(event))
    }
}

impl utoipa::PartialSchema for EventView {
    fn schema() -> RefOr<Schema> {
        EventFields::schema()
    }
}

impl ToSchema for EventView {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EventView")
    }
}

// The fields `event_json` writes, for the document only: the JSON form of an event is
// defined by docs/log-format.md and written in `keyledger_core::json`.

/// An event of the log. The common fields come first; the others appear on the kinds
/// that carry them (see docs/log-format.md).
#[derive(ToSchema)]
#[allow(dead_code)] // never built: it describes `EventView`'s value
struct EventFields {
    seq: u64,
    at: String,
    kind: EventKindName,
    workspace: String,
    key_id: Option<String>,
    /// `system`, `verifier`, `recovery` (`keyledger admin recover`) or the admin key id.
    actor: String,
    /// keyledger's request id.
    request_id: String,
    name: Option<String>,
    hint: Option<String>,
    environment: Option<String>,
    scopes: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    owner: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    expires_at: Option<String>,
    rotated_from: Option<String>,
    rotated_to: Option<String>,
    valid_until: Option<String>,
    context: Option<EventContext>,
    /// On denied: the reason code; on revoked/disabled: the caller's reason.
    reason: Option<String>,
    /// On denied: a sentence naming what was refused.
    detail: Option<String>,
    #[schema(value_type = Option<Object>)]
    policy: Option<Value>,
    #[schema(value_type = Option<Object>)]
    changes: Option<Value>,
    /// On lookup: the key the candidate secret matched, if any.
    found: Option<String>,
    /// On webhook_set: the webhook's URL; on leak_reported: where the secret was found.
    url: Option<String>,
    /// On webhook_set: the subscribed notification types.
    events: Option<Vec<String>>,
    /// On webhook_set: false when the webhook was disabled.
    enabled: Option<bool>,
    /// On idempotency: the keys the idempotent request issued or revoked.
    key_ids: Option<Vec<String>>,
    /// On used, when it spent credits: the credits spent.
    cost: Option<u64>,
    /// On used, when it spent credits: the balance after the spend.
    credits_remaining: Option<u64>,
    /// On used, when it spent rate-limit allowance: each limit and what it spent.
    ratelimits_spent: Option<Vec<LimitSpendView>>,
    /// On credits_set: the balance set; on credits_refilled: the refill amount the balance
    /// was set to.
    remaining: Option<u64>,
    /// On credits_set: the refill schedule, or null.
    refill: Option<super::credits::RefillView>,
    /// On credits_set: `key.credits_low` fires at this balance or below.
    low_threshold: Option<u64>,
    /// On sources_set: the allowed networks (`[]` = any source).
    sources: Option<Vec<String>>,
    /// On a key's sources_set: true when the list was copied from the workspace default.
    from_policy: Option<bool>,
    /// On a workspace's sources_set: whether live keys must have a source allow-list.
    require_on_live: Option<bool>,
    /// On leak_reported: `github` or `public`.
    reporter: Option<String>,
    /// On leak_reported: GitHub's `source` (`content`, `commit`, …), as reported.
    source: Option<String>,
    /// On leak_policy_set: `notify` or `revoke`.
    on_leak: Option<String>,
    /// On ratelimits_set: the limits in force from then on (`[]` = none).
    ratelimits: Option<Vec<crate::schema::RateLimitView>>,
    /// On imported: the algorithm of the foreign hash (never the digest).
    algorithm: Option<String>,
    /// On imported: the caller's id of the key in the system it came from.
    external_id: Option<String>,
}

/// The kind of an event (docs/log-format.md).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // never built: it describes part of `EventView`'s value
pub enum EventKindName {
    Created,
    Used,
    Denied,
    Rotated,
    Revoked,
    Expired,
    PolicySet,
    Updated,
    Disabled,
    Enabled,
    Lookup,
    Idempotency,
    WebhookSet,
    SourcesSet,
    CreditsSet,
    CreditsRefilled,
    LeakReported,
    LeakPolicySet,
    RatelimitsSet,
    Imported,
    Rehashed,
}

/// What a `used` event spent of one rate limit.
#[derive(ToSchema)]
#[allow(dead_code)] // never built: it describes part of `EventView`'s value
pub struct LimitSpendView {
    name: String,
    cost: u64,
    /// The limit's window length when spent, e.g. `1m`.
    duration: String,
}

/// Where a verification came from, as recorded on `used`/`denied` events.
#[derive(ToSchema)]
#[allow(dead_code)] // never built: it describes part of `EventView`'s value
pub struct EventContext {
    ip: Option<String>,
    user_agent: Option<String>,
    method: Option<String>,
    path: Option<String>,
    /// The gateway's request id.
    request_id: Option<String>,
    scopes: Vec<String>,
    resource: Option<String>,
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

impl ValueStats {
    pub fn list(stats: &[ValueStat]) -> Vec<Self> {
        stats
            .iter()
            .map(|s| Self {
                value: s.value.clone(),
                first_seen: s.first_seen.to_rfc3339(),
                last_seen: s.last_seen.to_rfc3339(),
                count: s.count,
                allowed: s.allowed,
                denied: s.denied,
                new_since: s.new_since,
            })
            .collect()
    }
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

impl CompromiseReport {
    /// The report of `key` over `[since, until)` from the audit index's `data`.
    pub fn new(
        key: KeyView,
        data: &keyledger_ledger::audit::CompromiseData,
        since: Option<Timestamp>,
        until: Timestamp,
    ) -> Self {
        let after = &data.after_revocation;
        Self {
            key,
            lifecycle: data.lifecycle.iter().map(EventView::new).collect(),
            window: ReportWindow { since: rfc3339(since), until: until.to_rfc3339() },
            uses: UseCounts {
                allowed: data.uses.allowed,
                denied: data.uses.denied,
                first: rfc3339(data.uses.first),
                last: rfc3339(data.uses.last),
            },
            sources: ValueStats::list(&data.sources),
            user_agents: ValueStats::list(&data.user_agents),
            paths: data.paths.iter().map(|p| PathCount { value: p.value.clone(), count: p.count }).collect(),
            after_revocation: AfterRevocation {
                since: rfc3339(after.since),
                count: after.count,
                first: rfc3339(after.first),
                last: rfc3339(after.last),
                sources: ValueStats::list(&after.sources),
            },
        }
    }
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
    /// Active or disabled keys without a source allow-list (docs/api.md, "Source
    /// allow-lists").
    pub no_allowed_sources: Vec<KeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct LookupAnswer {
    pub key_id: String,
    pub workspace: String,
    pub status: String,
    pub report: CompromiseReport,
}
