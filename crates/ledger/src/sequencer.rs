//! The writer-thread half of the engine: decides each command against the registry and
//! turns it into events.
//!
//! Because this runs on the log's single writer thread, "check the rules" and "append the
//! events" are one atomic step: no other command can slip in between. That is what makes
//! revocation linearizable (a verification sequenced after a revoke sees it, whatever state
//! its HTTP handler read earlier) and policies exact (`max_active_keys` can never be
//! exceeded by two concurrent creates).
//!
//! Each event is applied to the shared [`LedgerState`] as soon as it is pushed, under the
//! state's write lock, so readers never see a half-applied command.
//!
//! Who may do what to which key is decided by [`crate::authority`], called here for every
//! command that issues or changes a key, so no handler can forget it.

use crate::authority::{
    Authority, Target, is_full_admin, is_last_full_admin, is_lasting_full_admin, keep_last_full_admin,
};
use crate::commands::{
    Caller, Command, Expiry, IdempotencyTag, IssuedSecret, KeyChanges, KeyControls, KeySpec, PolicyControls,
    RevokedAll, Rotation,
};
use crate::error::{AuthError, LedgerError};
use crate::state::{KeyRecord, KeyStatus, LedgerState, VerifyRequirements, Webhook, decide_with_source};
use crate::verdict::Verdict;
use keyledger_core::{
    Actor, Created, Denial, DenyReason, Disabled, KeyId, KeyRef, Payload, Policy, PolicySet, RequestId,
    Revoked, Rotated, Timestamp, Updated, UsageContext, WorkspaceId,
};
use keyledger_log::{Batch, Sequencer};
use std::sync::{Arc, RwLock};

pub struct LedgerSequencer {
    pub(crate) state: Arc<RwLock<LedgerState>>,
    /// The persisted projections, from which the state is rebuilt when the writer fails.
    pub(crate) projections_db: crate::projection::ProjectionsDb,
    /// Rate-limit windows: memory kept in step with the log, recounted from it on a start
    /// and a rewind (kept on a rewind during a rolling upgrade; docs/api.md, "Rate limits").
    pub(crate) counters: crate::ratelimit::RateCounters,
    /// Whether a `used` event names the rate-limit allowance it spent (a `counted` one), for
    /// the other nodes and a restart to count; off while older nodes that cannot read it
    /// share the store (`--rolling-upgrade`).
    pub(crate) spends_in_events: bool,
}

impl LedgerSequencer {
    /// The registry as of the first `records` events of the log: the persisted projection
    /// (whose cursor never passes what was durable, so never what remains) plus a replay of
    /// the rest. If the projection cannot be read (e.g. its store failed on the same full
    /// disk), the whole log is replayed instead.
    fn rebuild(
        &self,
        log: &keyledger_log::segment::SegmentReader,
        records: u64,
    ) -> Result<LedgerState, String> {
        let loaded = self.projections_db.get().and_then(|db| crate::projection::load_state_from(db.as_ref()));
        let mut state = match loaded {
            Ok(state) if state.applied <= records => state,
            Ok(_) => LedgerState::default(),
            Err(error) => {
                tracing::warn!(%error, "projections unreadable; rebuilding the registry from the whole log");
                LedgerState::default()
            }
        };
        state.replay(log, records).map_err(|e| e.to_string())?;
        Ok(state)
    }
}

/// [`emit`] for the commands decided in their own files (`leaks.rs`).
pub(crate) fn emit_event(
    state: &mut LedgerState,
    batch: &mut Batch,
    actor: &Actor,
    request_id: RequestId,
    payload: Payload,
) -> u64 {
    emit(state, batch, actor, request_id, payload)
}

/// Pushes an event to the batch and applies it to the state at once.
pub(crate) fn emit(
    state: &mut LedgerState,
    batch: &mut Batch,
    actor: &Actor,
    caller_request: keyledger_core::RequestId,
    payload: Payload,
) -> u64 {
    let event = batch.push(actor.clone(), caller_request, payload);
    state.apply(event);
    event.seq
}

impl Sequencer for LedgerSequencer {
    type Command = Command;
    /// Each command carries its own typed responder (see [`crate::commands`]).
    type Reply = ();

    /// The registry and the rate-limit counters as the log's first `records` events leave
    /// them: what a failed batch had decided goes, other nodes' events read back during
    /// the recovery count.
    ///
    /// During a rolling upgrade the log names no spends of this node, so the counters are
    /// kept as they are (a refused command's spends with them, the safe side), as the
    /// previous version kept them.
    fn rewind(&mut self, log: &keyledger_log::segment::SegmentReader, records: u64) -> Result<(), String> {
        let state = self.rebuild(log, records)?;
        let counters = self
            .spends_in_events
            .then(|| crate::sequencer_ratelimit::recount(&state, log, records, Timestamp::now()));
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        if let Some(counters) = counters {
            self.counters = counters?;
        }
        Ok(())
    }

    /// The registry rolled back at once (verification reads it); the rate-limit counters,
    /// which only the writer reads, are left to the recovery's rewind, not recounted twice.
    fn refused(&mut self, log: &keyledger_log::segment::SegmentReader, records: u64) -> Result<(), String> {
        let state = self.rebuild(log, records)?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        Ok(())
    }

    /// Another node's event, read from the shared store before this node decides anything
    /// after it: applied exactly as a replay applies it, so the registry is current.
    fn apply_foreign(&mut self, event: &keyledger_core::Event) -> Result<(), String> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.applied != event.seq {
            return Err(format!("the registry is at {} but the next event is {}", state.applied, event.seq));
        }
        state.apply(event);
        crate::sequencer_ratelimit::count_foreign(&mut self.counters, event);
        Ok(())
    }

    /// Decides `command` and hands its answer to the command's own responder; the engine
    /// reads it once the writer has acknowledged the command (its events as durable as
    /// asked).
    fn sequence(&mut self, command: Command, batch: &mut Batch) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        let now = batch.now();
        match command {
            Command::Verify { request_id, key_id, wants, context, source, rehash, reply } => {
                let limits = crate::sequencer_ratelimit::Limiting {
                    counters: &mut self.counters,
                    spends_in_events: self.spends_in_events,
                };
                let verdict = verify(state, limits, batch, request_id, key_id, &wants, context, source, now);
                if let (Ok(verdict), Some(hash)) = (&verdict, rehash) {
                    crate::import::rehash_on_use(state, batch, request_id, key_id, verdict, hash);
                }
                reply.send(verdict)
            }
            Command::Import { caller, workspace, keys, idempotency, reply } => reply
                .send(crate::import::import_keys(state, batch, &caller, workspace, keys, idempotency, now)),
            Command::Create { caller, workspace, spec, secret, idempotency, controls, reply } => {
                let answer =
                    create_key(state, batch, &caller, workspace, spec, secret, idempotency, controls, now);
                reply.send(answer)
            }
            Command::Rotate { caller, key_id, overlap, secret, idempotency, reply } => {
                reply.send(rotate_key(state, batch, &caller, key_id, overlap, secret, idempotency, now))
            }
            Command::Revoke { caller, key_id, reason, reply } => {
                reply.send(revoke(state, batch, &caller, key_id, reason, now))
            }
            Command::RevokeAll { caller, workspace, reason, idempotency, reply } => {
                reply.send(revoke_all(state, batch, &caller, workspace, reason, idempotency, now))
            }
            Command::SetPolicy { caller, workspace, policy, controls, reply } => {
                reply.send(set_policy(state, batch, &caller, workspace, policy, controls, now))
            }
            Command::Update { caller, key_id, changes, reply } => {
                let answer = check_actor(state, &caller, now)
                    .and_then(|()| Authority::of(state, &caller))
                    .and_then(|authority| update(state, batch, &caller, &authority, key_id, changes, now));
                reply.send(answer)
            }
            Command::SetDisabled { caller, key_id, disabled, reason, reply } => {
                reply.send(set_disabled(state, batch, &caller, key_id, disabled, reason, now))
            }
            Command::SetWebhook { caller, workspace, config, reply } => {
                reply.send(set_webhook(state, batch, &caller, workspace, config, now))
            }
            Command::SetCredits { caller, key_id, change, reply } => {
                reply.send(crate::credits::top_up(state, batch, &caller, key_id, change, now))
            }
            Command::ReportLeaks { request_id, reporter, reports, only_active, reply } => reply.send(Ok(
                crate::leaks::report_leaks(state, batch, request_id, reporter, reports, only_active, now),
            )),
            Command::SetRateLimits { caller, workspace, key_id, limits, reply } => {
                reply.send(crate::sequencer_ratelimit::set_ratelimits(
                    state, batch, &caller, workspace, key_id, limits, now,
                ))
            }
            Command::RecordLookups { caller, lookups, reply } => {
                let answer = check_actor(state, &caller, now).map(|()| {
                    let mut last = 0;
                    for lookup in lookups {
                        last = emit(state, batch, &caller.actor, caller.request_id, Payload::Lookup(lookup));
                    }
                    last
                });
                reply.send(answer)
            }
        }
    }
}

/// Decides a verification of a known key and records it: one `used` or `denied` event
/// (after an `expired` one the first time an expired key is presented).
#[allow(clippy::too_many_arguments)]
pub(crate) fn verify(
    state: &mut LedgerState,
    limits: crate::sequencer_ratelimit::Limiting<'_>,
    batch: &mut Batch,
    request_id: RequestId,
    key_id: KeyId,
    wants: &VerifyRequirements,
    context: UsageContext,
    source: Option<std::net::IpAddr>,
    now: Timestamp,
) -> Result<Verdict, LedgerError> {
    let Some(key) = state.view(&key_id) else {
        return Err(LedgerError::NotFound("unknown key".into()));
    };
    let outcome = decide_with_source(&key, wants, source, now);
    let workspace = key.workspace().clone();
    let mut ratelimits = Vec::new();
    if outcome == Err(DenyReason::Expired) && !key.expiry_recorded() {
        // A lifecycle event: durable before the answer, like every other.
        let payload = Payload::Expired(KeyRef { key_id, workspace: workspace.clone() });
        emit(state, batch, &Actor::System, request_id, payload);
        batch.require_sync();
    }
    let cost = wants.cost.unwrap_or(1);
    let (outcome, payload) = match outcome {
        Ok(()) => {
            match crate::credits::spend(state, batch, request_id, key_id, &workspace, cost, context, now) {
                // Rate limits last, once every other check (revoked first, credits too) allows
                // the verification, so a refused one spends no allowance (docs/api.md).
                Ok(payload) => crate::sequencer_ratelimit::apply_last(
                    state,
                    limits,
                    key_id,
                    &workspace,
                    wants,
                    payload,
                    &mut ratelimits,
                    now,
                ),
                Err(context) => {
                    let reason = DenyReason::UsageExceeded;
                    (Err(reason.clone()), Payload::Denied(Denial { key_id, workspace, reason, context }))
                }
            }
        }
        Err(reason) => (Err(reason.clone()), Payload::Denied(Denial { key_id, workspace, reason, context })),
    };
    let seq = emit(state, batch, &Actor::Verifier, request_id, payload);
    let key = state.view(&key_id).ok_or_else(|| LedgerError::Internal("key vanished".into()))?.verified();
    let credits_remaining = state.credits.get(&key_id).map(|c| c.remaining);
    let ratelimits = (!ratelimits.is_empty()).then(|| Box::new(ratelimits));
    Ok(Verdict { key, outcome, seq, credits_remaining, ratelimits })
}

#[allow(clippy::too_many_arguments)]
fn create_key(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    workspace: WorkspaceId,
    spec: KeySpec,
    secret: IssuedSecret,
    idempotency: Option<IdempotencyTag>,
    controls: KeyControls,
    now: Timestamp,
) -> Result<KeyRecord, LedgerError> {
    check_actor(state, caller, now)?;
    let authority = Authority::of(state, caller)?;
    // The authority rule first, so that a replay never hands a secret to a caller that
    // could no longer issue the key (docs/security.md, "Request bounds"). "Must be in the
    // future" is left to `create`: an honest retry whose `expires_at` has passed meanwhile
    // still gets its replay.
    let KeyControls { sources, ratelimits } = controls;
    may_issue(state, caller, &authority, &workspace, &spec, sources.as_deref(), expiry_at(spec.expiry, now))?;
    check_idempotency(state, idempotency.as_ref(), now)?;
    let ratelimits = ratelimits.filter(|limits| !limits.is_empty());
    if let Some(limits) = &ratelimits {
        crate::sequencer_ratelimit::check_list(&workspace, limits)?;
    }
    let key = create(state, batch, caller, &authority, workspace.clone(), spec, secret, None, sources, now)?;
    if let Some(limits) = ratelimits {
        crate::sequencer_ratelimit::set_on_create(state, batch, caller, &key, limits);
    }
    record_idempotency(state, batch, caller, idempotency, workspace, vec![key.key_id]);
    find(state, &key.key_id)
}

#[allow(clippy::too_many_arguments)]
fn rotate_key(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    key_id: KeyId,
    overlap: i64,
    secret: IssuedSecret,
    idempotency: Option<IdempotencyTag>,
    now: Timestamp,
) -> Result<Rotation, LedgerError> {
    check_actor(state, caller, now)?;
    let authority = Authority::of(state, caller)?;
    // As for a create: the caller must still be allowed to rotate the key, and to give the
    // successor its expiry, before a replay is considered.
    may_rotate(state, &authority, &key_id, now)?;
    check_idempotency(state, idempotency.as_ref(), now)?;
    let rotation = rotate(state, batch, caller, &authority, key_id, overlap, secret, now)?;
    let (workspace, new_key) = (rotation.key.workspace.clone(), rotation.key.key_id);
    record_idempotency(state, batch, caller, idempotency, workspace, vec![new_key]);
    Ok(rotation)
}

fn revoke(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    key_id: KeyId,
    reason: Option<String>,
    now: Timestamp,
) -> Result<KeyRecord, LedgerError> {
    check_actor(state, caller, now)?;
    let authority = Authority::of(state, caller)?;
    let key = act_on(state, &authority, &key_id, "revoke")?;
    if key.revoked_at.is_none() {
        keep_last_full_admin(state, &key_id, now, "revoking")?;
        let payload = Payload::Revoked(Revoked { key_id, workspace: key.workspace.clone(), reason });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    }
    find(state, &key_id)
}

fn revoke_all(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    workspace: WorkspaceId,
    reason: Option<String>,
    idempotency: Option<IdempotencyTag>,
    now: Timestamp,
) -> Result<RevokedAll, LedgerError> {
    check_actor(state, caller, now)?;
    let authority = Authority::of(state, caller)?;
    authority.write_keys_of(&workspace)?;
    check_idempotency(state, idempotency.as_ref(), now)?;
    let (targets, skipped) = revoke_all_targets(state, &authority, &workspace, now);
    for key_id in &targets {
        let payload = Payload::Revoked(Revoked {
            key_id: *key_id,
            workspace: workspace.clone(),
            reason: reason.clone(),
        });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    }
    record_idempotency(state, batch, caller, idempotency, workspace, targets.clone());
    Ok(RevokedAll { key_ids: targets, skipped })
}

/// Sets a workspace's policy and the controls beside it: every part decided first, then
/// their events in one batch, so a refused part (limits on `_ledger`) changes nothing.
fn set_policy(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    workspace: WorkspaceId,
    policy: Policy,
    controls: PolicyControls,
    now: Timestamp,
) -> Result<Policy, LedgerError> {
    check_actor(state, caller, now)?;
    Authority::of(state, caller)?.configure(&workspace)?;
    let PolicyControls { sources, on_leak, ratelimits } = controls;
    let limits_set = match ratelimits {
        Some(limits) => crate::sequencer_ratelimit::change(state, &workspace, None, limits)?,
        None => None,
    };
    let sources_set = crate::sources::for_policy(state, &workspace, sources);
    if state.policy(&workspace) != policy || !state.policies.contains_key(&workspace) {
        let payload = Payload::PolicySet(PolicySet { workspace: workspace.clone(), policy: policy.clone() });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    }
    // `on_leak` arrives as its own event, only when it changes (docs/leaks.md).
    if let Some(on_leak) = on_leak.filter(|choice| *choice != state.leaks.on_leak(&workspace)) {
        let payload = Payload::LeakPolicySet(keyledger_core::LeakPolicySet { workspace, on_leak });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    }
    if let Some(set) = sources_set {
        emit(state, batch, &caller.actor, caller.request_id, Payload::SourcesSet(set));
    }
    if let Some(set) = limits_set {
        emit(state, batch, &caller.actor, caller.request_id, Payload::RateLimitsSet(set));
    }
    Ok(policy)
}

fn set_disabled(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    key_id: KeyId,
    disabled: bool,
    reason: Option<String>,
    now: Timestamp,
) -> Result<KeyRecord, LedgerError> {
    check_actor(state, caller, now)?;
    let authority = Authority::of(state, caller)?;
    let key = act_on(state, &authority, &key_id, if disabled { "disable" } else { "enable" })?;
    if key.revoked_at.is_some() {
        return Err(LedgerError::Conflict("the key is revoked; revocation is irreversible".into()));
    }
    let workspace = key.workspace.clone();
    if disabled && key.disabled.is_none() {
        keep_last_full_admin(state, &key_id, now, "disabling")?;
        let payload = Payload::Disabled(Disabled { key_id, workspace, reason });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    } else if !disabled && key.disabled.is_some() {
        let payload = Payload::Enabled(KeyRef { key_id, workspace });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    }
    find(state, &key_id)
}

fn set_webhook(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    workspace: WorkspaceId,
    config: Option<(String, Vec<String>)>,
    now: Timestamp,
) -> Result<Webhook, LedgerError> {
    check_actor(state, caller, now)?;
    Authority::of(state, caller)?.configure(&workspace)?;
    let previous = state.webhooks.get(&workspace);
    let set = match (config, previous) {
        (Some((url, events)), _) => {
            keyledger_core::WebhookSet { workspace: workspace.clone(), url, events, enabled: true }
        }
        (None, None) => {
            return Err(LedgerError::NotFound(format!("no webhook for workspace {workspace}")));
        }
        // Disabling a disabled webhook changes nothing.
        (None, Some(old)) if !old.enabled => return Ok(old.clone()),
        (None, Some(old)) => keyledger_core::WebhookSet {
            workspace: workspace.clone(),
            url: old.url.clone(),
            events: old.events.clone(),
            enabled: false,
        },
    };
    emit(state, batch, &caller.actor, caller.request_id, Payload::WebhookSet(set));
    state.webhooks.get(&workspace).cloned().ok_or_else(|| LedgerError::Internal("webhook vanished".into()))
}

/// How long an idempotent request is remembered.
pub const IDEMPOTENCY_WINDOW_MICROS: i64 = 24 * 3600 * 1_000_000;

/// Refuses a request whose idempotency id was already carried out within the window: its
/// effects must never happen twice, whatever a front end's cache knows.
pub(crate) fn check_idempotency(
    state: &LedgerState,
    tag: Option<&IdempotencyTag>,
    now: Timestamp,
) -> Result<(), LedgerError> {
    let Some(tag) = tag else { return Ok(()) };
    match state.idempotency.get(&tag.id) {
        Some(done) if now.micros().saturating_sub(done.at.micros()) < IDEMPOTENCY_WINDOW_MICROS => {
            Err(LedgerError::Conflict(if done.fingerprint == tag.fingerprint {
                "this request was already carried out under its Idempotency-Key".into()
            } else {
                "this Idempotency-Key was used with a different request".into()
            }))
        }
        _ => Ok(()),
    }
}

/// Records an idempotent request's effects in the same batch as the effects themselves.
pub(crate) fn record_idempotency(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    tag: Option<IdempotencyTag>,
    workspace: WorkspaceId,
    key_ids: Vec<KeyId>,
) {
    if let Some(tag) = tag {
        let record = keyledger_core::IdempotencyRecord {
            id: tag.id,
            fingerprint: tag.fingerprint,
            workspace,
            key_ids,
        };
        emit(state, batch, &caller.actor, caller.request_id, Payload::Idempotency(record));
    }
}

pub(crate) fn find(state: &LedgerState, key_id: &KeyId) -> Result<KeyRecord, LedgerError> {
    state.key(key_id).ok_or_else(|| LedgerError::NotFound(format!("no key {key_id}")))
}

/// The key `key_id`, if the caller may `verb` it (see [`crate::authority`]).
pub(crate) fn act_on(
    state: &LedgerState,
    authority: &Authority,
    key_id: &KeyId,
    verb: &str,
) -> Result<KeyRecord, LedgerError> {
    let view = state.view(key_id).ok_or_else(|| LedgerError::NotFound(format!("no key {key_id}")))?;
    authority.act_on(Target::of(&view), verb)?;
    Ok(view.record())
}

/// The unrevoked keys of `workspace` a revoke-all revokes, and how many it leaves alone:
/// the caller's own key, keys the caller does not dominate, and the last lasting full admin
/// key (docs/security.md).
fn revoke_all_targets(
    state: &LedgerState,
    authority: &Authority,
    workspace: &WorkspaceId,
    now: Timestamp,
) -> (Vec<KeyId>, usize) {
    let own_key = authority.key_id();
    let mut targets = Vec::new();
    let mut skipped = 0;
    // Lasting full admin keys (active, without expiry) that stay whatever this revoke-all
    // does. A key that will expire is no survivor, the caller's own included.
    let mut full_kept = state
        .workspace_keys(workspace)
        .filter(|k| is_lasting_full_admin(k, now))
        .filter(|k| Some(k.key_id()) == own_key || !authority.dominates(Target::of(k)))
        .count();
    for key in state.workspace_keys(workspace).filter(|k| !k.is_revoked()) {
        let full = is_lasting_full_admin(&key, now);
        let spared = Some(key.key_id()) == own_key || !authority.dominates(Target::of(&key));
        if spared {
            skipped += 1;
        } else if full && full_kept == 0 {
            // Every other full admin key goes: this one must remain.
            full_kept += 1;
            skipped += 1;
        } else {
            targets.push(key.key_id());
        }
    }
    (targets, skipped)
}

/// An admin caller must still hold a usable admin key when its command is sequenced: a
/// command from a key revoked a moment earlier is refused.
pub(crate) fn check_actor(state: &LedgerState, caller: &Caller, now: Timestamp) -> Result<(), LedgerError> {
    let Some(key_id) = caller.admin_key() else { return Ok(()) };
    let key = state.view(&key_id).ok_or(LedgerError::Unauthorized(AuthError::Unknown))?;
    if !key.workspace().is_ledger() {
        return Err(LedgerError::Unauthorized(AuthError::NotAdmin));
    }
    match key.status(now) {
        KeyStatus::Active => Ok(()),
        KeyStatus::Revoked => Err(LedgerError::Unauthorized(AuthError::Revoked)),
        KeyStatus::Expired => Err(LedgerError::Unauthorized(AuthError::Expired)),
        KeyStatus::Disabled => Err(LedgerError::Unauthorized(AuthError::Disabled)),
    }
}

/// Checks a new key of `workspace` against its policy, counting `live_after()` live keys
/// once it exists (counted only under a `max_active_keys` policy: it walks the workspace).
pub(crate) fn check_policy(
    policy: &Policy,
    secret: &IssuedSecret,
    expires_at: Option<Timestamp>,
    live_after: impl FnOnce() -> usize,
    now: Timestamp,
) -> Result<(), LedgerError> {
    let expected_prefix = policy.key_prefix.clone().unwrap_or_else(keyledger_core::KeyPrefix::default_prefix);
    if secret.prefix != expected_prefix {
        return Err(LedgerError::Conflict(format!(
            "policy key_prefix: keys of this workspace must start with `{expected_prefix}_`"
        )));
    }
    if let Some(max) = policy.max_active_keys
        && live_after() > max as usize
    {
        return Err(LedgerError::Conflict(format!(
            "policy max_active_keys: the workspace may hold at most {max} active keys"
        )));
    }
    if policy.require_expiry && expires_at.is_none() {
        return Err(LedgerError::Conflict("policy require_expiry: the key must have an expiry".into()));
    }
    if let Some(max) = policy.max_lifetime {
        let too_long = match expires_at {
            None => true,
            Some(at) => at.micros().saturating_sub(now.micros()) > max,
        };
        if too_long {
            return Err(LedgerError::Conflict(format!(
                "policy max_lifetime: the key must expire within {}",
                keyledger_core::time::format_duration(max)
            )));
        }
    }
    Ok(())
}

/// Whether the caller may issue (not rotate) the key `spec` describes, with the source
/// allow-list it would get (`requested`, or the workspace default) and `expires_at`
/// ([`Authority::issue`]).
fn may_issue(
    state: &LedgerState,
    caller: &Caller,
    authority: &Authority,
    workspace: &WorkspaceId,
    spec: &KeySpec,
    requested: Option<&[keyledger_core::SourceNet]>,
    expires_at: Option<Timestamp>,
) -> Result<(), LedgerError> {
    let (list, _) = crate::sources::list_for_new_key(state, &caller.actor, workspace, requested, None);
    let target =
        Target { key_id: None, workspace, scopes: &spec.scopes, resources: &spec.resources, sources: &list };
    authority.issue(target, expires_at)
}

/// 400 naming `expires_at` unless `at` is after `now` and no later than the latest instant
/// RFC 3339 can write (an `expires_in` of a million years would otherwise be shown as a
/// bare number).
pub(crate) fn check_expiry(at: Timestamp, now: Timestamp) -> Result<(), LedgerError> {
    if at <= now {
        return Err(LedgerError::invalid("expires_at", "must be in the future"));
    }
    if at > Timestamp::LATEST {
        return Err(LedgerError::invalid("expires_at", "must be no later than 9999-12-31T23:59:59Z"));
    }
    Ok(())
}

/// When a key issued at `now` with `expiry` expires.
pub(crate) fn expiry_at(expiry: Expiry, now: Timestamp) -> Option<Timestamp> {
    match expiry {
        Expiry::Never => None,
        Expiry::At(at) => Some(at),
        Expiry::In(micros) => Some(now.plus_micros(micros)),
    }
}

#[allow(clippy::too_many_arguments)]
fn create(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    authority: &Authority,
    workspace: WorkspaceId,
    spec: KeySpec,
    secret: IssuedSecret,
    rotated_from: Option<KeyId>,
    sources: Option<Vec<keyledger_core::SourceNet>>,
    now: Timestamp,
) -> Result<KeyRecord, LedgerError> {
    let expires_at = expiry_at(spec.expiry, now);
    if spec.credits.is_some() && workspace.is_ledger() {
        return Err(LedgerError::invalid("credits", "admin keys are never metered"));
    }
    if rotated_from.is_none() {
        if let Some(at) = expires_at {
            check_expiry(at, now)?;
        }
        may_issue(state, caller, authority, &workspace, &spec, sources.as_deref(), expires_at)?;
        // The break-glass recovery is the way back, not a key like others: no policy of
        // `_ledger` may stand in its way (docs/operations.md).
        if caller.actor != Actor::Recovery {
            let live_after = || state.live_count(&workspace, now) + 1;
            check_policy(&state.policy(&workspace), &secret, expires_at, live_after, now)?;
        }
    }
    if state.view_by_hash(&secret.hash).is_some() || state.view(&secret.key_id).is_some() {
        return Err(LedgerError::Internal("generated key collides with an existing one".into()));
    }
    let key_id = secret.key_id;
    let sources = crate::sources::for_new_key(
        state,
        &caller.actor,
        &workspace,
        key_id,
        spec.environment,
        sources,
        rotated_from,
    )?;
    let credits = spec.credits;
    let payload = Payload::Created(Created {
        key_id,
        workspace,
        name: spec.name,
        hash: secret.hash,
        hint: secret.hint,
        prefix: secret.prefix,
        environment: spec.environment,
        scopes: spec.scopes,
        resources: spec.resources,
        owner: spec.owner,
        metadata: spec.metadata,
        expires_at,
        rotated_from,
    });
    emit(state, batch, &caller.actor, caller.request_id, payload);
    if let Some(set) = sources {
        emit(state, batch, &caller.actor, caller.request_id, Payload::SourcesSet(set));
    }
    let key = find(state, &key_id)?;
    if let Some(credits) = &credits {
        crate::credits::set_on_create(state, batch, caller, &key, credits);
    }
    Ok(key)
}

/// The key `key_id` and its successor's expiry, if the caller may rotate it: it may act on
/// the key and give the successor (which inherits the key's lifetime) that expiry.
fn may_rotate(
    state: &LedgerState,
    authority: &Authority,
    key_id: &KeyId,
    now: Timestamp,
) -> Result<(KeyRecord, Option<Timestamp>), LedgerError> {
    let old = act_on(state, authority, key_id, "rotate")?;
    // Never later than the latest instant a view can write (a lifetime from a key issued
    // long ago could reach past it).
    let new_expiry = old.lifetime.map(|l| now.plus_micros(l.max(0)).min(Timestamp::LATEST));
    authority.limit_expiry(new_expiry)?;
    Ok((old, new_expiry))
}

#[allow(clippy::too_many_arguments)]
fn rotate(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    authority: &Authority,
    key_id: KeyId,
    overlap: i64,
    secret: IssuedSecret,
    now: Timestamp,
) -> Result<Rotation, LedgerError> {
    // The successor inherits the old key's scopes and resources: whoever may rotate it may
    // issue them. It inherits a full admin key's powers too, so a rotation never removes the
    // last one. Its expiry must still respect the caller's.
    let (old, new_expiry) = may_rotate(state, authority, &key_id, now)?;
    if old.revoked_at.is_some() {
        return Err(LedgerError::Conflict(format!("key {key_id} is revoked and cannot be rotated")));
    }
    // The old key stays live during an overlap: count it.
    let old_counted = usize::from(old.is_live(now));
    let live_after =
        || state.live_count(&old.workspace, now) + 1 - if overlap == 0 { old_counted } else { 0 };
    check_policy(&state.policy(&old.workspace), &secret, new_expiry, live_after, now)?;
    let spec = KeySpec {
        name: old.name.clone(),
        scopes: old.scopes.clone(),
        resources: old.resources.clone(),
        environment: old.environment,
        owner: old.owner.clone(),
        metadata: old.metadata.clone(),
        expiry: new_expiry.map_or(Expiry::Never, Expiry::At),
        credits: None,
    };
    let new = create(
        state,
        batch,
        caller,
        authority,
        old.workspace.clone(),
        spec,
        secret,
        Some(key_id),
        None,
        now,
    )?;
    crate::credits::move_on_rotation(state, batch, caller, &old, new.key_id, now);
    crate::sequencer_ratelimit::inherit(state, batch, caller, &key_id, &new.key_id, &old.workspace);
    let valid_until = (overlap > 0).then(|| now.plus_micros(overlap).min(Timestamp::LATEST));
    let rotated = Rotated { key_id, workspace: old.workspace.clone(), rotated_to: new.key_id, valid_until };
    emit(state, batch, &caller.actor, caller.request_id, Payload::Rotated(rotated));
    if overlap == 0 {
        let revoked = Revoked { key_id, workspace: old.workspace.clone(), reason: Some("rotated".into()) };
        emit(state, batch, &caller.actor, caller.request_id, Payload::Revoked(revoked));
    }
    Ok(Rotation { key: find(state, &new.key_id)?, previous: find(state, &key_id)? })
}

/// Changes a key: every part of the change decided first (who may change it, the fields,
/// the source allow-list, the rate limits), then its events in one batch: `updated` when a
/// field changes, `sources_set`, `ratelimits_set`. A refused part changes nothing.
fn update(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    authority: &Authority,
    key_id: KeyId,
    changes: KeyChanges,
    now: Timestamp,
) -> Result<KeyRecord, LedgerError> {
    let key = act_on(state, authority, &key_id, "change")?;
    if key.revoked_at.is_some() {
        return Err(LedgerError::Conflict(format!("key {key_id} is revoked and cannot be changed")));
    }
    let limits_set = match changes.ratelimits {
        Some(limits) => crate::sequencer_ratelimit::change(state, &key.workspace, Some(key_id), limits)?,
        None => None,
    };
    if let Some(scopes) = &changes.scopes
        && let Some(extra) = scopes.iter().find(|s| key.scopes.binary_search(s).is_err())
    {
        return Err(LedgerError::invalid(
            "scopes",
            format!(
                "can only be narrowed; {} is not held by the key",
                keyledger_core::validate::shown_name(extra)
            ),
        ));
    }
    if let Some(resources) = &changes.resources {
        // An empty list means "every resource": the widest possible.
        let widens = !key.resources.is_empty()
            && (resources.is_empty() || resources.iter().any(|r| key.resources.binary_search(r).is_err()));
        if widens {
            return Err(LedgerError::invalid("resources", "can only be narrowed, never widened"));
        }
    }
    if let Some(expires_at) = changes.expires_at {
        if let Some(at) = expires_at {
            check_expiry(at, now)?;
        }
        let policy = state.policy(&key.workspace);
        if policy.require_expiry && expires_at.is_none() {
            return Err(LedgerError::Conflict("policy require_expiry: the key must have an expiry".into()));
        }
        // A lifetime counts from the key's creation, as the compliance report measures it:
        // an update never stretches a key past the policy's maximum. An expiry that is no
        // later than the current one only shortens the key (a key issued before the policy
        // may be older than the maximum already), so it is always allowed.
        let stretches = |at: Timestamp| key.expires_at.is_some_and(|old| at > old);
        let past_max = |at: Timestamp, max: i64| at.micros().saturating_sub(key.created_at.micros()) > max;
        if let Some(max) = policy.max_lifetime
            && expires_at.is_none_or(|at| stretches(at) && past_max(at, max))
        {
            return Err(LedgerError::Conflict(format!(
                "policy max_lifetime: the key must expire within {} of its creation",
                keyledger_core::time::format_duration(max)
            )));
        }
    }
    if let Some(expires_at) = changes.expires_at {
        authority.limit_expiry(expires_at)?;
    }
    let sources_set = crate::sources::for_update(state, &key.workspace, key_id, changes.allowed_sources)?;
    if is_last_full_admin(state, &key_id, now) {
        let scopes = changes.scopes.as_ref().unwrap_or(&key.scopes);
        let resources = changes.resources.as_ref().unwrap_or(&key.resources);
        if !is_full_admin(&key.workspace, scopes, resources) {
            keep_last_full_admin(state, &key_id, now, "narrowing")?;
        }
        if changes.expires_at.is_some_and(|e| e.is_some()) {
            keep_last_full_admin(state, &key_id, now, "giving an expiry to")?;
        }
    }
    let changed = changes.name.as_ref().is_some_and(|n| *n != key.name)
        || changes.owner.as_ref().is_some_and(|o| *o != key.owner)
        || changes.metadata.as_ref().is_some_and(|m| *m != key.metadata)
        || changes.expires_at.is_some_and(|e| e != key.expires_at)
        || changes.scopes.as_ref().is_some_and(|s| *s != key.scopes)
        || changes.resources.as_ref().is_some_and(|r| *r != key.resources);
    if changed {
        let payload = Payload::Updated(Updated {
            key_id,
            workspace: key.workspace.clone(),
            name: changes.name,
            owner: changes.owner,
            metadata: changes.metadata,
            expires_at: changes.expires_at,
            scopes: changes.scopes,
            resources: changes.resources,
        });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    }
    if let Some(set) = sources_set {
        emit(state, batch, &caller.actor, caller.request_id, Payload::SourcesSet(set));
    }
    if let Some(set) = limits_set {
        emit(state, batch, &caller.actor, caller.request_id, Payload::RateLimitsSet(set));
    }
    find(state, &key_id)
}
