//! The frame: how one record is laid out in a segment file, and how frames are read back.
//!
//! It exists so that every byte the log reads from a segment goes through one check: a
//! frame is accepted only if its length is within [`MAX_RECORD_LEN`], its CRC32C matches and
//! no unknown flag bit is set. Everything else is reported as a [`Damage`] at a byte offset;
//! whether that damage is a torn tail to cut or corruption to refuse is decided by recovery,
//! not here (the torn-tail rule in the [`super`] docs).
//!
//! Frame format, little-endian: `len: u32 | crc32c: u32 | flags: u8 | record[len]`, where the
//! CRC covers `flags ‖ record`, flags bit 0 is the commit mark (the record is the last of its
//! batch) and the other bits must be 0.
//!
//! [`FrameCursor`] reads frames forward from an offset of one segment through positional
//! reads, in chunks of a caller-chosen size, never past a given end; its buffer holds at
//! most one chunk or one frame (at most [`MAX_RECORD_LEN`] plus the header).

use super::{SegmentError, io_err};
use crate::storage::StorageFile;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// The largest record accepted, in bytes.
pub const MAX_RECORD_LEN: usize = 1 << 20;
/// Bytes of framing in front of every record.
pub const FRAME_HEADER_LEN: usize = 9;
/// Flags bit 0: this record is the last of its batch.
pub const FLAG_COMMIT: u8 = 0x01;

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

fn frame_crc(flags: u8, record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[flags]), record)
}

/// Appends the frame of `record` with `flags` to `out`.
pub(super) fn encode_frame(out: &mut Vec<u8>, record: &[u8], flags: u8) {
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
pub(super) fn chain_reaches_commit(mut data: &[u8]) -> bool {
    while let Ok((flags, total)) = check_frame(data) {
        if flags & FLAG_COMMIT != 0 {
            return true;
        }
        data = &data[total..];
    }
    false
}

/// A frame read by a [`FrameCursor`]; its record is `cursor.buf[body]`.
pub(super) struct RawFrame {
    pub(super) offset: u64,
    pub(super) flags: u8,
    body: Range<usize>,
}

/// What [`FrameCursor::next_frame`] found.
pub(super) enum Step {
    Frame(RawFrame),
    End,
    Damaged { offset: u64, damage: Damage },
}

/// Reads frames forward from an offset of one segment in chunks, by positional reads.
pub(super) struct FrameCursor {
    file: Arc<dyn StorageFile>,
    pub(super) path: Arc<Path>,
    /// Offset of the next frame.
    pub(super) pos: u64,
    /// Nothing at or after this offset is read.
    end: u64,
    /// Seq of the next frame.
    pub(super) seq: u64,
    chunk: usize,
    buf: Vec<u8>,
    buf_offset: u64,
}

impl FrameCursor {
    pub(super) fn new(
        file: Arc<dyn StorageFile>,
        path: Arc<Path>,
        pos: u64,
        end: u64,
        seq: u64,
        chunk: usize,
    ) -> Self {
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

    pub(super) fn next_frame(&mut self) -> Result<Step, SegmentError> {
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
    pub(super) fn expect_frame(&mut self) -> Result<RawFrame, SegmentError> {
        let seq = self.seq;
        let (offset, damage) = match self.next_frame()? {
            Step::Frame(frame) => return Ok(frame),
            Step::End => (self.pos, Damage::Truncated),
            Step::Damaged { offset, damage } => (offset, damage),
        };
        Err(SegmentError::Corrupt { path: self.path.to_path_buf(), offset, seq, damage })
    }

    pub(super) fn body(&self, frame: &RawFrame) -> &[u8] {
        &self.buf[frame.body.clone()]
    }
}
