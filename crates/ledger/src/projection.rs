//! Projections: state derived from the log and persisted in redb.
//!
//! A [`Projection`] consumes events strictly in seq order. The [`Projections`] runner applies
//! a batch to every projection inside **one** redb write transaction, in which it also
//! stores each projection's cursor (the next seq it expects). A crash therefore leaves every
//! projection at a consistent cursor, and catching up means replaying the log from there.
//! Because projections hold nothing the log does not, any of them can be dropped and
//! rebuilt from seq 0; `tests/` prove the rebuild equals the incremental state.

use crate::state::{KeyRecord, LedgerState};
use keyledger_core::{Event, KeyId, Payload, Policy, WorkspaceId};
use keyledger_log::LogReader;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::collections::BTreeSet;
use std::path::Path;

/// projection name → next seq to apply.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("projection_cursors");
/// key id (16 bytes) → postcard(KeyRecord).
const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_keys");
/// workspace → postcard(Policy).
const POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_policies");

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection store: {0}")]
    Store(#[from] redb::Error),
    #[error("projection row {0} cannot be decoded")]
    Corrupt(String),
    #[error("reading the log: {0}")]
    Log(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for ProjectionError {
            fn from(e: $t) -> Self { ProjectionError::Store(e.into()) }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A view of the log maintained in redb.
pub trait Projection: Send {
    /// Stable name, used as the cursor's key.
    fn name(&self) -> &'static str;
    /// Applies `events` (consecutive, in seq order) within `txn`.
    fn apply(&mut self, txn: &WriteTransaction, events: &[Event]) -> Result<(), ProjectionError>;
    /// Removes every row, before a rebuild.
    fn clear(&mut self, txn: &WriteTransaction) -> Result<(), ProjectionError>;
}

/// The key registry as rows: one record per key, one policy per workspace.
pub struct RegistryProjection;

impl Projection for RegistryProjection {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn apply(&mut self, txn: &WriteTransaction, events: &[Event]) -> Result<(), ProjectionError> {
        let mut keys = txn.open_table(KEYS)?;
        // Load the records this batch touches into a small state, apply the events with the
        // one state-transition function, and write the touched rows back.
        let mut partial = LedgerState::default();
        let touched: BTreeSet<KeyId> = events.iter().filter_map(|e| e.payload.key_id()).collect();
        for key_id in &touched {
            if let Some(row) = keys.get(key_id.as_bytes().as_slice())? {
                partial.insert(decode_record(row.value())?);
            }
        }
        let mut policies_changed: BTreeSet<WorkspaceId> = BTreeSet::new();
        for event in events {
            partial.apply(event);
            if let Payload::PolicySet(p) = &event.payload {
                policies_changed.insert(p.workspace.clone());
            }
        }
        for record in partial.keys.values() {
            let bytes = postcard::to_allocvec(record).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            keys.insert(record.key_id.as_bytes().as_slice(), bytes.as_slice())?;
        }
        let mut policies = txn.open_table(POLICIES)?;
        for workspace in policies_changed {
            let bytes = postcard::to_allocvec(&partial.policy(&workspace))
                .map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            policies.insert(workspace.as_str(), bytes.as_slice())?;
        }
        Ok(())
    }

    fn clear(&mut self, txn: &WriteTransaction) -> Result<(), ProjectionError> {
        txn.delete_table(KEYS)?;
        txn.delete_table(POLICIES)?;
        Ok(())
    }
}

fn decode_record(bytes: &[u8]) -> Result<KeyRecord, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("key record: {e}")))
}

/// The redb database and the projections kept in it.
pub struct Projections {
    db: std::sync::Arc<Database>,
    list: Vec<Box<dyn Projection>>,
}

impl Projections {
    pub fn open(path: &Path) -> Result<Self, ProjectionError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(CURSORS)?;
        txn.open_table(KEYS)?;
        txn.open_table(POLICIES)?;
        txn.commit()?;
        Ok(Self { db: std::sync::Arc::new(db), list: vec![Box::new(RegistryProjection)] })
    }

    /// The database, for readers running concurrently with the projector (redb gives
    /// every read transaction a consistent snapshot).
    pub fn database(&self) -> std::sync::Arc<Database> {
        self.db.clone()
    }

    /// The next seq each projection expects; the runner resumes from the smallest.
    pub fn cursor(&self) -> Result<u64, ProjectionError> {
        let txn = self.db.begin_read()?;
        let cursors = txn.open_table(CURSORS)?;
        let mut lowest = u64::MAX;
        for projection in &self.list {
            let cursor = cursors.get(projection.name())?.map(|v| v.value()).unwrap_or(0);
            lowest = lowest.min(cursor);
        }
        Ok(if lowest == u64::MAX { 0 } else { lowest })
    }

    /// Applies consecutive events to every projection that has not seen them, in one
    /// transaction together with the new cursors.
    pub fn apply(&mut self, events: &[Event]) -> Result<(), ProjectionError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(()) };
        let mut txn = self.db.begin_write()?;
        // Projections are rebuildable from the log: a crash may lose the latest commits,
        // never consistency, so commits need not be fsynced one by one.
        txn.set_durability(redb::Durability::None)?;
        {
            let mut cursors = txn.open_table(CURSORS)?;
            for projection in &mut self.list {
                let cursor = cursors.get(projection.name())?.map(|v| v.value()).unwrap_or(0);
                if cursor > last.seq {
                    continue;
                }
                let skip = cursor.saturating_sub(first.seq) as usize;
                projection.apply(&txn, &events[skip..])?;
                cursors.insert(projection.name(), last.seq + 1)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes every applied row durable.
    pub fn persist(&self) -> Result<(), ProjectionError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    /// Replays the log from the lowest cursor to its end.
    pub fn catch_up(&mut self, log: &LogReader) -> Result<u64, ProjectionError> {
        let mut next = self.cursor()?;
        let end = log.len();
        let mut chunk = Vec::with_capacity(8192);
        while next < end {
            chunk.clear();
            for event in log.events_from(next).take(8192) {
                chunk.push(event.map_err(|e| ProjectionError::Log(e.to_string()))?);
            }
            let Some(last) = chunk.last() else { break };
            next = last.seq + 1;
            self.apply(&chunk)?;
        }
        self.persist()?;
        Ok(next)
    }

    /// Drops every projection and replays the whole log.
    pub fn rebuild(&mut self, log: &LogReader) -> Result<u64, ProjectionError> {
        let txn = self.db.begin_write()?;
        for projection in &mut self.list {
            projection.clear(&txn)?;
        }
        txn.delete_table(CURSORS)?;
        txn.open_table(CURSORS)?;
        txn.open_table(KEYS)?;
        txn.open_table(POLICIES)?;
        txn.commit()?;
        self.catch_up(log)
    }

    /// Loads the persisted registry into memory (no replay).
    pub fn load_state(&self) -> Result<LedgerState, ProjectionError> {
        load_state_from(self.db.as_ref())
    }
}

/// Loads the registry of a projections file without writing to it (for `log verify`).
pub fn load_state_read_only(path: &Path) -> Result<LedgerState, ProjectionError> {
    let db = redb::ReadOnlyDatabase::open(path)?;
    load_state_from(&db)
}

fn load_state_from(db: &impl ReadableDatabase) -> Result<LedgerState, ProjectionError> {
    let txn = db.begin_read()?;
    let mut state = LedgerState::default();
    for row in txn.open_table(KEYS)?.iter()? {
        let (_, value) = row?;
        state.insert(decode_record(value.value())?);
    }
    for row in txn.open_table(POLICIES)?.iter()? {
        let (workspace, value) = row?;
        let workspace: WorkspaceId =
            workspace.value().parse().map_err(|_| ProjectionError::Corrupt("policy workspace".into()))?;
        let policy: Policy = postcard::from_bytes(value.value())
            .map_err(|e| ProjectionError::Corrupt(format!("policy: {e}")))?;
        state.policies.insert(workspace, policy);
    }
    state.applied = txn.open_table(CURSORS)?.get("registry")?.map(|v| v.value()).unwrap_or(0);
    Ok(state)
}
