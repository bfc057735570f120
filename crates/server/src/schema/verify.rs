//! The answer of a successful verification (docs/api.md, "Verify"); denials answer with
//! [`super::ErrorBody`] and `valid: false`.

use serde::Serialize;
use utoipa::ToSchema;

/// A successful verification.
// Serialised straight from the verdict, borrowing its fields.
#[derive(Serialize, ToSchema)]
pub struct Verified<'a> {
    pub valid: bool,
    pub key_id: &'a str,
    pub workspace: &'a str,
    pub environment: &'a str,
    pub scopes: &'a [String],
    pub owner: Option<&'a str>,
    pub expires_at: Option<String>,
    pub request_id: String,
    /// The key's credit balance after this verification; absent for a key without credits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits_remaining: Option<u64>,
    /// The rate limits this verification applied, after it; absent when it applied none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimits: Option<Vec<AppliedLimit>>,
}

/// A rate limit a verification applied, after it (docs/api.md, "Rate limits").
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq)]
pub struct AppliedLimit {
    pub name: String,
    /// The most the window allows.
    pub limit: u64,
    /// What is left of it in the current window.
    pub remaining: u64,
    /// When the current window ends (RFC 3339); the `RateLimit` header gives it in seconds.
    pub reset: String,
}
