//! The answer of RFC 7662 token introspection (docs/api.md, "Token introspection").

use serde::Serialize;
use utoipa::ToSchema;

/// RFC 7662's introspection response. An inactive token (unknown, revoked, expired,
/// disabled, malformed, or of a workspace the caller may not see) answers exactly
/// `{"active": false}`: every other member is left out, so nothing says why.
#[derive(Serialize, ToSchema, Default, Debug, PartialEq, Eq)]
pub struct Introspection {
    /// Whether the key is valid right now.
    pub active: bool,
    /// The key's scopes, space-separated (RFC 7662's `scope`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The key's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The key's owner, or its id when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// When the key expires, in seconds since the Unix epoch; absent for a key without expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// When the key was issued, in seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Always `api_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// The key's workspace (an extension member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The key's environment, `live` or `test` (an extension member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<&'static str>,
}

impl Introspection {
    /// `{"active": false}`, and nothing else.
    pub fn inactive() -> Self {
        Self::default()
    }
}
