//! The key registry's state and the one function that changes it: [`LedgerState::apply`].
//!
//! Everything that knows "what a key is now" derives from here: the in-memory registry the
//! verify path reads, the redb projection that persists it, and the replay that
//! `log verify` compares them with. Applying the same events in the same order always gives
//! the same state.

use keyledger_core::{
    Actor, DenyReason, Environment, Event, KeyHash, KeyId, KeyPrefix, Payload, Policy, Timestamp,
    UsageContext, WorkspaceId,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// A key's status as the API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
    Disabled,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Expired => "expired",
            KeyStatus::Disabled => "disabled",
        }
    }
}

/// When and from where a key was last used, and how often.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUsed {
    pub at: Option<Timestamp>,
    pub ip: Option<IpAddr>,
    pub count: u64,
}

/// Everything keyledger knows about one key (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub name: String,
    pub hash: KeyHash,
    pub hint: String,
    pub prefix: KeyPrefix,
    pub environment: Environment,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub owner: Option<String>,
    pub metadata: String,
    pub created_at: Timestamp,
    pub created_by: Actor,
    pub expires_at: Option<Timestamp>,
    /// The lifetime the key was issued with (or last given by an update), in microseconds:
    /// what a rotation's successor inherits. A rotation's overlap shortens `expires_at`,
    /// never this.
    pub lifetime: Option<i64>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
    pub rotated_from: Option<KeyId>,
    pub rotated_to: Option<KeyId>,
    pub disabled: Option<Option<String>>,
    /// An `expired` event has been recorded for this key.
    pub expiry_recorded: bool,
    pub last_used: LastUsed,
}

impl KeyRecord {
    /// Status at instant `now`: revoked beats disabled beats expired.
    pub fn status(&self, now: Timestamp) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.is_expired(now) {
            KeyStatus::Expired
        } else if self.disabled.is_some() {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Counts against `max_active_keys`: neither revoked nor expired.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && !self.is_expired(now)
    }
}

/// What a verification asks of a key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyRequirements {
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    pub environment: Option<Environment>,
    pub workspace: Option<WorkspaceId>,
}

/// The verification decision for a known key at `now`, in the contract's order:
/// revoked, expired, (disabled), then scope, resource, environment and workspace.
pub fn decide(record: &KeyRecord, wants: &VerifyRequirements, now: Timestamp) -> Result<(), DenyReason> {
    if record.revoked_at.is_some() {
        return Err(DenyReason::Revoked);
    }
    if record.is_expired(now) {
        return Err(DenyReason::Expired);
    }
    if record.disabled.is_some() {
        return Err(DenyReason::Disabled);
    }
    for scope in &wants.scopes {
        if record.scopes.binary_search(scope).is_err() {
            return Err(DenyReason::MissingScope(scope.clone()));
        }
    }
    if let Some(resource) = &wants.resource
        && !record.resources.is_empty()
        && record.resources.binary_search(resource).is_err()
    {
        return Err(DenyReason::ResourceNotAllowed(resource.clone()));
    }
    if let Some(environment) = wants.environment
        && environment != record.environment
    {
        return Err(DenyReason::EnvironmentMismatch(environment));
    }
    if let Some(workspace) = &wants.workspace
        && workspace != &record.workspace
    {
        return Err(DenyReason::WorkspaceMismatch(workspace.clone()));
    }
    Ok(())
}

/// The whole registry: keys by id and by hash, workspaces' keys and policies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerState {
    pub keys: HashMap<KeyId, KeyRecord>,
    pub by_hash: HashMap<KeyHash, KeyId>,
    pub by_workspace: BTreeMap<WorkspaceId, BTreeSet<KeyId>>,
    pub policies: BTreeMap<WorkspaceId, Policy>,
    /// Webhooks by workspace, as their latest `webhook_set` left them.
    pub webhooks: BTreeMap<WorkspaceId, Webhook>,
    /// Idempotent requests carried out, by their id (see [`IdempotentResult`]).
    pub idempotency: HashMap<[u8; 32], IdempotentResult>,
    /// Events applied so far (the next seq expected).
    pub applied: u64,
}

/// A workspace's webhook as its latest `webhook_set` event configured it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    /// Subscribed notification types, sorted; empty means every type.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Seq of the `webhook_set` event: with the pepper, it gives the signing secret.
    pub set_seq: u64,
    pub set_at: Timestamp,
    pub set_by: Actor,
    /// The first seq the webhook is told about: that of the event that enabled it, kept by
    /// later reconfigurations while it stays enabled.
    pub since_seq: u64,
}

impl Webhook {
    /// Whether deliveries of `kind` are wanted now.
    pub fn wants(&self, kind: &str) -> bool {
        self.enabled && (self.events.is_empty() || self.events.iter().any(|e| e == kind))
    }
}

/// What an idempotent request did, so that a retry can be answered without repeating it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentResult {
    pub fingerprint: [u8; 32],
    pub at: Timestamp,
    pub key_ids: Vec<KeyId>,
}

impl LedgerState {
    pub fn key(&self, key_id: &KeyId) -> Option<&KeyRecord> {
        self.keys.get(key_id)
    }

    pub fn key_by_hash(&self, hash: &KeyHash) -> Option<&KeyRecord> {
        self.by_hash.get(hash).and_then(|id| self.keys.get(id))
    }

    pub fn policy(&self, workspace: &WorkspaceId) -> Policy {
        self.policies.get(workspace).cloned().unwrap_or_default()
    }

    /// Keys of a workspace, oldest first (ids are time-ordered).
    pub fn workspace_keys<'a>(&'a self, workspace: &WorkspaceId) -> impl Iterator<Item = &'a KeyRecord> + 'a {
        self.by_workspace.get(workspace).into_iter().flatten().filter_map(|id| self.keys.get(id))
    }

    pub fn live_count(&self, workspace: &WorkspaceId, now: Timestamp) -> usize {
        self.workspace_keys(workspace).filter(|k| k.is_live(now)).count()
    }

    /// Inserts or replaces a record (used when loading a persisted projection).
    pub fn insert(&mut self, record: KeyRecord) {
        self.by_hash.insert(record.hash, record.key_id);
        self.by_workspace.entry(record.workspace.clone()).or_default().insert(record.key_id);
        self.keys.insert(record.key_id, record);
    }

    /// Applies one event. Events must come in seq order; an event about an unknown key is
    /// ignored (it cannot occur in a log the engine wrote).
    pub fn apply(&mut self, event: &Event) {
        self.applied = event.seq + 1;
        let at = event.at;
        match &event.payload {
            Payload::Created(c) => self.insert(KeyRecord {
                key_id: c.key_id,
                workspace: c.workspace.clone(),
                name: c.name.clone(),
                hash: c.hash,
                hint: c.hint.clone(),
                prefix: c.prefix.clone(),
                environment: c.environment,
                scopes: c.scopes.clone(),
                resources: c.resources.clone(),
                owner: c.owner.clone(),
                metadata: c.metadata.clone(),
                created_at: at,
                created_by: event.actor.clone(),
                expires_at: c.expires_at,
                lifetime: c.expires_at.map(|e| e.micros().saturating_sub(at.micros())),
                revoked_at: None,
                revoked_reason: None,
                rotated_from: c.rotated_from,
                rotated_to: None,
                disabled: None,
                expiry_recorded: false,
                last_used: LastUsed::default(),
            }),
            Payload::Used(u) => {
                if let Some(key) = self.keys.get_mut(&u.key_id) {
                    record_use(&mut key.last_used, at, &u.context);
                }
            }
            Payload::Denied(_) => {}
            Payload::Rotated(r) => {
                if let Some(key) = self.keys.get_mut(&r.key_id) {
                    key.rotated_to = Some(r.rotated_to);
                    if let Some(until) = r.valid_until {
                        key.expires_at = Some(key.expires_at.map_or(until, |e| e.min(until)));
                    }
                }
            }
            Payload::Revoked(r) => {
                if let Some(key) = self.keys.get_mut(&r.key_id)
                    && key.revoked_at.is_none()
                {
                    key.revoked_at = Some(at);
                    key.revoked_reason = r.reason.clone();
                }
            }
            Payload::Expired(k) => {
                if let Some(key) = self.keys.get_mut(&k.key_id) {
                    key.expiry_recorded = true;
                }
            }
            Payload::PolicySet(p) => {
                self.policies.insert(p.workspace.clone(), p.policy.clone());
            }
            Payload::Updated(u) => {
                if let Some(key) = self.keys.get_mut(&u.key_id) {
                    if let Some(name) = &u.name {
                        key.name = name.clone();
                    }
                    if let Some(owner) = &u.owner {
                        key.owner = owner.clone();
                    }
                    if let Some(metadata) = &u.metadata {
                        key.metadata = metadata.clone();
                    }
                    if let Some(expires_at) = u.expires_at {
                        key.expires_at = expires_at;
                        key.lifetime = expires_at.map(|e| e.micros().saturating_sub(key.created_at.micros()));
                        key.expiry_recorded = false;
                    }
                    if let Some(scopes) = &u.scopes {
                        key.scopes = scopes.clone();
                    }
                    if let Some(resources) = &u.resources {
                        key.resources = resources.clone();
                    }
                }
            }
            Payload::Disabled(d) => {
                if let Some(key) = self.keys.get_mut(&d.key_id) {
                    key.disabled = Some(d.reason.clone());
                }
            }
            Payload::Enabled(k) => {
                if let Some(key) = self.keys.get_mut(&k.key_id) {
                    key.disabled = None;
                }
            }
            Payload::Lookup(_) => {}
            Payload::WebhookSet(w) => {
                let since_seq = match self.webhooks.get(&w.workspace) {
                    Some(old) if old.enabled && w.enabled => old.since_seq,
                    _ => event.seq,
                };
                let webhook = Webhook {
                    url: w.url.clone(),
                    events: w.events.clone(),
                    enabled: w.enabled,
                    set_seq: event.seq,
                    set_at: at,
                    set_by: event.actor.clone(),
                    since_seq,
                };
                self.webhooks.insert(w.workspace.clone(), webhook);
            }
            Payload::Idempotency(record) => {
                let result =
                    IdempotentResult { fingerprint: record.fingerprint, at, key_ids: record.key_ids.clone() };
                self.idempotency.insert(record.id, result);
            }
        }
    }
}

/// Folds one `used` event into a key's last-use summary.
pub fn record_use(last: &mut LastUsed, at: Timestamp, context: &UsageContext) {
    last.at = Some(at);
    last.ip = context.ip;
    last.count += 1;
}
