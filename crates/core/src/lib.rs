//! Domain types of keyledger, shared by every other crate.
//!
//! This crate owns the *vocabulary*: what a key secret looks like and how it is checked
//! ([`secret`]), the public identifiers ([`ids`]), time ([`time`]), the events that make up
//! the log ([`event`]) and their one canonical byte encoding ([`codec`]), and the field rules
//! every request must satisfy ([`validate`]).
//!
//! It performs no I/O, so every rule here can be tested exhaustively and used by the offline
//! verifier without pulling in a runtime.
#![forbid(unsafe_code)]

pub mod codec;
pub mod credentials;
pub mod credits;
pub mod event;
#[cfg(any(test, feature = "examples"))]
pub mod examples;
pub mod ids;
pub mod import;
pub mod json;
pub mod ratelimit;
pub mod scan;
pub mod secret;
pub mod sources;
pub mod time;
pub mod validate;

pub use codec::{DecodeError, EVENT_VERSION, decode_event, encode_event, encode_event_into};
pub use credits::{Refill, RefillInterval};
pub use event::*;
pub use ids::{IdError, KeyId, RequestId, WorkspaceId};
pub use import::{ForeignAlgorithm, ForeignHash, KeyImported, KeyRehashed};
pub use secret::{Environment, KeyFormatError, KeyHash, KeyPrefix, Pepper, Secret};
pub use sources::{SourceError, SourceNet};
pub use time::{Timestamp, parse_duration};
