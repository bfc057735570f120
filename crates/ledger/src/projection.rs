//! Projections: state derived from the log and persisted in redb.
//!
//! A [`Projection`] consumes events strictly in seq order. The [`Projections`] runner applies
//! a batch to every projection inside **one** redb write transaction, in which it also
//! stores each projection's cursor (the next seq it expects). A crash therefore leaves every
//! projection at a consistent cursor, and catching up means replaying the log from there.
//! Because projections hold nothing the log does not, any of them can be dropped and
//! rebuilt from seq 0; `tests/` prove the rebuild equals the incremental state.
//!
//! After an I/O error (a full disk) redb refuses every later operation on that database,
//! reads included, until it is reopened. The database therefore sits in a replaceable
//! [`ProjectionsDb`] slot: [`Projections::reopen`] empties the slot (readers get
//! [`ProjectionError::Reopening`]), waits for the readers in flight, reopens the file (redb
//! repairs it if needed; committed rows are never lost, only uncommitted ones) and puts the
//! new database in the slot. The caller then catches up from the log.

use crate::state::{KeyRecord, LastUsed, LedgerState, record_use};
use keyledger_core::{Event, KeyId, Payload, Policy, WorkspaceId};
use keyledger_log::LogReader;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// projection name → next seq to apply.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("projection_cursors");
/// key id (16 bytes) → postcard(KeyRecord).
const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_keys");
/// workspace → postcard(Policy).
const POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_policies");
/// key id → postcard(LastUsed): kept apart so a `used` event rewrites a few bytes, not the
/// whole key record.
const LAST_USED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_last_used");
/// workspace → postcard(Webhook).
const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_webhooks");
/// idempotency id (32 bytes) → postcard(IdempotentResult).
const IDEMPOTENCY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_idempotency");

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection store: {0}")]
    Store(#[from] redb::Error),
    #[error("projection row {0} cannot be decoded")]
    Corrupt(String),
    #[error("reading the log: {0}")]
    Log(String),
    #[error("the projections are being reopened after a storage error")]
    Reopening,
    #[error("projection {name} expects seq {expected} but was given events from seq {first}")]
    Gap { name: &'static str, expected: u64, first: u64 },
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
    redb::SetDurabilityError,
    redb::CompactionError
);

/// A view of the log maintained in redb.
pub trait Projection: Send {
    /// Stable name, used as the cursor's key.
    fn name(&self) -> &'static str;
    /// Applies `batches` (their events consecutive, in seq order) within `txn`.
    fn apply(&mut self, txn: &WriteTransaction, batches: &[&[Event]]) -> Result<(), ProjectionError>;
    /// Removes every row, before a rebuild.
    fn clear(&mut self, txn: &WriteTransaction) -> Result<(), ProjectionError>;
}

/// The key registry as rows: one record per key, one policy per workspace.
pub struct RegistryProjection;

impl Projection for RegistryProjection {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn apply(&mut self, txn: &WriteTransaction, batches: &[&[Event]]) -> Result<(), ProjectionError> {
        let events = || batches.iter().flat_map(|b| b.iter());
        let mut keys = txn.open_table(KEYS)?;
        let mut last_used = txn.open_table(LAST_USED)?;
        // Records changed by lifecycle events are loaded into a small state, the events are
        // applied with the one state-transition function, and the rows written back. Keys
        // that were only used get just their last-use row updated.
        let mut partial = LedgerState::default();
        let lifecycle: BTreeSet<KeyId> =
            events().filter(|e| !e.payload.kind().is_usage()).filter_map(|e| e.payload.key_id()).collect();
        for key_id in &lifecycle {
            if let Some(row) = keys.get(key_id.as_bytes().as_slice())? {
                let mut record = decode_record(row.value())?;
                record.last_used = read_last_used(&last_used, key_id)?;
                partial.insert(record);
            }
        }
        let mut used_only: std::collections::BTreeMap<KeyId, LastUsed> = std::collections::BTreeMap::new();
        let mut policies_changed: BTreeSet<WorkspaceId> = BTreeSet::new();
        for event in events() {
            match &event.payload {
                Payload::Used(usage) if partial.view(&usage.key_id).is_none() => {
                    let entry = match used_only.entry(usage.key_id) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(read_last_used(&last_used, &usage.key_id)?)
                        }
                    };
                    record_use(entry, event.at, &usage.context);
                    partial.applied = event.seq + 1;
                }
                Payload::PolicySet(p) => {
                    policies_changed.insert(p.workspace.clone());
                    partial.apply(event);
                }
                Payload::WebhookSet(w) => {
                    // The previous configuration decides `since_seq`: load it first.
                    if !partial.webhooks.contains_key(&w.workspace)
                        && let Some(row) = txn.open_table(WEBHOOKS)?.get(w.workspace.as_str())?
                    {
                        partial.webhooks.insert(w.workspace.clone(), decode_webhook(row.value())?);
                    }
                    partial.apply(event);
                }
                _ => partial.apply(event),
            }
        }
        for key in partial.keys() {
            let mut stored = key.record();
            let usage = std::mem::take(&mut stored.last_used);
            let bytes =
                postcard::to_allocvec(&stored).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            keys.insert(stored.key_id.as_bytes().as_slice(), bytes.as_slice())?;
            used_only.insert(stored.key_id, usage);
        }
        for (key_id, usage) in &used_only {
            let bytes = postcard::to_allocvec(usage).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            last_used.insert(key_id.as_bytes().as_slice(), bytes.as_slice())?;
        }
        if !partial.idempotency.is_empty() {
            let mut idempotency = txn.open_table(IDEMPOTENCY)?;
            for (id, result) in &partial.idempotency {
                let bytes =
                    postcard::to_allocvec(result).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                idempotency.insert(id.as_slice(), bytes.as_slice())?;
            }
        }
        if !partial.webhooks.is_empty() {
            let mut webhooks = txn.open_table(WEBHOOKS)?;
            for (workspace, webhook) in &partial.webhooks {
                let bytes =
                    postcard::to_allocvec(webhook).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                webhooks.insert(workspace.as_str(), bytes.as_slice())?;
            }
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
        txn.delete_table(LAST_USED)?;
        txn.delete_table(IDEMPOTENCY)?;
        txn.delete_table(WEBHOOKS)?;
        Ok(())
    }
}

fn decode_webhook(bytes: &[u8]) -> Result<crate::state::Webhook, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("webhook: {e}")))
}

fn read_last_used(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key_id: &KeyId,
) -> Result<LastUsed, ProjectionError> {
    match table.get(key_id.as_bytes().as_slice())? {
        Some(row) => decode_last_used(row.value()),
        None => Ok(LastUsed::default()),
    }
}

fn decode_last_used(bytes: &[u8]) -> Result<LastUsed, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("last used: {e}")))
}

fn decode_record(bytes: &[u8]) -> Result<KeyRecord, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("key record: {e}")))
}

/// The shared, replaceable handle of the projections database (see the module docs).
/// Cheap to clone.
#[derive(Clone)]
pub struct ProjectionsDb(Arc<RwLock<Option<Arc<Database>>>>);

impl ProjectionsDb {
    fn new(db: Database) -> Self {
        Self(Arc::new(RwLock::new(Some(Arc::new(db)))))
    }

    /// The current database, or [`ProjectionError::Reopening`] while it is being reopened.
    pub fn get(&self) -> Result<Arc<Database>, ProjectionError> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or(ProjectionError::Reopening)
    }

    /// Compacts the file at a clean stop, once nothing writes to it any more: redb moves the
    /// pages at the end of the file into free ones and trims it. The projector's durable
    /// transactions copy every page they change, so a running database also holds about
    /// twice the pages one transaction touches as free space (a number of keys' worth, not of
    /// events); this returns it to the file system. Readers get
    /// [`ProjectionError::Reopening`] meanwhile. Returns false, changing nothing, if a reader
    /// still holds the database after `wait`.
    pub fn compact(&self, wait: Duration) -> Result<bool, ProjectionError> {
        let Some(mut shared) = self.take() else { return Ok(false) };
        let deadline = Instant::now() + wait;
        let mut db = loop {
            match Arc::try_unwrap(shared) {
                Ok(db) => break db,
                Err(still_shared) if Instant::now() > deadline => {
                    self.put(still_shared);
                    return Ok(false);
                }
                Err(still_shared) => {
                    shared = still_shared;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        let result = db.compact();
        self.put(Arc::new(db));
        Ok(result?)
    }

    fn take(&self) -> Option<Arc<Database>> {
        self.0.write().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, db: Arc<Database>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
    }
}

/// The redb database and the projections kept in it.
pub struct Projections {
    db: ProjectionsDb,
    path: PathBuf,
    /// redb's page cache, in bytes (kept for reopening).
    cache_bytes: usize,
    /// The file's size when it was first opened (the projector's compaction policy).
    len_at_open: u64,
    list: Vec<Box<dyn Projection>>,
}

/// Creates every table of every projection (a no-op for those that exist).
fn create_tables(txn: &WriteTransaction) -> Result<(), ProjectionError> {
    txn.open_table(CURSORS)?;
    txn.open_table(KEYS)?;
    txn.open_table(POLICIES)?;
    txn.open_table(LAST_USED)?;
    txn.open_table(IDEMPOTENCY)?;
    txn.open_table(WEBHOOKS)?;
    crate::audit::create_tables(txn)
}

/// Events per transaction when catching up from the log (each transaction is a durable
/// commit, see [`Projections::apply_batches`]).
const CATCH_UP_CHUNK: u64 = 65_536;

/// Default size of redb's page cache for the projections (read cache and write buffer
/// together). redb's own default, 1 GiB, would let a long-running server's memory grow by
/// that much as the audit indexes are written and read, whatever its number of keys (the
/// operating system's page cache holds the file either way). Measured on a 1M-event
/// catch-up: 256 MiB projects within ~13% of 1 GiB's speed, 128 MiB takes 1.7× as long.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

impl Projections {
    pub fn open(path: &Path) -> Result<Self, ProjectionError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Self::open`] with a redb page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, ProjectionError> {
        let db = ProjectionsDb::new(open_database(path, cache_bytes)?);
        Ok(Self {
            db,
            path: path.to_owned(),
            cache_bytes,
            len_at_open: std::fs::metadata(path).map_or(0, |m| m.len()),
            list: vec![Box::new(RegistryProjection), Box::new(crate::audit::AuditProjection)],
        })
    }

    /// The database, for readers running concurrently with the projector (redb gives
    /// every read transaction a consistent snapshot).
    pub fn database(&self) -> ProjectionsDb {
        self.db.clone()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the file when it was opened (after its tables were created), before
    /// anything was applied.
    pub fn len_at_open(&self) -> u64 {
        self.len_at_open
    }

    /// Reopens the database after a storage error (see the module docs), waiting up to
    /// `wait` for readers still holding the failed one. Catch up from the log afterwards.
    pub fn reopen(&mut self, wait: Duration) -> Result<(), ProjectionError> {
        if let Some(old) = self.db.take() {
            let deadline = Instant::now() + wait;
            while Arc::strong_count(&old) > 1 {
                if Instant::now() > deadline {
                    self.db.put(old);
                    return Err(ProjectionError::Reopening);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(old);
        }
        match open_database(&self.path, self.cache_bytes) {
            Ok(db) => {
                self.db.put(Arc::new(db));
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// The next seq each projection expects; the runner resumes from the smallest.
    pub fn cursor(&self) -> Result<u64, ProjectionError> {
        let txn = self.db.get()?.begin_read()?;
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
        self.apply_batches(&[events])
    }

    /// [`Self::apply`] for several batches whose events are consecutive, in one transaction
    /// (the projector gathers the writer's batches this way).
    pub fn apply_batches(&mut self, batches: &[&[Event]]) -> Result<(), ProjectionError> {
        let (Some(first), Some(last)) =
            (batches.iter().find_map(|b| b.first()), batches.iter().rev().find_map(|b| b.last()))
        else {
            return Ok(());
        };
        let mut txn = self.db.get()?.begin_write()?;
        // Durable, although the projections are rebuildable from the log: redb reuses the
        // pages a transaction replaces only after a durable commit, so non-durable commits
        // grew the file by every leaf they rewrote until the next one. The projector commits
        // about once a second, so this costs about one fsync a second.
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut cursors = txn.open_table(CURSORS)?;
            for projection in &mut self.list {
                let cursor = cursors.get(projection.name())?.map(|v| v.value()).unwrap_or(0);
                if cursor > last.seq {
                    continue;
                }
                if cursor < first.seq {
                    return Err(ProjectionError::Gap {
                        name: projection.name(),
                        expected: cursor,
                        first: first.seq,
                    });
                }
                let unseen: Vec<&[Event]> = if cursor == first.seq {
                    batches.to_vec()
                } else {
                    batches
                        .iter()
                        .filter_map(|b| {
                            let start = b.first()?.seq;
                            let skip = usize::try_from(cursor.saturating_sub(start)).unwrap_or(usize::MAX);
                            b.get(skip..).filter(|rest| !rest.is_empty())
                        })
                        .collect()
                };
                projection.apply(&txn, &unseen)?;
                cursors.insert(projection.name(), last.seq + 1)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes every applied row durable.
    pub fn persist(&self) -> Result<(), ProjectionError> {
        let mut txn = self.db.get()?.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    /// Replays the log from the lowest cursor to its end.
    pub fn catch_up(&mut self, log: &LogReader) -> Result<u64, ProjectionError> {
        self.catch_up_to(log, log.len())
    }

    /// Replays the log from the lowest cursor up to `end` (exclusive; e.g. the durable
    /// length, so that only durable events are projected) and makes it durable.
    pub fn catch_up_to(&mut self, log: &LogReader, end: u64) -> Result<u64, ProjectionError> {
        let mut next = self.cursor()?;
        let mut chunk = Vec::with_capacity(CATCH_UP_CHUNK as usize);
        while next < end {
            chunk.clear();
            for event in log.events_from(next).take(CATCH_UP_CHUNK.min(end - next) as usize) {
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
        let txn = self.db.get()?.begin_write()?;
        for projection in &mut self.list {
            projection.clear(&txn)?;
        }
        txn.delete_table(CURSORS)?;
        create_tables(&txn)?;
        txn.commit()?;
        self.catch_up(log)
    }

    /// Loads the persisted registry into memory (no replay).
    pub fn load_state(&self) -> Result<LedgerState, ProjectionError> {
        load_state_from(self.db.get()?.as_ref())
    }
}

/// Opens (creating if missing) the database and every table.
fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, ProjectionError> {
    let db = redb::Builder::new().set_cache_size(cache_bytes).create(path)?;
    let txn = db.begin_write()?;
    if !crate::audit::layout_is_current(&txn)? {
        // Written by a version with another audit layout: drop the audit tables and let the
        // catch-up rebuild them from the log (the other projections keep their rows and
        // cursors).
        tracing::warn!("the audit indexes have an older layout; rebuilding them from the log");
        crate::audit::delete_tables(&txn)?;
        txn.open_table(CURSORS)?.remove(crate::audit::AuditProjection.name())?;
    }
    create_tables(&txn)?;
    txn.commit()?;
    Ok(db)
}

/// Loads the registry of a projections file for `log verify`. The file is opened read-only
/// when it was closed cleanly; after a crash redb must first repair its allocator state,
/// which only a writable open does (the same repair the server's next start would make;
/// the rows and cursors are not changed by it, and the log is never touched).
pub fn load_state_read_only(path: &Path) -> Result<LedgerState, ProjectionError> {
    match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => load_state_from(&db),
        Err(redb::DatabaseError::RepairAborted) => load_state_from(&Database::open(path)?),
        Err(other) => Err(other.into()),
    }
}

pub(crate) fn load_state_from(db: &impl ReadableDatabase) -> Result<LedgerState, ProjectionError> {
    let txn = db.begin_read()?;
    let keys = txn.open_table(KEYS)?;
    let mut state = LedgerState::with_capacity(usize::try_from(keys.len()?).unwrap_or(0));
    // Both tables are keyed by key id: walk them side by side (one pass over each B-tree)
    // rather than looking up every key's last use.
    let last_used = txn.open_table(LAST_USED)?;
    let mut uses = last_used.iter()?.peekable();
    for row in keys.iter()? {
        let (id, value) = row?;
        let mut record = decode_record(value.value())?;
        let id = id.value();
        while let Some(skipped) = uses.next_if(|u| u.as_ref().map_or(true, |(k, _)| k.value() < id)) {
            skipped?;
        }
        if let Some((_, usage)) =
            uses.next_if(|u| u.as_ref().is_ok_and(|(k, _)| k.value() == id)).transpose()?
        {
            record.last_used = decode_last_used(usage.value())?;
        }
        state.insert(record);
    }
    for row in txn.open_table(POLICIES)?.iter()? {
        let (workspace, value) = row?;
        let workspace: WorkspaceId =
            workspace.value().parse().map_err(|_| ProjectionError::Corrupt("policy workspace".into()))?;
        let policy: Policy = postcard::from_bytes(value.value())
            .map_err(|e| ProjectionError::Corrupt(format!("policy: {e}")))?;
        state.policies.insert(workspace, policy);
    }
    for row in txn.open_table(WEBHOOKS)?.iter()? {
        let (workspace, value) = row?;
        let workspace: WorkspaceId =
            workspace.value().parse().map_err(|_| ProjectionError::Corrupt("webhook workspace".into()))?;
        state.webhooks.insert(workspace, decode_webhook(value.value())?);
    }
    for row in txn.open_table(IDEMPOTENCY)?.iter()? {
        let (id, value) = row?;
        let id: [u8; 32] =
            id.value().try_into().map_err(|_| ProjectionError::Corrupt("idempotency id".into()))?;
        let result = postcard::from_bytes(value.value())
            .map_err(|e| ProjectionError::Corrupt(format!("idempotency: {e}")))?;
        state.idempotency.insert(id, result);
    }
    state.applied = txn.open_table(CURSORS)?.get("registry")?.map(|v| v.value()).unwrap_or(0);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILLER: TableDefinition<u64, &[u8]> = TableDefinition::new("filler");
    const KEPT: TableDefinition<u64, &[u8]> = TableDefinition::new("kept");

    /// A database whose first half is free pages: a table written, another after it, the
    /// first one deleted.
    fn database_with_a_hole(path: &Path) -> ProjectionsDb {
        let db = Database::create(path).unwrap();
        for table in [FILLER, KEPT] {
            let txn = db.begin_write().unwrap();
            {
                let mut rows = txn.open_table(table).unwrap();
                for i in 0..4_000u64 {
                    rows.insert(i, [i as u8; 1000].as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let txn = db.begin_write().unwrap();
        txn.delete_table(FILLER).unwrap();
        txn.commit().unwrap();
        ProjectionsDb::new(db)
    }

    fn kept_rows(db: &ProjectionsDb) -> u64 {
        db.get().unwrap().begin_read().unwrap().open_table(KEPT).unwrap().len().unwrap()
    }

    #[test]
    fn compacting_returns_the_free_pages_and_keeps_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let db = database_with_a_hole(&path);
        let before = std::fs::metadata(&path).unwrap().len();
        assert!(before > 8_000_000, "{before}");
        assert!(db.compact(Duration::from_secs(1)).unwrap());
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after < before * 6 / 10, "{before} -> {after}");
        assert_eq!(kept_rows(&db), 4_000);
    }

    #[test]
    fn compacting_waits_for_readers_then_gives_up_changing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let db = database_with_a_hole(&path);
        let before = std::fs::metadata(&path).unwrap().len();
        let reader = db.get().unwrap();
        assert!(!db.compact(Duration::from_millis(50)).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        // The database is back in its slot, for the reader and for everyone else.
        assert_eq!(kept_rows(&db), 4_000);
        drop(reader);
        assert!(db.compact(Duration::from_millis(50)).unwrap());
        assert!(std::fs::metadata(&path).unwrap().len() < before);
    }
}
