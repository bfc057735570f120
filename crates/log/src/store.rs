//! The log store seam: what the writer needs from the storage that holds the log's order.
//!
//! The writer always keeps the log in local files (segments, tree, checkpoints: see
//! [`crate::Log`]), and every reader reads those files. A [`LogStore`] decides whether those
//! files are the log itself or a local mirror of a log held elsewhere (docs/architecture.md,
//! "The log store seam"):
//!
//! - [`Embedded`]: the files are the log. There is one writer (the process holding the
//!   data dir's lock), so there is nothing to lock, nothing to follow, and durability is the
//!   writer's own fsync. Every hook is a no-op and the writer behaves exactly as it always
//!   has.
//! - a shared store (keyledger-pg's `PgStore`): the log is in a database many nodes append
//!   to. Each batch is framed by [`LogStore::begin`] (take the append lock, return what the
//!   other nodes appended since this node's length) and [`LogStore::commit`] (store the
//!   batch and the new tree head durably, release the lock). The local files are written
//!   only after the commit, so they are always a prefix of the store's log.
//!
//! Guarantees a shared store gives the writer: between `begin` and `commit` (or `abort`)
//! no other writer appends; records come back byte for byte as committed, in seq order;
//! `commit` returns `Ok` only once the batch is durable in the store; an error from
//! `commit` may hide a commit that happened (the connection died during it): the writer
//! treats the outcome as unknown, refuses its callers, and learns the truth by following
//! the store once it reconnects.

use keyledger_verify::merkle::{Frontier, Hash};
use std::time::Duration;

/// Why a store operation failed. The message never holds record contents or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the operation: the writer fails closed and
    /// retries later.
    #[error("the log store is unavailable: {0}")]
    Unavailable(String),
    /// The store and this node's files disagree about the log: the writer refuses to
    /// append or sign (a fork, or a store that lost acknowledged records).
    #[error("the log store disagrees with this node's log: {0}")]
    Diverged(String),
    /// This node is too far behind to catch up within one batch: follow first.
    #[error("this node is {behind} records behind the log store")]
    Behind { behind: u64 },
}

/// The log head a shared store holds: its size and tree root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub root: Hash,
}

/// A checkpoint as a shared store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The signed note.
    pub note: String,
    /// How long ago it was stored, by the store's clock.
    pub age: Duration,
}

/// What a batch's [`LogStore::begin`] found: the head, and the records other writers
/// appended from this node's length on (in seq order, at most up to the head).
#[derive(Debug, Default)]
pub struct Foreign {
    pub head: Option<Head>,
    pub records: Vec<Vec<u8>>,
}

/// The durable order of the log (see the module docs).
pub trait LogStore: Send + 'static {
    /// Whether other writers may append (a shared store). If false, every other method is a
    /// no-op and the writer's own files and fsyncs are the log's durability.
    fn is_shared(&self) -> bool;

    /// Starts a batch: takes the append lock and returns what other writers appended from
    /// `local_len` on, with the head. [`StoreError::Behind`] when that is more than one
    /// batch may hold (the lock is then released: follow, then begin again).
    fn begin(&mut self, local_len: u64) -> Result<Foreign, StoreError>;

    /// Ends the batch begun last: stores `records` at seqs `first…` with their leaf hashes
    /// and the new tree head `after` (which covers them), then releases the lock. With no
    /// records it only releases the lock.
    fn commit(
        &mut self,
        first: u64,
        records: &[Vec<u8>],
        leaves: &[Hash],
        after: &Frontier,
    ) -> Result<(), StoreError>;

    /// Abandons the batch begun last, if any (nothing of it is stored).
    fn abort(&mut self);

    /// Records other writers appended from `local_len` on, without the lock: at most
    /// `limit`, in seq order.
    fn follow(&mut self, local_len: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;

    /// How often to follow when nothing wakes the writer (`None`: never).
    fn follow_every(&self) -> Option<Duration>;

    /// The latest checkpoint in the store (inside a batch or outside).
    fn latest_checkpoint(&mut self) -> Result<Option<SharedCheckpoint>, StoreError>;

    /// Stores a checkpoint, inside a batch. A store never holds two roots for one size:
    /// storing a size that exists fails with [`StoreError::Diverged`] unless it is the same.
    fn store_checkpoint(&mut self, size: u64, root: Hash, note: &str) -> Result<(), StoreError>;

    /// Reconnects after a failure (the writer's recovery calls it before following).
    fn reconnect(&mut self) -> Result<(), StoreError>;
}

/// The embedded store: the local files are the log (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct Embedded;

impl LogStore for Embedded {
    fn is_shared(&self) -> bool {
        false
    }

    fn begin(&mut self, _local_len: u64) -> Result<Foreign, StoreError> {
        Ok(Foreign::default())
    }

    fn commit(&mut self, _: u64, _: &[Vec<u8>], _: &[Hash], _: &Frontier) -> Result<(), StoreError> {
        Ok(())
    }

    fn abort(&mut self) {}

    fn follow(&mut self, _local_len: u64, _limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(Vec::new())
    }

    fn follow_every(&self) -> Option<Duration> {
        None
    }

    fn latest_checkpoint(&mut self) -> Result<Option<SharedCheckpoint>, StoreError> {
        Ok(None)
    }

    fn store_checkpoint(&mut self, _: u64, _: Hash, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn reconnect(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
