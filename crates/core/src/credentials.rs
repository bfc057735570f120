//! Where a request carries its API key (docs/api.md, "Authentication"), as one rule shared by
//! the server and the tower middleware, so the two can never disagree about which header wins.
//!
//! `Authorization: Bearer K` or `Authorization: Api-Key K` (schemes case-insensitive), else
//! `x-api-key: K`. An `Authorization` header with any other scheme means *no key*: it is not
//! silently passed over in favour of `x-api-key`. Surrounding whitespace is trimmed; an empty
//! key is no key.

/// The header a presented key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialHeader {
    Authorization,
    XApiKey,
}

impl CredentialHeader {
    /// The header's name, lower-case as HTTP/2 and the `http` crate spell it.
    pub fn name(self) -> &'static str {
        match self {
            CredentialHeader::Authorization => "authorization",
            CredentialHeader::XApiKey => "x-api-key",
        }
    }
}

/// The key presented by a request whose `Authorization` and `x-api-key` header values (when
/// present and valid UTF-8) are given, and the header it came from.
pub fn presented_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<(&'a str, CredentialHeader)> {
    let (key, header) = match authorization {
        Some(value) => (scheme_value(value)?, CredentialHeader::Authorization),
        None => (x_api_key?.trim(), CredentialHeader::XApiKey),
    };
    (!key.is_empty()).then_some((key, header))
}

fn scheme_value(value: &str) -> Option<&str> {
    let value = value.trim();
    ["Bearer ", "Api-Key "].into_iter().find_map(|scheme| {
        let head = value.get(..scheme.len())?;
        (value.len() > scheme.len() && head.eq_ignore_ascii_case(scheme))
            .then(|| value[scheme.len()..].trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_documented_form_is_read() {
        assert_eq!(presented_key(Some("Bearer kl_a"), None), Some(("kl_a", CredentialHeader::Authorization)));
        assert_eq!(
            presented_key(Some("  api-key  kl_b "), None),
            Some(("kl_b", CredentialHeader::Authorization))
        );
        assert_eq!(presented_key(None, Some(" kl_c ")), Some(("kl_c", CredentialHeader::XApiKey)));
    }

    #[test]
    fn authorization_wins_and_another_scheme_means_no_key() {
        assert_eq!(presented_key(Some("Bearer kl_a"), Some("kl_b")).map(|(k, _)| k), Some("kl_a"));
        assert_eq!(presented_key(Some("Basic dXNlcg=="), Some("kl_b")), None);
    }

    #[test]
    fn empty_or_scheme_only_values_are_no_key() {
        for value in ["", "Bearer", "Bearer ", "Bearer    ", "Api-Key ", "é"] {
            assert_eq!(presented_key(Some(value), None), None, "{value:?}");
        }
        assert_eq!(presented_key(None, Some("   ")), None);
        assert_eq!(presented_key(None, None), None);
    }
}
