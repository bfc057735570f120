//! Key secrets: their format, generation, checksum, redaction and keyed hashing.
//!
//! A secret reads `<prefix>_<env>_<body><check>`: `body` is 32 bytes from the OS CSPRNG
//! written as exactly 43 base62 characters, and `check` is 6 base62 characters derived from
//! BLAKE3 of everything before it. The checksum lets a verifier (or a secret scanner) reject
//! a mistyped or random string without any lookup.
//!
//! Guarantees: a [`Secret`] never shows its value through `Debug`/`Display` and zeroes its
//! memory on drop; only [`Secret::expose`] reveals it. What keyledger stores is a
//! [`KeyHash`], BLAKE3 keyed with the data dir's [`Pepper`].
//!
//! A webhook's signing secret is a [`Secret`] too (`whsec_` + 43 base62 characters), never
//! stored anywhere: [`Pepper::webhook_secret`] derives it again whenever it is needed.

use serde::{Deserialize, Deserializer, Serialize, de};
use std::fmt;
use std::str::FromStr;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters of the random body: 62^43 > 2^256, so 43 digits hold any 32 bytes.
pub const BODY_LEN: usize = 43;
/// Characters of the checksum.
pub const CHECK_LEN: usize = 6;
/// The prefix used when a workspace's policy names none.
pub const DEFAULT_PREFIX: &str = "kl";

/// Why a string is not a well-formed key secret. Never contains the candidate itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key is not of the form <prefix>_<live|test>_<body><check>")]
    Shape,
    #[error("the key's checksum does not match")]
    Checksum,
    #[error("the key prefix must match [a-z][a-z0-9]{{0,15}}")]
    Prefix,
    #[error("the operating system's random source failed")]
    Entropy,
}

/// `live` or `test`: which kind of traffic a key is meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

impl FromStr for Environment {
    type Err = KeyFormatError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "live" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            _ => Err(KeyFormatError::Shape),
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated key prefix, `[a-z][a-z0-9]{0,15}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn default_prefix() -> Self {
        Self(DEFAULT_PREFIX.to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    fn is_valid(text: &str) -> bool {
        let bytes = text.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 16
            && bytes[0].is_ascii_lowercase()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }
}

impl FromStr for KeyPrefix {
    type Err = KeyFormatError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if Self::is_valid(text) { Ok(Self(text.to_owned())) } else { Err(KeyFormatError::Prefix) }
    }
}

impl<'de> Deserialize<'de> for KeyPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a byte is a base62 digit (`[0-9A-Za-z]`).
fn is_base62(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

/// Writes 32 bytes as exactly 43 base62 digits (big-endian, zero-padded).
fn base62_body(bytes: &[u8; 32]) -> [u8; BODY_LEN] {
    let mut number = *bytes;
    let mut out = [b'0'; BODY_LEN];
    for slot in out.iter_mut().rev() {
        // Divide the 256-bit big-endian number by 62 in place; the remainder is the digit.
        let mut remainder: u32 = 0;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            remainder = acc % 62;
        }
        *slot = BASE62[remainder as usize];
    }
    number.zeroize();
    out
}

/// The 6-character checksum of the text before it.
fn checksum(head: &str) -> [u8; CHECK_LEN] {
    let digest = blake3::hash(head.as_bytes());
    let mut value = u64::from_le_bytes(digest.as_bytes()[..8].try_into().unwrap_or_default());
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// A key secret (or a webhook signing secret). Redacted in `Debug` and `Display`, zeroed on
/// drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret(String);

/// What a well-formed secret says about itself, without any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretShape<'a> {
    pub prefix: &'a str,
    pub environment: Environment,
}

impl Secret {
    /// A new secret from the OS CSPRNG.
    pub fn generate(prefix: &KeyPrefix, environment: Environment) -> Result<Self, KeyFormatError> {
        let mut random = Zeroizing::new([0u8; 32]);
        getrandom::fill(random.as_mut()).map_err(|_| KeyFormatError::Entropy)?;
        let mut body = base62_body(&random);
        let mut text = String::with_capacity(prefix.as_str().len() + 6 + BODY_LEN + CHECK_LEN);
        text.push_str(prefix.as_str());
        text.push('_');
        text.push_str(environment.as_str());
        text.push('_');
        text.extend(body.iter().map(|&b| b as char));
        body.zeroize();
        let check = checksum(&text);
        text.extend(check.iter().map(|&b| b as char));
        Ok(Self(text))
    }

    /// Checks the shape and checksum of `candidate` and wraps it. No lookup, no allocation
    /// beyond the copy.
    pub fn parse(candidate: &str) -> Result<Self, KeyFormatError> {
        Self::check(candidate)?;
        Ok(Self(candidate.to_owned()))
    }

    /// Checks the shape and checksum of `candidate` without copying it.
    pub fn check(candidate: &str) -> Result<SecretShape<'_>, KeyFormatError> {
        let (prefix, rest) = candidate.split_once('_').ok_or(KeyFormatError::Shape)?;
        let (env, tail) = rest.split_once('_').ok_or(KeyFormatError::Shape)?;
        if !KeyPrefix::is_valid(prefix) {
            return Err(KeyFormatError::Shape);
        }
        let environment: Environment = env.parse()?;
        if tail.len() != BODY_LEN + CHECK_LEN || !tail.bytes().all(is_base62) {
            return Err(KeyFormatError::Shape);
        }
        let head_len = candidate.len() - CHECK_LEN;
        let expected = checksum(&candidate[..head_len]);
        if !bool::from(expected.ct_eq(&candidate.as_bytes()[head_len..])) {
            return Err(KeyFormatError::Checksum);
        }
        Ok(SecretShape { prefix, environment })
    }

    /// The secret itself. Call only to hand it to its owner once, or to hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The displayable hint: `<prefix>_<env>_…` and the last four characters.
    pub fn hint(&self) -> String {
        hint_of(&self.0)
    }
}

/// The hint of a (checked, ASCII) secret text: up to the second `_`, an ellipsis, the last
/// 4 characters.
fn hint_of(secret: &str) -> String {
    let head_end = secret.match_indices('_').nth(1).map(|(i, _)| i + 1).unwrap_or(0);
    let tail_start = secret.len().saturating_sub(4);
    format!("{}…{}", &secret[..head_end], &secret[tail_start.max(head_end)..])
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The 32-byte key of the keyed hash. Lives in the data dir (mode 0600), never leaves it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Pepper([u8; 32]);

impl Pepper {
    pub fn generate() -> Result<Self, KeyFormatError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| KeyFormatError::Entropy)?;
        Ok(Self(bytes))
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0)
    }
    /// The keyed BLAKE3 hash of a secret's text.
    pub fn hash(&self, secret: &str) -> KeyHash {
        KeyHash(*blake3::keyed_hash(&self.0, secret.as_bytes()).as_bytes())
    }

    /// The signing secret of the webhook that the `webhook_set` event at `seq` configured
    /// for `workspace`: `whsec_` + 43 base62 characters of BLAKE3 keyed with a key derived
    /// from the pepper. Deterministic, so it is never stored; a new configuration (a new
    /// seq) gives a new secret.
    pub fn webhook_secret(&self, workspace: &str, seq: u64) -> Secret {
        let key = Zeroizing::new(blake3::derive_key("keyledger webhook secret v1", &self.0));
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(workspace.as_bytes());
        hasher.update(&[0]);
        hasher.update(&seq.to_be_bytes());
        let mut bytes = Zeroizing::new(*hasher.finalize().as_bytes());
        let mut body = base62_body(&bytes);
        bytes.zeroize();
        let mut text = String::with_capacity(WEBHOOK_SECRET_PREFIX.len() + BODY_LEN);
        text.push_str(WEBHOOK_SECRET_PREFIX);
        text.extend(body.iter().map(|&b| b as char));
        body.zeroize();
        Secret(text)
    }
}

/// What every webhook signing secret starts with.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// The keyed hash under which a key is stored and looked up. Not secret on its own (the
/// pepper is), but kept out of logs, metrics and API responses all the same.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Constant-time equality, for any comparison an attacker could time.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_secrets_have_the_contract_shape() {
        let secret = Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).unwrap();
        let text = secret.expose();
        assert!(text.starts_with("kl_live_"));
        assert_eq!(text.len(), "kl_live_".len() + 43 + 6);
        let shape = Secret::check(text).unwrap();
        assert_eq!(shape.prefix, "kl");
        assert_eq!(shape.environment, Environment::Live);
        assert_ne!(text, Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).unwrap().expose());
    }

    #[test]
    fn secret_never_shows_itself() {
        let secret = Secret::generate(&"acme".parse().unwrap(), Environment::Test).unwrap();
        let body = &secret.expose()["acme_test_".len()..];
        assert!(!format!("{secret:?}").contains(body));
        assert!(!format!("{secret}").contains(body));
        let hint = secret.hint();
        assert!(hint.starts_with("acme_test_…"));
        assert_eq!(hint.chars().count(), "acme_test_…".chars().count() + 4);
    }

    #[test]
    fn body_encoding_is_fixed_width_and_exact() {
        assert_eq!(&base62_body(&[0; 32]), &[b'0'; 43]);
        // 2^256 - 1 in base62 has 43 digits and starts with "1" (62^42 < 2^256 < 2 * 62^42 ... )
        let max = base62_body(&[0xff; 32]);
        assert!(max.iter().all(|b| BASE62.contains(b)));
        let mut one = [0u8; 32];
        one[31] = 61;
        assert_eq!(base62_body(&one)[42], b'z');
        one[31] = 62;
        assert_eq!(&base62_body(&one)[41..], b"10");
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let secret = Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).unwrap();
        let text = secret.expose().to_owned();
        let start = "kl_live_".len();
        for i in start..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let mutated = String::from_utf8(bytes).unwrap();
            assert!(Secret::check(&mutated).is_err(), "change at {i} not caught");
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let good = Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).unwrap();
        let text = good.expose();
        for bad in [
            String::new(),
            "kl".into(),
            "kl_live_".into(),
            text.replace("kl_live_", "kl_prod_"),
            text.replace("kl_live_", "KL_live_"),
            format!("{text}x"),
            text[..text.len() - 1].to_owned(),
            text.replace("kl_live_", "kl_live__"),
        ] {
            assert!(Secret::check(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn keyed_hash_depends_on_the_pepper() {
        let secret = Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).unwrap();
        let a = Pepper::from_bytes([1; 32]);
        let b = Pepper::from_bytes([2; 32]);
        assert!(a.hash(secret.expose()).ct_eq(&a.hash(secret.expose())));
        assert!(!a.hash(secret.expose()).ct_eq(&b.hash(secret.expose())));
        assert_eq!(format!("{:?}", a.hash(secret.expose())), "KeyHash(<redacted>)");
        assert_eq!(format!("{a:?}"), "Pepper(<redacted>)");
    }

    #[test]
    fn webhook_secrets_are_derived_per_workspace_and_configuration() {
        let pepper = Pepper::from_bytes([1; 32]);
        let secret = pepper.webhook_secret("acme", 7);
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(text.len(), "whsec_".len() + BODY_LEN);
        assert!(text["whsec_".len()..].bytes().all(is_base62));
        assert_eq!(text, pepper.webhook_secret("acme", 7).expose());
        assert_ne!(text, pepper.webhook_secret("acme", 8).expose());
        assert_ne!(text, pepper.webhook_secret("acmf", 7).expose());
        assert_ne!(text, Pepper::from_bytes([2; 32]).webhook_secret("acme", 7).expose());
        // Not usable as an API key, and never shown by Debug.
        assert!(Secret::check(text).is_err());
        assert!(!format!("{secret:?}").contains(&text["whsec_".len()..]));
    }

    proptest! {
        #[test]
        fn random_strings_are_rejected_without_panicking(text in ".{0,80}") {
            let _ = Secret::check(&text);
        }

        #[test]
        fn random_well_shaped_strings_fail_the_checksum(body in "[0-9A-Za-z]{49}") {
            let candidate = format!("kl_live_{body}");
            // 62^6 possible checksums: a random body passes with probability ~2e-11.
            prop_assert_eq!(Secret::check(&candidate), Err(KeyFormatError::Checksum));
        }
    }
}
