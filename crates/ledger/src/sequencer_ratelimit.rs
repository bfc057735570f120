//! The sequencer's rate-limit steps: which limits a verification applies, setting a key's
//! (or a workspace's default) limits, alone or as part of a key's update or a workspace's
//! policy, and handing a key's limits to its rotated successor. The rule that admin keys
//! are never limited lives here only ([`check_list`]).
//!
//! Kept apart from `sequencer.rs` so the verification path there gains two calls, not the
//! logic. Everything here runs on the writer thread (docs/api.md, "Rate limits").

use crate::authority::Authority;
use crate::commands::Caller;
use crate::error::LedgerError;
use crate::ratelimit::{LimitStatus, RateCounters};
use crate::sequencer::{act_on, check_actor, emit};
use crate::state::{LedgerState, VerifyRequirements};
use keyledger_core::decode_event;
use keyledger_core::{
    Counted, CreditSpend, Denial, DenyReason, KeyId, LimitSpend, Metered, Payload, RateLimit, RateLimitsSet,
    Timestamp, UsageContext, WorkspaceId,
};
use keyledger_log::Batch;
use keyledger_log::segment::SegmentReader;

/// The limits a verification applies, with their cost: every `auto_apply` limit (cost 1,
/// or the cost the request gives it) and every other limit the request names. A requested
/// name the key has no limit of is ignored (docs/api.md).
fn applied<'a>(limits: &'a [RateLimit], wants: &VerifyRequirements) -> Vec<(&'a RateLimit, u64)> {
    limits
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
        .collect()
}

/// The last step of an allowed verification: checks and spends the key's limits (see
/// [`applied`]) and either keeps the `used`/`metered` payload, as a `counted` one naming
/// what it spent when it spent anything (unless [`Limiting::spends_in_events`] is off), or
/// turns it into a `denied` one with reason
/// `rate_limited` (the same context). The applied limits' statuses go to `statuses`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_last(
    state: &LedgerState,
    limiting: Limiting<'_>,
    key_id: KeyId,
    workspace: &WorkspaceId,
    wants: &VerifyRequirements,
    payload: Payload,
    statuses: &mut Vec<LimitStatus>,
    now: Timestamp,
) -> (Result<(), DenyReason>, Payload) {
    let limits = state.ratelimits_of(&key_id, workspace);
    if limits.is_empty() {
        return (Ok(()), payload);
    }
    let applied = applied(limits, wants);
    let name = match limiting.counters.check_and_spend(key_id, &applied, now) {
        Ok(applied_statuses) => {
            *statuses = applied_statuses;
            if !limiting.spends_in_events {
                return (Ok(()), payload);
            }
            let spent: Vec<LimitSpend> = applied
                .iter()
                .filter(|(_, cost)| *cost > 0)
                .map(|(limit, cost)| LimitSpend {
                    name: limit.name.clone(),
                    cost: *cost,
                    duration: limit.duration,
                })
                .collect();
            return (Ok(()), with_spends(payload, spent));
        }
        Err((name, applied_statuses)) => {
            *statuses = applied_statuses;
            name
        }
    };
    let context = match payload {
        Payload::Used(usage) => usage.context,
        Payload::Metered(metered) => metered.usage.context,
        Payload::Counted(counted) => counted.usage.context,
        _ => UsageContext::default(),
    };
    let reason = DenyReason::RateLimited(name);
    let denial = Denial { key_id, workspace: workspace.clone(), reason: reason.clone(), context };
    (Err(reason), Payload::Denied(denial))
}

/// The writer's rate-limit memory and how a verification's spends reach the log.
pub(crate) struct Limiting<'a> {
    pub counters: &'a mut RateCounters,
    /// False while older nodes share the store (`--rolling-upgrade`): the `used` event
    /// stays as they can read it and the spend is counted on this node only.
    pub spends_in_events: bool,
}

/// A `used` payload carrying `spent` (a `counted` one), so that every node reading the
/// log counts the spend; unchanged when nothing was spent.
fn with_spends(payload: Payload, spent: Vec<LimitSpend>) -> Payload {
    if spent.is_empty() {
        return payload;
    }
    match payload {
        Payload::Used(usage) => Payload::Counted(Counted { usage, credits: None, spent }),
        Payload::Metered(Metered { usage, cost, remaining }) => {
            Payload::Counted(Counted { usage, credits: Some(CreditSpend { cost, remaining }), spent })
        }
        other => other,
    }
}

/// Counts the spends of a `counted` event this writer did not decide (another node's, or
/// one read back by [`recount`]), each in the window of its recorded length holding the
/// event's time, exactly as the writer that decided it counted it: the counters then hold
/// every node's verifications, as a single node's would (docs/api.md, "Rate limits").
pub(crate) fn count_foreign(counters: &mut RateCounters, event: &keyledger_core::Event) {
    if let Some(usage) = event.payload.usage() {
        counters.count(usage.key_id, event.payload.limit_spends(), event.at);
    }
}

/// Most events a start or a rewind of the writer reads back to recount the windows in
/// progress ([`recount`]).
pub const RECOUNT_MAX_EVENTS: u64 = 500_000;

/// The counters as the first `end` records of the log leave them at `now`: the spends of
/// the `counted` events in the windows in progress (each limit in force has its own; the
/// earliest start among them sets how far back that is), read from at most the last
/// [`RECOUNT_MAX_EVENTS`] events. Used when the writer starts and after it rewinds (a
/// recovery), so the counters hold exactly the spends the log holds, other nodes' included
/// (docs/api.md, "Rate limits"). Without limits anywhere, nothing is read.
pub(crate) fn recount(
    state: &LedgerState,
    log: &SegmentReader,
    end: u64,
    now: Timestamp,
) -> Result<RateCounters, String> {
    let mut counters = RateCounters::default();
    let oldest_window = state
        .key_ratelimits
        .values()
        .chain(state.workspace_ratelimits.values())
        .flatten()
        .map(|limit| crate::ratelimit::window_start(now.micros(), limit.duration))
        .min();
    let Some(oldest_window) = oldest_window else { return Ok(counters) };
    let decode = |seq: u64, bytes: &[u8]| decode_event(bytes).map_err(|e| format!("event {seq}: {e}"));
    let end = end.min(log.len());
    let from = keyledger_log::first_at_or_after(end, Timestamp::from_micros(oldest_window), |seq| {
        let bytes = log.read(seq).map_err(|e| e.to_string())?;
        decode(seq, &bytes).map(|e| e.at)
    })?
    .max(end.saturating_sub(RECOUNT_MAX_EVENTS));
    let count = usize::try_from(end - from.min(end)).unwrap_or(usize::MAX);
    for record in log.iter(from).take(count) {
        let (seq, bytes) = record.map_err(|e| e.to_string())?;
        count_foreign(&mut counters, &decode(seq, &bytes)?);
    }
    Ok(counters)
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
    match key_id {
        Some(key_id) => {
            let key = act_on(state, &authority, &key_id, "change")?;
            if key.workspace != workspace {
                return Err(LedgerError::NotFound(format!("no key {key_id}")));
            }
            if key.revoked_at.is_some() {
                return Err(LedgerError::Conflict(format!("key {key_id} is revoked and cannot be changed")));
            }
        }
        None => authority.configure(&workspace)?,
    }
    if let Some(set) = change(state, &workspace, key_id, limits.clone())? {
        emit(state, batch, &caller.actor, caller.request_id, Payload::RateLimitsSet(set));
    }
    Ok(limits)
}

/// The event that sets `limits` as the own list of `key_id` (or, without one, as the
/// default of `workspace`), once [`check_list`] allows them; `None` when they are already
/// so. An empty list is no list (`LedgerState::own_ratelimits`): `[]` where there is none
/// changes nothing and appends nothing.
///
/// Decides only: whoever calls it has checked that the caller may change the key (or
/// configure the workspace), and emits the event only once every other part of its command
/// is decided too, so a command that sets limits beside other changes (a key's update, a
/// workspace's policy) is applied whole or not at all (docs/architecture.md, ADR 0004).
pub(crate) fn change(
    state: &LedgerState,
    workspace: &WorkspaceId,
    key_id: Option<KeyId>,
    limits: Vec<RateLimit>,
) -> Result<Option<RateLimitsSet>, LedgerError> {
    check_list(workspace, &limits)?;
    let current = match key_id {
        Some(key_id) => state.own_ratelimits(&key_id),
        None => state.workspace_ratelimits.get(workspace).map(Vec::as_slice),
    };
    if current.unwrap_or_default() == limits.as_slice() {
        return Ok(None);
    }
    Ok(Some(RateLimitsSet { workspace: workspace.clone(), key_id, limits }))
}

/// Whether keys of `workspace` may be given `limits`: a valid list, and none at all in
/// `_ledger`, since admin authentication never spends an allowance, so a limit there would
/// be shown and never applied (docs/credits.md: admin keys are never metered).
pub(crate) fn check_list(workspace: &WorkspaceId, limits: &[RateLimit]) -> Result<(), LedgerError> {
    keyledger_core::ratelimit::validate_list(limits)
        .map_err(|e| LedgerError::invalid("ratelimits", e.to_string()))?;
    if workspace.is_ledger() && !limits.is_empty() {
        return Err(LedgerError::invalid("ratelimits", "admin keys (`_ledger`) are never rate-limited"));
    }
    Ok(())
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
    // Admin keys are never limited (limits set on one before that rule are not carried on).
    if workspace.is_ledger() {
        return;
    }
    if let Some(limits) = state.own_ratelimits(old).map(<[_]>::to_vec) {
        let payload = Payload::RateLimitsSet(RateLimitsSet {
            workspace: workspace.clone(),
            key_id: Some(*new),
            limits,
        });
        emit(state, batch, &caller.actor, caller.request_id, payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_core::{Actor, Counted, LimitSpend, RequestId, Usage, encode_event};
    use keyledger_log::segment::{SegmentLog, SegmentOptions};
    use keyledger_log::storage::OsStorage;

    const DAY: i64 = 86_400 * 1_000_000;

    fn limit(name: &str, max: u64, days: i64) -> RateLimit {
        RateLimit { name: name.into(), limit: max, duration: days * DAY, auto_apply: true }
    }

    /// A log of `counted` events, each spending 1 of `name` at its time, under a window of
    /// its length (both in days).
    fn log_of(dir: &std::path::Path, key: KeyId, spends: &[(&str, i64, i64)]) -> SegmentReader {
        let (mut log, _) = SegmentLog::open(OsStorage::shared(), dir, SegmentOptions::default()).unwrap();
        for (seq, (name, day, days)) in spends.iter().enumerate() {
            let usage =
                Usage { key_id: key, workspace: "acme".parse().unwrap(), context: UsageContext::default() };
            let payload = Payload::Counted(Counted {
                usage,
                credits: None,
                spent: vec![LimitSpend { name: (*name).into(), cost: 1, duration: days * DAY }],
            });
            let event = keyledger_core::Event {
                seq: seq as u64,
                at: Timestamp::from_micros(day * DAY),
                actor: Actor::Verifier,
                request_id: RequestId::from_bytes([1; 16]),
                payload,
            };
            log.append_batch(&[&encode_event(&event)]).unwrap();
        }
        log.reader()
    }

    /// Every limit's window in progress is recounted, also one that began before the
    /// longest limit's current window (a week's beside a 30-day one), each spend in the
    /// window of the length it was made under, and only up to `end`.
    #[test]
    fn a_recount_reads_back_to_the_earliest_window_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyId::from_bytes([4; 16]);
        // Day 20190 starts a 30-day window (30 × 673); its week began on day 20188.
        let now = Timestamp::from_micros(20_190 * DAY + DAY / 2);
        let spends = [
            ("week", 20_180, 7),
            // Made when `week` was a one-day limit: its own window, which the week's next
            // spend replaces, as it did when the writer decided it.
            ("week", 20_188, 1),
            ("month", 20_189, 30),
            ("week", 20_189, 7),
            ("week", 20_190, 7),
        ];
        let log = log_of(dir.path(), key, &spends);
        let mut state = LedgerState::default();
        let (week, month) = (limit("week", 10, 7), limit("month", 10, 30));
        state.key_ratelimits.insert(key, vec![week.clone(), month.clone()]);

        let mut counters = recount(&state, &log, 5, now).unwrap();
        let left = counters.check_and_spend(key, &[(&week, 0), (&month, 0)], now).unwrap();
        // The week's two spends since day 20189 under its length; the month's one on day
        // 20189 belongs to the window that ended on day 20190.
        assert_eq!((left[0].remaining, left[1].remaining), (8, 10));

        let mut counters = recount(&state, &log, 4, now).unwrap();
        let left = counters.check_and_spend(key, &[(&week, 0)], now).unwrap();
        assert_eq!(left[0].remaining, 9, "only the first four events");

        let counters = recount(&LedgerState::default(), &log, 5, now).unwrap();
        assert!(counters.is_empty(), "no limits anywhere: nothing read");
    }
}
