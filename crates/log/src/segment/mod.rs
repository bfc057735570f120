//! Durable, append-only record storage: the bytes of every event, in CRC-framed segment files.
//!
//! This is the source of truth under the Merkle log: the tree and the checkpoints are derived
//! from it and checked against it. It stores opaque records (numbered 0, 1, 2, … in append
//! order) and guarantees three things.
//!
//! **Durability.** [`SegmentLog::append_batch`] writes a whole batch (normally one `write`);
//! it does not sync. [`SegmentLog::sync`] issues one `fdatasync` of the current segment; after
//! it returns `Ok`, every record appended before it survives a crash or power cut. A new
//! segment is only created after the previous one has been `fdatasync`ed, and the directory is
//! `fsync`ed after creating (or removing) a segment, so un-synced bytes can only ever sit at the
//! end of the *last* segment.
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
//! nothing on disk.
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
//! **Sealed segments.** When the log rolls to a new segment, the full one is fsynced and then
//! *sealed*: its record count, length and sparse index are written next to it in
//! `seg-<first seq>.idx` (CRC-protected). [`SegmentLog::open`] takes a sealed segment's index
//! from that file instead of reading the whole segment, after checking that the file still
//! has the sealed length and that the frames after its last indexed offset (at most
//! `index_stride` of them) are intact and end in a commit mark; only the last segment, the
//! one a crash can have left torn, is always read in full. So a restart reads O(segment)
//! bytes, not the whole log. Damage inside a sealed segment is then found by the reads that
//! cross it (every read checks the frame's CRC and fails with [`SegmentError::Corrupt`]) and
//! by `log verify` ([`SegmentLog::inspect`] ignores the index files and checks every frame),
//! not by `open`; it is never cut off. A missing, stale or damaged index file only costs a
//! full read of its segment, after which `open` writes it anew.
//!
//! **Reads.** [`SegmentReader`] (cheap to clone, `Send + Sync`) reads concurrently with the
//! writer through positional reads. Memory stays small however long the log: the index keeps
//! the byte offset of every `index_stride`-th record (default 32) of each segment, and a read
//! scans forward from there. Sequential iteration reads 1 MiB chunks.
//!
//! Frame format, little-endian: `len: u32 | crc32c: u32 | flags: u8 | record[len]`, where the
//! CRC covers `flags ‖ record`, flags bit 0 is the commit mark and the other bits must be 0.
//! Files are named `seg-<first seq, 20 digits>.log`; a sealed segment's index file
//! `seg-<first seq>.idx` is `"klsegix1" | first_seq | records | end | stride | count: u64 |
//! offsets: u64 × count | crc32c: u32` (little-endian; the CRC covers everything before it).

use crate::storage::{Storage, StorageFile};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The largest record accepted, in bytes.
pub const MAX_RECORD_LEN: usize = 1 << 20;
/// Bytes of framing in front of every record.
pub const FRAME_HEADER_LEN: usize = 9;
/// Flags bit 0: this record is the last of its batch.
pub const FLAG_COMMIT: u8 = 0x01;
/// Bytes [`SegmentLog::probe_writable`] writes: room for a few batches.
pub const PROBE_LEN: usize = 64 << 10;
/// Default size at which the log rolls to a new segment.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// A batch larger than this is written in several `write` calls (still invisible until all
/// of them complete, and still cut as a whole by recovery if they do not).
const WRITE_CHUNK: usize = 8 << 20;
/// Read size of a point read ([`SegmentReader::read`]).
const POINT_READ_CHUNK: usize = 16 << 10;

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

/// What is wrong with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The length field exceeds [`MAX_RECORD_LEN`].
    BadLength(u32),
    /// The CRC32C does not match the flags and record.
    Checksum,
    /// Flag bits other than the commit mark are set.
    BadFlags(u8),
    /// The frame runs past the end of the segment file.
    Truncated,
    /// A segment ends with records of a batch that has no commit mark, yet data follows.
    MissingCommitMark,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength(len) => write!(f, "frame length {len} exceeds the {MAX_RECORD_LEN}-byte limit"),
            Self::Checksum => f.write_str("CRC32C mismatch"),
            Self::BadFlags(flags) => write!(f, "unknown frame flags {flags:#04x}"),
            Self::Truncated => f.write_str("frame runs past the end of the segment"),
            Self::MissingCommitMark => f.write_str("unfinished batch (no commit mark) before later data"),
        }
    }
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

/// The file name of the index of the sealed segment whose first record is `first_seq`.
pub fn index_file_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.idx")
}

/// The first seq of a segment file name, or `None` if it is not one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn frame_crc(flags: u8, record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[flags]), record)
}

fn encode_frame(out: &mut Vec<u8>, record: &[u8], flags: u8) {
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame_crc(flags, record).to_le_bytes());
    out.push(flags);
    out.extend_from_slice(record);
}

/// Checks the frame at the start of `data` (all of it in memory). `Ok((flags, total len))`.
fn check_frame(data: &[u8]) -> Result<(u8, usize), Damage> {
    if data.len() < FRAME_HEADER_LEN {
        return Err(Damage::Truncated);
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    if len as usize > MAX_RECORD_LEN {
        return Err(Damage::BadLength(len));
    }
    let total = FRAME_HEADER_LEN + len as usize;
    if total > data.len() {
        return Err(Damage::Truncated);
    }
    let crc = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    let flags = data[8];
    if frame_crc(flags, &data[FRAME_HEADER_LEN..total]) != crc {
        return Err(Damage::Checksum);
    }
    if flags & !FLAG_COMMIT != 0 {
        return Err(Damage::BadFlags(flags));
    }
    Ok((flags, total))
}

/// Whether a chain of valid frames starting at `data[0]` reaches a commit mark.
fn chain_reaches_commit(mut data: &[u8]) -> bool {
    while let Ok((flags, total)) = check_frame(data) {
        if flags & FLAG_COMMIT != 0 {
            return true;
        }
        data = &data[total..];
    }
    false
}

fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// A frame read by a [`FrameCursor`]; its record is `cursor.buf[body]`.
struct RawFrame {
    offset: u64,
    flags: u8,
    body: Range<usize>,
}

enum Step {
    Frame(RawFrame),
    End,
    Damaged { offset: u64, damage: Damage },
}

/// Reads frames forward from an offset of one segment in chunks, by positional reads.
struct FrameCursor {
    file: Arc<dyn StorageFile>,
    path: Arc<Path>,
    /// Offset of the next frame.
    pos: u64,
    /// Nothing at or after this offset is read.
    end: u64,
    /// Seq of the next frame.
    seq: u64,
    chunk: usize,
    buf: Vec<u8>,
    buf_offset: u64,
}

impl FrameCursor {
    fn new(file: Arc<dyn StorageFile>, path: Arc<Path>, pos: u64, end: u64, seq: u64, chunk: usize) -> Self {
        Self { file, path, pos, end, seq, chunk: chunk.max(FRAME_HEADER_LEN), buf: Vec::new(), buf_offset: 0 }
    }

    /// Makes `n` bytes from `pos` available (`n <= end - pos`); returns their index in `buf`.
    fn ensure(&mut self, n: usize) -> Result<usize, SegmentError> {
        let buffered_end = self.buf_offset + self.buf.len() as u64;
        if self.pos >= self.buf_offset && self.pos + n as u64 <= buffered_end {
            return Ok((self.pos - self.buf_offset) as usize);
        }
        let want = (n as u64).max((self.chunk as u64).min(self.end - self.pos)) as usize;
        self.buf.resize(want, 0);
        self.file.read_exact_at(&mut self.buf, self.pos).map_err(io_err("read", &self.path))?;
        self.buf_offset = self.pos;
        Ok(0)
    }

    fn next_frame(&mut self) -> Result<Step, SegmentError> {
        let offset = self.pos;
        let remaining = self.end.saturating_sub(offset);
        if remaining == 0 {
            return Ok(Step::End);
        }
        if remaining < FRAME_HEADER_LEN as u64 {
            return Ok(Step::Damaged { offset, damage: Damage::Truncated });
        }
        let at = self.ensure(FRAME_HEADER_LEN)?;
        let len = u32::from_le_bytes(self.buf[at..at + 4].try_into().expect("4 bytes"));
        if len as usize > MAX_RECORD_LEN {
            return Ok(Step::Damaged { offset, damage: Damage::BadLength(len) });
        }
        let total = FRAME_HEADER_LEN + len as usize;
        if total as u64 > remaining {
            return Ok(Step::Damaged { offset, damage: Damage::Truncated });
        }
        let at = self.ensure(total)?;
        match check_frame(&self.buf[at..at + total]) {
            Ok((flags, _)) => {
                self.pos += total as u64;
                self.seq += 1;
                Ok(Step::Frame(RawFrame { offset, flags, body: at + FRAME_HEADER_LEN..at + total }))
            }
            Err(damage) => Ok(Step::Damaged { offset, damage }),
        }
    }

    /// The next frame of a region known to be committed: anything else is corruption.
    fn expect_frame(&mut self) -> Result<RawFrame, SegmentError> {
        let seq = self.seq;
        let (offset, damage) = match self.next_frame()? {
            Step::Frame(frame) => return Ok(frame),
            Step::End => (self.pos, Damage::Truncated),
            Step::Damaged { offset, damage } => (offset, damage),
        };
        Err(SegmentError::Corrupt { path: self.path.to_path_buf(), offset, seq, damage })
    }

    fn body(&self, frame: &RawFrame) -> &[u8] {
        &self.buf[frame.body.clone()]
    }
}

/// One segment as readers see it.
struct SegIndex {
    first_seq: u64,
    /// Committed records.
    records: u64,
    /// Byte length of the committed records.
    end: u64,
    /// `sparse[i]` = offset of record `first_seq + i * stride`.
    sparse: Vec<u64>,
    file: Arc<dyn StorageFile>,
    path: Arc<Path>,
}

struct Index {
    segments: Vec<SegIndex>,
    records: u64,
    bytes: u64,
}

struct Shared {
    index: RwLock<Index>,
    stride: u64,
    read_chunk: usize,
}

/// Where a segment file sits and what it holds (committed part only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub first_seq: u64,
    pub records: u64,
    pub bytes: u64,
}

/// A record together with where it lives, for verification and tamper tooling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedRecord {
    pub seq: u64,
    /// The segment file holding it.
    pub segment: Arc<Path>,
    /// Byte offset of its frame header in that file.
    pub offset: u64,
    /// Whether it carries the commit mark (is the last record of its batch).
    pub commit: bool,
    pub bytes: Vec<u8>,
}

/// Concurrent read access to the committed records of a [`SegmentLog`]. Cheap to clone.
#[derive(Clone)]
pub struct SegmentReader {
    shared: Arc<Shared>,
}

impl fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentReader").field("len", &self.len()).finish()
    }
}

impl SegmentReader {
    /// Committed records (whole batches whose write completed; not necessarily synced).
    pub fn len(&self) -> u64 {
        read_lock(&self.shared.index).records
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of committed frames in all segments.
    pub fn bytes_on_disk(&self) -> u64 {
        read_lock(&self.shared.index).bytes
    }

    /// The segment files in order (committed part only).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        read_lock(&self.shared.index)
            .segments
            .iter()
            .map(|s| SegmentInfo {
                path: s.path.to_path_buf(),
                first_seq: s.first_seq,
                records: s.records,
                bytes: s.end,
            })
            .collect()
    }

    /// A cursor at the indexed record at or before `seq`, and how many frames to skip.
    fn seek(&self, index: &Index, seq: u64, chunk: usize) -> Result<(FrameCursor, u64), SegmentError> {
        if seq >= index.records {
            return Err(SegmentError::OutOfRange { seq, len: index.records });
        }
        let at = index.segments.partition_point(|s| s.first_seq <= seq) - 1;
        let segment = &index.segments[at];
        let local = seq - segment.first_seq;
        let slot = local / self.shared.stride;
        let cursor = FrameCursor::new(
            segment.file.clone(),
            segment.path.clone(),
            segment.sparse[slot as usize],
            segment.end,
            segment.first_seq + slot * self.shared.stride,
            chunk,
        );
        Ok((cursor, local % self.shared.stride))
    }

    /// The record `seq`.
    pub fn read(&self, seq: u64) -> Result<Vec<u8>, SegmentError> {
        let (mut cursor, skip) = self.seek(&read_lock(&self.shared.index), seq, POINT_READ_CHUNK)?;
        for _ in 0..skip {
            cursor.expect_frame()?;
        }
        let frame = cursor.expect_frame()?;
        Ok(cursor.body(&frame).to_vec())
    }

    /// The committed records from `from` on, as `(seq, bytes)`. The end is fixed when the
    /// iterator is created; records committed later are not included.
    pub fn iter(&self, from: u64) -> SegmentIter {
        SegmentIter { inner: self.iter_located(from) }
    }

    /// Like [`SegmentReader::iter`], with each record's segment file and offset.
    pub fn iter_located(&self, from: u64) -> LocatedIter {
        let index = read_lock(&self.shared.index);
        let to = index.records;
        if from >= to {
            return LocatedIter { state: None, next: from, to: from };
        }
        let (cursor, skip) = match self.seek(&index, from, self.shared.read_chunk) {
            Ok(found) => found,
            Err(_) => unreachable!("from < len"),
        };
        let at = index.segments.partition_point(|s| s.first_seq <= from) - 1;
        let segments = index.segments[at..]
            .iter()
            .take_while(|s| s.first_seq < to)
            .map(|s| SegSnapshot {
                first_seq: s.first_seq,
                records: s.records,
                end: s.end,
                file: s.file.clone(),
                path: s.path.clone(),
            })
            .collect();
        LocatedIter {
            state: Some(IterState { segments, current: 0, cursor, skip, read_chunk: self.shared.read_chunk }),
            next: from,
            to,
        }
    }
}

struct SegSnapshot {
    first_seq: u64,
    records: u64,
    end: u64,
    file: Arc<dyn StorageFile>,
    path: Arc<Path>,
}

struct IterState {
    segments: Vec<SegSnapshot>,
    current: usize,
    cursor: FrameCursor,
    skip: u64,
    read_chunk: usize,
}

/// Iterator of [`SegmentReader::iter_located`]. Stops after the first error.
pub struct LocatedIter {
    state: Option<IterState>,
    next: u64,
    to: u64,
}

impl LocatedIter {
    fn step(state: &mut IterState, seq: u64) -> Result<LocatedRecord, SegmentError> {
        loop {
            let segment = &state.segments[state.current];
            if seq < segment.first_seq + segment.records {
                break;
            }
            state.current += 1;
            let segment = &state.segments[state.current];
            state.cursor = FrameCursor::new(
                segment.file.clone(),
                segment.path.clone(),
                0,
                segment.end,
                segment.first_seq,
                state.read_chunk,
            );
            state.skip = 0;
        }
        while state.skip > 0 {
            state.cursor.expect_frame()?;
            state.skip -= 1;
        }
        let frame = state.cursor.expect_frame()?;
        Ok(LocatedRecord {
            seq,
            segment: state.cursor.path.clone(),
            offset: frame.offset,
            commit: frame.flags & FLAG_COMMIT != 0,
            bytes: state.cursor.body(&frame).to_vec(),
        })
    }
}

impl Iterator for LocatedIter {
    type Item = Result<LocatedRecord, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.to {
            return None;
        }
        let state = self.state.as_mut()?;
        let result = Self::step(state, self.next);
        match result {
            Ok(_) => self.next += 1,
            Err(_) => self.state = None,
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.state.is_some() { (self.to - self.next) as usize } else { 0 };
        (left.min(1), Some(left))
    }
}

/// Iterator of [`SegmentReader::iter`]: `(seq, record)`. Stops after the first error.
pub struct SegmentIter {
    inner: LocatedIter,
}

impl Iterator for SegmentIter {
    type Item = Result<(u64, Vec<u8>), SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.inner.next()?.map(|r| (r.seq, r.bytes)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// The result of scanning one segment file during recovery.
struct Scanned {
    first_seq: u64,
    path: Arc<Path>,
    file: Arc<dyn StorageFile>,
    file_len: u64,
    /// Committed records and their byte length.
    records: u64,
    end: u64,
    sparse: Vec<u64>,
    /// Valid frames after the last commit mark (before any damage).
    uncommitted: u64,
    /// The first bad frame.
    damage: Option<(u64, Damage)>,
    /// Whether committed data follows the damage in this segment.
    resumes: bool,
    /// Taken from the segment's index file rather than read.
    from_index: bool,
}

impl Scanned {
    /// The first problem in this segment, as `(offset, seq, damage)`.
    fn problem(&self) -> Option<(u64, u64, Damage)> {
        match self.damage {
            Some((offset, damage)) => {
                Some((offset, self.first_seq + self.records + self.uncommitted, damage))
            }
            None if self.uncommitted > 0 => {
                Some((self.end, self.first_seq + self.records, Damage::MissingCommitMark))
            }
            None => None,
        }
    }
}

fn scan_segment(
    storage: &dyn Storage,
    path: PathBuf,
    first_seq: u64,
    options: &SegmentOptions,
) -> Result<Scanned, SegmentError> {
    let file: Arc<dyn StorageFile> = storage.open_read(&path).map_err(io_err("open", &path))?.into();
    let file_len = file.len().map_err(io_err("stat", &path))?;
    let path: Arc<Path> = path.into();
    let mut cursor = FrameCursor::new(file.clone(), path.clone(), 0, file_len, first_seq, options.read_chunk);
    let stride = options.index_stride;
    let (mut records, mut end, mut uncommitted, mut sparse, mut damage) =
        (0u64, 0u64, 0u64, Vec::new(), None);
    loop {
        match cursor.next_frame()? {
            Step::Frame(frame) => {
                if (records + uncommitted).is_multiple_of(stride) {
                    sparse.push(frame.offset);
                }
                if frame.flags & FLAG_COMMIT != 0 {
                    records += uncommitted + 1;
                    uncommitted = 0;
                    end = cursor.pos;
                } else {
                    uncommitted += 1;
                }
            }
            Step::End => break,
            Step::Damaged { offset, damage: what } => {
                damage = Some((offset, what));
                break;
            }
        }
    }
    sparse.truncate(records.div_ceil(stride) as usize);
    let resumes = match damage {
        Some((offset, _)) if offset + 1 < file_len => {
            let mut rest = vec![0u8; (file_len - offset - 1) as usize];
            file.read_exact_at(&mut rest, offset + 1).map_err(io_err("read", &path))?;
            (0..rest.len()).any(|i| chain_reaches_commit(&rest[i..]))
        }
        _ => false,
    };
    Ok(Scanned {
        first_seq,
        path,
        file,
        file_len,
        records,
        end,
        sparse,
        uncommitted,
        damage,
        resumes,
        from_index: false,
    })
}

const INDEX_MAGIC: &[u8; 8] = b"klsegix1";

/// The bytes of a sealed segment's index file (format in the module docs).
fn encode_index(first_seq: u64, records: u64, end: u64, stride: u64, sparse: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_MAGIC.len() + 8 * (5 + sparse.len()) + 4);
    out.extend_from_slice(INDEX_MAGIC);
    for value in [first_seq, records, end, stride, sparse.len() as u64].iter().chain(sparse) {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());
    out
}

/// `(first_seq, records, end, stride, sparse)` of an index file, if it is intact.
fn decode_index(bytes: &[u8]) -> Option<(u64, u64, u64, u64, Vec<u64>)> {
    let (body, crc) = bytes.split_last_chunk::<4>()?;
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return None;
    }
    let words = body.strip_prefix(INDEX_MAGIC)?;
    if !words.len().is_multiple_of(8) {
        return None;
    }
    let mut values = words.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()));
    let (first_seq, records, end, stride, count) =
        (values.next()?, values.next()?, values.next()?, values.next()?, values.next()?);
    let sparse: Vec<u64> = values.collect();
    (sparse.len() as u64 == count).then_some((first_seq, records, end, stride, sparse))
}

/// A sealed segment as its index file describes it, if the index is intact and still
/// matches the segment: same length, and the frames after the last indexed offset are valid
/// and end in a commit mark exactly at the recorded end. `None` means "read it in full".
fn load_sealed(
    storage: &dyn Storage,
    dir: &Path,
    path: PathBuf,
    first_seq: u64,
    options: &SegmentOptions,
) -> Result<Option<Scanned>, SegmentError> {
    let index_path = dir.join(index_file_name(first_seq));
    let bytes = match storage.open_read(&index_path) {
        Ok(file) => {
            let len = file.len().map_err(io_err("stat", &index_path))?;
            let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
            file.read_exact_at(&mut bytes, 0).map_err(io_err("read", &index_path))?;
            bytes
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_err("open", &index_path)(error)),
    };
    let Some((indexed_first, records, end, stride, sparse)) = decode_index(&bytes) else { return Ok(None) };
    let file: Arc<dyn StorageFile> = storage.open_read(&path).map_err(io_err("open", &path))?.into();
    let file_len = file.len().map_err(io_err("stat", &path))?;
    let consistent = indexed_first == first_seq
        && stride == options.index_stride
        && end == file_len
        && records > 0
        && sparse.len() as u64 == records.div_ceil(stride)
        && sparse.first() == Some(&0)
        && sparse.windows(2).all(|w| w[0] < w[1])
        && sparse.last().is_some_and(|&last| last < end);
    if !consistent {
        return Ok(None);
    }
    let Some(&last_indexed) = sparse.last() else { return Ok(None) };
    let path: Arc<Path> = path.into();
    let tail_seq = first_seq + (sparse.len() as u64 - 1) * stride;
    let mut cursor = FrameCursor::new(file.clone(), path.clone(), last_indexed, end, tail_seq, 64 << 10);
    let mut last_flags = 0;
    loop {
        match cursor.next_frame()? {
            Step::Frame(frame) => last_flags = frame.flags,
            Step::End => break,
            Step::Damaged { .. } => return Ok(None),
        }
    }
    if cursor.seq != first_seq + records || last_flags & FLAG_COMMIT == 0 {
        return Ok(None);
    }
    Ok(Some(Scanned {
        first_seq,
        path,
        file,
        file_len,
        records,
        end,
        sparse,
        uncommitted: 0,
        damage: None,
        resumes: false,
        from_index: true,
    }))
}

/// Writes the index file of a sealed (complete, fsynced) segment. It is an optimisation: a
/// failure is reported and costs only a full read of the segment at the next open.
fn write_sealed_index(storage: &dyn Storage, dir: &Path, segment: &SegIndex, stride: u64) {
    let path = dir.join(index_file_name(segment.first_seq));
    let bytes = encode_index(segment.first_seq, segment.records, segment.end, stride, &segment.sparse);
    let written = (|| {
        match storage.remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let mut file = storage.open_append(&path)?;
        file.append(&bytes)?;
        file.sync_data()
    })();
    if let Err(error) = written {
        tracing::warn!(index = %path.display(), %error, "cannot write a sealed segment's index; the next open reads the segment in full");
    }
}

/// What recovery decided: the segments kept, the cut, the files to remove.
struct Plan {
    kept: Vec<Scanned>,
    removed: Vec<Scanned>,
    recovery: Recovery,
}

fn plan_recovery(
    storage: &dyn Storage,
    dir: &Path,
    options: &SegmentOptions,
    create: bool,
) -> Result<Plan, SegmentError> {
    let names = match storage.list_dir(dir) {
        Ok(names) => names,
        Err(error) if create && error.kind() == io::ErrorKind::NotFound => {
            storage.create_dir_all(dir).map_err(io_err("create directory", dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                storage.sync_dir(parent).map_err(io_err("fsync directory", parent))?;
            }
            Vec::new()
        }
        Err(error) => return Err(io_err("list directory", dir)(error)),
    };
    let mut firsts = Vec::new();
    for name in names {
        match parse_segment_file_name(&name) {
            Some(first) => firsts.push(first),
            None if name.starts_with("seg-") && name.ends_with(".idx") => {}
            None => {
                tracing::warn!(dir = %dir.display(), file = %name, "ignoring a file that is not a segment")
            }
        }
    }
    firsts.sort_unstable();
    let mut scanned = Vec::with_capacity(firsts.len());
    let last = firsts.last().copied();
    for first in firsts {
        let path = dir.join(segment_file_name(first));
        // `open` (create) trusts sealed segments' index files; `inspect` checks every frame.
        let sealed = if create && Some(first) != last {
            load_sealed(storage, dir, path.clone(), first, options)?
        } else {
            None
        };
        scanned.push(match sealed {
            Some(sealed) => sealed,
            None => scan_segment(storage, path, first, options)?,
        });
    }

    // The last segment holding committed data (or damage followed by committed data).
    let has_data = |s: &Scanned| s.records > 0 || s.resumes;
    let last_with_data = scanned.iter().rposition(has_data);
    let mut expected = 0;
    for (i, segment) in scanned.iter().enumerate() {
        if last_with_data.is_none_or(|last| i > last) {
            break;
        }
        if segment.first_seq != expected {
            return Err(SegmentError::Discontinuity {
                path: segment.path.to_path_buf(),
                expected,
                found: segment.first_seq,
            });
        }
        if let Some((offset, seq, damage)) = segment.problem()
            && (segment.resumes || Some(i) != last_with_data)
        {
            return Err(SegmentError::Corrupt { path: segment.path.to_path_buf(), offset, seq, damage });
        }
        expected += segment.records;
    }

    let keep = last_with_data.map_or(0, |last| last + 1);
    let removed = scanned.split_off(keep);
    let mut recovery = Recovery { records: expected, ..Recovery::default() };
    if let Some(tail) = scanned.last() {
        recovery.truncated_bytes += tail.file_len - tail.end;
        recovery.truncated_records += tail.uncommitted;
    }
    for segment in &removed {
        recovery.truncated_bytes += segment.file_len;
        recovery.truncated_records += segment.uncommitted;
        recovery.removed_segments += 1;
    }
    Ok(Plan { kept: scanned, removed, recovery })
}

/// Cuts a recovery plan back to its first `limit` records (the last length an fsync
/// confirmed): whole segments past it are removed, the one holding record `limit` is cut at
/// that record's frame. Fails if the plan holds fewer than `limit` records.
fn limit_plan(plan: &mut Plan, limit: u64, options: &SegmentOptions) -> Result<(), SegmentError> {
    let found = plan.recovery.records;
    if limit > found {
        return Err(SegmentError::Lost { durable: limit, found });
    }
    if limit == found {
        return Ok(());
    }
    // The first kept segment that holds record `limit` (every kept segment holds records).
    let at = plan.kept.iter().position(|s| s.first_seq + s.records > limit).unwrap_or(plan.kept.len());
    let split = match plan.kept.get_mut(at) {
        Some(segment) if segment.first_seq < limit => {
            let local = limit - segment.first_seq;
            let stride = options.index_stride;
            let mut cursor = FrameCursor::new(
                segment.file.clone(),
                segment.path.clone(),
                segment.sparse[(local / stride) as usize],
                segment.end,
                segment.first_seq + local / stride * stride,
                options.read_chunk,
            );
            for _ in 0..local % stride {
                cursor.expect_frame()?;
            }
            segment.uncommitted += segment.records - local;
            segment.records = local;
            segment.end = cursor.pos;
            segment.sparse.truncate(local.div_ceil(stride) as usize);
            at + 1
        }
        _ => at,
    };
    let mut cut = plan.kept.split_off(split);
    for segment in &mut cut {
        segment.uncommitted += segment.records;
        segment.records = 0;
    }
    cut.append(&mut plan.removed);
    plan.removed = cut;
    let mut recovery = Recovery { records: limit, ..Recovery::default() };
    if let Some(tail) = plan.kept.last() {
        recovery.truncated_bytes += tail.file_len - tail.end;
        recovery.truncated_records += tail.uncommitted;
    }
    for segment in &plan.removed {
        recovery.truncated_bytes += segment.file_len;
        recovery.truncated_records += segment.uncommitted;
        recovery.removed_segments += 1;
    }
    plan.recovery = recovery;
    Ok(())
}

/// Recovers `dir` (at most `limit` records), cutting on disk what the plan cuts: the torn
/// tail is truncated and the tail segment fsynced, trailing segments are removed. Returns
/// the kept segments, the tail opened for appending, and what was cut.
fn recover(
    storage: &dyn Storage,
    dir: &Path,
    options: &SegmentOptions,
    limit: Option<u64>,
) -> Result<Recovered, SegmentError> {
    let mut plan = plan_recovery(storage, dir, options, true)?;
    if let Some(limit) = limit {
        limit_plan(&mut plan, limit, options)?;
    }
    let mut active = None;
    if let Some(tail) = plan.kept.last() {
        let mut file = storage.open_append(&tail.path).map_err(io_err("open", &tail.path))?;
        if tail.file_len != tail.end {
            tracing::warn!(
                segment = %tail.path.display(),
                bytes = tail.file_len - tail.end,
                records = tail.uncommitted,
                "cutting the unfinished tail of the log"
            );
            file.set_len(tail.end).map_err(io_err("truncate", &tail.path))?;
        }
        // Also makes durable what a crashed process left in the page cache.
        file.sync_data().map_err(io_err("fsync", &tail.path))?;
        active = Some(Active {
            file,
            path: tail.path.clone(),
            first_seq: tail.first_seq,
            size: tail.end,
            dirty: false,
        });
    }
    for segment in &plan.removed {
        tracing::warn!(segment = %segment.path.display(), "removing a trailing segment without committed records");
        storage.remove_file(&segment.path).map_err(io_err("remove", &segment.path))?;
        let index = dir.join(index_file_name(segment.first_seq));
        match storage.remove_file(&index) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_err("remove", &index)(error)),
        }
    }
    if !plan.removed.is_empty() {
        storage.sync_dir(dir).map_err(io_err("fsync directory", dir))?;
    }
    let unindexed: Vec<u64> = match plan.kept.split_last() {
        Some((_, sealed)) => sealed.iter().filter(|s| !s.from_index).map(|s| s.first_seq).collect(),
        None => Vec::new(),
    };
    Ok(Recovered { kept: plan.kept, active, recovery: plan.recovery, unindexed })
}

/// What [`recover`] found and kept.
struct Recovered {
    kept: Vec<Scanned>,
    /// The segment to append to, cut to its last committed batch.
    active: Option<Active>,
    recovery: Recovery,
    /// First seqs of the sealed segments that were read in full, not from an index file.
    unindexed: Vec<u64>,
}

fn build_shared(kept: Vec<Scanned>, options: &SegmentOptions) -> Arc<Shared> {
    Arc::new(Shared {
        index: RwLock::new(build_index(kept)),
        stride: options.index_stride,
        read_chunk: options.read_chunk,
    })
}

fn build_index(kept: Vec<Scanned>) -> Index {
    let records = kept.iter().map(|s| s.records).sum();
    let bytes = kept.iter().map(|s| s.end).sum();
    let segments = kept
        .into_iter()
        .map(|s| SegIndex {
            first_seq: s.first_seq,
            records: s.records,
            end: s.end,
            sparse: s.sparse,
            file: s.file,
            path: s.path,
        })
        .collect();
    Index { segments, records, bytes }
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

    /// Starts a new segment if there is none or the current one is full: syncs the current
    /// one first (so un-synced data only ever sits in the last segment), then creates the new
    /// file and syncs the directory.
    fn roll_if_needed(&mut self) -> Result<(), SegmentError> {
        if let Some(active) = &self.active
            && active.size < self.options.segment_size
        {
            return Ok(());
        }
        if let Some(mut old) = self.active.take() {
            if old.dirty {
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
        if self.poisoned {
            return Err(SegmentError::Poisoned);
        }
        if let Some(active) = self.active.as_mut()
            && active.dirty
        {
            if let Err(error) = active.file.sync_data() {
                self.poisoned = true;
                self.sync_failed = true;
                return Err(io_err("fsync", &active.path)(error));
            }
            active.dirty = false;
        }
        self.durable = self.next_seq;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FaultSwitch, FaultyStorage, OsStorage};
    use proptest::prelude::*;
    use std::fs;

    fn os() -> Arc<dyn Storage> {
        Arc::new(OsStorage)
    }

    /// A log over [`FaultyStorage`], and the switch that injects its faults.
    fn faulty_log(dir: &Path, options: SegmentOptions) -> (SegmentLog, Arc<FaultSwitch>) {
        let storage = FaultyStorage::new();
        let switch = storage.switch();
        let (log, _) = SegmentLog::open(Arc::new(storage), dir, options).unwrap();
        (log, switch)
    }

    fn opts(segment_size: u64, index_stride: u64) -> SegmentOptions {
        SegmentOptions { segment_size, index_stride, read_chunk: 256 }
    }

    /// Deterministic record contents of varying length (0 to ~90 bytes).
    fn record(seq: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for i in 0..(seq * 7 % 23) {
            bytes.extend_from_slice(&(seq * 31 + i).to_le_bytes()[..4]);
        }
        bytes
    }

    fn append(log: &mut SegmentLog, count: u64) -> u64 {
        let first = log.len();
        let records: Vec<Vec<u8>> = (first..first + count).map(record).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let seq = log.append_batch(&refs).unwrap();
        assert_eq!(seq, first);
        seq
    }

    fn check_all(reader: &SegmentReader, len: u64) {
        assert_eq!(reader.len(), len);
        for seq in 0..len {
            assert_eq!(reader.read(seq).unwrap(), record(seq), "read({seq})");
        }
        for from in [0, 1, len / 3, len.saturating_sub(1), len] {
            let got: Vec<(u64, Vec<u8>)> = reader.iter(from).map(Result::unwrap).collect();
            let want: Vec<(u64, Vec<u8>)> = (from..len).map(|s| (s, record(s))).collect();
            assert_eq!(got, want, "iter({from})");
        }
        assert!(matches!(reader.read(len), Err(SegmentError::OutOfRange { .. })));
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        files_ending(dir, ".log")
    }

    fn index_files(dir: &Path) -> Vec<PathBuf> {
        files_ending(dir, ".idx")
    }

    fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        files.sort();
        files
    }

    fn copy_dir(from: &Path, to: &Path) {
        for file in segment_files(from) {
            fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
        }
    }

    fn cut(file: &Path, len: u64) {
        fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len).unwrap();
    }

    fn append_bytes(file: &Path, bytes: &[u8]) {
        use std::io::Write;
        fs::OpenOptions::new().append(true).open(file).unwrap().write_all(bytes).unwrap();
    }

    fn flip_byte(file: &Path, offset: u64) {
        let mut bytes = fs::read(file).unwrap();
        bytes[offset as usize] ^= 0x40;
        fs::write(file, bytes).unwrap();
    }

    #[test]
    fn round_trip_across_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovery) = SegmentLog::open(os(), dir.path(), opts(300, 4)).unwrap();
        assert_eq!(recovery, Recovery::default());
        let mut batch = 1;
        while log.len() < 200 {
            append(&mut log, batch);
            batch = batch % 7 + 1;
        }
        log.sync().unwrap();
        assert_eq!(log.durable_len(), log.len());
        let len = log.len();
        let reader = log.reader();
        check_all(&reader, len);
        let segments = reader.segments();
        assert!(segments.len() > 5, "rolled into {} segments", segments.len());
        assert_eq!(segments.iter().map(|s| s.records).sum::<u64>(), len);
        assert_eq!(segments.iter().map(|s| s.bytes).sum::<u64>(), log.bytes_on_disk());
        for segment in &segments {
            assert_eq!(
                segment.path.file_name().unwrap().to_str().unwrap(),
                segment_file_name(segment.first_seq)
            );
            assert_eq!(fs::metadata(&segment.path).unwrap().len(), segment.bytes);
        }
        // Located records: offsets chain frame after frame within each segment.
        let mut expected_offset = 0;
        let mut previous: Option<Arc<Path>> = None;
        for located in reader.iter_located(0) {
            let located = located.unwrap();
            if previous.as_ref() != Some(&located.segment) {
                expected_offset = 0;
                previous = Some(located.segment.clone());
            }
            assert_eq!(located.offset, expected_offset);
            assert_eq!(located.bytes, record(located.seq));
            expected_offset += (FRAME_HEADER_LEN + located.bytes.len()) as u64;
        }
        drop(log);
        let (log, recovery) = SegmentLog::open(os(), dir.path(), opts(300, 4)).unwrap();
        assert_eq!(recovery, Recovery { records: len, ..Recovery::default() });
        check_all(&log.reader(), len);
    }

    #[test]
    fn reopen_after_clean_close_continues_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        assert!(log.is_empty());
        assert_eq!(append(&mut log, 3), 0);
        assert_eq!(append(&mut log, 1), 3);
        assert_eq!(log.append_batch(&[]).unwrap(), 4, "an empty batch writes nothing");
        let bytes = log.bytes_on_disk();
        log.close().unwrap();
        let (mut log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        assert_eq!(recovery, Recovery { records: 4, ..Recovery::default() });
        assert_eq!(log.bytes_on_disk(), bytes);
        assert_eq!(append(&mut log, 5), 4);
        log.close().unwrap();
        let (log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        check_all(&log.reader(), 9);
        assert_eq!(segment_files(dir.path()).len(), 1);
    }

    #[test]
    fn record_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        let big = vec![7u8; MAX_RECORD_LEN + 1];
        let max = vec![8u8; MAX_RECORD_LEN];
        let err = log.append_batch(&[b"ok", &big]).unwrap_err();
        assert!(matches!(err, SegmentError::RecordTooLarge { len, .. } if len == MAX_RECORD_LEN + 1));
        assert!(!log.is_poisoned());
        assert_eq!(log.len(), 0);
        assert_eq!(log.append_batch(&[b"", &max]).unwrap(), 0);
        log.close().unwrap();
        let (log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        assert_eq!(log.reader().read(0).unwrap(), b"");
        assert_eq!(log.reader().read(1).unwrap(), max);
    }

    /// Builds a log whose batches have the given sizes; returns the byte size of each batch
    /// and the file holding the last batch.
    fn build(dir: &Path, options: SegmentOptions, batches: &[u64]) -> (Vec<u64>, PathBuf) {
        let (mut log, _) = SegmentLog::open(os(), dir, options).unwrap();
        let mut sizes = Vec::new();
        for &count in batches {
            let before = log.bytes_on_disk();
            append(&mut log, count);
            sizes.push(log.bytes_on_disk() - before);
        }
        let last = log.reader().segments().last().unwrap().path.clone();
        log.close().unwrap();
        (sizes, last)
    }

    fn torn_tail_every_cut(options: SegmentOptions, batches: &[u64]) {
        let template = tempfile::tempdir().unwrap();
        let (sizes, last_file) = build(template.path(), options.clone(), batches);
        let last_size = *sizes.last().unwrap();
        let file_len = fs::metadata(&last_file).unwrap().len();
        let previous: u64 = batches[..batches.len() - 1].iter().sum();
        let last_count = *batches.last().unwrap();
        let frame_ends: Vec<u64> = {
            let mut end = file_len - last_size;
            (previous..previous + last_count)
                .map(|seq| {
                    end += (FRAME_HEADER_LEN + record(seq).len()) as u64;
                    end
                })
                .collect()
        };
        for cut_off in 1..=last_size {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(template.path(), dir.path());
            let file = dir.path().join(last_file.file_name().unwrap());
            let kept = file_len - cut_off;
            cut(&file, kept);
            let (mut log, recovery) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
            let whole = frame_ends.iter().filter(|&&end| end <= kept).count() as u64;
            assert_eq!(recovery.records, previous, "cut {cut_off}");
            assert_eq!(recovery.truncated_bytes, last_size - cut_off, "cut {cut_off}");
            assert_eq!(recovery.truncated_records, whole, "cut {cut_off}");
            let prefix = file_len - last_size;
            if prefix == 0 {
                assert!(!file.exists(), "an emptied trailing segment is removed");
                assert_eq!(recovery.removed_segments, 1);
            } else {
                assert_eq!(fs::metadata(&file).unwrap().len(), prefix);
            }
            check_all(&log.reader(), previous);
            append(&mut log, 2);
            log.close().unwrap();
            let (log, recovery) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
            assert_eq!(recovery, Recovery { records: previous + 2, ..Recovery::default() });
            check_all(&log.reader(), previous + 2);
        }
    }

    #[test]
    fn torn_tail_sharing_a_segment() {
        torn_tail_every_cut(SegmentOptions::default(), &[3, 1, 4, 5]);
    }

    #[test]
    fn torn_tail_in_a_fresh_segment() {
        // Every batch fills a segment, so the last batch is alone in the last segment.
        torn_tail_every_cut(opts(1, 2), &[2, 3, 4]);
    }

    #[test]
    fn garbage_after_the_last_batch_is_cut() {
        let mut valid_uncommitted = Vec::new();
        encode_frame(&mut valid_uncommitted, b"unfinished", 0);
        encode_frame(&mut valid_uncommitted, b"batch", 0);
        let mut huge_header = Vec::new();
        huge_header.extend_from_slice(&(u32::MAX).to_le_bytes());
        huge_header.extend_from_slice(&[1, 2, 3, 4, 1]);
        let mut pseudo_random = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            pseudo_random.push(x as u8);
        }
        let mut bad_flags = Vec::new();
        encode_frame(&mut bad_flags, b"x", 0x80);
        let cases: Vec<(&str, Vec<u8>, u64)> = vec![
            ("zero fill", vec![0; 4096], 0),
            ("random bytes", pseudo_random, 0),
            ("valid frames without a commit mark", valid_uncommitted, 2),
            ("a huge length", huge_header, 0),
            ("unknown flags", bad_flags, 0),
            ("a lone byte", vec![1], 0),
        ];
        for (what, garbage, records) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (_, last) = build(dir.path(), opts(200, 3), &[5, 2, 6, 1]);
            let len = fs::metadata(&last).unwrap().len();
            append_bytes(&last, &garbage);
            let (log, recovery) = SegmentLog::open(os(), dir.path(), opts(200, 3)).unwrap();
            assert_eq!(
                recovery,
                Recovery {
                    records: 14,
                    truncated_bytes: garbage.len() as u64,
                    truncated_records: records,
                    removed_segments: 0
                },
                "{what}"
            );
            assert_eq!(fs::metadata(&last).unwrap().len(), len, "{what}");
            check_all(&log.reader(), 14);
        }
    }

    #[test]
    fn garbage_only_trailing_segment_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), SegmentOptions::default(), &[4]);
        let stray = dir.path().join(segment_file_name(4));
        fs::write(&stray, [0u8; 100]).unwrap();
        fs::write(dir.path().join(segment_file_name(9)), b"").unwrap();
        fs::write(dir.path().join("notes.txt"), b"not a segment").unwrap();
        let (log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        assert_eq!(
            recovery,
            Recovery { records: 4, truncated_bytes: 100, truncated_records: 0, removed_segments: 2 }
        );
        assert!(!stray.exists());
        assert!(dir.path().join("notes.txt").exists());
        check_all(&log.reader(), 4);
    }

    fn locate(dir: &Path, options: &SegmentOptions, seq: u64) -> LocatedRecord {
        let (reader, _) = SegmentLog::inspect(os(), dir, options.clone()).unwrap();
        reader.iter_located(seq).next().unwrap().unwrap()
    }

    /// A log read in full (no index files: as written before they existed, or with every
    /// index lost): damage anywhere before the last commit mark fails `open`.
    #[test]
    fn corruption_in_the_middle_is_an_error_not_a_cut() {
        let options = opts(400, 4);
        let batches = [3, 5, 2, 6, 4, 7, 1, 3, 8, 2, 5, 6];
        let total: u64 = batches.iter().sum();
        // (seq, byte within the frame to flip, expected damage)
        let cases = [
            (2, FRAME_HEADER_LEN as u64 + 1, Damage::Checksum), // body, in an earlier segment
            (9, 5, Damage::Checksum),                           // crc field
            (total - 4, 2, Damage::BadLength(0x0040_0000 | record(total - 4).len() as u32)), // length field
            (total - 2, 8, Damage::BadFlags(0x40)),             // flags, in the last segment
        ];
        for (seq, delta, damage) in cases {
            let dir = tempfile::tempdir().unwrap();
            build(dir.path(), options.clone(), &batches);
            let target = locate(dir.path(), &options, seq);
            let damage = if damage == Damage::BadFlags(0x40) {
                // Flipping the flags byte also breaks the CRC, which is checked first.
                Damage::Checksum
            } else {
                damage
            };
            flip_byte(&target.segment, target.offset + delta);
            for index in index_files(dir.path()) {
                fs::remove_file(index).unwrap();
            }
            let lens: Vec<u64> =
                segment_files(dir.path()).iter().map(|f| fs::metadata(f).unwrap().len()).collect();
            let err = SegmentLog::open(os(), dir.path(), options.clone()).unwrap_err();
            match &err {
                SegmentError::Corrupt { path, offset, seq: bad, damage: found } => {
                    assert_eq!(path.as_path(), &*target.segment);
                    assert_eq!(*offset, target.offset);
                    assert_eq!(*bad, seq);
                    assert_eq!(*found, damage);
                }
                other => panic!("expected Corrupt, got {other}"),
            }
            let message = err.to_string();
            assert!(message.contains(&format!("record seq {seq}")), "{message}");
            let after: Vec<u64> =
                segment_files(dir.path()).iter().map(|f| fs::metadata(f).unwrap().len()).collect();
            assert_eq!(lens, after, "nothing is cut");
            assert!(matches!(
                SegmentLog::inspect(os(), dir.path(), options.clone()),
                Err(SegmentError::Corrupt { seq: bad, .. }) if bad == seq
            ));
        }
    }

    #[test]
    fn sealed_segments_are_indexed_and_not_read_again_on_open() {
        let options = opts(400, 4);
        let batches = [3, 5, 2, 6, 4, 7, 1, 3, 8, 2, 5, 6];
        let total: u64 = batches.iter().sum();
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), options.clone(), &batches);
        let segments = segment_files(dir.path());
        assert!(segments.len() >= 3, "the test needs sealed segments");
        assert_eq!(index_files(dir.path()).len(), segments.len() - 1, "every sealed segment is indexed");

        // Damage the body of seq 1, in the first (sealed) segment, before its last indexed
        // offset: the index is trusted, so open succeeds, the reads that cross the damage fail,
        // and a full check (what `log verify` runs) names it.
        let target = locate(dir.path(), &options, 1);
        flip_byte(&target.segment, target.offset + FRAME_HEADER_LEN as u64 + 1);
        let (log, recovery) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
        assert_eq!(recovery.records, total);
        let reader = log.reader();
        assert!(matches!(reader.read(1), Err(SegmentError::Corrupt { seq: 1, .. })));
        assert_eq!(reader.read(total - 1).unwrap(), record(total - 1), "the rest reads fine");
        assert!(matches!(
            SegmentLog::inspect(os(), dir.path(), options.clone()),
            Err(SegmentError::Corrupt { seq: 1, .. })
        ));
        drop(log);

        // Without its index the segment is read in full: open names the damage, cuts nothing.
        fs::remove_file(dir.path().join(index_file_name(0))).unwrap();
        assert!(matches!(
            SegmentLog::open(os(), dir.path(), options.clone()),
            Err(SegmentError::Corrupt { seq: 1, .. })
        ));

        // A damaged or stale index is ignored (the segment read in full) and rewritten.
        flip_byte(&target.segment, target.offset + FRAME_HEADER_LEN as u64 + 1);
        let second = index_files(dir.path())[0].clone();
        flip_byte(&second, 12);
        let (log, _) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
        check_all(&log.reader(), total);
        drop(log);
        assert_eq!(
            index_files(dir.path()).len(),
            segments.len() - 1,
            "missing and damaged indexes rewritten"
        );
        let first = fs::read(dir.path().join(index_file_name(0))).unwrap();
        assert!(decode_index(&first).is_some());
        assert!(decode_index(&fs::read(&second).unwrap()).is_some());
    }

    #[test]
    fn an_index_that_does_not_match_its_segment_is_not_used() {
        let options = opts(400, 4);
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), options.clone(), &[3, 5, 2, 6, 4, 7, 1, 3]);
        let segments = segment_files(dir.path());
        let index = dir.path().join(index_file_name(0));
        let (_, records, end, stride, sparse) = decode_index(&fs::read(&index).unwrap()).unwrap();
        assert!(
            load_sealed(&OsStorage::new(), dir.path(), segments[0].clone(), 0, &options).unwrap().is_some()
        );
        // An index (with a valid CRC) off by one record, with as many indexed offsets: only
        // the tail check, which counts the frames after the last indexed offset, can refuse it.
        let claimed = if records % stride == 1 { records + 1 } else { records - 1 };
        assert_eq!(claimed.div_ceil(stride), records.div_ceil(stride));
        fs::write(&index, encode_index(0, claimed, end, stride, &sparse)).unwrap();
        let sealed = load_sealed(&OsStorage::new(), dir.path(), segments[0].clone(), 0, &options).unwrap();
        assert!(sealed.is_none());
        // Another stride than the log's: not used either.
        let other = SegmentOptions { index_stride: 8, ..options.clone() };
        let sealed = load_sealed(&OsStorage::new(), dir.path(), segments[0].clone(), 0, &other).unwrap();
        assert!(sealed.is_none());
        // Either way open reads the segment and sees every record.
        let (log, recovery) = SegmentLog::open(os(), dir.path(), options).unwrap();
        check_all(&log.reader(), recovery.records);
    }

    #[test]
    fn reader_detects_damage_after_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(os(), dir.path(), opts(1 << 20, 8)).unwrap();
        append(&mut log, 40);
        let reader = log.reader();
        let target = reader.iter_located(21).next().unwrap().unwrap();
        flip_byte(&target.segment, target.offset + FRAME_HEADER_LEN as u64);
        assert!(matches!(reader.read(21), Err(SegmentError::Corrupt { seq: 21, .. })));
        assert!(matches!(reader.read(22), Err(SegmentError::Corrupt { seq: 21, .. })), "scans past 21");
        assert_eq!(reader.read(16).unwrap(), record(16));
        let results: Vec<_> = reader.iter(0).collect();
        assert_eq!(results.len(), 22, "the iterator stops after the first error");
        assert!(matches!(results[21], Err(SegmentError::Corrupt { seq: 21, .. })));
    }

    #[test]
    fn missing_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), opts(100, 4), &[3, 3, 3, 3, 3, 3]);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3);
        fs::remove_file(&files[1]).unwrap();
        assert!(matches!(
            SegmentLog::open(os(), dir.path(), opts(100, 4)),
            Err(SegmentError::Discontinuity { .. })
        ));
        fs::remove_file(&files[0]).unwrap();
        assert!(matches!(
            SegmentLog::open(os(), dir.path(), opts(100, 4)),
            Err(SegmentError::Discontinuity { expected: 0, .. })
        ));
    }

    #[test]
    fn unfinished_batch_before_a_later_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), opts(100, 4), &[3, 3, 3, 3, 3, 3]);
        let files = segment_files(dir.path());
        let mut frame = Vec::new();
        encode_frame(&mut frame, b"stray", 0);
        append_bytes(&files[0], &frame);
        assert!(matches!(
            SegmentLog::open(os(), dir.path(), opts(100, 4)),
            Err(SegmentError::Corrupt { damage: Damage::MissingCommitMark, .. })
        ));
    }

    #[test]
    fn inspect_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_, last) = build(dir.path(), SegmentOptions::default(), &[2, 2]);
        append_bytes(&last, &[0; 10]);
        let (reader, recovery) = SegmentLog::inspect(os(), dir.path(), SegmentOptions::default()).unwrap();
        assert_eq!(recovery.truncated_bytes, 10);
        check_all(&reader, 4);
        assert_eq!(fs::metadata(&last).unwrap().len(), reader.bytes_on_disk() + 10);
        let missing = dir.path().join("missing");
        assert!(matches!(
            SegmentLog::inspect(os(), &missing, SegmentOptions::default()),
            Err(SegmentError::Io { .. })
        ));
        assert!(!missing.exists());
    }

    #[test]
    fn write_failure_poisons_and_shows_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
        append(&mut log, 3);
        log.sync().unwrap();
        switch.set_fail_writes(true);
        let err = log.append_batch(&[b"a", b"b"]).unwrap_err();
        assert!(matches!(&err, SegmentError::Io { op: "write", .. }), "{err}");
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(log.is_poisoned());
        switch.clear();
        assert!(matches!(log.append_batch(&[b"c"]), Err(SegmentError::Poisoned)));
        assert!(matches!(log.sync(), Err(SegmentError::Poisoned)));
        assert_eq!(log.len(), 3);
        check_all(&log.reader(), 3);
        drop(log);
        let (log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        assert_eq!(recovery, Recovery { records: 3, ..Recovery::default() });
        check_all(&log.reader(), 3);
    }

    #[test]
    fn fsync_failure_poisons_and_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
        append(&mut log, 3);
        switch.set_fail_sync(true);
        let syncs = switch.syncs();
        assert!(matches!(log.sync(), Err(SegmentError::Io { op: "fsync", .. })));
        assert_eq!(switch.syncs(), syncs + 1);
        switch.clear();
        assert!(matches!(log.sync(), Err(SegmentError::Poisoned)));
        assert!(matches!(log.append_batch(&[b"x"]), Err(SegmentError::Poisoned)));
        assert_eq!(switch.syncs(), syncs + 1, "a failed fsync is never retried");
        assert_eq!(log.durable_len(), 0);
    }

    #[test]
    fn fsync_failure_when_rolling_poisons() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), opts(1, 4));
        append(&mut log, 3);
        switch.set_fail_sync(true);
        assert!(log.append_batch(&[b"next segment"]).is_err());
        assert!(matches!(log.append_batch(&[b"x"]), Err(SegmentError::Poisoned)));
        assert_eq!(log.reader().len(), 3);
    }

    #[test]
    fn short_write_poisons_and_recovery_removes_the_partial_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
        append(&mut log, 4);
        let reader = log.reader();
        let bytes = log.bytes_on_disk();
        switch.set_short_write(true);
        let records: Vec<Vec<u8>> = (4..9).map(record).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        assert!(matches!(log.append_batch(&refs), Err(SegmentError::Io { .. })));
        let batch_bytes: u64 = records.iter().map(|r| (FRAME_HEADER_LEN + r.len()) as u64).sum();
        let file = &reader.segments()[0].path;
        assert_eq!(
            fs::metadata(file).unwrap().len(),
            bytes + batch_bytes / 2,
            "half the batch reached the file"
        );
        assert_eq!((log.len(), reader.len(), log.bytes_on_disk()), (4, 4, bytes), "but is not visible");
        assert!(matches!(log.append_batch(&[b"x"]), Err(SegmentError::Poisoned)));
        check_all(&reader, 4);
        drop(log);
        switch.clear();
        let (log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        assert_eq!(recovery.records, 4);
        assert_eq!(recovery.truncated_bytes, batch_bytes / 2);
        assert_eq!(fs::metadata(file).unwrap().len(), bytes);
        check_all(&log.reader(), 4);
    }

    #[test]
    fn disk_full_midway_through_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
        append(&mut log, 4);
        switch.set_space_left(Some(30));
        let big = vec![1u8; 100];
        assert!(log.append_batch(&[&big, &big]).is_err());
        drop(log);
        let (log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        assert_eq!((recovery.records, recovery.truncated_bytes), (4, 30));
        check_all(&log.reader(), 4);
    }

    #[test]
    fn reopen_after_a_failed_fsync_cuts_to_the_durable_length() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
        append(&mut log, 3);
        log.sync().unwrap();
        let bytes = log.bytes_on_disk();
        let reader = log.reader();
        append(&mut log, 2);
        switch.set_fail_sync(true);
        assert!(log.sync().is_err());
        assert!(log.sync_failed());
        switch.clear();
        let file = &reader.segments()[0].path;
        assert!(fs::metadata(file).unwrap().len() > bytes, "the page cache still shows 5 records");
        let recovery = log.reopen(None).unwrap();
        assert_eq!((recovery.records, recovery.truncated_records), (3, 2));
        assert_eq!(fs::metadata(file).unwrap().len(), bytes);
        assert!(!log.is_poisoned() && !log.sync_failed());
        assert_eq!((log.len(), log.durable_len(), reader.len()), (3, 3, 3), "readers see the reopened log");
        check_all(&reader, 3);
        append(&mut log, 2);
        log.sync().unwrap();
        check_all(&reader, 5);
    }

    #[test]
    fn reopen_after_a_failed_fsync_removes_a_segment_past_the_durable_length() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), opts(1, 4));
        append(&mut log, 3);
        log.sync().unwrap();
        append(&mut log, 2); // rolls: a second segment starting at record 3
        assert_eq!(log.reader().segments().len(), 2);
        switch.set_fail_sync(true);
        assert!(log.sync().is_err());
        switch.clear();
        let recovery = log.reopen(None).unwrap();
        assert_eq!((recovery.records, recovery.removed_segments), (3, 1));
        assert_eq!(segment_files(dir.path()).len(), 1);
        check_all(&log.reader(), 3);
        append(&mut log, 1);
        log.sync().unwrap();
        drop(log);
        let (log, recovery) = SegmentLog::open(os(), dir.path(), opts(1, 4)).unwrap();
        assert_eq!((recovery.records, recovery.truncated_bytes), (4, 0));
        check_all(&log.reader(), 4);
    }

    #[test]
    fn reopen_after_a_failed_write_keeps_complete_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
        append(&mut log, 4);
        switch.set_short_write(true);
        assert!(log.append_batch(&[b"torn", b"batch"]).is_err());
        assert!(!log.sync_failed(), "a failed write is not a failed fsync");
        switch.clear();
        let recovery = log.reopen(None).unwrap();
        assert_eq!(recovery.records, 4, "the unsynced but complete batches stay");
        assert!(recovery.truncated_bytes > 0, "the torn batch is cut");
        assert_eq!(log.durable_len(), 4, "and the reopen fsynced them");
        check_all(&log.reader(), 4);
    }

    #[test]
    fn reopen_at_most_cuts_a_refused_batch_but_never_durable_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
        append(&mut log, 3);
        log.sync().unwrap();
        append(&mut log, 2);
        assert_eq!(log.reopen(Some(3)).unwrap().records, 3, "the refused batch is cut");
        check_all(&log.reader(), 3);
        append(&mut log, 2);
        log.sync().unwrap();
        assert_eq!(log.reopen(Some(1)).unwrap().records, 5, "never below the durable length");
        check_all(&log.reader(), 5);
    }

    #[test]
    fn a_failed_reopen_distrusts_the_unsynced_tail_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
        append(&mut log, 2);
        log.sync().unwrap();
        append(&mut log, 3);
        switch.set_fail_writes(true);
        assert!(log.append_batch(&[b"x"]).is_err());
        switch.set_fail_writes(false);
        switch.set_fail_sync(true);
        assert!(log.reopen(None).is_err(), "its fsync of the tail fails");
        assert!(log.is_poisoned() && log.sync_failed());
        switch.clear();
        assert_eq!(log.reopen(None).unwrap().records, 2, "only what an fsync confirmed");
        check_all(&log.reader(), 2);
    }

    #[test]
    fn one_fdatasync_per_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
        append(&mut log, 1); // creates the segment: one directory fsync
        let (syncs, writes) = (switch.syncs(), switch.writes());
        for _ in 0..5 {
            append(&mut log, 10);
        }
        assert_eq!(switch.writes(), writes + 5, "one write per batch");
        log.sync().unwrap();
        assert_eq!(switch.syncs(), syncs + 1);
        log.sync().unwrap();
        assert_eq!(switch.syncs(), syncs + 1, "nothing to sync");
    }

    #[test]
    fn concurrent_readers_see_only_whole_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(os(), dir.path(), opts(2048, 4)).unwrap();
        let reader = log.reader();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Record = [batch size, index in batch, seq as 8 bytes, padding].
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut seq = 0u64;
                for batch in 0..400u64 {
                    let size = batch % 6 + 1;
                    let records: Vec<Vec<u8>> = (0..size)
                        .map(|i| {
                            let mut r = vec![size as u8, i as u8];
                            r.extend_from_slice(&(seq + i).to_le_bytes());
                            r.resize(10 + (seq + i) as usize % 40, 0xaa);
                            r
                        })
                        .collect();
                    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                    assert_eq!(log.append_batch(&refs).unwrap(), seq);
                    seq += size;
                    if batch % 50 == 0 {
                        log.sync().unwrap();
                    }
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                log
            })
        };
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let reader = reader.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut checks = 0;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) || checks == 0 {
                        let len = reader.len();
                        if len == 0 {
                            continue;
                        }
                        let last = reader.read(len - 1).unwrap();
                        assert_eq!(last[1] + 1, last[0], "the last visible record ends its batch");
                        // The log may have grown since `len`: the iterator's own end is
                        // fixed when it is created, and must also end a batch.
                        let (mut count, mut last_commit) = (0, false);
                        for item in reader.iter_located(len.saturating_sub(37)) {
                            let item = item.unwrap();
                            assert_eq!(item.bytes[2..10], item.seq.to_le_bytes());
                            assert_eq!(item.commit, item.bytes[1] + 1 == item.bytes[0]);
                            last_commit = item.commit;
                            count += 1;
                        }
                        assert!(count >= len.min(37));
                        assert!(last_commit);
                        checks += 1;
                    }
                    checks
                })
            })
            .collect();
        let log = writer.join().unwrap();
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
        assert!(log.reader().segments().len() > 3);
        assert_eq!(log.len(), (0..400u64).map(|b| b % 6 + 1).sum::<u64>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_batches_and_truncation(
            batches in proptest::collection::vec(1u64..8, 1..25),
            segment_size in 64u64..1024,
            stride in 1u64..9,
            cut_fraction in 0.0f64..=1.0,
            mut garbage in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let options = opts(segment_size, stride);
            let dir = tempfile::tempdir().unwrap();
            let (sizes, last) = build(dir.path(), options.clone(), &batches);
            let original = fs::read(&last).unwrap();
            let len = original.len() as u64;
            let keep = (len as f64 * (1.0 - cut_fraction)).round() as u64;
            // Garbage that starts with the very byte that was cut could put a batch back
            // whole; make it differ so the cut batch is really damaged.
            if let (Some(first), Some(&cut_byte)) = (garbage.first_mut(), original.get(keep as usize))
                && *first == cut_byte
            {
                *first ^= 0xff;
            }
            cut(&last, keep);
            append_bytes(&last, &garbage);
            // Batches fully inside the kept bytes survive, earlier segments entirely.
            let mut end_in_last = len;
            let mut expected: u64 = batches.iter().sum();
            let mut expected_file = len;
            for (count, size) in batches.iter().zip(&sizes).rev() {
                if end_in_last <= keep || end_in_last == 0 {
                    break;
                }
                expected -= count;
                end_in_last -= size;
                expected_file = end_in_last;
            }
            let (log, recovery) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
            prop_assert_eq!(recovery.records, expected);
            prop_assert_eq!(recovery.truncated_bytes, keep + garbage.len() as u64 - expected_file);
            if expected_file == 0 {
                prop_assert!(!last.exists());
            } else {
                prop_assert_eq!(fs::metadata(&last).unwrap().len(), expected_file);
            }
            check_all(&log.reader(), expected);
        }
    }
}
