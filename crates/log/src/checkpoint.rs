//! Signed checkpoints: the log's commitments to its own tree.
//!
//! Each checkpoint is a C2SP signed note over the tlog-checkpoint body (origin, size, root),
//! stored as one record of its own append-only segment log in `checkpoints/`, preceded by
//! the signing time (8 bytes, little-endian microseconds; not part of the signed text).
//!
//! Guarantee: the store only signs a size at or beyond the last one it signed, and the
//! writer only signs the root of the tree it is extending; at startup the latest checkpoint
//! is checked against the recovered tree, so the log never signs two inconsistent views.
//!
//! A log upgraded from format 1 also keeps its transition note here
//! ([`TRANSITION_FILE`], docs/log-format.md, "The transition note"): the checkpoints
//! stored before it commit to BLAKE3 roots, and the note binds the last of those trees to
//! its SHA-256 root, which the checkpoints after it extend.

use crate::segment::{SegmentError, SegmentLog};
use crate::storage::Storage;
use keyledger_core::Timestamp;
use keyledger_verify::merkle::{Hash, TreeHash};
use keyledger_verify::note::{Checkpoint, NoteSigner, VerifierKey, open_checkpoint, sign_checkpoint};
use keyledger_verify::transition::{Transition, open_transition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A checkpoint as stored: what it commits to, when it was signed, and the note itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub timestamp: Timestamp,
    /// The signed note text, exactly as signed.
    pub note: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Storage(#[from] SegmentError),
    #[error("checkpoint record {index} is malformed or its signature does not verify: {reason}")]
    Invalid { index: u64, reason: String },
    #[error("refusing to sign size {size}: a checkpoint for size {signed} exists")]
    Regression { size: u64, signed: u64 },
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error("transition note {path}: {reason}")]
    Transition { path: PathBuf, reason: String },
}

/// The transition note's file name, in the checkpoint directory.
pub const TRANSITION_FILE: &str = "transition.note";

/// The transition note of the log whose checkpoints are in `dir`, checked against `key`:
/// `None` if the log was never upgraded (it began in format 2, or is still format 1).
pub fn read_transition(dir: &Path, key: &VerifierKey) -> Result<Option<Transition>, CheckpointError> {
    let path = dir.join(TRANSITION_FILE);
    let error = |reason: String| CheckpointError::Transition { path: path.clone(), reason };
    match std::fs::read_to_string(&path) {
        Ok(note) => open_transition(&note, key).map(Some).map_err(|e| error(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error(e.to_string())),
    }
}

/// Whether `checkpoint` was signed over the format-1 (BLAKE3) tree before the log's upgrade
/// recorded in `transition`: all of them are at or below its size, and one at its size has
/// its BLAKE3 root. (The checkpoints signed after it are of the SHA-256 tree, and never
/// smaller.)
pub fn predates(checkpoint: &StoredCheckpoint, transition: &Transition) -> bool {
    checkpoint.size < transition.size
        || (checkpoint.size == transition.size && checkpoint.root == transition.blake3_root)
}

/// The last stored checkpoint, checked.
fn read_latest(
    segments: &SegmentLog,
    verifier: &VerifierKey,
) -> Result<Option<StoredCheckpoint>, CheckpointError> {
    let count = segments.len();
    if count == 0 {
        return Ok(None);
    }
    let record = segments.reader().read(count - 1)?;
    decode_record(&record, verifier)
        .map(Some)
        .map_err(|reason| CheckpointError::Invalid { index: count - 1, reason })
}

/// Decodes one stored record into a checkpoint, checking its signature.
pub fn decode_record(record: &[u8], key: &VerifierKey) -> Result<StoredCheckpoint, String> {
    if record.len() < 8 {
        return Err("record shorter than its timestamp".into());
    }
    let (time, note) = record.split_at(8);
    let timestamp = Timestamp(i64::from_le_bytes(time.try_into().map_err(|_| "bad timestamp")?));
    let note = std::str::from_utf8(note).map_err(|_| "note is not UTF-8".to_string())?;
    let checkpoint = open_checkpoint(note, key).map_err(|e| e.to_string())?;
    Ok(StoredCheckpoint { size: checkpoint.size, root: checkpoint.root, timestamp, note: note.to_owned() })
}

pub(crate) struct CheckpointStore {
    segments: SegmentLog,
    signer: NoteSigner,
    origin: String,
    latest: Arc<RwLock<Option<StoredCheckpoint>>>,
    /// The upgrade from format 1, read once at open (only for a SHA-256 tree).
    transition: Option<Transition>,
}

impl CheckpointStore {
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        signer: NoteSigner,
        origin: String,
        tree_hash: TreeHash,
    ) -> Result<Self, CheckpointError> {
        let (segments, _recovery) = SegmentLog::open(storage, dir, Default::default())?;
        let latest = read_latest(&segments, &signer.verifier())?;
        let transition = match tree_hash {
            TreeHash::Rfc6962 => read_transition(dir, &signer.verifier())?,
            TreeHash::Blake3 => None,
        };
        Ok(Self { segments, signer, origin, latest: Arc::new(RwLock::new(latest)), transition })
    }

    /// The upgrade from format 1 this log went through, if any.
    pub fn transition(&self) -> Option<&Transition> {
        self.transition.as_ref()
    }

    /// Reopens the store in place after a failure (see [`SegmentLog::reopen`]) and re-reads
    /// the latest checkpoint from disk. The latest checkpoint readers see is replaced only
    /// once it has been read back; it never moves to a smaller size.
    pub fn reopen(&mut self) -> Result<(), CheckpointError> {
        self.segments.reopen(None)?;
        let latest = read_latest(&self.segments, &self.signer.verifier())?;
        let previous = self.latest().map_or(0, |c| c.size);
        let found = latest.as_ref().map_or(0, |c| c.size);
        if found < previous {
            return Err(CheckpointError::Regression { size: found, signed: previous });
        }
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = latest;
        Ok(())
    }

    pub fn latest(&self) -> Option<StoredCheckpoint> {
        self.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn shared_latest(&self) -> Arc<RwLock<Option<StoredCheckpoint>>> {
        self.latest.clone()
    }

    /// Signs `(size, root)` and stores it durably.
    pub fn sign_and_store(&mut self, size: u64, root: Hash) -> Result<(), CheckpointError> {
        if let Some(previous) = self.latest()
            && previous.size > size
        {
            return Err(CheckpointError::Regression { size, signed: previous.size });
        }
        let checkpoint = Checkpoint { origin: self.origin.clone(), size, root, extensions: Vec::new() };
        let note =
            sign_checkpoint(&checkpoint, &self.signer).map_err(|e| CheckpointError::Sign(e.to_string()))?;
        let timestamp = Timestamp::now();
        let mut record = timestamp.0.to_le_bytes().to_vec();
        record.extend_from_slice(note.as_bytes());
        self.segments.append_batch(&[&record])?;
        self.segments.sync()?;
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) =
            Some(StoredCheckpoint { size, root, timestamp, note });
        Ok(())
    }
}

impl CheckpointStore {
    /// Signs `(size, root)` without storing it (a shared store stores it first; see
    /// [`crate::store`]).
    pub fn sign_note(&self, size: u64, root: Hash) -> Result<String, CheckpointError> {
        let checkpoint = Checkpoint { origin: self.origin.clone(), size, root, extensions: Vec::new() };
        sign_checkpoint(&checkpoint, &self.signer).map_err(|e| CheckpointError::Sign(e.to_string()))
    }

    /// Stores a checkpoint note signed by this log's key (by this node or by another node of a
    /// shared store), durably, after checking its signature. Never a smaller size than the
    /// latest; the same size again is a no-op.
    pub fn store_note(&mut self, note: &str) -> Result<StoredCheckpoint, CheckpointError> {
        let checkpoint = open_checkpoint(note, &self.signer.verifier())
            .map_err(|e| CheckpointError::Invalid { index: self.segments.len(), reason: e.to_string() })?;
        if let Some(previous) = self.latest()
            && previous.size >= checkpoint.size
        {
            if previous.size == checkpoint.size && previous.root == checkpoint.root {
                return Ok(previous);
            }
            return Err(CheckpointError::Regression { size: checkpoint.size, signed: previous.size });
        }
        let timestamp = Timestamp::now();
        let mut record = timestamp.0.to_le_bytes().to_vec();
        record.extend_from_slice(note.as_bytes());
        self.segments.append_batch(&[&record])?;
        self.segments.sync()?;
        let stored = StoredCheckpoint {
            size: checkpoint.size,
            root: checkpoint.root,
            timestamp,
            note: note.to_owned(),
        };
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(stored.clone());
        Ok(stored)
    }
}

/// The file, in the log's directory, holding the latest cosigned checkpoint: the log's
/// note followed by witness cosignature lines (docs/log-format.md, "Cosigned checkpoint").
pub const COSIGNED_FILE: &str = "cosigned-checkpoint";

/// Largest cosigned checkpoint read back, from the file or a shared store (a note with 32
/// cosignatures is ~4 KiB).
pub const MAX_COSIGNED_BYTES: u64 = 64 * 1024;

/// Stores `note` (a checkpoint note with its cosignature lines) as the latest cosigned
/// checkpoint in `log_dir`, atomically: a temporary file is written and fsynced, renamed
/// over the previous one, and the directory is fsynced. A crash leaves the old or the new
/// file, never a mix.
pub fn store_cosigned(log_dir: &Path, note: &str) -> std::io::Result<()> {
    replace_file(log_dir, COSIGNED_FILE, note.as_bytes())
}

/// Replaces `log_dir/name` with `bytes` atomically and durably: written to a temporary
/// file, fsynced, renamed over the old one, the directory fsynced. A crash leaves the old
/// file or the new one, never a mix.
pub(crate) fn replace_file(log_dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = log_dir.join(name);
    let temp = log_dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, &path)?;
    std::fs::File::open(log_dir)?.sync_all()
}

/// The bytes of `log_dir/name`, at most `limit` of them (`None` when there is no such
/// file; `InvalidData` when it is larger).
pub(crate) fn read_bounded(log_dir: &Path, name: &str, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let file = match std::fs::File::open(log_dir.join(name)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{name} is larger than {limit} bytes"),
        ));
    }
    Ok(Some(bytes))
}

/// The latest cosigned checkpoint stored in `log_dir`, if any. Unchecked: the caller
/// verifies the log's signature and every cosignature before trusting it.
pub fn load_cosigned(log_dir: &Path) -> std::io::Result<Option<String>> {
    let Some(bytes) = read_bounded(log_dir, COSIGNED_FILE, MAX_COSIGNED_BYTES)? else { return Ok(None) };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "cosigned checkpoint is not UTF-8"))
}

#[cfg(test)]
mod cosigned_tests {
    use super::*;

    #[test]
    fn the_cosigned_checkpoint_is_replaced_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_cosigned(dir.path()).unwrap(), None);
        store_cosigned(dir.path(), "first\n").unwrap();
        store_cosigned(dir.path(), "second\n").unwrap();
        assert_eq!(load_cosigned(dir.path()).unwrap().as_deref(), Some("second\n"));
        assert!(!dir.path().join(format!("{COSIGNED_FILE}.tmp")).exists());
        std::fs::write(dir.path().join(COSIGNED_FILE), vec![b'a'; 70 * 1024]).unwrap();
        assert!(load_cosigned(dir.path()).is_err());
    }
}
