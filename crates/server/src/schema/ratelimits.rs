//! A named rate limit as a request sets it and as the key view and the policy show it
//! (docs/api.md, "Rate limits").

use keyledger_core::RateLimit;
use serde::{Deserialize, Serialize};

/// A rate limit as a request sets it.
#[derive(Deserialize, Debug, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    /// `[a-z0-9_-]{1,32}`, unique in the list.
    pub(crate) name: String,
    /// The most the window allows (at least 1).
    pub(crate) limit: u64,
    /// The window: `"1s"` to `"30d"` (units `s`, `m`, `h`, `d`).
    #[schema(example = "1m")]
    pub(crate) duration: String,
    /// Applied to every verification (default `true`); otherwise only when a verification
    /// names it.
    pub(crate) auto_apply: Option<bool>,
}

/// A rate limit as the key view and the policy show it.
#[derive(Serialize, Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct RateLimitView {
    pub name: String,
    pub limit: u64,
    #[schema(example = "1m")]
    pub duration: String,
    pub auto_apply: bool,
}

impl RateLimitView {
    /// The views of a list, in its order.
    pub fn list(limits: &[RateLimit]) -> Vec<RateLimitView> {
        limits
            .iter()
            .map(|l| RateLimitView {
                name: l.name.clone(),
                limit: l.limit,
                duration: keyledger_core::time::format_duration(l.duration),
                auto_apply: l.auto_apply,
            })
            .collect()
    }
}
