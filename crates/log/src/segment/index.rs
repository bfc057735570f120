//! The index: where each record of the log sits, in memory for readers and on disk for
//! sealed segments.
//!
//! It exists so that neither a read nor a restart has to scan the log. In memory, [`Shared`]
//! holds, per segment, the byte offset of every `index_stride`-th record (default 32): a read
//! starts at the indexed record at or before the one it wants and scans forward from there.
//! Memory stays small however long the log. The writer updates the index only after a
//! batch's write completed, so readers only ever see whole batches.
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
//! Index file format: `seg-<first seq>.idx` is `"klsegix1" | first_seq | records | end |
//! stride | count: u64 | offsets: u64 × count | crc32c: u32` (little-endian; the CRC covers
//! everything before it).

#[cfg(doc)]
use super::SegmentLog;
use super::frame::{FLAG_COMMIT, FrameCursor, Step};
use super::scanned::Scanned;
use super::{SegmentError, SegmentOptions, io_err};
use crate::storage::{Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One segment as readers see it.
pub(super) struct SegIndex {
    pub(super) first_seq: u64,
    /// Committed records.
    pub(super) records: u64,
    /// Byte length of the committed records.
    pub(super) end: u64,
    /// `sparse[i]` = offset of record `first_seq + i * stride`.
    pub(super) sparse: Vec<u64>,
    pub(super) file: Arc<dyn StorageFile>,
    pub(super) path: Arc<Path>,
}

/// Every segment of the log, in order.
pub(super) struct Index {
    pub(super) segments: Vec<SegIndex>,
    /// Committed records in all segments.
    pub(super) records: u64,
    /// Bytes of committed frames in all segments.
    pub(super) bytes: u64,
}

/// What the writer and all its readers share.
pub(super) struct Shared {
    pub(super) index: RwLock<Index>,
    /// The index keeps the offset of every `stride`-th record of a segment.
    pub(super) stride: u64,
    /// Read size of sequential iteration.
    pub(super) read_chunk: usize,
}

/// Read access to the index (a lock poisoned by a panicking thread is still used).
pub(super) fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write access to the index (a lock poisoned by a panicking thread is still used).
pub(super) fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// The shared index of the segments recovery kept.
pub(super) fn build_shared(kept: Vec<Scanned>, options: &SegmentOptions) -> Arc<Shared> {
    Arc::new(Shared {
        index: RwLock::new(build_index(kept)),
        stride: options.index_stride,
        read_chunk: options.read_chunk,
    })
}

/// The index of the segments recovery kept.
pub(super) fn build_index(kept: Vec<Scanned>) -> Index {
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

/// The file name of the index of the sealed segment whose first record is `first_seq`.
pub fn index_file_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.idx")
}

/// The first bytes of an index file (they name its format).
const INDEX_MAGIC: &[u8; 8] = b"klsegix1";

/// The bytes of a sealed segment's index file (format in the module docs above).
pub(super) fn encode_index(first_seq: u64, records: u64, end: u64, stride: u64, sparse: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_MAGIC.len() + 8 * (5 + sparse.len()) + 4);
    out.extend_from_slice(INDEX_MAGIC);
    for value in [first_seq, records, end, stride, sparse.len() as u64].iter().chain(sparse) {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());
    out
}

/// `(first_seq, records, end, stride, sparse)` of an index file, if it is intact.
pub(super) fn decode_index(bytes: &[u8]) -> Option<(u64, u64, u64, u64, Vec<u64>)> {
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
pub(super) fn load_sealed(
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
pub(super) fn write_sealed_index(storage: &dyn Storage, dir: &Path, segment: &SegIndex, stride: u64) {
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
