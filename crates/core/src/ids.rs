//! Public identifiers: key ids, request ids and workspace ids.
//!
//! Key and request ids are 128-bit, time-ordered values (48 bits of milliseconds, 80 random
//! bits, as in ULID) written as `key_`/`req_` plus 26 lowercase Crockford base32 characters.
//! In the event encoding they are stored as their 16 raw bytes; in JSON as their text.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be `{prefix}` followed by 26 lowercase Crockford base32 characters")]
    BadId { prefix: &'static str },
    #[error("must match [a-z0-9][a-z0-9_-]{{0,62}} (or be the reserved `_ledger`)")]
    BadWorkspace,
}

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn encode_crockford(bytes: &[u8; 16]) -> [u8; 26] {
    let value = u128::from_be_bytes(*bytes);
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        *slot = CROCKFORD[((value >> shift) & 31) as usize];
    }
    out
}

fn decode_crockford(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 26 || bytes[0] > b'7' {
        return None;
    }
    let mut value: u128 = 0;
    for &c in bytes {
        let digit = CROCKFORD.iter().position(|&a| a == c)? as u128;
        value = (value << 5) | digit;
    }
    Some(value.to_be_bytes())
}

/// Random bytes from the operating system, drawn [`RANDOM_POOL`] bytes at a time per thread:
/// every request gets a fresh id, and one `getrandom(2)` per id was a visible share of the
/// verify path. The bytes are the OS generator's all the same, each used once.
const RANDOM_POOL: usize = 640;

struct RandomPool {
    bytes: [u8; RANDOM_POOL],
    used: usize,
}

thread_local! {
    static RANDOM: std::cell::RefCell<RandomPool> =
        const { std::cell::RefCell::new(RandomPool { bytes: [0; RANDOM_POOL], used: RANDOM_POOL }) };
}

fn random_bytes(out: &mut [u8]) {
    RANDOM.with_borrow_mut(|pool| {
        if pool.used + out.len() > RANDOM_POOL {
            getrandom::fill(&mut pool.bytes).expect("the operating system's random source failed");
            pool.used = 0;
        }
        let start = pool.used;
        out.copy_from_slice(&pool.bytes[start..start + out.len()]);
        // Never hand the same bytes out twice.
        pool.bytes[start..start + out.len()].fill(0);
        pool.used += out.len();
    });
}

fn fresh_ulid(now_ms: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&now_ms.to_be_bytes()[2..]);
    random_bytes(&mut bytes[6..]);
    bytes
}

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// The text every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id, ordered by `now_ms` (milliseconds since the Unix epoch).
            pub fn generate(now_ms: u64) -> Self {
                Self(fresh_ulid(now_ms))
            }

            /// Rebuilds an id from its 16 raw bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            /// The id's 16 raw bytes (big-endian: they sort like the text form).
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// The id's text, as `Display` writes it, in one allocation of its exact size
            /// (`to_string` grows its buffer once per piece written).
            pub fn text(&self) -> String {
                let mut text = String::with_capacity($prefix.len() + 26);
                text.push_str($prefix);
                // Crockford output is ASCII by construction.
                text.push_str(std::str::from_utf8(&encode_crockford(&self.0)).unwrap_or_default());
                text
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($prefix)?;
                // Crockford output is ASCII by construction.
                f.write_str(std::str::from_utf8(&encode_crockford(&self.0)).unwrap_or_default())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                text.strip_prefix($prefix)
                    .and_then(decode_crockford)
                    .map(Self)
                    .ok_or(IdError::BadId { prefix: $prefix })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    text.parse().map_err(de::Error::custom)
                } else {
                    <[u8; 16]>::deserialize(d).map(Self)
                }
            }
        }
    };
}

ulid_id!(
    /// The public identifier of a key (`key_` + 26 characters). Safe to log and display.
    KeyId,
    "key_"
);
ulid_id!(
    /// keyledger's own identifier of an HTTP request (`req_` + 26 characters).
    RequestId,
    "req_"
);

/// A tenant. Implicit: it exists as soon as a key names it. `_ledger` is reserved for
/// keyledger's own admin keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct WorkspaceId(String);

impl WorkspaceId {
    /// The reserved workspace whose keys administer keyledger itself.
    pub const LEDGER: &'static str = "_ledger";

    pub fn ledger() -> Self {
        Self(Self::LEDGER.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_ledger(&self) -> bool {
        self.0 == Self::LEDGER
    }

    fn is_valid(text: &str) -> bool {
        let bytes = text.as_bytes();
        if text == Self::LEDGER {
            return true;
        }
        !bytes.is_empty()
            && bytes.len() <= 63
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
    }
}

impl FromStr for WorkspaceId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        if Self::is_valid(text) { Ok(Self(text.to_owned())) } else { Err(IdError::BadWorkspace) }
    }
}

impl<'de> Deserialize<'de> for WorkspaceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_id_round_trips_and_orders_by_time() {
        let early = KeyId::generate(1_000);
        let late = KeyId::generate(2_000);
        assert!(early < late);
        let text = early.to_string();
        assert_eq!(text.len(), 4 + 26);
        assert!(text.starts_with("key_"));
        assert_eq!(text.parse::<KeyId>().unwrap(), early);
        assert!(text.to_string().replace("key_", "req_").parse::<KeyId>().is_err());
    }

    #[test]
    fn ids_of_one_millisecond_never_repeat_across_pool_refills() {
        // 10 random bytes an id: 1,000 ids draw the per-thread pool ~16 times over.
        let ids: std::collections::HashSet<RequestId> = (0..1_000).map(|_| RequestId::generate(7)).collect();
        assert_eq!(ids.len(), 1_000);
        // No id's random part is all zeros (the pool zeroes what it handed out).
        assert!(ids.iter().all(|id| id.as_bytes()[6..] != [0u8; 10]));
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "key_",
            "key_0123456789abcdefghjkmnpqr",
            "key_0123456789abcdefghjkmnpqrstv",
            "key_8zzzzzzzzzzzzzzzzzzzzzzzzz",
            "key_0123456789ABCDEFGHJKMNPQ",
            "key_0123456789abcdefghjkmnpu",
        ] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn workspace_rules() {
        for good in ["a", "acme", "acme-prod_2", "0", &"a".repeat(63), "_ledger"] {
            assert!(good.parse::<WorkspaceId>().is_ok(), "{good:?} rejected");
        }
        for bad in ["", "-a", "_a", "Acme", "a b", "a.b", &"a".repeat(64), "_ledger2"] {
            assert!(bad.parse::<WorkspaceId>().is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip_through_text(bytes in any::<[u8; 16]>()) {
            let id = RequestId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<RequestId>().unwrap(), id);
            prop_assert_eq!(id.text(), id.to_string());
            prop_assert_eq!(KeyId::from_bytes(*id.as_bytes()).text(), KeyId::from_bytes(*id.as_bytes()).to_string());
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = text.parse::<KeyId>();
            let _ = text.parse::<WorkspaceId>();
        }
    }
}
