//! The key registry's state and the one function that changes it: [`LedgerState::apply`].
//!
//! Everything that knows "what a key is now" derives from here: the in-memory registry the
//! verify path reads, the redb projection that persists it, and the replay that
//! `log verify` compares them with. Applying the same events in the same order always gives
//! the same state, and [`LedgerState::replay`] is the one loop that feeds the log's events
//! to it.
//!
//! This file holds the vocabulary (a key's [`KeyRecord`] and [`KeyStatus`], and [`decide`],
//! the verification order) and the registry itself, with its indexes and `apply`. How a key
//! is held in memory is the concern of `slots.rs` (a compact slot of interned values, a
//! fifth of a [`KeyRecord`]); how it is read in place, that of `view.rs` ([`KeyView`]).
//! [`KeyView::record`] (or [`LedgerState::key`]) materialises the full [`KeyRecord`] for an
//! answer.

pub mod imported;
pub mod leaks;
mod slots;
mod sources;
mod view;

pub use sources::{KeySources, SourcePolicy, SourceRegistry, decide_with_source};
pub use view::KeyView;

use slots::{DISABLED, EXPIRY_RECORDED, HAS_EXPIRY, Interner, NO_OWNER, REVOKED, Rare, Slot, Sym, sym};

use hashbrown::HashTable;
use keyledger_core::decode_event;
use keyledger_core::{
    Actor, DenyReason, Environment, Event, KeyHash, KeyId, KeyPrefix, Payload, Policy, RateLimit, Timestamp,
    UsageContext, WorkspaceId,
};
use keyledger_log::segment::SegmentReader;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash, RandomState};
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

    /// Revoked beats expired beats disabled.
    fn of(revoked: bool, expires_at: Option<Timestamp>, disabled: bool, now: Timestamp) -> Self {
        if revoked {
            KeyStatus::Revoked
        } else if expires_at.is_some_and(|t| t <= now) {
            KeyStatus::Expired
        } else if disabled {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        }
    }
}

/// When and from where a key was last used, and how often.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The key's source allow-list: held by the registry beside the key (`sources.rs`) and
    /// persisted in its own table, so not part of the stored record.
    #[serde(skip)]
    pub allowed_sources: Option<KeySources>,
}

impl KeyRecord {
    /// Status at instant `now`: revoked beats expired beats disabled.
    pub fn status(&self, now: Timestamp) -> KeyStatus {
        KeyStatus::of(self.revoked_at.is_some(), self.expires_at, self.disabled.is_some(), now)
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
    /// Credits to spend if the key has credits; `None` means 1 (docs/credits.md).
    pub cost: Option<u64>,
    /// Rate limits the request names, with their cost (docs/api.md, "Rate limits").
    pub ratelimits: Vec<(String, u64)>,
}

/// The verification decision for a known key at `now`, in the order docs/api.md gives:
/// revoked, expired, (disabled), then scope, resource, environment and workspace.
pub fn decide(key: &KeyView<'_>, wants: &VerifyRequirements, now: Timestamp) -> Result<(), DenyReason> {
    if key.is_revoked() {
        return Err(DenyReason::Revoked);
    }
    if key.is_expired(now) {
        return Err(DenyReason::Expired);
    }
    if key.is_disabled() {
        return Err(DenyReason::Disabled);
    }
    let scopes = key.scopes();
    for scope in &wants.scopes {
        if scopes.binary_search(scope).is_err() {
            return Err(DenyReason::MissingScope(scope.clone()));
        }
    }
    let resources = key.resources();
    if let Some(resource) = &wants.resource
        && !resources.is_empty()
        && resources.binary_search(resource).is_err()
    {
        return Err(DenyReason::ResourceNotAllowed(resource.clone()));
    }
    if let Some(environment) = wants.environment
        && environment != key.environment()
    {
        return Err(DenyReason::EnvironmentMismatch(environment));
    }
    if let Some(workspace) = &wants.workspace
        && workspace != key.workspace()
    {
        return Err(DenyReason::WorkspaceMismatch(workspace.clone()));
    }
    Ok(())
}

/// The whole registry: keys (by id, by keyed hash, by workspace), policies, idempotency
/// records. See the module docs for the layout.
#[derive(Clone, Debug, Default)]
pub struct LedgerState {
    slots: Vec<Slot>,
    /// Slot numbers, hashed by key id (SipHash with a random key: ids are partly guessable).
    by_id: HashTable<Sym>,
    id_hasher: RandomState,
    /// Slot numbers, hashed by the keyed hash's first 8 bytes (uniform and unknowable
    /// without the pepper, so no further hashing is needed).
    by_hash: HashTable<Sym>,
    by_workspace: BTreeMap<WorkspaceId, BTreeSet<KeyId>>,
    workspaces: Interner<WorkspaceId>,
    prefixes: Interner<KeyPrefix>,
    /// Scope and resource lists.
    lists: Interner<Vec<String>>,
    owners: Interner<String>,
    actors: Interner<Actor>,
    pub policies: BTreeMap<WorkspaceId, Policy>,
    /// Webhooks by workspace, as their latest `webhook_set` left them.
    pub webhooks: BTreeMap<WorkspaceId, Webhook>,
    /// Source allow-lists of keys, and workspaces' policies for them.
    pub sources: SourceRegistry,
    /// Idempotent requests carried out, by their id (see [`IdempotentResult`]).
    pub idempotency: HashMap<[u8; 32], IdempotentResult>,
    /// Credit balances of the keys that have credits (at most one per key).
    pub credits: HashMap<KeyId, crate::credits::KeyCredits>,
    /// `on_leak` choices and the leak reports already recorded (see `leaks.rs`).
    pub leaks: leaks::Leaks,
    /// Keys' own rate limits, as their latest `ratelimits_set` left them (docs/api.md).
    pub key_ratelimits: HashMap<KeyId, Vec<RateLimit>>,
    /// Workspace default rate limits, for keys without their own.
    pub workspace_ratelimits: BTreeMap<WorkspaceId, Vec<RateLimit>>,
    /// Imported keys' marks and foreign digests (docs/import.md, `imported.rs`).
    pub imported: imported::Imported,
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

/// Notifications every enabled webhook receives whatever its subscription list: a fork
/// alarm concerns every workspace of the log (docs/webhooks.md).
pub const ALWAYS_DELIVERED: [&str; 1] = ["log.fork_alarm"];

impl Webhook {
    /// Whether deliveries of `kind` are wanted now.
    pub fn wants(&self, kind: &str) -> bool {
        self.enabled
            && (self.events.is_empty()
                || ALWAYS_DELIVERED.contains(&kind)
                || self.events.iter().any(|e| e == kind))
    }
}

/// Two registries are equal when they hold the same keys (field for field), policies,
/// webhooks, idempotency records and cursor, whatever order their keys were loaded in.
impl PartialEq for LedgerState {
    fn eq(&self, other: &Self) -> bool {
        self.applied == other.applied
            && self.policies == other.policies
            && self.webhooks == other.webhooks
            && self.idempotency == other.idempotency
            && self.sources == other.sources
            && self.credits == other.credits
            && self.key_ratelimits == other.key_ratelimits
            && self.workspace_ratelimits == other.workspace_ratelimits
            && self.imported == other.imported
            && self.slots.len() == other.slots.len()
            && self.keys().all(|k| other.view(&k.key_id()).is_some_and(|o| o.record() == k.record()))
    }
}

impl Eq for LedgerState {}

/// What an idempotent request did, so that a retry can be answered without repeating it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentResult {
    pub fingerprint: [u8; 32],
    pub at: Timestamp,
    pub key_ids: Vec<KeyId>,
}

fn hash_of_keyed_hash(hash: &KeyHash) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = hash.0;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

impl LedgerState {
    /// An empty registry with room for `keys` keys (no rehashing while loading them).
    pub fn with_capacity(keys: usize) -> Self {
        let mut state = Self::default();
        state.slots.reserve_exact(keys);
        state.by_id = HashTable::with_capacity(keys);
        state.by_hash = HashTable::with_capacity(keys);
        state
    }

    /// Keys in the registry (revoked and expired ones included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot_of(&self, key_id: &KeyId) -> Option<Sym> {
        let slots = &self.slots;
        let eq = |s: &Sym| slots.get(*s as usize).is_some_and(|slot| slot.key_id == *key_id);
        self.by_id.find(self.id_hasher.hash_one(key_id), eq).copied()
    }

    fn slot_of_hash(&self, hash: &KeyHash) -> Option<Sym> {
        let slots = &self.slots;
        let eq = |s: &Sym| slots.get(*s as usize).is_some_and(|slot| slot.hash == *hash);
        self.by_hash.find(hash_of_keyed_hash(hash), eq).copied()
    }

    fn view_of(&self, slot: Option<Sym>) -> Option<KeyView<'_>> {
        Some(KeyView { state: self, slot: self.slots.get(slot? as usize)? })
    }

    fn slot_mut(&mut self, key_id: &KeyId) -> Option<&mut Slot> {
        let at = self.slot_of(key_id)?;
        self.slots.get_mut(at as usize)
    }

    /// A key, read in place.
    pub fn view(&self, key_id: &KeyId) -> Option<KeyView<'_>> {
        self.view_of(self.slot_of(key_id))
    }

    /// The key whose secret has this keyed hash, read in place.
    pub fn view_by_hash(&self, hash: &KeyHash) -> Option<KeyView<'_>> {
        self.view_of(self.slot_of_hash(hash))
    }

    /// The id of the key whose secret has this keyed hash (the verify path's lookup).
    pub fn id_by_hash(&self, hash: &KeyHash) -> Option<KeyId> {
        self.view_by_hash(hash).map(|k| k.key_id())
    }

    /// A key's full record.
    pub fn key(&self, key_id: &KeyId) -> Option<KeyRecord> {
        self.view(key_id).map(|k| k.record())
    }

    pub fn key_by_hash(&self, hash: &KeyHash) -> Option<KeyRecord> {
        self.view_by_hash(hash).map(|k| k.record())
    }

    /// Every key, in the order they were created (or loaded).
    pub fn keys(&self) -> impl Iterator<Item = KeyView<'_>> + '_ {
        self.slots.iter().map(|slot| KeyView { state: self, slot })
    }

    /// The rate limits a key is subject to: its own list if it has a non-empty one, else its
    /// workspace's default (docs/api.md, "Rate limits"). An empty own list (`[]` set on the
    /// key) removes the key's own limits; it never exempts the key from the default.
    pub fn ratelimits_of(&self, key_id: &KeyId, workspace: &WorkspaceId) -> &[RateLimit] {
        self.own_ratelimits(key_id)
            .or_else(|| self.workspace_ratelimits.get(workspace).map(Vec::as_slice))
            .unwrap_or_default()
    }

    /// A key's own rate limits, if it has any (see [`Self::ratelimits_of`]).
    pub fn own_ratelimits(&self, key_id: &KeyId) -> Option<&[RateLimit]> {
        self.key_ratelimits.get(key_id).map(Vec::as_slice).filter(|list| !list.is_empty())
    }

    pub fn policy(&self, workspace: &WorkspaceId) -> Policy {
        self.policies.get(workspace).cloned().unwrap_or_default()
    }

    /// Workspaces holding at least one key.
    pub fn workspaces_with_keys(&self) -> impl Iterator<Item = &WorkspaceId> + '_ {
        self.by_workspace.keys()
    }

    /// Keys of a workspace, oldest first (ids are time-ordered).
    pub fn workspace_keys<'a>(&'a self, workspace: &WorkspaceId) -> impl Iterator<Item = KeyView<'a>> + 'a {
        self.by_workspace.get(workspace).into_iter().flatten().filter_map(|id| self.view(id))
    }

    pub fn live_count(&self, workspace: &WorkspaceId, now: Timestamp) -> usize {
        self.workspace_keys(workspace).filter(|k| k.is_live(now)).count()
    }

    /// Inserts or replaces a record (used when loading a persisted projection).
    pub fn insert(&mut self, record: KeyRecord) {
        let rare = Rare {
            revoked_reason: record.revoked_reason,
            disabled_reason: record.disabled.clone().flatten(),
            rotated_from: record.rotated_from,
            rotated_to: record.rotated_to,
        };
        let mut slot = Slot {
            key_id: record.key_id,
            hash: record.hash,
            created_at: record.created_at.micros(),
            expires_at: 0,
            lifetime: 0,
            revoked_at: record.revoked_at.map_or(0, Timestamp::micros),
            last_used_at: 0,
            use_count: 0,
            last_ip: None,
            workspace: self.workspaces.intern(&record.workspace),
            prefix: self.prefixes.intern(&record.prefix),
            scopes: self.lists.intern(&record.scopes),
            resources: self.lists.intern(&record.resources),
            owner: record.owner.as_ref().map_or(NO_OWNER, |o| self.owners.intern(o)),
            created_by: self.actors.intern(&record.created_by),
            text: Box::default(),
            hint_len: 0,
            name_len: 0,
            flags: 0,
            environment: record.environment,
            rare: (rare != Rare::default()).then(|| Box::new(rare)),
        };
        slot.set_text(&record.hint, &record.name, &record.metadata);
        slot.set_expires_at(record.expires_at);
        slot.set_lifetime(record.lifetime);
        slot.set_flag(REVOKED, record.revoked_at.is_some());
        slot.set_flag(DISABLED, record.disabled.is_some());
        slot.set_flag(EXPIRY_RECORDED, record.expiry_recorded);
        slot.set_last_used(record.last_used);
        self.by_workspace.entry(record.workspace).or_default().insert(record.key_id);
        self.place(slot);
    }

    /// Stores `slot`, replacing the slot of the same key id if there is one.
    fn place(&mut self, slot: Slot) {
        let hash_key = hash_of_keyed_hash(&slot.hash);
        let existing = self.slot_of(&slot.key_id);
        let Self { slots, by_id, by_hash, id_hasher, .. } = self;
        if let Some(at) = existing {
            let old_hash = slots.get(at as usize).map(|s| s.hash);
            if old_hash != Some(slot.hash) {
                if let Some(old) = old_hash
                    && let Ok(entry) = by_hash.find_entry(hash_of_keyed_hash(&old), |s| *s == at)
                {
                    entry.remove();
                }
                by_hash.insert_unique(hash_key, at, |s| {
                    slots.get(*s as usize).map_or(0, |s| hash_of_keyed_hash(&s.hash))
                });
            }
            if let Some(stored) = slots.get_mut(at as usize) {
                *stored = slot;
            }
            return;
        }
        let at = sym(slots.len());
        let id_hash = id_hasher.hash_one(slot.key_id);
        slots.push(slot);
        let rehash_id = |s: &Sym| slots.get(*s as usize).map_or(0, |s| id_hasher.hash_one(s.key_id));
        by_id.insert_unique(id_hash, at, rehash_id);
        let rehash_hash = |s: &Sym| slots.get(*s as usize).map_or(0, |s| hash_of_keyed_hash(&s.hash));
        by_hash.insert_unique(hash_key, at, rehash_hash);
    }

    /// Applies one event. Events must come in seq order; an event about an unknown key is
    /// ignored (it cannot occur in a log the engine wrote).
    pub fn apply(&mut self, event: &Event) {
        self.applied = event.seq + 1;
        let at = event.at;
        crate::credits::fold(&mut self.credits, event);
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
                allowed_sources: None,
            }),
            Payload::Used(_) | Payload::Metered(_) | Payload::Counted(_) => {
                let Some(u) = event.payload.usage() else { return };
                if let Some(key) = self.slot_mut(&u.key_id) {
                    let mut last = key.last_used();
                    record_use(&mut last, at, &u.context);
                    key.set_last_used(last);
                }
            }
            Payload::Denied(_) => {}
            Payload::Rotated(r) => {
                if let Some(key) = self.slot_mut(&r.key_id) {
                    key.rare_mut().rotated_to = Some(r.rotated_to);
                    if let Some(until) = r.valid_until {
                        let current = key.time(HAS_EXPIRY, key.expires_at);
                        key.set_expires_at(Some(current.map_or(until, |e| e.min(until))));
                    }
                }
            }
            Payload::Revoked(r) => {
                if let Some(key) = self.slot_mut(&r.key_id)
                    && !key.flag(REVOKED)
                {
                    key.set_flag(REVOKED, true);
                    key.revoked_at = at.micros();
                    if r.reason.is_some() {
                        key.rare_mut().revoked_reason = r.reason.clone();
                    }
                }
            }
            Payload::Expired(k) => {
                if let Some(key) = self.slot_mut(&k.key_id) {
                    key.set_flag(EXPIRY_RECORDED, true);
                }
            }
            Payload::PolicySet(p) => {
                self.policies.insert(p.workspace.clone(), p.policy.clone());
            }
            Payload::Updated(u) => {
                let owner = u.owner.as_ref().map(|o| o.as_ref().map_or(NO_OWNER, |o| self.owners.intern(o)));
                let scopes = u.scopes.as_ref().map(|s| self.lists.intern(s));
                let resources = u.resources.as_ref().map(|r| self.lists.intern(r));
                if let Some(key) = self.slot_mut(&u.key_id) {
                    if u.name.is_some() || u.metadata.is_some() {
                        let hint = key.hint().to_owned();
                        let name = u.name.clone().unwrap_or_else(|| key.name().to_owned());
                        let metadata = u.metadata.clone().unwrap_or_else(|| key.metadata().to_owned());
                        key.set_text(&hint, &name, &metadata);
                    }
                    if let Some(owner) = owner {
                        key.owner = owner;
                    }
                    if let Some(expires_at) = u.expires_at {
                        key.set_expires_at(expires_at);
                        key.set_lifetime(expires_at.map(|e| e.micros().saturating_sub(key.created_at)));
                        key.set_flag(EXPIRY_RECORDED, false);
                    }
                    if let Some(scopes) = scopes {
                        key.scopes = scopes;
                    }
                    if let Some(resources) = resources {
                        key.resources = resources;
                    }
                }
            }
            Payload::Disabled(d) => {
                if let Some(key) = self.slot_mut(&d.key_id) {
                    key.set_flag(DISABLED, true);
                    if d.reason.is_some() || key.rare.is_some() {
                        key.rare_mut().disabled_reason = d.reason.clone();
                    }
                }
            }
            Payload::Enabled(k) => {
                if let Some(key) = self.slot_mut(&k.key_id) {
                    key.set_flag(DISABLED, false);
                    if let Some(rare) = key.rare.as_deref_mut() {
                        rare.disabled_reason = None;
                    }
                }
            }
            Payload::Lookup(_) | Payload::CreditsSet(_) | Payload::CreditsRefilled(_) => {}
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
            Payload::SourcesSet(set) => self.sources.apply(set),
            Payload::RateLimitsSet(r) => match r.key_id {
                Some(key_id) => {
                    self.key_ratelimits.insert(key_id, r.limits.clone());
                }
                None => {
                    self.workspace_ratelimits.insert(r.workspace.clone(), r.limits.clone());
                }
            },
            Payload::Idempotency(record) => {
                let result =
                    IdempotentResult { fingerprint: record.fingerprint, at, key_ids: record.key_ids.clone() };
                self.idempotency.insert(record.id, result);
            }
            Payload::LeakReported(report) => self.leaks.apply_report(report),
            Payload::LeakPolicySet(set) => self.leaks.apply_policy(set),
            Payload::KeyImported(i) => self.apply_imported(i, at, &event.actor),
            Payload::KeyRehashed(r) => {
                if let Some(mut record) = self.key(&r.key_id) {
                    record.hash = r.hash;
                    self.insert(record);
                    self.imported.rehashed(&r.key_id, at);
                }
            }
        }
    }
}

impl LedgerState {
    /// A `key_imported` event: the key as `Created` would make it, under a placeholder
    /// keyed hash, and its mark (see `imported.rs`).
    fn apply_imported(&mut self, i: &keyledger_core::KeyImported, at: Timestamp, actor: &Actor) {
        self.insert(KeyRecord {
            key_id: i.key_id,
            workspace: i.workspace.clone(),
            name: i.name.clone(),
            hash: imported::placeholder_hash(&i.key_id, &i.foreign),
            hint: imported::IMPORTED_HINT.into(),
            prefix: KeyPrefix::default_prefix(),
            environment: i.environment,
            scopes: i.scopes.clone(),
            resources: i.resources.clone(),
            owner: i.owner.clone(),
            metadata: i.metadata.clone(),
            created_at: at,
            created_by: actor.clone(),
            expires_at: i.expires_at,
            lifetime: i.expires_at.map(|e| e.micros().saturating_sub(at.micros())),
            revoked_at: None,
            revoked_reason: None,
            rotated_from: None,
            rotated_to: None,
            disabled: None,
            expiry_recorded: false,
            last_used: LastUsed::default(),
            allowed_sources: None,
        });
        let mark = imported::ImportMark {
            foreign: i.foreign,
            external_id: i.external_id.clone(),
            imported_at: at,
            rehashed_at: None,
        };
        self.imported.insert(i.key_id, mark);
    }
}

/// Folds one `used` event into a key's last-use summary.
pub fn record_use(last: &mut LastUsed, at: Timestamp, context: &UsageContext) {
    last.at = Some(at);
    last.ip = context.ip;
    last.count += 1;
}

/// Why [`LedgerState::replay`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] keyledger_log::segment::SegmentError),
    #[error(transparent)]
    Decode(#[from] keyledger_core::DecodeError),
}

impl LedgerState {
    /// Applies the log's events from [`Self::applied`] up to `end` (exclusive), in seq order,
    /// through [`Self::apply`]: the one replay loop, behind both the writer's rewind after a
    /// failure and `log verify`'s comparison. Stops early at the end of `log`.
    pub fn replay(&mut self, log: &SegmentReader, end: u64) -> Result<(), ReplayError> {
        let count = usize::try_from(end.saturating_sub(self.applied)).unwrap_or(usize::MAX);
        for record in log.iter(self.applied).take(count) {
            let (_, bytes) = record?;
            self.apply(&decode_event(&bytes)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn a_fork_alarm_reaches_every_enabled_webhook_whatever_it_subscribes_to() {
        let mut webhook = Webhook {
            url: "https://hooks.example/k".into(),
            events: vec!["key.revoked".into()],
            enabled: true,
            set_seq: 1,
            set_at: Timestamp(1_000),
            set_by: Actor::System,
            since_seq: 1,
        };
        assert!(webhook.wants("key.revoked") && !webhook.wants("key.created"));
        assert!(webhook.wants("log.fork_alarm"), "a fork alarm cannot be unsubscribed");
        webhook.enabled = false;
        assert!(!webhook.wants("log.fork_alarm") && !webhook.wants("key.revoked"));
    }

    fn record(n: u8) -> KeyRecord {
        KeyRecord {
            key_id: KeyId::from_bytes([n; 16]),
            workspace: "acme".parse().unwrap(),
            name: format!("service {n}"),
            hash: KeyHash([n; 32]),
            hint: "kl_live_…abcd".into(),
            prefix: "kl".parse().unwrap(),
            environment: Environment::Live,
            scopes: vec!["read".into(), "write".into()],
            resources: vec![],
            owner: Some("team-a".into()),
            metadata: "{}".into(),
            created_at: Timestamp(1_000),
            created_by: Actor::System,
            expires_at: None,
            lifetime: None,
            revoked_at: None,
            revoked_reason: None,
            rotated_from: None,
            rotated_to: None,
            disabled: None,
            expiry_recorded: false,
            last_used: LastUsed::default(),
            allowed_sources: None,
        }
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zé… {}\":0-9]{0,12}"
    }

    prop_compose! {
        fn any_record()(
            n in any::<u8>(),
            name in text(), hint in text(), metadata in text(),
            test_env in any::<bool>(),
            scopes in proptest::collection::vec("[a-z:]{1,6}", 0..3),
            resources in proptest::collection::vec("[a-z]{1,6}", 0..3),
            owner in proptest::option::of(text()),
            created_at in any::<i64>(),
            admin in proptest::option::of(any::<u8>()),
            expires_at in proptest::option::of(any::<i64>()),
            lifetime in proptest::option::of(any::<i64>()),
            revoked_at in proptest::option::of(any::<i64>()),
            revoked_reason in proptest::option::of(text()),
            rotated_from in proptest::option::of(any::<u8>()),
            rotated_to in proptest::option::of(any::<u8>()),
            disabled in proptest::option::of(proptest::option::of(text())),
            expiry_recorded in any::<bool>(),
            used_at in proptest::option::of(any::<i64>()),
            ip in proptest::option::of(any::<[u8; 4]>()),
            count in any::<u64>(),
        ) -> KeyRecord {
            KeyRecord {
                key_id: KeyId::from_bytes([n; 16]),
                workspace: if n % 2 == 0 { WorkspaceId::ledger() } else { "acme".parse().unwrap() },
                name,
                hash: KeyHash([n; 32]),
                hint,
                prefix: "kl".parse().unwrap(),
                environment: if test_env { Environment::Test } else { Environment::Live },
                scopes,
                resources,
                owner,
                metadata,
                created_at: Timestamp(created_at),
                created_by: admin.map_or(Actor::System, |a| Actor::Admin(KeyId::from_bytes([a; 16]))),
                expires_at: expires_at.map(Timestamp),
                lifetime,
                revoked_at: revoked_at.map(Timestamp),
                revoked_reason,
                rotated_from: rotated_from.map(|r| KeyId::from_bytes([r; 16])),
                rotated_to: rotated_to.map(|r| KeyId::from_bytes([r; 16])),
                disabled,
                expiry_recorded,
                last_used: LastUsed {
                    at: used_at.map(Timestamp),
                    ip: ip.map(IpAddr::from),
                    count,
                },
                allowed_sources: None,
            }
        }
    }

    proptest! {
        /// The compact slot loses nothing: every field of every record comes back as stored.
        #[test]
        fn a_record_comes_back_exactly_as_inserted(records in proptest::collection::vec(any_record(), 1..8)) {
            let mut state = LedgerState::default();
            let mut expected = BTreeMap::new();
            for record in records {
                expected.insert(record.key_id, record.clone());
                state.insert(record);
            }
            prop_assert_eq!(state.len(), expected.len());
            for (id, record) in &expected {
                prop_assert_eq!(state.key(id), Some(record.clone()));
                prop_assert_eq!(state.key_by_hash(&record.hash), Some(record.clone()));
                let view = state.view(id).unwrap();
                prop_assert_eq!(view.status(Timestamp(0)), record.status(Timestamp(0)));
                prop_assert_eq!(view.is_live(Timestamp(0)), record.is_live(Timestamp(0)));
                let verified = view.verified();
                prop_assert_eq!(verified.key_id, record.key_id);
                prop_assert_eq!(&*verified.workspace, &record.workspace);
                prop_assert_eq!(verified.environment, record.environment);
                prop_assert_eq!(&*verified.scopes, &record.scopes);
                prop_assert_eq!(verified.owner.as_deref(), record.owner.as_ref());
                prop_assert_eq!(verified.expires_at, record.expires_at);
            }
        }
    }

    #[test]
    fn a_verified_key_shares_the_interned_values() {
        let mut state = LedgerState::default();
        state.insert(record(1));
        let verified = state.view(&KeyId::from_bytes([1; 16])).unwrap().verified();
        assert!(
            Arc::ptr_eq(&verified.scopes, &state.lists.values[0]),
            "the scope list is shared, not copied"
        );
        assert!(Arc::ptr_eq(&verified.workspace, &state.workspaces.values[0]));
        assert!(Arc::ptr_eq(verified.owner.as_ref().unwrap(), &state.owners.values[0]));
    }

    #[test]
    fn shared_values_are_stored_once() {
        let mut state = LedgerState::default();
        for n in 0..100 {
            state.insert(record(n));
        }
        assert_eq!(state.len(), 100);
        assert_eq!(state.lists.values.len(), 2, "the scope list and the empty resource list, once each");
        assert_eq!(state.owners.values.len(), 1);
        assert_eq!(state.workspaces.values.len(), 1);
        assert_eq!(state.workspace_keys(&"acme".parse().unwrap()).count(), 100);
    }

    #[test]
    fn reinserting_a_key_replaces_it_and_its_hash() {
        let mut state = LedgerState::default();
        state.insert(record(1));
        state.insert(record(2));
        let mut changed = record(1);
        changed.hash = KeyHash([9; 32]);
        changed.name = "renamed".into();
        state.insert(changed.clone());
        assert_eq!(state.len(), 2);
        assert_eq!(state.key(&changed.key_id), Some(changed.clone()));
        assert_eq!(state.id_by_hash(&KeyHash([9; 32])), Some(changed.key_id));
        assert_eq!(state.id_by_hash(&KeyHash([1; 32])), None, "the old hash no longer finds it");
        assert_eq!(state.id_by_hash(&KeyHash([2; 32])), Some(KeyId::from_bytes([2; 16])));
    }

    fn event(seq: u64, at: i64, payload: Payload) -> Event {
        Event {
            seq,
            at: Timestamp(at),
            actor: Actor::System,
            request_id: keyledger_core::RequestId::from_bytes([0; 16]),
            payload,
        }
    }

    #[test]
    fn updates_disables_and_uses_change_only_their_fields() {
        let mut state = LedgerState::default();
        let mut expected = record(3);
        state.insert(expected.clone());
        let (key_id, workspace) = (expected.key_id, expected.workspace.clone());
        let payload = Payload::Updated(keyledger_core::Updated {
            key_id,
            workspace: workspace.clone(),
            name: Some("new name".into()),
            owner: Some(None),
            metadata: None,
            expires_at: Some(Some(Timestamp(5_000))),
            scopes: Some(vec!["read".into()]),
            resources: Some(vec!["orders".into()]),
        });
        state.apply(&event(0, 2_000, payload));
        expected.name = "new name".into();
        expected.owner = None;
        expected.expires_at = Some(Timestamp(5_000));
        expected.lifetime = Some(4_000);
        expected.scopes = vec!["read".into()];
        expected.resources = vec!["orders".into()];
        assert_eq!(state.key(&key_id), Some(expected.clone()));

        let reason = Some("paused".to_string());
        let disabled =
            keyledger_core::Disabled { key_id, workspace: workspace.clone(), reason: reason.clone() };
        state.apply(&event(1, 2_100, Payload::Disabled(disabled)));
        expected.disabled = Some(reason);
        assert_eq!(state.key(&key_id), Some(expected.clone()));
        let enabled = keyledger_core::KeyRef { key_id, workspace: workspace.clone() };
        state.apply(&event(2, 2_200, Payload::Enabled(enabled)));
        expected.disabled = None;
        assert_eq!(state.key(&key_id), Some(expected.clone()));

        let context = UsageContext { ip: Some(IpAddr::from([10, 0, 0, 1])), ..Default::default() };
        let usage = keyledger_core::Usage { key_id, workspace: workspace.clone(), context };
        state.apply(&event(3, 2_300, Payload::Used(usage)));
        expected.last_used =
            LastUsed { at: Some(Timestamp(2_300)), ip: Some(IpAddr::from([10, 0, 0, 1])), count: 1 };
        assert_eq!(state.key(&key_id), Some(expected.clone()));
        assert_eq!(state.applied, 4);

        let revoked = keyledger_core::Revoked { key_id, workspace, reason: Some("leaked".into()) };
        state.apply(&event(4, 2_400, Payload::Revoked(revoked)));
        expected.revoked_at = Some(Timestamp(2_400));
        expected.revoked_reason = Some("leaked".into());
        assert_eq!(state.key(&key_id), Some(expected));
        let wants = VerifyRequirements::default();
        assert_eq!(decide(&state.view(&key_id).unwrap(), &wants, Timestamp(2_500)), Err(DenyReason::Revoked));
    }

    #[test]
    fn equality_ignores_load_order() {
        let (mut a, mut b) = (LedgerState::default(), LedgerState::default());
        for n in 0..5 {
            a.insert(record(n));
        }
        for n in (0..5).rev() {
            b.insert(record(n));
        }
        assert_eq!(a, b);
        let mut c = record(4);
        c.name = "other".into();
        b.insert(c);
        assert_ne!(a, b);
    }
}
