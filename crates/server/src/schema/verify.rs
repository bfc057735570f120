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
}
