//! Finding key secrets in arbitrary text, offline: what `keyledger scan` runs over files and
//! a repository's history, and what the gitleaks and trufflehog rules of docs/leaks.md
//! mirror.
//!
//! A secret reads `<prefix>_<live|test>_<49 base62 characters>` whose last 6 characters are
//! a checksum of the rest ([`crate::secret`]). The scanner looks for the `_live_`/`_test_`
//! marker, tries every prefix that fits before it (1 to 16 of `[a-z0-9]`, starting with a
//! letter) and keeps a candidate only when its checksum holds. So it needs no word
//! boundaries (a key glued to other text is still found), and a random or mistyped string
//! is reported with probability about 62^-6 per candidate: no false positives in practice.
//!
//! Guarantees: each secret occurrence is reported once, at its byte offset; what is
//! reported is a [`Secret`] (redacted in `Debug`/`Display`, zeroed on drop) and its hint.

use crate::secret::{BODY_LEN, CHECK_LEN, Environment, Secret};

/// Longest prefix a key may have (`KeyPrefix`: `[a-z][a-z0-9]{0,15}`).
const MAX_PREFIX: usize = 16;
/// The characters after `<env>_`: the random body and its checksum.
const TAIL_LEN: usize = BODY_LEN + CHECK_LEN;

/// One key secret found in a text.
#[derive(Debug)]
pub struct Found {
    /// Byte offset of the secret's first character in the scanned text.
    pub offset: usize,
    pub environment: Environment,
    /// `<prefix>_<env>_…` and the last four characters: safe to print.
    pub hint: String,
    /// The secret itself (redacted in `Debug`), for a lookup by hash.
    pub secret: Secret,
}

/// Every key secret with a valid checksum in `text`, in order of appearance.
pub fn find_secrets(text: &str) -> Vec<Found> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    // Offsets below this are inside a secret already reported.
    let mut covered = 0;
    for (marker, environment) in markers(bytes) {
        let tail_start = marker + environment.as_str().len() + 2;
        let Some(tail) = bytes.get(tail_start..tail_start + TAIL_LEN) else {
            continue;
        };
        if !tail.iter().all(u8::is_ascii_alphanumeric) {
            continue;
        }
        let end = tail_start + TAIL_LEN;
        let Some(start) =
            prefix_starts(bytes, marker).find(|&start| start >= covered && checks(&text[start..end]))
        else {
            continue;
        };
        let Ok(secret) = Secret::parse(&text[start..end]) else {
            continue;
        };
        covered = end;
        found.push(Found { offset: start, environment, hint: secret.hint(), secret });
    }
    found
}

/// Positions of every `_live_` and `_test_` in `bytes`, in order, with the environment.
fn markers(bytes: &[u8]) -> impl Iterator<Item = (usize, Environment)> + '_ {
    bytes.windows(6).enumerate().filter_map(|(i, window)| match window {
        b"_live_" => Some((i, Environment::Live)),
        b"_test_" => Some((i, Environment::Test)),
        _ => None,
    })
}

/// Where a prefix ending just before `marker` could start: the longest first, so that
/// `xkl_live_…` is tried as `xkl` before `kl` (the checksum picks the right one).
fn prefix_starts(bytes: &[u8], marker: usize) -> impl Iterator<Item = usize> + '_ {
    let mut first = marker;
    while first > 0 && marker - (first - 1) <= MAX_PREFIX && is_prefix_char(bytes[first - 1]) {
        first -= 1;
    }
    (first..marker).filter(move |&start| bytes[start].is_ascii_lowercase())
}

fn is_prefix_char(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit()
}

fn checks(candidate: &str) -> bool {
    Secret::check(candidate).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::KeyPrefix;
    use proptest::prelude::*;

    fn key(prefix: &str, environment: Environment) -> Secret {
        Secret::generate(&prefix.parse::<KeyPrefix>().unwrap(), environment).unwrap()
    }

    #[test]
    fn finds_keys_anywhere_in_a_text_with_their_offsets() {
        let live = key("kl", Environment::Live);
        let test = key("acme2", Environment::Test);
        let text = format!(
            "API_KEY={}\nheaders = {{'x-api-key': \"{}\"}}\nglued:xx{}yy\n",
            live.expose(),
            test.expose(),
            live.expose()
        );
        let found = find_secrets(&text);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].offset, 8);
        assert_eq!(found[0].secret.expose(), live.expose());
        assert_eq!(found[0].environment, Environment::Live);
        assert_eq!(found[1].secret.expose(), test.expose());
        assert_eq!(found[1].environment, Environment::Test);
        assert_eq!(found[1].hint, test.hint());
        // `xx` before the prefix is lowercase too: the checksum picks `kl`.
        assert_eq!(found[2].secret.expose(), live.expose());
        assert_eq!(&text[found[2].offset..found[2].offset + 2], "kl");
    }

    #[test]
    fn near_misses_are_not_reported() {
        let good = key("kl", Environment::Live);
        let text = good.expose();
        let mut misses = Vec::new();
        // Each character of the body or checksum changed, the last one dropped, the
        // environment changed.
        for i in 8..text.len() {
            let mut bytes = text.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            misses.push(String::from_utf8(bytes).unwrap());
        }
        misses.push(text[..text.len() - 1].to_owned());
        misses.push(text.replacen("_live_", "_test_", 1));
        misses.push(text.replacen("kl_", "KL_", 1));
        for miss in &misses {
            assert!(find_secrets(miss).is_empty(), "a near-miss was reported");
        }
    }

    #[test]
    fn a_key_cut_at_the_end_of_the_text_is_not_a_panic() {
        let good = key("kl", Environment::Live);
        for end in 0..good.expose().len() {
            assert!(find_secrets(&good.expose()[..end]).is_empty());
        }
        assert!(find_secrets("_live_").is_empty());
        assert!(find_secrets("é_test_ü").is_empty());
    }

    proptest! {
        #[test]
        fn random_text_yields_nothing_and_never_panics(text in "\\PC{0,200}") {
            prop_assert!(find_secrets(&text).is_empty());
        }

        #[test]
        fn random_key_shaped_strings_are_rejected(body in "[0-9A-Za-z]{49}", prefix in "[a-z][a-z0-9]{0,15}") {
            let text = format!("{prefix}_live_{body}");
            prop_assert!(find_secrets(&text).len() <= usize::from(Secret::check(&text).is_ok()));
        }

        #[test]
        fn every_generated_key_is_found_between_any_text(before in "[ -~]{0,40}", after in "[ -~]{0,40}", prefix in "[a-z][a-z0-9]{0,15}") {
            let secret = key(&prefix, Environment::Live);
            let text = format!("{before}{}{after}", secret.expose());
            let found = find_secrets(&text);
            prop_assert!(found.iter().any(|f| f.secret.expose() == secret.expose()));
        }
    }
}
