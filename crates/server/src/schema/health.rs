//! The answer of `/healthz` (docs/api.md, "Operations").

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// Events in the log (every tenant's): only to an admin key holding `ledger:audit:read`,
    /// or to anyone with `--healthz-details`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_size: Option<u64>,
}
