//! keyledger's PostgreSQL log store (docs/scaling.md, docs/operations.md "High availability").
//!
//! With `--store postgres://…` the database holds the log: the events' bytes, their leaf
//! hashes, the tree's head and the signed checkpoints. Any number of nodes serve one ledger
//! from it; the single writer of ADR 0004 becomes the row lock on the log head, taken by
//! whichever node appends a batch.
#![forbid(unsafe_code)]

pub mod copy;
pub mod schema;
pub mod verify;

#[cfg(feature = "testing")]
pub mod testing;
