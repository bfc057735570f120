//! Offline verification of keyledger exports (format in `docs/export-format.md`).
//!
//! An export is JSON Lines: one line per event, then one `{"manifest": {…}}` line. Every
//! line is the canonical JSON ([`canonical_json`]) of its value followed by `\n`. An event
//! line is the event's JSON form ([`keyledger_core::json::event_json`]) plus `raw` (standard
//! base64 of the stored event bytes), `leaf_hash` (hex of the tree's leaf hash of `raw`:
//! `SHA-256(0x00 ‖ raw)` in an export of a format-2 log, whose manifest says
//! `"tree_hash": "sha256"`; `BLAKE3(0x00 ‖ raw)` in an export of a format-1 log, whose
//! manifest has no `tree_hash`) and, in a filtered export, `inclusion_proof` (hex hashes,
//! RFC 9162, against the anchor checkpoint).
//!
//! [`verify_export`] reads an export once, front to back, and checks everything the format
//! promises: the manifest's Ed25519 signature, the signed checkpoint it is anchored to, that
//! every line is exactly what its `raw` bytes render to, the order of the lines, their count
//! and hash, and that the lines are leaves of the checkpoint's tree — for an unfiltered
//! export, that they are *all* the leaves of their range (a compact range of the lines
//! folded into the manifest's `left_peaks`, then a consistency proof to the checkpoint,
//! and for a time-bounded range the signed events just outside it).
//! With a trusted checkpoint saved earlier, it also checks that the anchor extends it, and
//! with a witness quorum ([`verify_export_witnessed`]) that enough trusted witnesses
//! cosigned the anchor.
//!
//! The module is split by concept: `canonical` (canonical JSON), `line` (the line and
//! manifest encoding shared with the producer), `check` (the verifier) and `pending` (a
//! filtered export's proofs until the manifest). This file holds
//! the format's constants and what verification reports, and re-exports the rest.
//!
//! Memory: O(log n) for an unfiltered export; a filtered export keeps each line's seq, leaf
//! hash and inclusion proof until the manifest (at the end) names the tree they prove into:
//! up to a bound in memory, the rest in a temporary file (`pending`), so memory does not
//! grow with the export either.
//! No function here panics on any input.

mod canonical;
mod check;
mod line;
mod pending;

pub use canonical::{canonical_json, write_canonical, write_json_str};
pub use check::{verify_export, verify_export_witnessed};
pub use line::{
    LinesHasher, hashes_json, line_value, manifest_line, manifest_message, sign_manifest, write_event_line,
};

use crate::cosignature::Cosigned;
use crate::merkle::{Hash, TreeHash};
use std::fmt;

/// The version of the export format this module reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// What the manifest signature is computed over, before the canonical manifest JSON.
pub const MANIFEST_SIGNATURE_CONTEXT: &[u8] = b"keyledger-export-manifest-v1\n";

/// The manifest member naming the tree hash ([`TreeHash::name`]). An export without it was
/// written by a format-1 log and hashes with BLAKE3, so archived exports stay verifiable.
pub const TREE_HASH_MEMBER: &str = "tree_hash";

/// The tree hash a manifest's `tree_hash` member (absent: `None`) names, if it names one.
#[must_use]
pub fn manifest_tree_hash(member: Option<&str>) -> Option<TreeHash> {
    match member {
        None => Some(TreeHash::Blake3),
        Some(name) => TreeHash::from_name(name),
    }
}

/// The longest line accepted (a 1 MiB event in base64 beside its JSON fits easily).
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// Why an export was rejected. `line` is 1-based; the manifest is the last line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// An event line is wrong.
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    /// The manifest (or something only the manifest can check) is wrong.
    #[error("manifest (line {line}): {reason}")]
    Manifest { line: u64, reason: String },
    /// The input is not a complete export (empty, unreadable, no manifest).
    #[error("{0}")]
    Input(String),
    /// The trusted checkpoint cannot be opened, or the anchor does not extend it.
    #[error("trusted checkpoint: {0}")]
    Trusted(String),
}

impl ExportError {
    /// The 1-based number of the line the error is about, if any.
    pub fn line(&self) -> Option<u64> {
        match self {
            ExportError::Line { line, .. } | ExportError::Manifest { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// What a valid export holds and what was proven about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub origin: String,
    /// Event lines (the manifest excluded).
    pub lines: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub first_at: Option<String>,
    pub last_at: Option<String>,
    pub workspace: Option<String>,
    pub filtered: bool,
    pub checkpoint_size: u64,
    pub checkpoint_root: Hash,
    /// How the log's tree (and so `leaf_hash`, proofs and the anchor's root) is hashed.
    pub tree_hash: TreeHash,
    /// The size of the trusted checkpoint the anchor was proven to extend.
    pub trusted_size: Option<u64>,
    /// What the export proves about the events it does not hold.
    pub completeness: Completeness,
    /// The trusted witnesses that validly cosigned the anchor checkpoint (empty unless a
    /// witness quorum was asked for).
    pub cosigned: Vec<Cosigned>,
}

/// What a valid export proves about the events of its range that it does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// A filtered export: each line is an event of the signed log, at its seq; events of
    /// the workspace may be missing.
    LinesIncluded,
    /// An unfiltered export holding every event of the requested range: the lines are
    /// contiguous leaves of the signed tree and both ends of the range are proved (by
    /// seq bounds, or for a time bound by the signed event just outside it).
    Complete,
    /// An unfiltered export with a time bound but without the events just outside its
    /// range (written before those were added): the lines are contiguous leaves of the
    /// signed tree, but events just before the first line (`start_proved` false) or after
    /// the last (`end_proved` false) may belong to the time window.
    InteriorOnly { start_proved: bool, end_proved: bool },
}

impl Completeness {
    /// The summary's words for it.
    pub fn describe(self) -> &'static str {
        match self {
            Completeness::LinesIncluded => "each line proven in the tree",
            Completeness::Complete => "complete range (no event missing)",
            Completeness::InteriorOnly { start_proved: true, end_proved: false } => {
                "interior contiguous; range end not proved"
            }
            Completeness::InteriorOnly { start_proved: false, end_proved: true } => {
                "interior contiguous; range start not proved"
            }
            Completeness::InteriorOnly { .. } => "interior contiguous; range edges not proved",
        }
    }
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "export valid: {} events", self.lines)?;
        if let (Some(first), Some(last)) = (self.first_seq, self.last_seq) {
            write!(f, ", seq {first}..={last}")?;
        }
        if let (Some(from), Some(to)) = (&self.first_at, &self.last_at) {
            write!(f, " ({from} .. {to})")?;
        }
        match &self.workspace {
            Some(ws) => write!(f, ", workspace {ws} ({})", self.completeness.describe())?,
            None => write!(f, ", {}", self.completeness.describe())?,
        }
        write!(
            f,
            "; anchored to the checkpoint of {} events, {} root {}, signed by {}",
            self.checkpoint_size,
            self.tree_hash.name(),
            hex::encode(self.checkpoint_root),
            self.origin
        )?;
        if let Some(size) = self.trusted_size {
            write!(f, "; consistent with the trusted checkpoint of {size} events")?;
        }
        if !self.cosigned.is_empty() {
            let names: Vec<&str> = self.cosigned.iter().map(|c| c.witness.name()).collect();
            write!(f, "; cosigned by {}", names.join(", "))?;
        }
        Ok(())
    }
}
