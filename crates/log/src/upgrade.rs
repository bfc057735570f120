//! Upgrading a format-1 log (BLAKE3 tree) to log format 2 (RFC 6962's SHA-256 tree): the
//! log's half of `keyledger log upgrade` (docs/log-format.md, "Upgrading a format-1 log").
//!
//! # Why it exists
//!
//! The events do not change between the formats, only how the tree over them is hashed.
//! An upgrade must not lose the meaning of the checkpoints already signed over the BLAKE3
//! tree, and must not let anyone slip a different history in while the hash changes. So
//! [`prepare`] first verifies the whole format-1 log exactly as `keyledger log verify` does,
//! then signs, with the log's own key, a transition note binding the BLAKE3 root of all its
//! events to their SHA-256 root ([`keyledger_verify::transition`]).
//!
//! # What it guarantees
//!
//! * A log that fails verification is refused and nothing is written.
//! * [`prepare`] writes only the transition note (beside, fsynced, then renamed into place):
//!   the log stays a valid format-1 log, which a format-1 reader and a repeated upgrade
//!   ignore or replace. The data dir's format is switched by the caller afterwards; the
//!   next [`crate::Log::open`] with [`TreeHash::Rfc6962`] then recomputes the stored tree
//!   with SHA-256 and signs the first SHA-256 checkpoint at the transition's size. Both of
//!   these are crash-safe on their own (see [`crate::tree`] and [`crate::Log::open`]).

use crate::checkpoint::TRANSITION_FILE;
use crate::segment::{SegmentError, SegmentLog, SegmentOptions};
use crate::storage::Storage;
use crate::verify::{LogVerifyError, LogVerifyReport, verify_log};
use keyledger_verify::merkle::{Frontier, TreeHash};
use keyledger_verify::note::NoteSigner;
use keyledger_verify::transition::{Transition, sign_transition};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a log was not prepared for format 2.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The format-1 log does not verify: nothing was changed.
    #[error("the format-1 log does not verify, so it is not upgraded (nothing was changed): {0}")]
    Verify(#[from] LogVerifyError),
    /// The events changed between the two passes (another process is writing the log).
    #[error("the log changed while it was being upgraded: is a server running on it?")]
    Changed,
    /// Reading the events for the SHA-256 tree failed.
    #[error("reading the events: {0}")]
    Read(#[from] SegmentError),
    /// The transition note could not be signed.
    #[error("signing the transition note: {0}")]
    Sign(String),
    /// Writing the transition note failed.
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

/// A verified format-1 log, and the transition note written for it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The verification of the format-1 log (BLAKE3).
    pub report: LogVerifyReport,
    /// What the transition note binds.
    pub transition: Transition,
}

/// Verifies the format-1 log in `log_dir` against `signer`'s key, computes the SHA-256
/// root of its events and writes the transition note, signed by `signer`, into its
/// checkpoint directory. `progress(done, total)` follows the verification.
///
/// # Errors
///
/// [`UpgradeError::Verify`] if the log does not verify (nothing is written); otherwise
/// any failure to read the events or to write the note durably.
pub fn prepare(
    storage: Arc<dyn Storage>,
    log_dir: &Path,
    signer: &NoteSigner,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Prepared, UpgradeError> {
    let verifier = signer.verifier();
    let report = verify_log(storage.clone(), log_dir, &verifier, TreeHash::Blake3, progress)?;
    let (events, _) = SegmentLog::inspect(storage, &crate::events_dir(log_dir), SegmentOptions::default())?;
    let mut sha256 = Frontier::new(TreeHash::Rfc6962);
    let mut blake3 = Frontier::new(TreeHash::Blake3);
    for record in events.iter(0).take(usize::try_from(report.events).unwrap_or(usize::MAX)) {
        let (_, bytes) = record?;
        sha256.push(TreeHash::Rfc6962.leaf(&bytes));
        blake3.push(TreeHash::Blake3.leaf(&bytes));
    }
    // The second pass must have read exactly the events the verification covered.
    if sha256.size() != report.events || blake3.root() != report.root {
        return Err(UpgradeError::Changed);
    }
    let transition = Transition {
        origin: signer.name().to_owned(),
        size: report.events,
        blake3_root: report.root,
        sha256_root: sha256.root(),
    };
    let note = sign_transition(&transition, signer).map_err(|e| UpgradeError::Sign(e.to_string()))?;
    write_durably(&crate::checkpoints_dir(log_dir), TRANSITION_FILE, note.as_bytes())?;
    Ok(Prepared { report, transition })
}

/// Writes `name` in `dir` so that it is either absent (or as before) or complete: written
/// beside, fsynced, renamed into place, and the directory fsynced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), UpgradeError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| UpgradeError::Io { op, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync", dir))
}
