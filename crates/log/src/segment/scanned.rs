//! What a scan of one segment file found: its committed records, the sparse offsets of its
//! index, and the first damage, if any.
//!
//! Recovery produces one per segment, either by reading the frames or, for a sealed segment
//! whose index file still matches it, from that index; the index module builds the log's
//! in-memory index from the kept ones. It lives apart from both so neither imports the other.

use super::frame::Damage;
use crate::storage::StorageFile;
use std::path::Path;
use std::sync::Arc;

/// The result of scanning one segment file during recovery.
pub(super) struct Scanned {
    pub(super) first_seq: u64,
    pub(super) path: Arc<Path>,
    pub(super) file: Arc<dyn StorageFile>,
    pub(super) file_len: u64,
    /// Committed records and their byte length.
    pub(super) records: u64,
    pub(super) end: u64,
    pub(super) sparse: Vec<u64>,
    /// Valid frames after the last commit mark (before any damage).
    pub(super) uncommitted: u64,
    /// The first bad frame.
    pub(super) damage: Option<(u64, Damage)>,
    /// Whether committed data follows the damage in this segment.
    pub(super) resumes: bool,
    /// Taken from the segment's index file rather than read.
    pub(super) from_index: bool,
}

impl Scanned {
    /// The first problem in this segment, as `(offset, seq, damage)`.
    pub(super) fn problem(&self) -> Option<(u64, u64, Damage)> {
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
