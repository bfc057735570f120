//! The figures of a compliance report as one fold over the log's events
//! (docs/compliance.md, "How the figures are computed").
//!
//! The server folds the events of its log up to a signed checkpoint; `keyledger report
//! verify` folds the events of a saved export or of the log's entry bundles with the very
//! same code and compares. [`ComplianceFold::push`] takes events in seq order and keeps, per
//! key, a fixed set of fields and counters; per day of the period two counters; the listed
//! lifecycle events are capped at [`MAX_LISTED`]. Memory is therefore bounded by the number of
//! keys and of days, never by the number of events.
//!
//! Every payload kind has its arm in [`ComplianceFold::push`] (no wildcard): a new kind of
//! event does not compile until someone decides what it means for the report.

use super::ReportError;
use super::params::{DAY_MICROS, Parameters};
use keyledger_core::json::{actor_text, policy_json};
use keyledger_core::time::format_duration;
use keyledger_core::{Actor, Event, KeyId, Payload, Policy, Timestamp, WorkspaceId};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The most lifecycle (and break-glass) events listed one by one; every one is counted.
pub const MAX_LISTED: usize = 5000;

/// The exception kinds, in the order the report lists them.
pub const EXCEPTION_KINDS: [&str; 8] = [
    "past_max_lifetime",
    "no_expiry",
    "no_source_allowlist",
    "unused",
    "never_used",
    "rotated_late",
    "used_after_revocation",
    "leak_reported",
];

/// What the fold knows about one key.
struct KeyState {
    seq: u64,
    workspace: WorkspaceId,
    name: String,
    owner: Option<String>,
    environment: &'static str,
    scopes: Vec<String>,
    resources: Vec<String>,
    created_at: Timestamp,
    created_by: String,
    created_request_id: String,
    rotated_from: Option<KeyId>,
    expires_at: Option<Timestamp>,
    disabled: bool,
    revoked: Option<(Timestamp, Option<String>)>,
    rotated: Option<(Timestamp, KeyId, Option<Timestamp>)>,
    last_used: Option<(Timestamp, Option<IpAddr>)>,
    used: u64,
    denied: u64,
    denied_by_reason: BTreeMap<&'static str, u64>,
    /// Denials because revoked, in the period: count, first, last.
    after_revocation: Option<(u64, Timestamp, Timestamp)>,
    /// Whether the key has a source allow-list (its latest `sources_set`).
    allowed_sources: bool,
    /// The first leak report in the period: when, and by whom.
    leak_reported: Option<(Timestamp, &'static str)>,
}

/// What an issued and an imported key share when they enter the report.
struct Issued<'e> {
    workspace: &'e WorkspaceId,
    name: &'e str,
    owner: &'e Option<String>,
    environment: &'static str,
    scopes: &'e [String],
    resources: &'e [String],
    expires_at: Option<Timestamp>,
}

/// The [`Issued`] of a `created` or `key_imported` payload (two types, the same field names).
macro_rules! issued {
    ($e:expr) => {
        Issued {
            workspace: &$e.workspace,
            name: &$e.name,
            owner: &$e.owner,
            environment: $e.environment.as_str(),
            scopes: &$e.scopes,
            resources: &$e.resources,
            expires_at: $e.expires_at,
        }
    };
}

impl KeyState {
    /// A key as its issuing (or importing) `event` leaves it: nothing used, denied or changed yet.
    fn issued(event: &Event, key: Issued<'_>, rotated_from: Option<KeyId>) -> Self {
        Self {
            seq: event.seq,
            workspace: key.workspace.clone(),
            name: key.name.to_owned(),
            owner: key.owner.clone(),
            environment: key.environment,
            scopes: key.scopes.to_vec(),
            resources: key.resources.to_vec(),
            created_at: event.at,
            created_by: actor_text(&event.actor),
            created_request_id: event.request_id.to_string(),
            rotated_from,
            expires_at: key.expires_at,
            disabled: false,
            revoked: None,
            rotated: None,
            last_used: None,
            used: 0,
            denied: 0,
            denied_by_reason: BTreeMap::new(),
            after_revocation: None,
            allowed_sources: false,
            leak_reported: None,
        }
    }
}

/// Accumulates the report's figures from events pushed in seq order.
pub struct ComplianceFold {
    params: Parameters,
    last_seq: Option<u64>,
    folded: u64,
    keys: HashMap<KeyId, KeyState>,
    policies: HashMap<WorkspaceId, Policy>,
    /// Workspaces whose policy requires a source allow-list on every `live` key.
    sources_required: HashMap<WorkspaceId, bool>,
    lifecycle: Vec<Value>,
    lifecycle_counts: BTreeMap<&'static str, u64>,
    admin: BTreeMap<String, BTreeMap<&'static str, u64>>,
    break_glass: Vec<Value>,
    break_glass_count: u64,
    late_rotations: Vec<Value>,
    /// Day number (days since the epoch) → (used, denied).
    days: BTreeMap<i64, (u64, u64)>,
}

fn time(at: Option<Timestamp>) -> Value {
    at.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

/// `YYYY-MM-DD` of a day number.
fn day_label(day: i64) -> String {
    let text = Timestamp::from_micros(day.saturating_mul(DAY_MICROS)).to_rfc3339();
    text.get(..10).unwrap_or(&text).to_owned()
}

fn whole_days(micros: i64) -> i64 {
    micros.div_euclid(DAY_MICROS)
}

impl ComplianceFold {
    pub fn new(params: Parameters) -> Self {
        Self {
            params,
            last_seq: None,
            folded: 0,
            keys: HashMap::new(),
            policies: HashMap::new(),
            sources_required: HashMap::new(),
            lifecycle: Vec::new(),
            lifecycle_counts: BTreeMap::new(),
            admin: BTreeMap::new(),
            break_glass: Vec::new(),
            break_glass_count: 0,
            late_rotations: Vec::new(),
            days: BTreeMap::new(),
        }
    }

    /// The parameters the fold was built with.
    pub fn params(&self) -> &Parameters {
        &self.params
    }

    /// Folds one event. Events of other workspaces, and events at or after the period's
    /// end, are skipped.
    ///
    /// # Errors
    ///
    /// [`ReportError::Events`] if seqs do not increase.
    pub fn push(&mut self, event: &Event) -> Result<(), ReportError> {
        if self.last_seq.is_some_and(|last| event.seq <= last) {
            return Err(ReportError::Events(format!("event seq {} is out of order", event.seq)));
        }
        self.last_seq = Some(event.seq);
        if event.at >= self.params.to || !self.params.covers(event) {
            return Ok(());
        }
        self.folded += 1;
        let in_period = event.at >= self.params.from;
        let detail: Option<String> = match &event.payload {
            Payload::Created(e) => {
                let issued = issued!(e);
                self.keys.insert(e.key_id, KeyState::issued(event, issued, e.rotated_from));
                Some(match e.rotated_from {
                    Some(old) => format!("issued by rotation of {old}"),
                    None => "issued".into(),
                })
            }
            // An imported key enters the report like an issued one (docs/import.md).
            Payload::KeyImported(e) => {
                let issued = issued!(e);
                self.keys.insert(e.key_id, KeyState::issued(event, issued, None));
                Some(format!("imported by its {} hash", e.foreign.algorithm.as_str()))
            }
            Payload::KeyRehashed(_) => Some("re-hashed on first use".into()),
            Payload::Used(_) | Payload::Metered(_) | Payload::Counted(_) => {
                let Some(e) = event.payload.usage() else { return Ok(()) };
                if let Some(key) = self.keys.get_mut(&e.key_id) {
                    key.last_used = Some((event.at, e.context.ip));
                    if in_period {
                        key.used += 1;
                    }
                }
                if in_period {
                    self.days.entry(whole_days(event.at.micros())).or_default().0 += 1;
                }
                return Ok(());
            }
            Payload::Denied(e) => {
                if in_period {
                    if let Some(key) = self.keys.get_mut(&e.key_id) {
                        key.denied += 1;
                        *key.denied_by_reason.entry(e.reason.code()).or_default() += 1;
                        if e.reason == keyledger_core::DenyReason::Revoked {
                            let entry = key.after_revocation.get_or_insert((0, event.at, event.at));
                            entry.0 += 1;
                            entry.2 = event.at;
                        }
                    }
                    self.days.entry(whole_days(event.at.micros())).or_default().1 += 1;
                }
                return Ok(());
            }
            Payload::Rotated(e) => {
                let policy = self.policies.get(&e.workspace).and_then(|p| p.max_lifetime);
                if let Some(key) = self.keys.get_mut(&e.key_id) {
                    key.rotated = Some((event.at, e.rotated_to, e.valid_until));
                    let age = event.at.micros().saturating_sub(key.created_at.micros());
                    if let Some(max) = policy
                        && in_period
                        && age > max
                        && self.late_rotations.len() < MAX_LISTED
                    {
                        self.late_rotations.push(json!({
                            "kind": "rotated_late",
                            "key_id": e.key_id.to_string(),
                            "workspace": e.workspace.as_str(),
                            "name": key.name,
                            "at": event.at.to_rfc3339(),
                            "detail": format!(
                                "rotated at age {}, beyond the maximum lifetime {}",
                                format_duration(age - age % 1_000_000),
                                format_duration(max)
                            ),
                        }));
                    }
                }
                Some(format!("rotated to {}", e.rotated_to))
            }
            Payload::Revoked(e) => {
                if let Some(key) = self.keys.get_mut(&e.key_id) {
                    key.revoked.get_or_insert((event.at, e.reason.clone()));
                }
                Some(match &e.reason {
                    Some(reason) => format!("revoked: {reason}"),
                    None => "revoked".into(),
                })
            }
            Payload::Expired(_) => Some("expiry observed".into()),
            Payload::CreditsSet(e) => Some(format!("credits set: {} remaining", e.remaining)),
            Payload::CreditsRefilled(e) => Some(format!("credits refilled to {}", e.remaining)),
            Payload::PolicySet(e) => {
                self.policies.insert(e.workspace.clone(), e.policy.clone());
                Some(format!("policy set: {}", crate::export::canonical_json(&policy_json(&e.policy))))
            }
            Payload::Updated(e) => {
                let mut changed = Vec::new();
                if let Some(key) = self.keys.get_mut(&e.key_id) {
                    if let Some(name) = &e.name {
                        key.name.clone_from(name);
                        changed.push("name");
                    }
                    if let Some(owner) = &e.owner {
                        key.owner.clone_from(owner);
                        changed.push("owner");
                    }
                    if e.metadata.is_some() {
                        changed.push("metadata");
                    }
                    if let Some(expires_at) = e.expires_at {
                        key.expires_at = expires_at;
                        changed.push("expires_at");
                    }
                    if let Some(scopes) = &e.scopes {
                        key.scopes.clone_from(scopes);
                        changed.push("scopes");
                    }
                    if let Some(resources) = &e.resources {
                        key.resources.clone_from(resources);
                        changed.push("resources");
                    }
                }
                Some(format!("updated: {}", changed.join(", ")))
            }
            Payload::Disabled(e) => {
                if let Some(key) = self.keys.get_mut(&e.key_id) {
                    key.disabled = true;
                }
                Some(match &e.reason {
                    Some(reason) => format!("disabled: {reason}"),
                    None => "disabled".into(),
                })
            }
            Payload::Enabled(e) => {
                if let Some(key) = self.keys.get_mut(&e.key_id) {
                    key.disabled = false;
                }
                Some("enabled".into())
            }
            Payload::Lookup(e) => Some(match e.found {
                Some(key) => format!("leaked-secret lookup found {key}"),
                None => "leaked-secret lookup found nothing".into(),
            }),
            // Bookkeeping of retries: its effects are events of their own.
            Payload::Idempotency(_) => None,
            // The destination may carry a token in its URL: only the state is reported.
            Payload::WebhookSet(e) => Some(if e.enabled { "webhook set" } else { "webhook disabled" }.into()),
            Payload::SourcesSet(e) => {
                match e.key_id {
                    Some(key_id) => {
                        if let Some(key) = self.keys.get_mut(&key_id) {
                            key.allowed_sources = !e.sources.is_empty();
                        }
                    }
                    None => {
                        self.sources_required.insert(e.workspace.clone(), e.require_on_live);
                    }
                }
                Some(match (e.key_id, e.sources.is_empty()) {
                    (Some(_), true) => "source allow-list removed".into(),
                    (Some(_), false) => format!("source allow-list set ({} networks)", e.sources.len()),
                    (None, _) => format!(
                        "source policy set (default of {} networks, required on live keys: {})",
                        e.sources.len(),
                        e.require_on_live
                    ),
                })
            }
            // The url may be private to the reporter's finding: only who reported it.
            Payload::LeakReported(e) => {
                if let Some(key) = self.keys.get_mut(&e.key_id)
                    && in_period
                {
                    key.leak_reported.get_or_insert((event.at, e.reporter.as_str()));
                }
                Some(format!("reported leaked by {}", e.reporter.as_str()))
            }
            Payload::LeakPolicySet(e) => Some(format!("on_leak set to {}", e.on_leak.as_str())),
            Payload::RateLimitsSet(e) => Some(format!(
                "rate limits set: {}",
                crate::export::canonical_json(&keyledger_core::ratelimit::limits_json(&e.limits))
            )),
        };
        if let (Some(detail), true) = (detail, in_period) {
            self.lifecycle_entry(event, detail);
        }
        Ok(())
    }

    fn lifecycle_entry(&mut self, event: &Event, detail: String) {
        let kind = event.payload.kind().as_str();
        *self.lifecycle_counts.entry(kind).or_default() += 1;
        let actor = actor_text(&event.actor);
        if matches!(event.actor, Actor::Admin(_) | Actor::Recovery) {
            *self.admin.entry(actor.clone()).or_default().entry(kind).or_default() += 1;
        }
        let entry = json!({
            "seq": event.seq,
            "at": event.at.to_rfc3339(),
            "kind": kind,
            "workspace": event.payload.workspace().as_str(),
            "key_id": event.payload.key_id().map(|k| k.to_string()),
            "actor": actor,
            "request_id": event.request_id.to_string(),
            "detail": detail,
        });
        if event.actor == Actor::Recovery {
            self.break_glass_count += 1;
            if self.break_glass.len() < MAX_LISTED {
                self.break_glass.push(entry.clone());
            }
        }
        if self.lifecycle.len() < MAX_LISTED {
            self.lifecycle.push(entry);
        }
    }

    /// The report's `figures` member.
    pub fn finish(self) -> Value {
        let p = &self.params;
        let as_of = p.as_of;
        let mut keys: Vec<(&KeyId, &KeyState)> = self.keys.iter().collect();
        keys.sort_by_key(|(_, k)| k.seq);

        let mut inventory = Vec::new();
        let mut exceptions: Vec<Value> = Vec::new();
        let mut by_key = Vec::new();
        for (id, key) in &keys {
            if key.revoked.as_ref().is_some_and(|(at, _)| *at < p.from) {
                continue;
            }
            let status = status(key, as_of);
            inventory.push(json!({
                "key_id": id.to_string(),
                "workspace": key.workspace.as_str(),
                "name": key.name,
                "owner": key.owner,
                "environment": key.environment,
                "scopes": key.scopes,
                "resources": key.resources,
                "created_at": key.created_at.to_rfc3339(),
                "created_by": key.created_by,
                "created_request_id": key.created_request_id,
                "age_days": whole_days(as_of.micros().saturating_sub(key.created_at.micros())).max(0),
                "rotated_from": key.rotated_from.map(|k| k.to_string()),
                "rotated_at": time(key.rotated.map(|r| r.0)),
                "rotated_to": key.rotated.map(|r| r.1.to_string()),
                "expires_at": time(key.expires_at),
                "status": status,
                "revoked_at": time(key.revoked.as_ref().map(|r| r.0)),
                "revocation_reason": key.revoked.as_ref().and_then(|r| r.1.clone()),
                "last_used_at": time(key.last_used.map(|u| u.0)),
                "last_used_ip": key.last_used.and_then(|u| u.1).map(|ip| ip.to_string()),
                "uses_in_period": key.used,
                "denials_in_period": key.denied,
            }));
            if key.used + key.denied > 0 {
                by_key.push(json!({
                    "key_id": id.to_string(),
                    "workspace": key.workspace.as_str(),
                    "name": key.name,
                    "used": key.used,
                    "denied": key.denied,
                    "denied_by_reason": key.denied_by_reason,
                }));
            }
            let exception = |kind: &str, detail: String| {
                json!({
                    "kind": kind,
                    "key_id": id.to_string(),
                    "workspace": key.workspace.as_str(),
                    "name": key.name,
                    "detail": detail,
                })
            };
            if let Some((count, first, last)) = key.after_revocation {
                let mut entry = exception(
                    "used_after_revocation",
                    format!("presented {count} time(s) after its revocation in the period"),
                );
                if let Value::Object(map) = &mut entry {
                    map.insert("count".into(), json!(count));
                    map.insert("first_at".into(), json!(first.to_rfc3339()));
                    map.insert("last_at".into(), json!(last.to_rfc3339()));
                }
                exceptions.push(entry);
            }
            if let Some((reported_at, reporter)) = key.leak_reported {
                // The time from the report to the revocation, if the key was revoked after it.
                let revoked_at = key.revoked.as_ref().map(|r| r.0).filter(|at| *at >= reported_at);
                let detail = match revoked_at {
                    Some(at) => format!(
                        "reported leaked by {reporter}; revoked {} s later",
                        (at.micros() - reported_at.micros()) / 1_000_000
                    ),
                    None if key.revoked.is_some() => {
                        format!("reported leaked by {reporter} after its revocation")
                    }
                    None => format!("reported leaked by {reporter}; not revoked by the end of the period"),
                };
                let mut entry = exception("leak_reported", detail);
                if let Value::Object(map) = &mut entry {
                    map.insert("reported_at".into(), json!(reported_at.to_rfc3339()));
                    map.insert("reporter".into(), json!(reporter));
                    map.insert("revoked_at".into(), time(revoked_at));
                    map.insert(
                        "seconds_to_revocation".into(),
                        json!(revoked_at.map(|at| (at.micros() - reported_at.micros()) / 1_000_000)),
                    );
                }
                exceptions.push(entry);
            }
            if !matches!(status, "active" | "disabled") {
                continue;
            }
            if key.environment == "live"
                && !key.allowed_sources
                && self.sources_required.get(&key.workspace).copied().unwrap_or(false)
            {
                exceptions.push(exception(
                    "no_source_allowlist",
                    "a live key without a source allow-list, although the policy requires one".into(),
                ));
            }
            let policy = self.policies.get(&key.workspace);
            let age = as_of.micros().saturating_sub(key.created_at.micros());
            if let Some(max) = policy.and_then(|p| p.max_lifetime)
                && age > max
            {
                exceptions.push(exception(
                    "past_max_lifetime",
                    format!(
                        "{} days old, beyond the maximum lifetime {}",
                        whole_days(age),
                        format_duration(max)
                    ),
                ));
            }
            if key.expires_at.is_none() {
                let required = policy.is_some_and(|p| p.require_expiry);
                exceptions.push(exception(
                    "no_expiry",
                    if required { "no expiry, although the policy requires one" } else { "no expiry" }.into(),
                ));
            }
            match key.last_used {
                None => exceptions.push(exception("never_used", "never used".into())),
                Some((at, _))
                    if at.micros() < as_of.micros().saturating_sub(i64::from(p.unused_days) * DAY_MICROS) =>
                {
                    exceptions.push(exception(
                        "unused",
                        format!(
                            "last used {} days before the end of the period",
                            whole_days(as_of.micros() - at.micros())
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        exceptions.extend(self.late_rotations);
        let rank = |kind: &str| EXCEPTION_KINDS.iter().position(|k| *k == kind).unwrap_or(usize::MAX);
        // Stable: within a kind, keys stay in creation order.
        exceptions.sort_by_key(|e| rank(e.get("kind").and_then(Value::as_str).unwrap_or_default()));
        let mut exception_counts = Map::new();
        for kind in EXCEPTION_KINDS {
            let n = exceptions.iter().filter(|e| e.get("kind").and_then(Value::as_str) == Some(kind)).count();
            exception_counts.insert(kind.into(), json!(n));
        }
        by_key.sort_by_key(|k| {
            let total = k.get("used").and_then(Value::as_u64).unwrap_or(0)
                + k.get("denied").and_then(Value::as_u64).unwrap_or(0);
            std::cmp::Reverse(total)
        });

        let first_day = whole_days(p.from.micros());
        let last_day = whole_days(p.to.micros().saturating_sub(1));
        let (mut used, mut denied) = (0u64, 0u64);
        let by_day: Vec<Value> = (first_day..=last_day)
            .map(|day| {
                let (u, d) = self.days.get(&day).copied().unwrap_or_default();
                used += u;
                denied += d;
                json!({"day": day_label(day), "used": u, "denied": d})
            })
            .collect();
        let admin: Vec<Value> = self
            .admin
            .iter()
            .map(|(actor, kinds)| {
                json!({
                    "actor": actor,
                    "events": kinds.values().sum::<u64>(),
                    "by_kind": kinds,
                })
            })
            .collect();
        let listed = self.lifecycle.len() as u64;
        let total: u64 = self.lifecycle_counts.values().sum();
        json!({
            "events_folded": self.folded,
            "inventory": inventory,
            "lifecycle": {
                "counts": self.lifecycle_counts,
                "events": self.lifecycle,
                "omitted": total - listed,
            },
            "admin_activity": admin,
            "break_glass": {
                "count": self.break_glass_count,
                "events": self.break_glass,
            },
            "exceptions": exceptions,
            "exception_counts": exception_counts,
            "usage": {
                "used": used,
                "denied": denied,
                "by_day": by_day,
                "by_key": by_key,
            },
        })
    }
}

/// A key's status at `as_of`: `revoked`, `expired`, `rotated` (past its overlap after a
/// rotation), `disabled` or `active`.
fn status(key: &KeyState, as_of: Timestamp) -> &'static str {
    if key.revoked.is_some() {
        "revoked"
    } else if key.expires_at.is_some_and(|at| at <= as_of) {
        "expired"
    } else if key.rotated.is_some_and(|(_, _, until)| until.is_none_or(|u| u <= as_of)) {
        "rotated"
    } else if key.disabled {
        "disabled"
    } else {
        "active"
    }
}
