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
    encode_event_into(event, &mut out);
    out
}

/// Appends the encoding of `event` (the bytes [`encode_event`] gives) to `out`, so that a
/// batch of events can share one buffer.
pub fn encode_event_into(event: &Event, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(EVENT_VERSION);
    // Serializing plain structs, strings and vectors into a Vec cannot fail; if it did, the
    // record would be empty, as `encode_event` has always made it.
    if postcard::to_extend(event, Appender(out)).is_err() {
        out.truncate(start);
    }
}

/// Extends a borrowed buffer (postcard's `to_extend` takes its sink by value).
struct Appender<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appender<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
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
    use crate::examples::{examples, key};
    use proptest::prelude::*;

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
        (EventKind::SourcesSet, "0d0461636d65000100c0000200180001"),
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

    /// Events encoded back to back into one buffer are each exactly their own encoding,
    /// whatever the buffer held before.
    #[test]
    fn encoding_into_a_buffer_appends_each_events_own_bytes() {
        let events: Vec<Event> = examples().into_iter().map(|(_, event)| event).collect();
        let mut buffer = b"earlier bytes".to_vec();
        let mut ends = Vec::new();
        for event in &events {
            encode_event_into(event, &mut buffer);
            ends.push(buffer.len());
        }
        assert_eq!(&buffer[..13], b"earlier bytes");
        let mut start = 13;
        for (event, end) in events.iter().zip(ends) {
            assert_eq!(buffer[start..end], encode_event(event)[..]);
            assert_eq!(&decode_event(&buffer[start..end]).unwrap(), event);
            start = end;
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
