//! The bodies the API answers with and takes, one type per shape: each derives both
//! `Serialize` (or `Deserialize`) and `utoipa::ToSchema`, and the handlers serialise these
//! very types, so `/openapi.json` cannot describe a shape the server does not send.
//!
//! One file per area of docs/api.md. The error answers are described here too, as
//! `utoipa::IntoResponses` sets ([`errors`]) that the `#[utoipa::path]` annotations name
//! instead of repeating each status line. [`crate::openapi`] only assembles the document.

pub mod audit;
pub mod credits;
pub mod errors;
pub mod health;
pub mod integrity;
pub mod introspect;
pub mod keys;
pub mod ratelimits;
pub mod reports;
pub mod verify;
pub mod webhooks;

pub use audit::*;
pub use credits::*;
pub use errors::*;
pub use health::*;
pub use integrity::*;
pub use introspect::*;
pub use keys::*;
pub use ratelimits::*;
pub use reports::*;
pub use verify::*;
pub use webhooks::*;

use keyledger_core::Timestamp;

/// An optional instant as the API writes it: RFC 3339, or `null`.
pub(crate) fn rfc3339(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| t.to_rfc3339())
}
