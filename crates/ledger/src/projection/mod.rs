//! Projections: state derived from the log and persisted in redb.
//!
//! A [`Projection`] consumes events strictly in seq order. The [`Projections`] runner applies
//! a batch to every projection inside **one** redb write transaction, in which it also
//! stores each projection's cursor (the next seq it expects). A crash therefore leaves every
//! projection at a consistent cursor, and catching up means replaying the log from there.
//! Because projections hold nothing the log does not, any of them can be dropped and
//! rebuilt from seq 0; `tests/` prove the rebuild equals the incremental state.
//!
//! The runner knows no projection by name: the engine, which composes them, passes the list
//! in. Each projection creates and migrates its own tables in [`Projection::prepare`]; one
//! that must drop its rows (a layout it cannot migrate) has its cursor reset, and the
//! catch-up rebuilds it from the log while the others keep theirs.
//!
//! After an I/O error (a full disk) redb refuses every later operation on that database,
//! reads included, until it is reopened. The database therefore sits in a replaceable
//! [`ProjectionsDb`] slot: [`Projections::reopen`] empties the slot (readers get
//! [`ProjectionError::Reopening`]), waits for the readers in flight, reopens the file (redb
//! repairs it if needed; committed rows are never lost, only uncommitted ones) and puts the
//! new database in the slot. The caller then catches up from the log.
//!
//! - [`registry`]: the key registry as rows ([`RegistryProjection`]), and loading it back.
//! - [`registry_check`]: `log verify`'s check that those rows equal a replay of the log.

pub mod registry;
pub mod registry_check;

pub(crate) use registry::load_state_from;
pub use registry::{RegistryProjection, load_state_read_only};

use crate::state::LedgerState;
use keyledger_core::Event;
use keyledger_log::LogReader;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// projection name → next seq to apply.
pub(crate) const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("projection_cursors");

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

/// What [`Projection::prepare`] did to a projection's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Its tables exist in the current layout (created now if they were missing).
    Current,
    /// Its rows were dropped (written in a layout it cannot migrate): its cursor is reset, so
    /// the next catch-up rebuilds it from the log.
    Reset,
}

/// A view of the log maintained in redb.
pub trait Projection: Send {
    /// Stable name, used as the cursor's key.
    fn name(&self) -> &'static str;
    /// Creates this projection's tables if they are missing and migrates them if another
    /// version wrote them, so that readers never meet a missing table. Runs in the
    /// transaction that opens (or reopens, or rebuilds) the database, before anything is
    /// applied.
    fn prepare(&mut self, txn: &WriteTransaction) -> Result<Prepared, ProjectionError>;
    /// Applies `batches` (their events consecutive, in seq order) within `txn`.
    fn apply(&mut self, txn: &WriteTransaction, batches: &[&[Event]]) -> Result<(), ProjectionError>;
    /// Removes every row, before a rebuild.
    fn clear(&mut self, txn: &WriteTransaction) -> Result<(), ProjectionError>;
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

/// Creates the cursor table and lets every projection create or migrate its own tables;
/// removes the cursor of each projection that dropped its rows.
fn prepare_all(txn: &WriteTransaction, list: &mut [Box<dyn Projection>]) -> Result<(), ProjectionError> {
    let mut cursors = txn.open_table(CURSORS)?;
    for projection in list {
        if projection.prepare(txn)? == Prepared::Reset {
            cursors.remove(projection.name())?;
        }
    }
    Ok(())
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
    /// Opens (creating if missing) the database at `path` and prepares every projection of
    /// `list` in it (see [`Projection::prepare`]).
    pub fn open(path: &Path, list: Vec<Box<dyn Projection>>) -> Result<Self, ProjectionError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES, list)
    }

    /// [`Self::open`] with a redb page cache of `cache_bytes`.
    pub fn open_with_cache(
        path: &Path,
        cache_bytes: usize,
        mut list: Vec<Box<dyn Projection>>,
    ) -> Result<Self, ProjectionError> {
        let db = ProjectionsDb::new(open_database(path, cache_bytes, &mut list)?);
        Ok(Self {
            db,
            path: path.to_owned(),
            cache_bytes,
            len_at_open: std::fs::metadata(path).map_or(0, |m| m.len()),
            list,
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
        match open_database(&self.path, self.cache_bytes, &mut self.list) {
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
        prepare_all(&txn, &mut self.list)?;
        txn.commit()?;
        self.catch_up(log)
    }

    /// Loads the persisted registry into memory (no replay); the list must hold the
    /// [`RegistryProjection`].
    pub fn load_state(&self) -> Result<LedgerState, ProjectionError> {
        load_state_from(self.db.get()?.as_ref())
    }
}

/// Opens (creating if missing) the database and prepares every projection's tables.
fn open_database(
    path: &Path,
    cache_bytes: usize,
    list: &mut [Box<dyn Projection>],
) -> Result<Database, ProjectionError> {
    let db = redb::Builder::new().set_cache_size(cache_bytes).create(path)?;
    let txn = db.begin_write()?;
    prepare_all(&txn, list)?;
    txn.commit()?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

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
