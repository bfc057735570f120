//! The two sides of a verification: the key a request presents (a secret, redacted and
//! zeroed) and the identity keyledger vouches for (public, safe to log).

use http::HeaderMap;
use http::header::AUTHORIZATION;
use keyledger_core::credentials::presented_key;
use keyledger_core::{Environment, KeyId, RequestId, Timestamp, WorkspaceId};
use std::fmt;
use zeroize::Zeroizing;

/// The key a request presented. `Debug` shows `<redacted>`; the memory is zeroed on drop.
pub(crate) struct PresentedKey(Zeroizing<String>);

impl PresentedKey {
    /// The key itself, to put into the verification request and nowhere else.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresentedKey(<redacted>)")
    }
}

/// Takes the key out of `headers` the way keyledger reads it ([`keyledger_core::credentials`];
/// docs/api.md, "Authentication"). The header that carried the key is removed, so that nothing
/// behind the middleware can log or forward it. `None` (and nothing removed) when no non-empty key
/// was presented.
pub(crate) fn take_presented_key(headers: &mut HeaderMap) -> Option<PresentedKey> {
    let value = |name| headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
    let (key, header) = presented_key(value(AUTHORIZATION.as_str()), value("x-api-key"))?;
    let key = PresentedKey(Zeroizing::new(key.to_owned()));
    headers.remove(header.name());
    Some(key)
}

/// The identity keyledger vouched for, inserted into the request's extensions before the
/// inner service runs (axum: `Extension<VerifiedKey>`). It holds no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedKey {
    /// The key's public id (`key_…`).
    pub key_id: KeyId,
    /// The workspace (tenant) the key belongs to.
    pub workspace: WorkspaceId,
    /// `live` or `test`.
    pub environment: Environment,
    /// All the key's scopes (a superset of the ones the route required).
    pub scopes: Vec<String>,
    /// The key's owner, if it has one.
    pub owner: Option<String>,
    /// When the key expires, if it does.
    pub expires_at: Option<Timestamp>,
    /// keyledger's id of this verification: `GET /v1/audit/requests/{id}` finds its `used`
    /// event.
    pub request_id: RequestId,
}

impl VerifiedKey {
    /// Whether the key holds `scope` (for finer checks inside a handler; the route's required
    /// scopes have already been checked by keyledger).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static [u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    fn taken(pairs: &[(&'static str, &'static [u8])]) -> (Option<String>, HeaderMap) {
        let mut map = headers(pairs);
        let key = take_presented_key(&mut map).map(|k| k.expose().to_owned());
        (key, map)
    }

    #[test]
    fn the_three_header_forms_are_read_and_removed() {
        for pairs in [
            &[("authorization", b"Bearer kl_live_abc".as_slice())][..],
            &[("authorization", b"bearer   kl_live_abc  ")],
            &[("authorization", b"Api-Key kl_live_abc")],
            &[("authorization", b"API-KEY kl_live_abc")],
            &[("x-api-key", b" kl_live_abc ")],
        ] {
            let (key, rest) = taken(pairs);
            assert_eq!(key.as_deref(), Some("kl_live_abc"), "{pairs:?}");
            assert!(rest.is_empty(), "the header carrying the key is removed: {rest:?}");
        }
    }

    #[test]
    fn authorization_wins_and_another_scheme_means_no_key_as_in_keyledger() {
        let (key, rest) = taken(&[("authorization", b"Bearer from-auth"), ("x-api-key", b"from-x")]);
        assert_eq!(key.as_deref(), Some("from-auth"));
        assert_eq!(rest.get("x-api-key").unwrap(), "from-x");

        let (key, rest) = taken(&[("authorization", b"Basic dXNlcjpwYXNz"), ("x-api-key", b"from-x")]);
        assert_eq!(key, None);
        assert_eq!(rest.len(), 2, "nothing is removed when no key was taken");

        // A non-text Authorization is skipped, as keyledger does, and x-api-key is read.
        let (key, _) = taken(&[("authorization", b"Bearer \xff"), ("x-api-key", b"from-x")]);
        assert_eq!(key.as_deref(), Some("from-x"));
    }

    #[test]
    fn empty_or_scheme_only_values_are_no_key() {
        for pairs in [
            &[("authorization", b"Bearer".as_slice())][..],
            &[("authorization", b"Bearer    ")],
            &[("x-api-key", b"  ")],
            &[],
        ] {
            assert_eq!(taken(pairs).0, None, "{pairs:?}");
        }
    }

    #[test]
    fn a_presented_key_never_shows_itself() {
        let mut map = headers(&[("x-api-key", b"kl_live_very_secret")]);
        let key = take_presented_key(&mut map).unwrap();
        assert_eq!(format!("{key:?}"), "PresentedKey(<redacted>)");
    }
}
