//! Concurrent reads of the committed records: [`SegmentReader`] and its iterators.
//!
//! It exists so that any number of threads can read the log while the single writer appends
//! to it, without a lock held across I/O and without memory that grows with the log.
//! [`SegmentReader`] is cheap to clone and `Send + Sync`; it reads through positional reads
//! on shared file handles. A point read starts at the indexed record at or before the one it
//! wants (see the index module) and reads small chunks; sequential iteration reads 1 MiB
//! chunks (the `read_chunk` option).
//!
//! Guarantees: a reader sees only whole batches whose write completed (never a failed or
//! half-written one); an iterator's end is fixed when it is created; every frame read is
//! checked (length, CRC32C, flags), and damage is reported as [`SegmentError::Corrupt`],
//! after which an iterator stops.

use super::SegmentError;
use super::frame::{FLAG_COMMIT, FrameCursor};
use super::index::{Index, Shared, read_lock};
use crate::storage::StorageFile;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Read size of a point read ([`SegmentReader::read`]).
const POINT_READ_CHUNK: usize = 16 << 10;

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

/// Concurrent read access to the committed records of a [`SegmentLog`](super::SegmentLog). Cheap to clone.
#[derive(Clone)]
pub struct SegmentReader {
    pub(super) shared: Arc<Shared>,
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
