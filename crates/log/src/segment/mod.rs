//! Durable, append-only record storage: the bytes of every event, in CRC-framed segment files.
//!
//! This is the source of truth under the Merkle log: the tree and the checkpoints are derived
//! from it and checked against it. It stores opaque records (numbered 0, 1, 2, … in append
//! order) in segment files named `seg-<first seq, 20 digits>.log`, written by one
//! [`SegmentLog`] and read concurrently through any number of [`SegmentReader`]s. It
//! guarantees three things.
//!
//! **Durability.** [`SegmentLog::append_batch`] writes a whole batch (normally one `write`);
//! it does not sync. [`SegmentLog::sync`] issues one `fdatasync` of the current segment; after
//! it returns `Ok`, every record appended before it survives a crash or power cut. The same
//! fsync can run off the appending thread: [`SegmentLog::begin_sync`] hands out a
//! [`PendingSync`] (a second handle to the segment and the length it covers) that another
//! thread runs while appends go on, and [`SegmentLog::end_sync`] records its outcome: only
//! then does [`SegmentLog::durable_len`] reach that length. A new segment is only created
//! after the previous one has been `fdatasync`ed (also when an fsync of it is still running
//! elsewhere), and the directory is `fsync`ed after creating (or removing) a segment, so
//! un-synced bytes can only ever sit at the end of the *last* segment.
//!
//! **Torn-tail rule.** Records are written in batches, and the last record of each batch
//! carries the commit mark. On [`SegmentLog::open`] every frame of every segment is checked
//! (length, CRC32C, flags, contiguity of the segments); the log ends after the last record
//! carrying the commit mark. Whatever follows it at the end of the log (a half-written batch,
//! garbage, zero fill) can only be the unacknowledged remains of a crash, and is cut off
//! (truncate + `fdatasync`; empty trailing segments are removed) and reported in
//! [`Recovery`]. A damaged frame that is *followed* by committed data (in the same segment or a
//! later one) is not a torn tail but damage to acknowledged data: it is never cut off; `open`
//! fails with [`SegmentError::Corrupt`] naming the segment, offset and record seq, and changes
//! nothing on disk. (Sealed segments are checked through their index files instead of frame
//! by frame; the index module says what that does and does not check.)
//!
//! **Fail-closed rule.** After any failed write, fsync or segment creation the [`SegmentLog`]
//! is *poisoned*: every later append or sync returns [`SegmentError::Poisoned`]. An fsync is
//! never retried: after a failed `fsync` Linux may already have dropped the dirty pages, and a
//! retry that "succeeds" would claim durability for data that is gone (PostgreSQL's
//! "fsyncgate"). [`SegmentLog::reopen`] (or a new process) recovers: it drops the file
//! handles and runs the same recovery as [`SegmentLog::open`], deciding from what is really on
//! disk. After a failed fsync it does not trust the page cache either: the log is cut back to
//! the last length an fsync confirmed ([`SegmentLog::durable_len`]), whatever the files seem
//! to hold past it. A failed write is never visible: readers and [`SegmentLog::len`] only ever
//! see whole batches whose write completed.
//!
//! The parts, one concept each:
//!
//! * this module: the writer ([`SegmentLog`]: append, roll to a new segment, sync, poison,
//!   reopen), its options and errors, and the segment file names;
//! * `frame`: the frame format of one record, its checks ([`Damage`]), and the cursor that
//!   reads frames forward through positional reads;
//! * `index`: the sparse in-memory index readers seek with, and the index files of sealed
//!   segments that spare a restart from reading them;
//! * `recovery`: the scan of the segment files, the plan of what to keep and cut, and the
//!   cut itself;
//! * `reader`: [`SegmentReader`] and its iterators.

mod frame;
mod index;
mod reader;
mod recovery;
mod scanned;
#[cfg(test)]
mod tests;

pub use frame::{Damage, FLAG_COMMIT, FRAME_HEADER_LEN, MAX_RECORD_LEN};
pub use index::index_file_name;
pub use reader::{LocatedIter, LocatedRecord, SegmentInfo, SegmentIter, SegmentReader};

use crate::storage::{Storage, StorageFile};
use frame::encode_frame;
use index::{SegIndex, Shared, build_index, build_shared, read_lock, write_lock, write_sealed_index};
use recovery::{Recovered, plan_recovery, recover};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes [`SegmentLog::probe_writable`] writes: room for a few batches.
pub const PROBE_LEN: usize = 64 << 10;
/// Default size at which the log rolls to a new segment.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// A batch larger than this is written in several `write` calls (still invisible until all
/// of them complete, and still cut as a whole by recovery if they do not).
const WRITE_CHUNK: usize = 8 << 20;

/// Tuning of a [`SegmentLog`].
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Roll to a new segment before a batch once the current segment holds this many bytes.
    /// A batch never spans two segments, so a segment may exceed this by up to one batch.
    pub segment_size: u64,
    /// The in-memory index keeps the offset of every `index_stride`-th record (≥ 1).
    pub index_stride: u64,
    /// Read size of sequential iteration.
    pub read_chunk: usize,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self { segment_size: DEFAULT_SEGMENT_SIZE, index_stride: 32, read_chunk: 1 << 20 }
    }
}

/// What recovery found (and, for [`SegmentLog::open`], cut off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Committed records in the log: the next record gets this seq.
    pub records: u64,
    /// Bytes after the last committed record that were (or would be) removed.
    pub truncated_bytes: u64,
    /// Whole, valid frames among them (records of an unfinished batch).
    pub truncated_records: u64,
    /// Trailing segment files that held no committed record and were (or would be) removed.
    pub removed_segments: u64,
}

/// Errors of the segment log. Never carries record contents.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the segment log is poisoned by an earlier failed write or fsync and refuses to continue; reopen it to recover"
    )]
    Poisoned,
    #[error("a record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    #[error("record {seq} does not exist: the log holds {len} records")]
    OutOfRange { seq: u64, len: u64 },
    #[error("corrupt log: {damage} in {} at byte offset {offset} (record seq {seq})", path.display())]
    Corrupt { path: PathBuf, offset: u64, seq: u64, damage: Damage },
    #[error(
        "segment {} should start at record {expected} but is named for record {found}: a segment is missing or misnamed",
        path.display()
    )]
    Discontinuity { path: PathBuf, expected: u64, found: u64 },
    #[error(
        "the log holds {found} records on disk but {durable} were made durable: acknowledged records are missing; refusing to continue"
    )]
    Lost { durable: u64, found: u64 },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SegmentError + 'a {
    move |source| SegmentError::Io { op, path: path.to_path_buf(), source }
}

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

/// The first seq of a segment file name, or `None` if it is not one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An fsync of the active segment taken by [`SegmentLog::begin_sync`], to run on another
/// thread while the log appends: a second handle to the segment (none if nothing was
/// written since the last sync) and the number of records it makes durable.
pub struct PendingSync {
    file: Option<(Box<dyn StorageFile>, Arc<Path>)>,
    mark: SyncMark,
}

impl fmt::Debug for PendingSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingSync").field("mark", &self.mark).finish_non_exhaustive()
    }
}

/// What a [`PendingSync`] covers, for [`SegmentLog::end_sync`]: kept by whoever waits for
/// the outcome while the sync itself runs elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncMark {
    covers: u64,
    durable_before: u64,
}

impl SyncMark {
    /// The records durable once the sync succeeded: everything appended before it was taken.
    pub fn covers(&self) -> u64 {
        self.covers
    }
}

impl PendingSync {
    /// The `fdatasync`; may wait for the disk.
    pub fn run(&mut self) -> Result<(), SegmentError> {
        match &mut self.file {
            Some((file, path)) => file.sync_data().map_err(io_err("fsync", path)),
            None => Ok(()),
        }
    }

    /// What it covers.
    pub fn mark(&self) -> SyncMark {
        self.mark
    }
}

/// The segment being appended to.
struct Active {
    file: Box<dyn StorageFile>,
    path: Arc<Path>,
    first_seq: u64,
    /// Bytes written (all of them committed: a failed write poisons the log).
    size: u64,
    /// Written since the last fdatasync.
    dirty: bool,
}

/// The single writer of a segment directory. See the module docs for its guarantees.
pub struct SegmentLog {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    options: SegmentOptions,
    shared: Arc<Shared>,
    active: Option<Active>,
    next_seq: u64,
    durable: u64,
    poisoned: bool,
    /// An fsync failed since the last recovery: nothing past `durable` may be trusted, even
    /// if the page cache still shows it.
    sync_failed: bool,
    buf: Vec<u8>,
}

impl fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentLog")
            .field("dir", &self.dir)
            .field("len", &self.next_seq)
            .field("durable_len", &self.durable)
            .field("poisoned", &self.poisoned)
            .field("sync_failed", &self.sync_failed)
            .finish()
    }
}

impl SegmentLog {
    /// Opens (creating if missing) the segment directory `dir`, recovers it (see the module
    /// docs: a torn tail is cut and synced, damage before committed data is an error and
    /// nothing is changed) and returns the log with what recovery did.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: SegmentOptions,
    ) -> Result<(Self, Recovery), SegmentError> {
        let options = SegmentOptions { index_stride: options.index_stride.max(1), ..options };
        let Recovered { kept, active, recovery, unindexed } = recover(&*storage, dir, &options, None)?;
        let shared = build_shared(kept, &options);
        // Sealed segments read in full (a log from before index files, or a stale index):
        // index them so that the next open does not read them again.
        for segment in read_lock(&shared.index).segments.iter().filter(|s| unindexed.contains(&s.first_seq)) {
            write_sealed_index(&*storage, dir, segment, options.index_stride);
        }
        let log = Self {
            storage,
            dir: dir.to_path_buf(),
            options,
            shared,
            active,
            next_seq: recovery.records,
            durable: recovery.records,
            poisoned: false,
            sync_failed: false,
            buf: Vec::new(),
        };
        Ok((log, recovery))
    }

    /// Recovers a (poisoned) log in place, exactly as [`SegmentLog::open`] would after a
    /// restart: the file handles are dropped, every segment is scanned again from disk, a torn
    /// tail is cut and the tail fsynced. After a failed fsync the log is first cut back to
    /// [`SegmentLog::durable_len`]: the kernel may have dropped the pages that fsync was to
    /// write while still showing them, so nothing past the last confirmed fsync is trusted.
    /// `at_most` also cuts everything from that record on (records of a batch its caller
    /// refused); it must not be below `durable_len`. Readers see the recovered log once this
    /// returns `Ok`; on an error the log stays poisoned and distrusts everything past
    /// `durable_len` on the next attempt.
    pub fn reopen(&mut self, at_most: Option<u64>) -> Result<Recovery, SegmentError> {
        let limit = match (self.sync_failed.then_some(self.durable), at_most) {
            (Some(a), Some(b)) => Some(a.min(b).max(self.durable)),
            (a, b) => a.or(b.map(|b| b.max(self.durable))),
        };
        self.active = None;
        self.poisoned = true;
        let result = recover(&*self.storage, &self.dir, &self.options, limit);
        let Recovered { kept, active, recovery, .. } = match result {
            Ok(recovered) => recovered,
            Err(error) => {
                // Whatever the reopen fsynced or cut may not have reached the disk.
                self.sync_failed = true;
                return Err(error);
            }
        };
        *write_lock(&self.shared.index) = build_index(kept);
        self.active = active;
        self.next_seq = recovery.records;
        self.durable = recovery.records;
        self.poisoned = false;
        self.sync_failed = false;
        Ok(recovery)
    }

    /// Read-only recovery, for offline verification: checks every frame exactly like
    /// [`SegmentLog::open`] but changes nothing (no directory is created, no tail is cut).
    /// The reader sees the committed records; the [`Recovery`] says what `open` would cut.
    pub fn inspect(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: SegmentOptions,
    ) -> Result<(SegmentReader, Recovery), SegmentError> {
        let options = SegmentOptions { index_stride: options.index_stride.max(1), ..options };
        let plan = plan_recovery(&*storage, dir, &options, false)?;
        Ok((SegmentReader { shared: build_shared(plan.kept, &options) }, plan.recovery))
    }

    /// Appends `records` as one batch (the last one carries the commit mark) and returns the
    /// seq of the first. Does not sync. Readers see the batch once the write completed, all
    /// of it or nothing. Any I/O failure poisons the log.
    pub fn append_batch(&mut self, records: &[&[u8]]) -> Result<u64, SegmentError> {
        if self.poisoned {
            return Err(SegmentError::Poisoned);
        }
        if let Some(record) = records.iter().find(|r| r.len() > MAX_RECORD_LEN) {
            return Err(SegmentError::RecordTooLarge { len: record.len(), max: MAX_RECORD_LEN });
        }
        if records.is_empty() {
            return Ok(self.next_seq);
        }
        let result = self.write_batch(records);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn write_batch(&mut self, records: &[&[u8]]) -> Result<u64, SegmentError> {
        self.roll_if_needed()?;
        let first = self.next_seq;
        let count = records.len() as u64;
        let stride = self.options.index_stride;
        let Some(active) = self.active.as_mut() else {
            unreachable!("roll_if_needed leaves an active segment")
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut written = 0u64;
        let mut sparse = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let last = i + 1 == records.len();
            if (first + i as u64 - active.first_seq).is_multiple_of(stride) {
                sparse.push(active.size + written + buf.len() as u64);
            }
            encode_frame(&mut buf, record, if last { FLAG_COMMIT } else { 0 });
            if buf.len() >= WRITE_CHUNK || last {
                active.file.append(&buf).map_err(io_err("write", &active.path))?;
                written += buf.len() as u64;
                buf.clear();
            }
        }
        active.size += written;
        active.dirty = true;
        {
            let mut index = write_lock(&self.shared.index);
            let segment = index.segments.last_mut().expect("the active segment is indexed");
            segment.sparse.extend_from_slice(&sparse);
            segment.records += count;
            segment.end = active.size;
            index.records += count;
            index.bytes += written;
        }
        self.next_seq += count;
        if buf.capacity() <= WRITE_CHUNK {
            self.buf = buf;
        }
        Ok(first)
    }

    /// Whether the next batch starts a new segment, which first makes the current one
    /// durable (an fsync) and the new one's directory entry too.
    pub fn rolls_next(&self) -> bool {
        self.active.as_ref().is_none_or(|active| active.size >= self.options.segment_size)
    }

    /// Starts a new segment if there is none or the current one is full: syncs the current
    /// one first (so un-synced data only ever sits in the last segment), then creates the new
    /// file and syncs the directory.
    fn roll_if_needed(&mut self) -> Result<(), SegmentError> {
        if !self.rolls_next() {
            return Ok(());
        }
        if let Some(mut old) = self.active.take() {
            // A fsync of it still running elsewhere ([`PendingSync`]) does not count: the
            // next segment is only created once this one is durable.
            if old.dirty || self.durable < self.next_seq {
                if let Err(error) = old.file.sync_data() {
                    self.sync_failed = true;
                    return Err(io_err("fsync", &old.path)(error));
                }
                self.durable = self.next_seq;
            }
            if let Some(sealed) = read_lock(&self.shared.index).segments.last()
                && sealed.first_seq == old.first_seq
                && sealed.records > 0
            {
                write_sealed_index(&*self.storage, &self.dir, sealed, self.options.index_stride);
            }
        }
        let path: Arc<Path> = self.dir.join(segment_file_name(self.next_seq)).into();
        let file = self.storage.open_append(&path).map_err(io_err("create", &path))?;
        if let Err(error) = self.storage.sync_dir(&self.dir) {
            self.sync_failed = true;
            return Err(io_err("fsync directory", &self.dir)(error));
        }
        let reader: Arc<dyn StorageFile> =
            self.storage.open_read(&path).map_err(io_err("open", &path))?.into();
        write_lock(&self.shared.index).segments.push(SegIndex {
            first_seq: self.next_seq,
            records: 0,
            end: 0,
            sparse: Vec::new(),
            file: reader,
            path: path.clone(),
        });
        tracing::debug!(segment = %path.display(), "started a new segment");
        self.active = Some(Active { file, path, first_seq: self.next_seq, size: 0, dirty: false });
        Ok(())
    }

    /// Makes every appended record durable: one `fdatasync` of the current segment (earlier
    /// segments were synced when the log rolled past them). A failure poisons the log; the
    /// fsync is never retried.
    pub fn sync(&mut self) -> Result<(), SegmentError> {
        let mut pending = self.begin_sync()?;
        let result = pending.run();
        self.end_sync(pending.mark(), result)
    }

    /// Takes the fsync [`SegmentLog::sync`] would do, to run elsewhere (on another thread)
    /// while appends go on: it covers every record appended so far. Records appended after
    /// this call need a later sync. Its outcome goes to [`SegmentLog::end_sync`]; until then
    /// those records are not durable as far as this log knows (a sync begun meanwhile fsyncs
    /// them again), and a pending sync dropped unreported leaves them so.
    pub fn begin_sync(&mut self) -> Result<PendingSync, SegmentError> {
        if self.poisoned {
            return Err(SegmentError::Poisoned);
        }
        let mut file = None;
        let unconfirmed = self.durable < self.next_seq;
        if let Some(active) = self.active.as_mut()
            && (active.dirty || unconfirmed)
        {
            match active.file.try_clone() {
                Ok(handle) => file = Some((handle, active.path.clone())),
                Err(error) => {
                    self.poisoned = true;
                    return Err(io_err("open a second handle to", &active.path)(error));
                }
            }
            active.dirty = false;
        }
        Ok(PendingSync { file, mark: SyncMark { covers: self.next_seq, durable_before: self.durable } })
    }

    /// Records the outcome of a [`PendingSync`] run: on success its records are durable; a
    /// failure poisons the log and, as after any failed fsync, nothing past what was durable
    /// before it began is trusted (the fsync is never retried).
    pub fn end_sync(&mut self, mark: SyncMark, result: Result<(), SegmentError>) -> Result<(), SegmentError> {
        match result {
            // After a failed fsync (a roll's, say) an fsync of the same file through the other
            // handle may succeed although the pages it covered are lost: the kernel reports
            // a writeback error once. Nothing past `durable` is trusted then.
            Ok(()) if self.sync_failed => Err(SegmentError::Poisoned),
            Ok(()) => {
                self.durable = self.durable.max(mark.covers);
                Ok(())
            }
            Err(error) => {
                self.poisoned = true;
                self.sync_failed = true;
                self.durable = self.durable.min(mark.durable_before);
                Err(error)
            }
        }
    }

    /// Syncs and closes the log.
    pub fn close(mut self) -> Result<(), SegmentError> {
        self.sync()
    }

    /// Committed records (visible to readers; not necessarily synced). The next seq.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// Records known to be durable (appended before the last successful sync).
    pub fn durable_len(&self) -> u64 {
        self.durable
    }

    /// Bytes of committed frames in all segments.
    pub fn bytes_on_disk(&self) -> u64 {
        read_lock(&self.shared.index).bytes
    }

    /// Whether an earlier failure poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Checks that the file system takes a write and an fsync: writes [`PROBE_LEN`] bytes to
    /// `.write-probe` beside the segment directory, fsyncs and removes it. Never touches a
    /// segment, so it is safe to call on a poisoned log (an fsync of another file is not a
    /// retry of the one that failed).
    pub fn probe_writable(&self) -> Result<(), SegmentError> {
        let path = self.dir.parent().unwrap_or(&self.dir).join(".write-probe");
        let result = (|| {
            let mut file = self.storage.open_append(&path).map_err(io_err("create", &path))?;
            file.set_len(0).map_err(io_err("truncate", &path))?;
            file.append(&[0u8; PROBE_LEN]).map_err(io_err("write", &path))?;
            file.sync_data().map_err(io_err("fsync", &path))
        })();
        let removed = self.storage.remove_file(&path).map_err(io_err("remove", &path));
        result.and(removed)
    }

    /// Whether an fsync failed since the last recovery (records past
    /// [`SegmentLog::durable_len`] are then not trusted).
    pub fn sync_failed(&self) -> bool {
        self.sync_failed
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A concurrent reader of the committed records.
    pub fn reader(&self) -> SegmentReader {
        SegmentReader { shared: self.shared.clone() }
    }
}
