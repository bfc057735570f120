//! Usage credits: a key's balance, derived from the log, and the writer-thread steps that
//! change it (docs/credits.md).
//!
//! Every change of a balance is an event: `credits_set` (create, rotation, top-up),
//! `credits_refilled` (a refill boundary passed, appended lazily by the next verification
//! before its spend) and the `cost` of a `used` event (the `Metered` payload). The registry
//! folds them with [`fold`], called from [`LedgerState::apply`], so the live balance, a
//! replay, the persisted projection and `log verify` agree by construction.
//!
//! **Guarantees:** a verification spends only if its whole cost is covered (else it is
//! denied `usage_exceeded` and spends nothing); a balance never goes below zero nor above
//! [`MAX_CREDITS`]; a key without credits is never metered (its uses stay plain `used`
//! events); a rotation moves the balance to the successor, so the credits are never spent
//! twice (the old key keeps none).

use crate::commands::Caller;
use crate::error::LedgerError;
use crate::sequencer::{act_on, check_actor, emit, find};
use crate::state::{KeyRecord, LedgerState};
use keyledger_core::credits::{MAX_CREDITS, refill_due};
use keyledger_core::{
    Actor, CreditsRefilled, CreditsSet, Event, KeyId, Metered, Payload, Refill, RequestId, Timestamp, Usage,
    UsageContext, WorkspaceId,
};
use keyledger_log::Batch;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The default `low_threshold`, in percent of the key's initial balance (or of its refill
/// amount when it has one), when the create request names none.
pub const DEFAULT_LOW_THRESHOLD_PERCENT: u64 = 10;

/// A key's credits as the log left them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCredits {
    pub remaining: u64,
    pub refill: Option<Refill>,
    pub low_threshold: u64,
    /// When the last refill happened, if any.
    pub refilled_at: Option<Timestamp>,
    /// The reference time of the refill schedule: the last refill, or when the key first got
    /// credits. A refill is due once a boundary passes after it.
    pub since: Timestamp,
}

/// Credits asked for at creation (validated: every number at most [`MAX_CREDITS`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditsSpec {
    pub remaining: u64,
    pub refill: Option<Refill>,
    pub low_threshold: Option<u64>,
}

/// A top-up (`POST /v1/keys/{id}/credits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditsChange {
    Add(u64),
    Set(u64),
}

/// Folds one event into the balances (see the module docs); other events change nothing.
pub fn fold(credits: &mut HashMap<KeyId, KeyCredits>, event: &Event) {
    let at = event.at;
    match &event.payload {
        Payload::CreditsSet(set) => {
            let entry = credits.entry(set.key_id).or_insert_with(|| KeyCredits {
                remaining: 0,
                refill: None,
                low_threshold: 0,
                refilled_at: None,
                since: at,
            });
            entry.remaining = set.remaining;
            entry.refill = set.refill.clone();
            entry.low_threshold = set.low_threshold;
        }
        Payload::CreditsRefilled(refilled) => {
            if let Some(entry) = credits.get_mut(&refilled.key_id) {
                entry.remaining = refilled.remaining;
                entry.refilled_at = Some(at);
                entry.since = at;
            }
        }
        payload => {
            if let (Some(spend), Some(usage)) = (payload.credit_spend(), payload.usage())
                && let Some(entry) = credits.get_mut(&usage.key_id)
            {
                entry.remaining = spend.remaining;
            }
        }
    }
}

/// The JSON of a key's credits in a key view: `{remaining, refill, refilled_at,
/// low_threshold}`, or `null` for a key without credits.
pub fn credits_json(credits: Option<&KeyCredits>) -> serde_json::Value {
    match credits {
        None => serde_json::Value::Null,
        Some(c) => serde_json::json!({
            "remaining": c.remaining,
            "refill": keyledger_core::credits::refill_json(c.refill.as_ref()),
            "refilled_at": c.refilled_at.map(|t| t.to_rfc3339()),
            "low_threshold": c.low_threshold,
        }),
    }
}

/// Appends a `credits_refilled` event if a refill boundary passed since the key's balance
/// was last refilled (or first set): the log explains every balance change.
pub(crate) fn refill_if_due(
    state: &mut LedgerState,
    batch: &mut Batch,
    actor: &Actor,
    request_id: RequestId,
    key_id: KeyId,
    workspace: &WorkspaceId,
    now: Timestamp,
) {
    let Some(credits) = state.credits.get(&key_id) else { return };
    let Some(refill) = &credits.refill else { return };
    if refill_due(refill, credits.since, now) {
        let payload = Payload::CreditsRefilled(CreditsRefilled {
            key_id,
            workspace: workspace.clone(),
            remaining: refill.amount,
        });
        emit(state, batch, actor, request_id, payload);
    }
}

/// The payload recording an allowed verification: plain `used` for a key without credits,
/// `Metered` (spending `cost`) when the key has credits that cover it, or `Err` when they
/// do not. A due refill is appended first.
#[allow(clippy::too_many_arguments)]
// The refusal hands the context back for the `denied` event, by value like the `used` one.
#[allow(clippy::result_large_err)]
pub(crate) fn spend(
    state: &mut LedgerState,
    batch: &mut Batch,
    request_id: RequestId,
    key_id: KeyId,
    workspace: &WorkspaceId,
    cost: u64,
    context: UsageContext,
    now: Timestamp,
) -> Result<Payload, UsageContext> {
    refill_if_due(state, batch, &Actor::Verifier, request_id, key_id, workspace, now);
    let usage = Usage { key_id, workspace: workspace.clone(), context };
    let Some(credits) = state.credits.get(&key_id) else { return Ok(Payload::Used(usage)) };
    match credits.remaining.checked_sub(cost) {
        Some(remaining) => Ok(Payload::Metered(Metered { usage, cost, remaining })),
        None => Err(usage.context),
    }
}

/// The threshold a spec asks for, or the default (see [`DEFAULT_LOW_THRESHOLD_PERCENT`]).
fn low_threshold(spec: &CreditsSpec) -> u64 {
    spec.low_threshold.unwrap_or_else(|| {
        let base = spec.refill.as_ref().map_or(spec.remaining, |r| r.amount);
        base / 100 * DEFAULT_LOW_THRESHOLD_PERCENT + base % 100 * DEFAULT_LOW_THRESHOLD_PERCENT / 100
    })
}

/// Gives a key created in this batch its credits (in the same batch, so it is never usable
/// unmetered).
pub(crate) fn set_on_create(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    key: &KeyRecord,
    spec: &CreditsSpec,
) {
    let payload = Payload::CreditsSet(CreditsSet {
        key_id: key.key_id,
        workspace: key.workspace.clone(),
        remaining: spec.remaining,
        refill: spec.refill.clone(),
        low_threshold: low_threshold(spec),
    });
    emit(state, batch, &caller.actor, caller.request_id, payload);
}

/// Moves the old key's credits to its successor in a rotation's batch: a due refill of the
/// old key first (so no refill is lost), then the successor gets the balance, the refill and
/// the threshold, and the old key keeps none (it is denied `usage_exceeded` during an
/// overlap): the same credits can never be spent twice.
pub(crate) fn move_on_rotation(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    old: &KeyRecord,
    new: KeyId,
    now: Timestamp,
) {
    // Admin keys are never metered (a balance given to one before that rule stays behind).
    if old.workspace.is_ledger() || !state.credits.contains_key(&old.key_id) {
        return;
    }
    refill_if_due(state, batch, &caller.actor, caller.request_id, old.key_id, &old.workspace, now);
    let Some(credits) = state.credits.get(&old.key_id).cloned() else { return };
    let to_new = CreditsSet {
        key_id: new,
        workspace: old.workspace.clone(),
        remaining: credits.remaining,
        refill: credits.refill.clone(),
        low_threshold: credits.low_threshold,
    };
    emit(state, batch, &caller.actor, caller.request_id, Payload::CreditsSet(to_new));
    let emptied = CreditsSet {
        key_id: old.key_id,
        workspace: old.workspace.clone(),
        remaining: 0,
        refill: None,
        low_threshold: credits.low_threshold,
    };
    emit(state, batch, &caller.actor, caller.request_id, Payload::CreditsSet(emptied));
}

/// A top-up: adds to or sets a key's balance (a due refill applied first, so a top-up is
/// never overwritten by a refill that was already owed). `set` gives credits to a key
/// without any; `add` needs existing credits.
pub(crate) fn top_up(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    key_id: KeyId,
    change: CreditsChange,
    now: Timestamp,
) -> Result<(KeyRecord, KeyCredits), LedgerError> {
    check_actor(state, caller, now)?;
    let authority = crate::authority::Authority::of(state, caller)?;
    let key = act_on(state, &authority, &key_id, "change")?;
    if key.workspace.is_ledger() {
        return Err(LedgerError::invalid("credits", "admin keys are never metered"));
    }
    if key.revoked_at.is_some() {
        return Err(LedgerError::Conflict(format!("key {key_id} is revoked and cannot be changed")));
    }
    // The balance a due refill would leave, checked before anything is appended: a refused
    // top-up appends nothing, not even the refill (that waits for the next spend or top-up).
    let mut current = state.credits.get(&key_id).cloned();
    if let Some(c) = &mut current
        && let Some(refill) = &c.refill
        && refill_due(refill, c.since, now)
    {
        c.remaining = refill.amount;
    }
    let (remaining, refill, threshold) = match (change, &current) {
        (CreditsChange::Add(_), None) => {
            return Err(LedgerError::Conflict(format!(
                "key {key_id} has no credits to add to; give it a balance with `set`"
            )));
        }
        (CreditsChange::Add(n), Some(c)) => {
            let sum = c.remaining.checked_add(n).filter(|s| *s <= MAX_CREDITS);
            let sum = sum.ok_or_else(|| {
                LedgerError::invalid("add", format!("the balance would exceed {MAX_CREDITS}"))
            })?;
            (sum, c.refill.clone(), c.low_threshold)
        }
        (CreditsChange::Set(n), Some(c)) => (n, c.refill.clone(), c.low_threshold),
        (CreditsChange::Set(n), None) => {
            (n, None, low_threshold(&CreditsSpec { remaining: n, refill: None, low_threshold: None }))
        }
    };
    refill_if_due(state, batch, &caller.actor, caller.request_id, key_id, &key.workspace, now);
    let payload = Payload::CreditsSet(CreditsSet {
        key_id,
        workspace: key.workspace.clone(),
        remaining,
        refill,
        low_threshold: threshold,
    });
    emit(state, batch, &caller.actor, caller.request_id, payload);
    let credits = state
        .credits
        .get(&key_id)
        .cloned()
        .ok_or_else(|| LedgerError::Internal("credits vanished".into()))?;
    Ok((find(state, &key_id)?, credits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::VerifyRequirements;
    use keyledger_core::{Created, DenyReason, Environment, KeyHash, RefillInterval};

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn rid() -> RequestId {
        RequestId::from_bytes([7; 16])
    }

    /// A registry holding one key with `remaining` credits refilled to 5 daily, set at `when`.
    fn metered_key(remaining: u64, when: Timestamp) -> (LedgerState, KeyId) {
        let key_id = KeyId::from_bytes([1; 16]);
        let workspace: WorkspaceId = "acme".parse().unwrap();
        let mut state = LedgerState::default();
        let mut batch = Batch::detached(0, when);
        let created = Payload::Created(Created {
            key_id,
            workspace: workspace.clone(),
            name: "metered".into(),
            hash: KeyHash([3; 32]),
            hint: "kl_live_…abcd".into(),
            prefix: "kl".parse().unwrap(),
            environment: Environment::Live,
            scopes: vec![],
            resources: vec![],
            owner: None,
            metadata: "{}".into(),
            expires_at: None,
            rotated_from: None,
        });
        emit(&mut state, &mut batch, &Actor::System, rid(), created);
        let refill = Some(Refill { amount: 5, interval: RefillInterval::Daily, day: None });
        let set = CreditsSet { key_id, workspace, remaining, refill, low_threshold: 1 };
        emit(&mut state, &mut batch, &Actor::System, rid(), Payload::CreditsSet(set));
        (state, key_id)
    }

    /// Verifies the key at `when` with `cost`; returns the decision and the kinds appended.
    fn verify_at(
        state: &mut LedgerState,
        key_id: KeyId,
        cost: u64,
        when: Timestamp,
    ) -> (Result<(), DenyReason>, Vec<Payload>) {
        let mut batch = Batch::detached(state.applied, when);
        let wants = VerifyRequirements { cost: Some(cost), ..Default::default() };
        let verdict = crate::sequencer::verify(
            state,
            crate::sequencer_ratelimit::Limiting {
                counters: &mut crate::ratelimit::RateCounters::default(),
                spends_in_events: true,
            },
            &mut batch,
            rid(),
            key_id,
            &wants,
            UsageContext::default(),
            None,
            when,
        )
        .unwrap();
        assert_eq!(verdict.credits_remaining, state.credits.get(&key_id).map(|c| c.remaining));
        (verdict.outcome, batch.events().iter().map(|e| e.payload.clone()).collect())
    }

    /// A top-up refused (its sum over the maximum) when a refill is due appends nothing, not
    /// even the refill; one accepted appends the refill first and adds to the refilled
    /// balance.
    #[test]
    fn a_refused_top_up_appends_nothing_even_when_a_refill_is_due() {
        let (mut state, key) = metered_key(2, at("2026-12-03T10:00:00Z"));
        let next_day = at("2026-12-04T08:00:00Z");
        let mut batch = Batch::detached(state.applied, next_day);
        let caller = Caller { actor: Actor::System, request_id: rid() };
        let refused = top_up(&mut state, &mut batch, &caller, key, CreditsChange::Add(MAX_CREDITS), next_day);
        assert!(matches!(&refused, Err(LedgerError::Invalid(f)) if f.field == "add"), "{refused:?}");
        assert!(batch.events().is_empty(), "{:?}", batch.events());
        let (_, credits) =
            top_up(&mut state, &mut batch, &caller, key, CreditsChange::Add(1), next_day).unwrap();
        assert_eq!(credits.remaining, 6, "1 added to the refilled 5");
        assert!(
            matches!(batch.events(), [r, t] if matches!(r.payload, Payload::CreditsRefilled(_)) && matches!(t.payload, Payload::CreditsSet(_))),
            "{:?}",
            batch.events()
        );
    }

    #[test]
    fn a_refill_is_appended_before_the_first_spend_after_the_boundary() {
        let (mut state, key) = metered_key(2, at("2026-12-03T10:00:00Z"));
        let (outcome, events) = verify_at(&mut state, key, 2, at("2026-12-03T23:59:59Z"));
        assert_eq!(outcome, Ok(()));
        assert!(matches!(&events[..], [Payload::Metered(m)] if m.cost == 2 && m.remaining == 0));
        let (outcome, events) = verify_at(&mut state, key, 1, at("2026-12-03T23:59:59.5Z"));
        assert_eq!(outcome, Err(DenyReason::UsageExceeded), "nothing left before midnight");
        assert!(matches!(&events[..], [Payload::Denied(d)] if d.reason == DenyReason::UsageExceeded));
        assert_eq!(state.credits[&key].remaining, 0, "a denial spends nothing");

        let (outcome, events) = verify_at(&mut state, key, 1, at("2026-12-04T00:00:01Z"));
        assert_eq!(outcome, Ok(()));
        assert!(
            matches!(&events[..], [Payload::CreditsRefilled(r), Payload::Metered(m)] if r.remaining == 5 && m.remaining == 4),
            "{events:?}"
        );
        assert_eq!(state.credits[&key].refilled_at, Some(at("2026-12-04T00:00:01Z")));
        // The same day again: no second refill.
        let (_, events) = verify_at(&mut state, key, 1, at("2026-12-04T22:00:00Z"));
        assert!(matches!(&events[..], [Payload::Metered(m)] if m.remaining == 3), "{events:?}");
        // A refill sets the balance (unused credits do not accumulate), even over a top-up.
        let (_, events) = verify_at(&mut state, key, 0, at("2026-12-09T08:00:00Z"));
        assert!(
            matches!(&events[..], [Payload::CreditsRefilled(r), Payload::Metered(m)] if r.remaining == 5 && m.cost == 0 && m.remaining == 5)
        );
    }

    #[test]
    fn a_refill_owed_before_a_top_up_is_applied_first() {
        let (mut state, key) = metered_key(0, at("2026-12-03T10:00:00Z"));
        let caller = Caller { actor: Actor::System, request_id: rid() };
        let mut batch = Batch::detached(state.applied, at("2026-12-05T10:00:00Z"));
        let (_, credits) =
            top_up(&mut state, &mut batch, &caller, key, CreditsChange::Add(10), at("2026-12-05T10:00:00Z"))
                .unwrap();
        assert_eq!(credits.remaining, 15, "refilled to 5, then 10 added");
        assert!(
            matches!(batch.events(), [e1, e2] if matches!(e1.payload, Payload::CreditsRefilled(_)) && matches!(e2.payload, Payload::CreditsSet(_)))
        );
        let mut batch = Batch::detached(state.applied, at("2026-12-05T11:00:00Z"));
        let too_much = top_up(
            &mut state,
            &mut batch,
            &caller,
            key,
            CreditsChange::Add(MAX_CREDITS),
            at("2026-12-05T11:00:00Z"),
        );
        assert!(matches!(too_much, Err(LedgerError::Invalid(_))));
        assert!(batch.events().is_empty(), "a refused top-up appends nothing");
        assert_eq!(state.credits[&key].remaining, 15);
    }

    #[test]
    fn the_default_threshold_is_ten_percent_without_overflow() {
        let spec = |remaining, refill: Option<u64>| CreditsSpec {
            remaining,
            refill: refill.map(|amount| Refill {
                amount,
                interval: keyledger_core::RefillInterval::Daily,
                day: None,
            }),
            low_threshold: None,
        };
        assert_eq!(low_threshold(&spec(1000, None)), 100);
        assert_eq!(low_threshold(&spec(5, None)), 0);
        assert_eq!(low_threshold(&spec(5, Some(2000))), 200);
        assert_eq!(low_threshold(&spec(MAX_CREDITS, None)), MAX_CREDITS / 10);
        let explicit = CreditsSpec { low_threshold: Some(7), ..spec(1000, None) };
        assert_eq!(low_threshold(&explicit), 7);
    }
}
