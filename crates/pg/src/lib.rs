//! keyledger's PostgreSQL log store (docs/architecture.md, "The log store seam";
//! docs/log-format.md, "PostgreSQL store"; docs/scaling.md, docs/operations.md "High
//! availability").
//!
//! With `--store postgres://…` the database holds the log: the events' bytes, their leaf
//! hashes, the tree's head and the signed checkpoints. Any number of nodes serve one ledger
//! from it; the single writer of ADR 0004 becomes the row lock on the log head, taken by
//! whichever node appends a batch.
//!
//! [`PgStore`] is the writer's shared store; [`schema`] migrates and refuses a newer schema;
//! [`identity`] holds and checks which signing key and pepper the ledger has; [`Listener`]
//! wakes a node's writer when another node appended; [`Lease`] lets one node at a time run
//! the webhook and witness jobs; [`PgWitnessRecords`] keeps what the witnesses said (the
//! cosigned checkpoint, fork alarms) for every node, and [`PgWebhookAttempts`] the webhook
//! delivery attempts the lease holder made, which every node's outbox follows.
#![forbid(unsafe_code)]

pub mod copy;
pub mod error;
pub mod identity;
pub mod lease;
pub mod listener;
pub mod password;
pub mod schema;
mod session;
pub mod store;
pub mod verify;
pub mod webhook_attempts;
pub mod witnessed;

pub use error::PgError;
pub use identity::Identity;
pub use lease::{Holding, Lease, LeaseTimes};
pub use listener::Listener;
pub use store::PgStore;
pub use webhook_attempts::PgWebhookAttempts;
pub use witnessed::PgWitnessRecords;

#[cfg(feature = "testing")]
pub mod testing;

/// How long a node may sit inside an append batch (holding the log head's lock) without
/// talking to the database before the database ends its session: a frozen or partitioned
/// node must not stall every other node (docs/operations.md, "High availability").
pub const IDLE_IN_BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
