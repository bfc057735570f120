//! The canonical byte encoding of events: one version byte, then postcard.
//!
//! postcard's wire format is frozen at 1.0 and has no optional or reordered fields, so a
//! given event has one encoding. Decoding enforces the converse: bytes that do not
//! re-encode to themselves (overlong varints, trailing bytes, a non-minimal form) are
//! rejected, so every event has **exactly one** valid encoding and the hash of the stored
//! bytes identifies the event.

use crate::event::Event;

/// The current (and only) encoding version.
pub const EVENT_VERSION: u8 = 1;

/// Why bytes are not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty event")]
    Empty,
    #[error("unknown event encoding version {0}")]
    UnknownVersion(u8),
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("event bytes are not in canonical form")]
    NonCanonical,
}

/// Encodes an event. Deterministic: the same event always gives the same bytes.
pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(EVENT_VERSION);
    encode_into(event, out)
}

fn encode_into(event: &Event, out: Vec<u8>) -> Vec<u8> {
    // Serializing plain structs, strings and vectors into a Vec cannot fail.
    postcard::to_extend(event, out).unwrap_or_default()
}

/// Decodes an event, accepting only its canonical encoding.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != EVENT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let event: Event = postcard::from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if encode_event(&event) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;
    use crate::ids::{KeyId, RequestId};
    use crate::secret::{Environment, KeyHash};
    use crate::time::Timestamp;
    use proptest::prelude::*;

    fn key(n: u8) -> KeyId {
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

    /// One example of every kind, pinned to its exact bytes below.
    fn examples() -> Vec<(EventKind, Event)> {
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
            (
                EventKind::Expired,
                envelope(Payload::Expired(KeyRef { key_id: key(1), workspace: ws.clone() })),
            ),
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
            (
                EventKind::Enabled,
                envelope(Payload::Enabled(KeyRef { key_id: key(1), workspace: ws.clone() })),
            ),
            (
                EventKind::Lookup,
                envelope(Payload::Lookup(Lookup { workspace: ws.clone(), found: Some(key(1)) })),
            ),
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
        ]
    }

    const ENVELOPE: &str =
        "01ac028089818283898506010909090909090909090909090909090907070707070707070707070707070707";

    /// The pinned encodings. If one of these changes, stored logs would no longer verify:
    /// add a new variant or version instead.
    const GOLDEN: &[(EventKind, &str)] = &[
        (
            EventKind::Created,
            "00010101010101010101010101010101010461636d65026369abababababababababababababababababababababababababababababababab0f6b6c5f6c6976655fe280a661626364026b6c000104726561640001036f7073027b7d010200",
        ),
        (
            EventKind::Used,
            "01010101010101010101010101010101010461636d650100cb00710701066375726c2f38010347455401052f76312f78010467772d3101047265616401026462",
        ),
        (EventKind::Denied, "02010101010101010101010101010101010461636d650305777269746500000000000000"),
        (
            EventKind::Rotated,
            "03010101010101010101010101010101010461636d650202020202020202020202020202020200",
        ),
        (EventKind::Revoked, "04010101010101010101010101010101010461636d6501046c65616b"),
        (EventKind::Expired, "05010101010101010101010101010101010461636d65"),
        (EventKind::PolicySet, "060461636d65010101017801026163"),
        (EventKind::Updated, "07010101010101010101010101010101010461636d6501016e01000000010000"),
        (EventKind::Disabled, "08010101010101010101010101010101010461636d6500"),
        (EventKind::Enabled, "09010101010101010101010101010101010461636d65"),
        (EventKind::Lookup, "0a0461636d650101010101010101010101010101010101"),
        (
            EventKind::Idempotency,
            "0b111111111111111111111111111111111111111111111111111111111111111122222222222222222222222222222222222222222222222222222222222222220461636d650101010101010101010101010101010101",
        ),
        (EventKind::WebhookSet, "0c0461636d650b68747470733a2f2f682f78010b6b65792e7265766f6b656401"),
        (
            EventKind::SourcesSet,
            "0d0461636d65010101010101010101010101010101010102000a000000080120010db8000000000000000000000000200000",
        ),
        (EventKind::Used, "0e010101010101010101010101010101010461636d6500000000000000ac0207"),
        (EventKind::CreditsSet, "0f010101010101010101010101010101010461636d650a010a01010f01"),
        (EventKind::CreditsRefilled, "10010101010101010101010101010101010461636d650a"),
        (EventKind::Denied, "02010101010101010101010101010101010461636d650800000000000000"),
        (
            EventKind::LeakReported,
            "11010101010101010101010101010101010461636d6500010b68747470733a2f2f782f7900",
        ),
        (EventKind::LeakPolicySet, "120461636d6501"),
        (EventKind::RateLimitsSet, "130461636d650101010101010101010101010101010101010361706964809c9c3901"),
        (EventKind::Denied, "02010101010101010101010101010101010461636d65090361706900000000000000"),
        (
            EventKind::KeyImported,
            "14010101010101010101010101010101010461636d65016e005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a010104726561640000027b7d0001027831",
        ),
        (
            EventKind::KeyRehashed,
            "15010101010101010101010101010101010461636d65abababababababababababababababababababababababababababababababab",
        ),
        (
            EventKind::Used,
            "16010101010101010101010101010101010461636d6500000000000000010207010361706901809c9c39",
        ),
    ];

    #[test]
    fn every_kind_has_pinned_bytes() {
        let examples = examples();
        assert_eq!(examples.len(), GOLDEN.len(), "a kind without golden bytes");
        for ((kind, event), (golden_kind, golden_payload)) in examples.iter().zip(GOLDEN) {
            assert_eq!(kind, golden_kind);
            assert_eq!(event.payload.kind(), *kind);
            let bytes = encode_event(event);
            assert_eq!(
                hex::encode(&bytes),
                format!("{ENVELOPE}{golden_payload}"),
                "encoding of {kind:?} changed"
            );
            assert_eq!(&decode_event(&bytes).unwrap(), event);
        }
    }

    /// The actor's tag in the envelope (after seq and time): one byte per variant, in
    /// declaration order, so adding `Recovery` at the end left the other encodings alone.
    #[test]
    fn every_actor_has_pinned_bytes() {
        let event = |actor: Actor| Event { actor, ..examples()[4].1.clone() };
        let pinned = [
            (Actor::System, "00"),
            (Actor::Admin(key(9)), "0109090909090909090909090909090909"),
            (Actor::Verifier, "02"),
            (Actor::Recovery, "03"),
        ];
        for (actor, tag) in pinned {
            let event = event(actor.clone());
            let bytes = hex::encode(encode_event(&event));
            assert_eq!(&bytes[..22], "01ac028089818283898506", "{actor:?}");
            assert_eq!(&bytes[22..22 + tag.len()], tag, "encoding of {actor:?} changed");
            assert_eq!(decode_event(&encode_event(&event)).unwrap(), event);
        }
        assert_eq!(crate::json::actor_text(&Actor::Recovery), "recovery");
    }

    #[test]
    fn rejects_non_canonical_and_foreign_bytes() {
        let bytes = encode_event(&examples()[0].1);
        assert_eq!(decode_event(&[]), Err(DecodeError::Empty));
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 2;
        assert_eq!(decode_event(&wrong_version), Err(DecodeError::UnknownVersion(2)));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode_event(&trailing), Err(DecodeError::NonCanonical));
        // seq 300 is `ac 02`; an overlong varint `ac 82 00` decodes to the same number.
        let mut overlong = vec![1u8, 0xac, 0x82, 0x00];
        overlong.extend_from_slice(&bytes[3..]);
        assert!(decode_event(&overlong).is_err());
        assert!(decode_event(&bytes[..bytes.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(event) = decode_event(&bytes) {
                prop_assert_eq!(encode_event(&event), bytes);
            }
        }

        #[test]
        fn mutated_events_decode_canonically_or_fail(index in 0usize..17, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = encode_event(&examples()[index].1);
            let at = pos.index(bytes.len());
            bytes[at] = byte;
            if let Ok(event) = decode_event(&bytes) {
                prop_assert_eq!(encode_event(&event), bytes);
            }
        }
    }
}
