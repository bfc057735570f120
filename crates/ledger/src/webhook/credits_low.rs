//! The `key.credits_low` notification (docs/webhooks.md): a spend took a key's credit
//! balance from above its low threshold to at or below it.
//!
//! It is decided from the `used` event alone (its cost and the balance after it) and the
//! key's threshold, so it fires once per crossing: the next spends stay below and fire
//! nothing until a refill or top-up lifts the balance above the threshold again. Its
//! delivery id derives from the event's seq, so a dispatcher restarted after a crash queues
//! the same delivery again, never a second one.

use super::{Notification, notification};
use keyledger_core::json::event_json;
use keyledger_core::{Event, KeyId};
use serde_json::json;

/// The notification of `event`, if it is a metered `used` event crossing the threshold that
/// `threshold(key)` gives (`None`: the key has no credits any more, nothing fires).
pub fn credits_low(event: &Event, threshold: impl FnOnce(KeyId) -> Option<u64>) -> Option<Notification> {
    let (Some(spend), Some(usage)) = (event.payload.credit_spend(), event.payload.usage()) else {
        return None;
    };
    let key_id = usage.key_id;
    let before = spend.remaining.saturating_add(spend.cost);
    let threshold = threshold(key_id)?;
    if !(spend.remaining <= threshold && before > threshold) {
        return None;
    }
    let data = json!({
        "key_id": key_id.to_string(),
        "remaining": spend.remaining,
        "low_threshold": threshold,
        "event": event_json(event),
    });
    let workspace = event.payload.workspace();
    Some(notification(
        workspace,
        "key.credits_low",
        &event.seq.to_be_bytes(),
        event.at,
        Some(event.seq),
        data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_core::{
        Actor, Counted, CreditSpend, LimitSpend, Metered, Payload, RequestId, Timestamp, Usage,
    };

    fn spend(seq: u64, cost: u64, remaining: u64) -> Event {
        let usage = Usage {
            key_id: KeyId::from_bytes([1; 16]),
            workspace: "acme".parse().unwrap(),
            context: Default::default(),
        };
        Event {
            seq,
            at: Timestamp(1),
            actor: Actor::Verifier,
            request_id: RequestId::from_bytes([2; 16]),
            payload: Payload::Metered(Metered { usage, cost, remaining }),
        }
    }

    #[test]
    fn fires_only_on_the_spend_that_crosses_the_threshold() {
        let low = |e: &Event| credits_low(e, |_| Some(10)).map(|n| n.kind);
        assert_eq!(low(&spend(1, 1, 11)), None, "still above");
        assert_eq!(low(&spend(2, 1, 10)), Some("key.credits_low"), "11 -> 10 crosses");
        assert_eq!(low(&spend(3, 1, 9)), None, "already below");
        assert_eq!(low(&spend(4, 5, 8)), Some("key.credits_low"), "13 -> 8 crosses");
        assert_eq!(low(&spend(5, 0, 10)), None, "a check without spending crosses nothing");
        assert_eq!(credits_low(&spend(6, 1, 10), |_| None), None, "a key without credits");
        let body: serde_json::Value =
            serde_json::from_str(&credits_low(&spend(2, 1, 10), |_| Some(10)).unwrap().body).unwrap();
        assert_eq!(body["data"]["remaining"], 10);
        assert_eq!(body["data"]["event"]["kind"], "used");
    }

    #[test]
    fn a_spend_that_also_counted_against_rate_limits_fires_too() {
        let counted = |cost, remaining, credits: bool| {
            let mut event = spend(7, cost, remaining);
            let Payload::Metered(Metered { usage, .. }) = event.payload else { unreachable!() };
            let credits = credits.then_some(CreditSpend { cost, remaining });
            let spent = vec![LimitSpend { name: "api".into(), cost: 1, duration: 60_000_000 }];
            event.payload = Payload::Counted(Counted { usage, credits, spent });
            event
        };
        let low = |e: &Event| credits_low(e, |_| Some(10)).map(|n| n.kind);
        assert_eq!(low(&counted(1, 10, true)), Some("key.credits_low"), "11 -> 10 crosses");
        assert_eq!(low(&counted(1, 11, true)), None, "still above");
        assert_eq!(low(&counted(1, 10, false)), None, "no credits spent");
    }
}
