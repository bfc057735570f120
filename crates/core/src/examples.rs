//! One event of every kind, with fixed values: the codec's golden bytes are pinned to these
//! (crates/core/src/codec.rs), and the API's tests check the JSON form of each against the
//! OpenAPI document. Built only for tests (`cfg(test)` or the `examples` feature).

use crate::event::*;
use crate::ids::{KeyId, RequestId};
use crate::secret::{Environment, KeyHash};
use crate::time::Timestamp;

pub fn key(n: u8) -> KeyId {
    KeyId::from_bytes([n; 16])
}

fn envelope(payload: Payload) -> Event {
    Event {
        seq: 300,
        at: Timestamp(1_700_000_000_123_456),
        actor: Actor::Admin(key(9)),
        request_id: RequestId::from_bytes([7; 16]),
        payload,
    }
}

fn context() -> UsageContext {
    UsageContext {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: Some("curl/8".into()),
        method: Some("GET".into()),
        path: Some("/v1/x".into()),
        request_id: Some("gw-1".into()),
        scopes: vec!["read".into()],
        resource: Some("db".into()),
    }
}

/// One example of every kind (two of some, where the JSON form differs), pinned to its
/// exact bytes by the codec's golden list.
pub fn examples() -> Vec<(EventKind, Event)> {
    let ws: crate::WorkspaceId = "acme".parse().unwrap();
    vec![
        (
            EventKind::Created,
            envelope(Payload::Created(Created {
                key_id: key(1),
                workspace: ws.clone(),
                name: "ci".into(),
                hash: KeyHash([0xab; 32]),
                hint: "kl_live_…abcd".into(),
                prefix: "kl".parse().unwrap(),
                environment: Environment::Live,
                scopes: vec!["read".into()],
                resources: vec![],
                owner: Some("ops".into()),
                metadata: "{}".into(),
                expires_at: Some(Timestamp(1)),
                rotated_from: None,
            })),
        ),
        (
            EventKind::Used,
            envelope(Payload::Used(Usage { key_id: key(1), workspace: ws.clone(), context: context() })),
        ),
        (
            EventKind::Denied,
            envelope(Payload::Denied(Denial {
                key_id: key(1),
                workspace: ws.clone(),
                reason: DenyReason::MissingScope("write".into()),
                context: UsageContext::default(),
            })),
        ),
        (
            EventKind::Rotated,
            envelope(Payload::Rotated(Rotated {
                key_id: key(1),
                workspace: ws.clone(),
                rotated_to: key(2),
                valid_until: None,
            })),
        ),
        (
            EventKind::Revoked,
            envelope(Payload::Revoked(Revoked {
                key_id: key(1),
                workspace: ws.clone(),
                reason: Some("leak".into()),
            })),
        ),
        (EventKind::Expired, envelope(Payload::Expired(KeyRef { key_id: key(1), workspace: ws.clone() }))),
        (
            EventKind::PolicySet,
            envelope(Payload::PolicySet(PolicySet {
                workspace: ws.clone(),
                policy: Policy {
                    max_active_keys: Some(1),
                    require_expiry: true,
                    max_lifetime: Some(60),
                    key_prefix: Some("ac".parse().unwrap()),
                },
            })),
        ),
        (
            EventKind::Updated,
            envelope(Payload::Updated(Updated {
                key_id: key(1),
                workspace: ws.clone(),
                name: Some("n".into()),
                owner: Some(None),
                metadata: None,
                expires_at: None,
                scopes: Some(vec![]),
                resources: None,
            })),
        ),
        (
            EventKind::Disabled,
            envelope(Payload::Disabled(Disabled { key_id: key(1), workspace: ws.clone(), reason: None })),
        ),
        (EventKind::Enabled, envelope(Payload::Enabled(KeyRef { key_id: key(1), workspace: ws.clone() }))),
        (EventKind::Lookup, envelope(Payload::Lookup(Lookup { workspace: ws.clone(), found: Some(key(1)) }))),
        (
            EventKind::Idempotency,
            envelope(Payload::Idempotency(IdempotencyRecord {
                id: [0x11; 32],
                fingerprint: [0x22; 32],
                workspace: ws.clone(),
                key_ids: vec![key(1)],
            })),
        ),
        (
            EventKind::WebhookSet,
            envelope(Payload::WebhookSet(WebhookSet {
                workspace: ws.clone(),
                url: "https://h/x".into(),
                events: vec!["key.revoked".into()],
                enabled: true,
            })),
        ),
        (
            EventKind::SourcesSet,
            envelope(Payload::SourcesSet(SourcesSet {
                workspace: "acme".parse().unwrap(),
                key_id: Some(key(1)),
                sources: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
                from_policy: false,
                require_on_live: false,
            })),
        ),
        (
            EventKind::Used,
            envelope(Payload::Metered(crate::Metered {
                usage: Usage { key_id: key(1), workspace: ws.clone(), context: UsageContext::default() },
                cost: 300,
                remaining: 7,
            })),
        ),
        (
            EventKind::CreditsSet,
            envelope(Payload::CreditsSet(crate::CreditsSet {
                key_id: key(1),
                workspace: ws.clone(),
                remaining: 10,
                refill: Some(crate::Refill {
                    amount: 10,
                    interval: crate::RefillInterval::Monthly,
                    day: Some(15),
                }),
                low_threshold: 1,
            })),
        ),
        (
            EventKind::CreditsRefilled,
            envelope(Payload::CreditsRefilled(crate::CreditsRefilled {
                key_id: key(1),
                workspace: ws.clone(),
                remaining: 10,
            })),
        ),
        (
            EventKind::Denied,
            envelope(Payload::Denied(Denial {
                key_id: key(1),
                workspace: ws,
                reason: DenyReason::UsageExceeded,
                context: UsageContext::default(),
            })),
        ),
        (
            EventKind::LeakReported,
            envelope(Payload::LeakReported(crate::LeakReported {
                key_id: key(1),
                workspace: "acme".parse().unwrap(),
                reporter: crate::LeakReporter::Github,
                url: Some("https://x/y".into()),
                source: None,
            })),
        ),
        (
            EventKind::LeakPolicySet,
            envelope(Payload::LeakPolicySet(crate::LeakPolicySet {
                workspace: "acme".parse().unwrap(),
                on_leak: crate::OnLeak::Revoke,
            })),
        ),
        (
            EventKind::RateLimitsSet,
            envelope(Payload::RateLimitsSet(crate::RateLimitsSet {
                workspace: "acme".parse().unwrap(),
                key_id: Some(key(1)),
                limits: vec![crate::RateLimit {
                    name: "api".into(),
                    limit: 100,
                    duration: 60_000_000,
                    auto_apply: true,
                }],
            })),
        ),
        (
            EventKind::Denied,
            envelope(Payload::Denied(Denial {
                key_id: key(1),
                workspace: "acme".parse().unwrap(),
                reason: DenyReason::RateLimited("api".into()),
                context: UsageContext::default(),
            })),
        ),
        (
            EventKind::KeyImported,
            envelope(Payload::KeyImported(crate::KeyImported {
                key_id: key(1),
                workspace: "acme".parse().unwrap(),
                name: "n".into(),
                foreign: crate::ForeignHash {
                    algorithm: crate::ForeignAlgorithm::Sha256,
                    digest: [0x5a; 32],
                },
                environment: Environment::Test,
                scopes: vec!["read".into()],
                resources: vec![],
                owner: None,
                metadata: "{}".into(),
                expires_at: None,
                external_id: Some("x1".into()),
            })),
        ),
        (
            EventKind::KeyRehashed,
            envelope(Payload::KeyRehashed(crate::KeyRehashed {
                key_id: key(1),
                workspace: "acme".parse().unwrap(),
                hash: KeyHash([0xab; 32]),
            })),
        ),
        (
            EventKind::Used,
            envelope(Payload::Counted(Counted {
                usage: Usage {
                    key_id: key(1),
                    workspace: "acme".parse().unwrap(),
                    context: UsageContext::default(),
                },
                credits: Some(CreditSpend { cost: 2, remaining: 7 }),
                spent: vec![LimitSpend { name: "api".into(), cost: 1, duration: 60_000_000 }],
            })),
        ),
        (
            EventKind::SourcesSet,
            envelope(Payload::SourcesSet(SourcesSet {
                workspace: "acme".parse().unwrap(),
                key_id: None,
                sources: vec!["192.0.2.0/24".parse().unwrap()],
                from_policy: false,
                require_on_live: true,
            })),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The variant's place in [`Payload`]'s declaration. No wildcard arm: a new variant
    /// does not compile here until it is named, and then fails the test below until it
    /// has an example.
    fn variant(payload: &Payload) -> usize {
        match payload {
            Payload::Created(_) => 0,
            Payload::Used(_) => 1,
            Payload::Denied(_) => 2,
            Payload::Rotated(_) => 3,
            Payload::Revoked(_) => 4,
            Payload::Expired(_) => 5,
            Payload::PolicySet(_) => 6,
            Payload::Updated(_) => 7,
            Payload::Disabled(_) => 8,
            Payload::Enabled(_) => 9,
            Payload::Lookup(_) => 10,
            Payload::Idempotency(_) => 11,
            Payload::WebhookSet(_) => 12,
            Payload::SourcesSet(_) => 13,
            Payload::Metered(_) => 14,
            Payload::CreditsSet(_) => 15,
            Payload::CreditsRefilled(_) => 16,
            Payload::LeakReported(_) => 17,
            Payload::LeakPolicySet(_) => 18,
            Payload::RateLimitsSet(_) => 19,
            Payload::KeyImported(_) => 20,
            Payload::KeyRehashed(_) => 21,
            Payload::Counted(_) => 22,
        }
    }

    #[test]
    fn every_payload_variant_has_an_example_of_its_kind() {
        let examples = examples();
        let seen: BTreeSet<usize> = examples.iter().map(|(_, event)| variant(&event.payload)).collect();
        assert_eq!(seen, (0..=22).collect::<BTreeSet<_>>());
        for (kind, event) in &examples {
            assert_eq!(event.payload.kind(), *kind);
        }
    }
}
