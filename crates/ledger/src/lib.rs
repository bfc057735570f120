//! keyledger's engine: commands become events in the log, events become state.
//!
//! - [`engine`]: the entry point ([`Engine`]): open a data dir, issue, verify, rotate,
//!   revoke, police and read keys.
//! - [`sequencer`]: the writer-thread half that validates commands and emits events.
//! - [`authority`]: which admin key may do what to which key, decided on the writer thread.
//! - [`state`]: the registry and the one function that applies an event to it.
//! - [`credits`]: usage credits, derived from the log, and the steps that spend them.
//! - [`verdict`]: what a verification of a known key answers.
//! - [`projection`]: redb-persisted projections with cursors, catch-up and rebuild.
//! - [`projector`]: the thread that folds the writer's durable batches into them.
//! - [`datadir`]: the data dir's layout, secrets and `init`.
//! - [`webhook`]: signed webhook notifications, their outbox and delivery threads.
//! - [`witness`]: submitting checkpoints to witnesses and keeping their cosignatures.
//! - [`report`]: signed compliance reports and their HTML page.
#![forbid(unsafe_code)]

pub mod audit;
pub mod authority;
pub mod background;
pub mod commands;
pub mod credits;
pub mod datadir;
pub mod engine;
pub mod error;
pub mod export;
pub mod import;
pub mod leaks;
pub mod projection;
pub mod projector;
pub mod ratelimit;
pub mod report;
pub mod secret_env;
pub mod sequencer;
mod sequencer_ratelimit;
pub mod sources;
pub mod state;
pub mod verdict;
pub mod webhook;
pub mod witness;

pub use authority::{ADMIN_SCOPES, INTROSPECT, LEDGER_SCOPES};

/// Whether this node may run the jobs that run on one node at a time (webhook delivery and
/// witness submission): always with the embedded store; with a PostgreSQL store only while
/// this node holds the `jobs` lease (`keyledger_pg::lease`, docs/architecture.md, "The log
/// store seam").
pub(crate) type JobGate = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;
pub use commands::{Caller, Expiry, IdempotencyTag, KeyChanges, KeyControls, KeySpec, PolicyControls};
pub use engine::{Engine, EngineError, EngineOptions, InitOutcome, RevokedAll, VerifyOutcome};
pub use error::{AuthError, LedgerError};
pub use state::{KeyRecord, KeyStatus, LastUsed, LedgerState, VerifyRequirements, Webhook};
pub use verdict::{Verdict, VerifiedKey};
pub use webhook::{WebhookCounters, WebhookOptions};
pub use witness::{WitnessOptions, WitnessPolicy};
