//! Recognises secrets pasted into a URL, so that nothing keyledger writes back (an error
//! message) or writes down (an access log line) repeats them.
//!
//! People paste secrets where key ids belong (`GET /v1/keys/kl_live_…`) or into query
//! strings. A secret has a checksum, so it can be recognised without any lookup: a text
//! *holds a secret* when, once percent-decoded, it contains a key secret whose checksum
//! is valid ([`Secret::check`]) or a webhook signing secret (`whsec_` and 43 base62
//! characters). Such a path segment is logged as [`REDACTED`], and an error message names
//! such a value as [`REDACTED`]. Everything else is repeated as sent: a mistyped key id
//! stays visible in its 404. See docs/security.md (Secrets in URLs).

use keyledger_core::Secret;
use keyledger_core::secret::{BODY_LEN, CHECK_LEN, WEBHOOK_SECRET_PREFIX};
use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// What replaces a path segment or a value that holds a secret.
pub const REDACTED: &str = "[redacted]";

/// Whether `text`, percent-decoded, contains a checksum-valid key secret or a webhook
/// signing secret anywhere.
pub fn holds_secret(text: &str) -> bool {
    // Both kinds of secret hold a body of BODY_LEN characters, and percent-decoding never
    // lengthens a text: anything shorter holds none (most paths, methods and request ids).
    if text.len() < BODY_LEN || !text.contains(['_', '%']) {
        return false; // every secret has `_`, which an encoded one writes as `%5F`
    }
    let decoded = percent_decode_str(text).decode_utf8_lossy();
    holds_key_secret(&decoded) || holds_webhook_secret(&decoded)
}

/// `text` itself, or [`REDACTED`] if it holds a secret: for an error message that names a
/// value the caller sent.
pub fn echo(text: &str) -> &str {
    if holds_secret(text) { REDACTED } else { text }
}

/// `path` with each `/`-separated segment that holds a secret replaced by [`REDACTED`].
pub fn path(path: &str) -> Cow<'_, str> {
    if !path.split('/').any(holds_secret) {
        return Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path.split('/').map(echo).collect();
    Cow::Owned(segments.join("/"))
}

/// `text` with each word that holds a secret replaced by [`REDACTED`], for free text that is
/// recorded for ever (a usage event's path, user agent, method, request id): a gateway
/// forwards `/orders?api_key=kl_live_…` as sent. A word is a run of the characters a secret
/// is written with (ASCII letters, digits, `_`, and `%` for its percent-encoded form), so the
/// path and query names around a secret stay readable.
pub fn words(text: &str) -> Cow<'_, str> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '%';
    if text.len() < BODY_LEN || !text.split(|c: char| !is_word(c)).any(holds_secret) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        out.push_str(echo(word));
        let separator = tail.chars().next().map_or(0, char::len_utf8);
        out.push_str(&tail[..separator]);
        rest = &tail[separator..];
    }
    Cow::Owned(out)
}

/// A key secret is `<prefix>_<env>_<43 base62><6 base62 check>` (docs/architecture.md):
/// every lowercase letter may start one, its prefix and environment are short, and its
/// length is then fixed. So each start costs a bounded look-ahead and at most one checksum.
fn holds_key_secret(text: &str) -> bool {
    /// A prefix is at most 16 characters, an environment (`live`, `test`) shorter still.
    const PART: usize = 16;
    let bytes = text.as_bytes();
    let underscore = |from: usize| {
        bytes
            .get(from..)
            .and_then(|rest| rest.iter().take(PART + 1).position(|&b| b == b'_'))
            .map(|i| from + i)
    };
    (0..bytes.len()).filter(|&start| bytes[start].is_ascii_lowercase()).any(|start| {
        let Some(second) = underscore(start).and_then(|first| underscore(first + 1)) else {
            return false;
        };
        let end = second + 1 + BODY_LEN + CHECK_LEN;
        text.get(start..end).is_some_and(|candidate| Secret::check(candidate).is_ok())
    })
}

/// A webhook signing secret is `whsec_` and 43 base62 characters; it has no checksum, but
/// its prefix is distinctive enough.
fn holds_webhook_secret(text: &str) -> bool {
    text.match_indices(WEBHOOK_SECRET_PREFIX).any(|(at, _)| {
        let body = &text.as_bytes()[at + WEBHOOK_SECRET_PREFIX.len()..];
        body.len() >= BODY_LEN && body[..BODY_LEN].iter().all(u8::is_ascii_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_core::{Environment, KeyPrefix, Pepper};

    fn secret() -> Secret {
        Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).expect("entropy")
    }

    #[test]
    fn a_secret_is_recognised_wherever_it_sits() {
        let secret = secret();
        let s = secret.expose();
        for text in [
            s.to_owned(),
            s.replace('_', "%5F"),
            s.replace('_', "%5f"),
            format!("Bearer%20{s}"),
            format!("x_{s}"),
            format!("{s}trailing"),
            format!("prefix{s}"),
        ] {
            assert!(holds_secret(&text), "{text}");
            assert_eq!(echo(&text), REDACTED);
        }
        let webhook = Pepper::generate().expect("entropy").webhook_secret("acme", 7);
        assert!(holds_secret(webhook.expose()));
    }

    #[test]
    fn what_is_not_a_secret_is_repeated() {
        let secret = secret();
        let s = secret.expose();
        let mut broken = s.to_owned();
        let last = if broken.ends_with('A') { "B" } else { "A" };
        broken.replace_range(broken.len() - 1.., last);
        for text in [
            "key_01jz8m9q4v3xk7h2c5n6p8r0td",
            "acme",
            "",
            "kl_live_",
            "kl_live_short",
            &broken,
            "whsec_short",
            "é_ü_%ff%5F",
            &"_".repeat(500),
        ] {
            assert!(!holds_secret(text), "{text}");
            assert_eq!(echo(text), text);
        }
    }

    /// The length check that skips short texts must not skip the shortest secrets.
    #[test]
    fn the_shortest_secrets_are_still_recognised() {
        let shortest = Secret::generate(&"k".parse().unwrap(), Environment::Test).expect("entropy");
        let webhook = Pepper::generate().expect("entropy").webhook_secret("a", 1);
        for text in [shortest.expose(), webhook.expose()] {
            assert!(holds_secret(text), "{text}");
            assert_eq!(words(text), REDACTED, "{text}");
            assert!(!holds_secret(&text[..text.len() - 1]), "{text} shortened by one");
        }
    }

    #[test]
    fn only_the_words_holding_a_secret_are_replaced() {
        let secret = secret();
        let s = secret.expose();
        let encoded = s.replace('_', "%5F");
        assert_eq!(words(&format!("/orders?api_key={s}&page=2")), "/orders?api_key=[redacted]&page=2");
        assert_eq!(words(&format!("/a/{encoded}/b")), "/a/[redacted]/b");
        assert_eq!(words(&format!("curl/8 ({s}) é")), "curl/8 ([redacted]) é");
        assert!(matches!(words("/orders?api_key=kl_live_short&é=ü"), Cow::Borrowed(_)));
        assert_eq!(words(""), "");
    }

    #[test]
    fn only_the_segments_holding_a_secret_are_replaced() {
        let secret = secret();
        let s = secret.expose();
        assert_eq!(path(&format!("/v1/keys/{s}/events")), "/v1/keys/[redacted]/events");
        assert_eq!(path(&format!("/{s}/{s}")), "/[redacted]/[redacted]");
        assert!(matches!(path("/v1/keys/key_01jz8m9q4v3xk7h2c5n6p8r0td"), Cow::Borrowed(_)));
        assert_eq!(path("/"), "/");
    }
}
