//! The sequencer's rate-limit steps: which limits a verification applies, setting a key's
//! (or a workspace's default) limits, and handing a key's limits to its rotated successor.
//!
//! Kept apart from `sequencer.rs` so the verification path there gains two calls, not the
//! logic. Everything here runs on the writer thread (docs/api.md, "Rate limits").

use crate::authority::Authority;
use crate::commands::Caller;
use crate::error::LedgerError;
use crate::ratelimit::{LimitStatus, RateCounters};
use crate::sequencer::{act_on, check_actor, emit};
use crate::state::{LedgerState, VerifyRequirements};
use keyledger_core::{
    Denial, DenyReason, KeyId, Payload, RateLimit, RateLimitsSet, Timestamp, UsageContext, WorkspaceId,
};
use keyledger_log::Batch;

/// The limits a verification applies, with their cost: every `auto_apply` limit (cost 1,
/// or the cost the request gives it) and every other limit the request names. A requested
/// name the key has no limit of is ignored (docs/api.md). Then checks and spends them: the
/// statuses, and the name of the limit that refused, if one did.
pub(crate) fn apply(
    counters: &mut RateCounters,
    key_id: KeyId,
    limits: &[RateLimit],
    wants: &VerifyRequirements,
    now: Timestamp,
) -> (Vec<LimitStatus>, Option<String>) {
    if limits.is_empty() {
        return (Vec::new(), None);
    }
    let applied: Vec<(&RateLimit, u64)> = limits
        .iter()
        .filter_map(|limit| {
            // The first mention of a name gives its cost.
            let requested = wants.ratelimits.iter().find(|(name, _)| *name == limit.name).map(|(_, c)| *c);
            match requested {
                Some(cost) => Some((limit, cost)),
                None if limit.auto_apply => Some((limit, 1)),
                None => None,
            }
        })
        .collect();
    match counters.check_and_spend(key_id, &applied, now) {
        Ok(statuses) => (statuses, None),
        Err((name, statuses)) => (statuses, Some(name)),
    }
}

/// The last step of an allowed verification: applies the key's limits (see [`apply`]) and
/// either keeps the `used`/`metered` payload or turns it into a `denied` one with reason
/// `rate_limited` (the same context). The applied limits' statuses go to `statuses`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_last(
    state: &LedgerState,
    counters: &mut RateCounters,
    key_id: KeyId,
    workspace: &WorkspaceId,
    wants: &VerifyRequirements,
    payload: Payload,
    statuses: &mut Vec<LimitStatus>,
    now: Timestamp,
) -> (Result<(), DenyReason>, Payload) {
    let limits = state.ratelimits_of(&key_id, workspace);
    let (applied, refused) = apply(counters, key_id, limits, wants, now);
    *statuses = applied;
    let Some(name) = refused else { return (Ok(()), payload) };
    let context = match payload {
        Payload::Used(usage) => usage.context,
        Payload::Metered(metered) => metered.usage.context,
        _ => UsageContext::default(),
    };
    let reason = DenyReason::RateLimited(name);
    let denial = Denial { key_id, workspace: workspace.clone(), reason: reason.clone(), context };
    (Err(reason), Payload::Denied(denial))
}

/// Sets a key's limits (or the workspace default): the caller must be allowed to change
/// the key (or to configure the workspace). Limits restrict a key, they never widen what
/// it may do, so raising one needs no more than changing the key; the event records it.
pub(crate) fn set_ratelimits(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    workspace: WorkspaceId,
    key_id: Option<KeyId>,
    limits: Vec<RateLimit>,
    now: Timestamp,
) -> Result<Vec<RateLimit>, LedgerError> {
    check_actor(state, caller, now)?;
    let authority = Authority::of(state, caller)?;
    keyledger_core::ratelimit::validate_list(&limits)
        .map_err(|e| LedgerError::invalid("ratelimits", e.to_string()))?;
    let current = match key_id {
        Some(key_id) => {
            let key = act_on(state, &authority, &key_id, "change")?;
            if key.workspace != workspace {
                return Err(LedgerError::NotFound(format!("no key {key_id}")));
            }
            if key.revoked_at.is_some() {
                return Err(LedgerError::Conflict(format!("key {key_id} is revoked and cannot be changed")));
            }
            state.key_ratelimits.get(&key_id)
        }
        None => {
            authority.configure(&workspace)?;
            state.workspace_ratelimits.get(&workspace)
        }
    };
    if current != Some(&limits) {
        let payload = Payload::RateLimitsSet(RateLimitsSet { workspace, key_id, limits: limits.clone() });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    }
    Ok(limits)
}

/// A key issued with its own limits (`limits` validated, not empty): recorded in the batch
/// of its `created` event, under the authority that issued it.
pub(crate) fn set_on_create(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    key: &crate::state::KeyRecord,
    limits: Vec<RateLimit>,
) {
    let payload = Payload::RateLimitsSet(RateLimitsSet {
        workspace: key.workspace.clone(),
        key_id: Some(key.key_id),
        limits,
    });
    emit(state, batch, &caller.actor, caller.request_id, payload);
}

/// A rotated key's successor inherits the key's own limits (in the rotation's batch, after
/// its `created` event); a key under its workspace's default stays under it.
pub(crate) fn inherit(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    old: &KeyId,
    new: &KeyId,
    workspace: &WorkspaceId,
) {
    if let Some(limits) = state.key_ratelimits.get(old).cloned() {
        let payload = Payload::RateLimitsSet(RateLimitsSet {
            workspace: workspace.clone(),
            key_id: Some(*new),
            limits,
        });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    }
}
