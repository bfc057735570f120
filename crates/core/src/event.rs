//! The events that make up keyledger's log.
//!
//! An [`Event`] is the envelope (seq, time, actor, request id) around a [`Payload`]. The
//! log stores exactly the bytes of [`crate::codec::encode_event`]; everything else
//! (projections, audit indexes, exports) is derived from those bytes.
//!
//! **Compatibility rule.** The order of enum variants and struct fields is part of the
//! encoding. New variants go at the end; existing ones never change. The golden-bytes tests
//! in `codec` fail if anyone forgets.

use crate::credits::Refill;
use crate::ids::{KeyId, RequestId, WorkspaceId};
use crate::secret::{Environment, KeyHash, KeyPrefix};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// When the writer sequenced it.
    pub at: Timestamp,
    /// Who caused it.
    pub actor: Actor,
    /// keyledger's id of the HTTP request (or internal operation) that caused it.
    pub request_id: RequestId,
    pub payload: Payload,
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// keyledger itself (init, expiry sightings).
    System,
    /// An admin key of workspace `_ledger`.
    Admin(KeyId),
    /// An unauthenticated verification caller (a gateway or service).
    Verifier,
    /// The offline break-glass `keyledger admin recover`, run by whoever holds the data dir.
    Recovery,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    Created(Created),
    Used(Usage),
    Denied(Denial),
    Rotated(Rotated),
    Revoked(Revoked),
    Expired(KeyRef),
    PolicySet(PolicySet),
    Updated(Updated),
    Disabled(Disabled),
    Enabled(KeyRef),
    Lookup(Lookup),
    Idempotency(IdempotencyRecord),
    WebhookSet(WebhookSet),
    SourcesSet(SourcesSet),
    /// A `used` event of a key with credits: the spend rides on it (docs/credits.md).
    Metered(Metered),
    CreditsSet(CreditsSet),
    CreditsRefilled(CreditsRefilled),
    LeakReported(LeakReported),
    LeakPolicySet(LeakPolicySet),
    RateLimitsSet(RateLimitsSet),
    /// A key imported by a foreign hash of its secret (docs/import.md).
    KeyImported(crate::import::KeyImported),
    /// An imported key's first use gave it keyledger's keyed hash (docs/import.md).
    KeyRehashed(crate::import::KeyRehashed),
    /// A `used` event that spent rate-limit allowance: what it spent rides on it, so every
    /// node reading the log counts it (docs/api.md, "Rate limits").
    Counted(Counted),
}

/// The kind of an event, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
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
    RateLimitsSet,
    KeyImported,
    KeyRehashed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Used => "used",
            EventKind::Denied => "denied",
            EventKind::Rotated => "rotated",
            EventKind::Revoked => "revoked",
            EventKind::Expired => "expired",
            EventKind::PolicySet => "policy_set",
            EventKind::Updated => "updated",
            EventKind::Disabled => "disabled",
            EventKind::Enabled => "enabled",
            EventKind::Lookup => "lookup",
            EventKind::Idempotency => "idempotency",
            EventKind::WebhookSet => "webhook_set",
            EventKind::SourcesSet => "sources_set",
            EventKind::CreditsSet => "credits_set",
            EventKind::CreditsRefilled => "credits_refilled",
            EventKind::LeakReported => "leak_reported",
            EventKind::LeakPolicySet => "leak_policy_set",
            EventKind::RateLimitsSet => "ratelimits_set",
            EventKind::KeyImported => "imported",
            EventKind::KeyRehashed => "rehashed",
        }
    }

    /// Usage events are `used` and `denied`; every other kind is a lifecycle event, made
    /// durable before the call that caused it answers.
    pub fn is_usage(self) -> bool {
        matches!(self, EventKind::Used | EventKind::Denied)
    }
}

/// A key was issued (by create or by rotation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub name: String,
    /// Keyed BLAKE3 of the secret: the only trace of the secret anywhere.
    pub hash: KeyHash,
    pub hint: String,
    pub prefix: KeyPrefix,
    pub environment: Environment,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub owner: Option<String>,
    /// A JSON object, serialized canonically (keys sorted, no spaces).
    pub metadata: String,
    pub expires_at: Option<Timestamp>,
    pub rotated_from: Option<KeyId>,
}

/// Where a verification came from and what it asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UsageContext {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// The caller's (gateway's) own request id, kept as given.
    pub request_id: Option<String>,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
}

/// A verification of a known key that succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub context: UsageContext,
}

/// A verification of a known key that was refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub reason: DenyReason,
    pub context: UsageContext,
}

/// Why a known key was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DenyReason {
    Revoked,
    Expired,
    Disabled,
    MissingScope(String),
    ResourceNotAllowed(String),
    EnvironmentMismatch(Environment),
    WorkspaceMismatch(WorkspaceId),
    /// The key's source allow-list does not hold the address it was presented from
    /// (`None`: the source was unknown, which a list never allows).
    SourceNotAllowed(Option<IpAddr>),
    /// The key's credits do not cover the verification's cost (docs/credits.md).
    UsageExceeded,
    /// A named rate limit (docs/api.md, "Rate limits") had no allowance left.
    RateLimited(String),
}

impl DenyReason {
    /// Stable snake_case name, used in JSON and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::Revoked => "revoked",
            DenyReason::Expired => "expired",
            DenyReason::Disabled => "disabled",
            DenyReason::MissingScope(_) => "missing_scope",
            DenyReason::ResourceNotAllowed(_) => "resource_not_allowed",
            DenyReason::EnvironmentMismatch(_) => "environment_mismatch",
            DenyReason::WorkspaceMismatch(_) => "workspace_mismatch",
            DenyReason::SourceNotAllowed(_) => "source_not_allowed",
            DenyReason::UsageExceeded => "usage_exceeded",
            DenyReason::RateLimited(_) => "rate_limited",
        }
    }

    /// A human sentence naming what was refused.
    pub fn message(&self) -> String {
        match self {
            DenyReason::Revoked => "the key has been revoked".into(),
            DenyReason::Expired => "the key has expired".into(),
            DenyReason::Disabled => "the key is disabled".into(),
            DenyReason::MissingScope(s) => format!("the key lacks the required scope `{s}`"),
            DenyReason::ResourceNotAllowed(r) => format!("the key may not access resource `{r}`"),
            DenyReason::EnvironmentMismatch(e) => format!("the key is not a `{e}` key"),
            DenyReason::WorkspaceMismatch(w) => format!("the key does not belong to workspace `{w}`"),
            DenyReason::SourceNotAllowed(Some(ip)) => format!("the key may not be used from `{ip}`"),
            DenyReason::SourceNotAllowed(None) => "the key may not be used from an unknown source".into(),
            DenyReason::UsageExceeded => "the key has no credits left for this request".into(),
            DenyReason::RateLimited(n) => format!("the key exceeded its rate limit `{n}`"),
        }
    }
}

/// A key was replaced by a new one (whose `Created` event precedes this one in the batch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub rotated_to: KeyId,
    /// Until when the old key stays valid; `None` when it was revoked in the same step
    /// (a `Revoked` event follows in the batch).
    pub valid_until: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub reason: Option<String>,
}

/// An event about one key that carries nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
}

/// A workspace's policy as set (replacing the previous one whole).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Policy {
    pub max_active_keys: Option<u32>,
    pub require_expiry: bool,
    /// Longest allowed lifetime of a key, in microseconds.
    pub max_lifetime: Option<i64>,
    pub key_prefix: Option<KeyPrefix>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySet {
    pub workspace: WorkspaceId,
    pub policy: Policy,
}

/// A change of a key's descriptive fields; scopes and resources only ever narrow.
/// `None` means "unchanged".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Updated {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub name: Option<String>,
    pub owner: Option<Option<String>>,
    pub metadata: Option<String>,
    pub expires_at: Option<Option<Timestamp>>,
    pub scopes: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
}

/// An admin looked up a candidate leaked secret (the candidate itself is never recorded).
/// `workspace` is the found key's workspace, or `_ledger` when nothing matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    pub workspace: WorkspaceId,
    pub found: Option<KeyId>,
}

/// A request carrying an `Idempotency-Key` was carried out: written in the same batch as
/// its effects, so a retry can never repeat them, even after a restart. Neither the
/// credential nor the key itself is recorded, only hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// BLAKE3 of the caller's credential and its `Idempotency-Key`.
    pub id: [u8; 32],
    /// BLAKE3 of the original request (method, path, body).
    pub fingerprint: [u8; 32],
    pub workspace: WorkspaceId,
    /// The keys the request issued (create, rotate) or revoked (revoke-all).
    pub key_ids: Vec<KeyId>,
}

/// A workspace's webhook as configured (replacing the previous configuration whole). Its
/// signing secret is never recorded: it is derived from the pepper, the workspace and this
/// event's seq, so every `webhook_set` that enables a webhook also rotates its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSet {
    pub workspace: WorkspaceId,
    /// Where deliveries are POSTed (`http://` or `https://`).
    pub url: String,
    /// The notification types subscribed to, sorted; empty means every type.
    pub events: Vec<String>,
    /// False once the webhook is disabled (its url and events are then kept for reference).
    pub enabled: bool,
}

/// A source allow-list (docs/api.md, "Source allow-lists"), replacing the previous one
/// whole. With `key_id`, the list of that key (appended right after its `Created` event at
/// create and rotation, or by an update that narrows it); without, the workspace's policy
/// for lists: the default copied into keys created without one, and whether `live` keys
/// must have one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesSet {
    pub workspace: WorkspaceId,
    pub key_id: Option<KeyId>,
    /// Normalised, sorted, at most [`crate::sources::MAX_SOURCES`]; empty means any source.
    pub sources: Vec<crate::sources::SourceNet>,
    /// For a key: the list was copied from the workspace default.
    pub from_policy: bool,
    /// For a workspace: a `live` key may not be created or rotated without a list.
    pub require_on_live: bool,
}

/// A reversible suspension of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub reason: Option<String>,
}

/// An allowed verification of a key with credits: a `used` event that also spends `cost`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metered {
    pub usage: Usage,
    /// Credits spent (0: checked without spending).
    pub cost: u64,
    /// The balance after the spend.
    pub remaining: u64,
}

/// An allowed verification that spent allowance of one or more rate limits (and, for a key
/// with credits, its credits): a `used` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub usage: Usage,
    /// The credits spent, for a key with credits (what a [`Metered`] event holds).
    pub credits: Option<CreditSpend>,
    /// Each limit it spent on (cost at least 1), in the order of the key's list.
    pub spent: Vec<LimitSpend>,
}

/// Credits spent by one verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditSpend {
    /// Credits spent (0: checked without spending).
    pub cost: u64,
    /// The balance after the spend.
    pub remaining: u64,
}

/// The allowance one verification spent of one named rate limit, in the window (of the
/// limit's length at the time) holding the event's time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitSpend {
    pub name: String,
    pub cost: u64,
    /// The limit's window length in microseconds when it was spent: a reader counts the
    /// spend in that window whatever the limit became later.
    pub duration: i64,
}

/// A key's credits as set by create, rotation (moved from the old key) or a top-up: the
/// balance becomes `remaining`; the refill schedule's reference time is kept when the key
/// already had credits (docs/credits.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsSet {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub remaining: u64,
    pub refill: Option<Refill>,
    /// `key.credits_low` fires when a spend takes the balance from above this to at or below.
    pub low_threshold: u64,
}

/// A refill boundary passed: the balance was set to the refill amount, `remaining`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsRefilled {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub remaining: u64,
}

/// Who reported a leaked key (docs/leaks.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeakReporter {
    /// GitHub's secret scanning partner program (`POST /v1/leaks/github`), signature checked.
    Github,
    /// Anyone, through the unauthenticated `POST /v1/leaks/report`.
    Public,
}

impl LeakReporter {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakReporter::Github => "github",
            LeakReporter::Public => "public",
        }
    }
}

/// A key was reported as leaked. Never the token itself: where it was found, and by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakReported {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub reporter: LeakReporter,
    /// Where the secret was found (GitHub's `url`), as reported.
    pub url: Option<String>,
    /// GitHub's `source` (`content`, `commit`, `issue_comment`, …), as reported.
    pub source: Option<String>,
}

/// What a workspace does when one of its keys is reported as leaked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OnLeak {
    /// Record the report and send `key.leaked`; the key stays valid.
    #[default]
    Notify,
    /// Also revoke the key at once, in the report's batch.
    Revoke,
}

impl OnLeak {
    pub fn as_str(self) -> &'static str {
        match self {
            OnLeak::Notify => "notify",
            OnLeak::Revoke => "revoke",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "notify" => Some(OnLeak::Notify),
            "revoke" => Some(OnLeak::Revoke),
            _ => None,
        }
    }
}

/// A workspace's `on_leak` policy changed (kept apart from the frozen [`PolicySet`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakPolicySet {
    pub workspace: WorkspaceId,
    pub on_leak: OnLeak,
}

impl Payload {
    /// The verification recorded by a `used` event, whichever variant carries it: every
    /// reader of `used` events goes through here.
    pub fn usage(&self) -> Option<&Usage> {
        match self {
            Payload::Used(u) => Some(u),
            Payload::Metered(m) => Some(&m.usage),
            Payload::Counted(c) => Some(&c.usage),
            _ => None,
        }
    }

    /// The credits a `used` event spent, whichever variant carries them.
    pub fn credit_spend(&self) -> Option<CreditSpend> {
        match self {
            Payload::Metered(m) => Some(CreditSpend { cost: m.cost, remaining: m.remaining }),
            Payload::Counted(c) => c.credits,
            _ => None,
        }
    }

    /// The rate-limit allowance a `used` event spent (empty for every other event).
    pub fn limit_spends(&self) -> &[LimitSpend] {
        match self {
            Payload::Counted(c) => &c.spent,
            _ => &[],
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Payload::Created(_) => EventKind::Created,
            Payload::Used(_) => EventKind::Used,
            Payload::Denied(_) => EventKind::Denied,
            Payload::Rotated(_) => EventKind::Rotated,
            Payload::Revoked(_) => EventKind::Revoked,
            Payload::Expired(_) => EventKind::Expired,
            Payload::PolicySet(_) => EventKind::PolicySet,
            Payload::Updated(_) => EventKind::Updated,
            Payload::Disabled(_) => EventKind::Disabled,
            Payload::Enabled(_) => EventKind::Enabled,
            Payload::Lookup(_) => EventKind::Lookup,
            Payload::Idempotency(_) => EventKind::Idempotency,
            Payload::WebhookSet(_) => EventKind::WebhookSet,
            Payload::SourcesSet(_) => EventKind::SourcesSet,
            Payload::Metered(_) => EventKind::Used,
            Payload::CreditsSet(_) => EventKind::CreditsSet,
            Payload::CreditsRefilled(_) => EventKind::CreditsRefilled,
            Payload::LeakReported(_) => EventKind::LeakReported,
            Payload::LeakPolicySet(_) => EventKind::LeakPolicySet,
            Payload::RateLimitsSet(_) => EventKind::RateLimitsSet,
            Payload::KeyImported(_) => EventKind::KeyImported,
            Payload::KeyRehashed(_) => EventKind::KeyRehashed,
            Payload::Counted(_) => EventKind::Used,
        }
    }

    /// The workspace the event belongs to.
    pub fn workspace(&self) -> &WorkspaceId {
        match self {
            Payload::Created(e) => &e.workspace,
            Payload::Used(e) => &e.workspace,
            Payload::Denied(e) => &e.workspace,
            Payload::Rotated(e) => &e.workspace,
            Payload::Revoked(e) => &e.workspace,
            Payload::Expired(e) | Payload::Enabled(e) => &e.workspace,
            Payload::PolicySet(e) => &e.workspace,
            Payload::Updated(e) => &e.workspace,
            Payload::Disabled(e) => &e.workspace,
            Payload::Lookup(e) => &e.workspace,
            Payload::Idempotency(e) => &e.workspace,
            Payload::WebhookSet(e) => &e.workspace,
            Payload::SourcesSet(e) => &e.workspace,
            Payload::Metered(e) => &e.usage.workspace,
            Payload::CreditsSet(e) => &e.workspace,
            Payload::CreditsRefilled(e) => &e.workspace,
            Payload::LeakReported(e) => &e.workspace,
            Payload::LeakPolicySet(e) => &e.workspace,
            Payload::RateLimitsSet(e) => &e.workspace,
            Payload::KeyImported(e) => &e.workspace,
            Payload::KeyRehashed(e) => &e.workspace,
            Payload::Counted(e) => &e.usage.workspace,
        }
    }

    /// The key the event is about, if any.
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Payload::Created(e) => Some(e.key_id),
            Payload::Used(e) => Some(e.key_id),
            Payload::Denied(e) => Some(e.key_id),
            Payload::Rotated(e) => Some(e.key_id),
            Payload::Revoked(e) => Some(e.key_id),
            Payload::Expired(e) | Payload::Enabled(e) => Some(e.key_id),
            Payload::PolicySet(_) | Payload::WebhookSet(_) => None,
            Payload::Updated(e) => Some(e.key_id),
            Payload::Disabled(e) => Some(e.key_id),
            // An admin action, not an event of the key's life: found in `found`.
            Payload::Lookup(_) | Payload::Idempotency(_) => None,
            Payload::SourcesSet(e) => e.key_id,
            Payload::Metered(e) => Some(e.usage.key_id),
            Payload::CreditsSet(e) => Some(e.key_id),
            Payload::CreditsRefilled(e) => Some(e.key_id),
            Payload::LeakReported(e) => Some(e.key_id),
            Payload::LeakPolicySet(_) => None,
            Payload::RateLimitsSet(e) => e.key_id,
            Payload::KeyImported(e) => Some(e.key_id),
            Payload::KeyRehashed(e) => Some(e.key_id),
            Payload::Counted(e) => Some(e.usage.key_id),
        }
    }
}

/// One named rate limit (docs/api.md, "Rate limits"): at most `limit` units of cost per
/// fixed window of `duration` microseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// `[a-z0-9_-]{1,32}`, unique within its list.
    pub name: String,
    /// At least 1.
    pub limit: u64,
    /// Window length in microseconds, 1 s to 30 days.
    pub duration: i64,
    /// Applied to every verification (true) or only when the request names it.
    pub auto_apply: bool,
}

/// A key's rate limits (or, with `key_id: None`, the workspace default for keys without
/// their own), replacing the previous list whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitsSet {
    pub workspace: WorkspaceId,
    pub key_id: Option<KeyId>,
    pub limits: Vec<RateLimit>,
}
