//! The decision of `add-checkpoint`: verify, check consistency, persist, cosign.
//!
//! For each log it witnesses (identified by its origin, trusted by its verifier keys) the
//! witness keeps one thing: the latest checkpoint it cosigned. A new checkpoint is cosigned
//! only if the log signed it and a consistency proof shows it extends that checkpoint, so
//! the witness never cosigns two checkpoints of one log that are not one the prefix of the
//! other (docs/witness.md).
//!
//! Guarantees:
//! - The checks run in the order and with the outcomes of the tlog-witness spec: a
//!   malformed request is [`AddError::Malformed`] (400), an unknown origin
//!   [`AddError::UnknownOrigin`] (404), no valid signature by a trusted key
//!   [`AddError::Forbidden`] (403), an old size above the checkpoint's
//!   [`AddError::OldSizeTooLarge`] (400), an old size other than the stored one
//!   [`AddError::Conflict`] (409), a proof that does not verify, a proof given with old
//!   size 0, a size-0 checkpoint without the empty root, or the same size with another root
//!   [`AddError::Inconsistent`] (422).
//! - Requests for one origin are serialised: the stored size is checked and the new
//!   checkpoint persisted under that origin's lock, so a slower request can never roll the
//!   state back.
//! - The new checkpoint is durable (`Store::save`) before the cosignature is made; if
//!   saving fails nothing is cosigned and the state in memory is unchanged.
//! - Proofs are checked with `keyledger_verify::merkle::verify_consistency`; this module
//!   never hashes a tree node itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use keyledger_verify::cosignature::{self, Cosigner, WitnessKey};
use keyledger_verify::merkle::{self, ProofError};
use keyledger_verify::note::{self, NoteError, VerifierKey};
use tokio::sync::Mutex;

use crate::request::{AddCheckpoint, MalformedRequest};
use crate::store::{Latest, Store, StoreError, origin_file_name};

/// Longest part of an unknown origin echoed in an error: the request chose it.
const MAX_ECHOED_ORIGIN: usize = 100;

/// A log the witness follows: its origin and the keys it signs checkpoints with.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The checkpoint origin line.
    pub origin: String,
    /// The log's checkpoint verifier keys (type 0x01).
    pub keys: Vec<VerifierKey>,
}

/// Why a checkpoint was not cosigned; each maps to one HTTP status of the tlog-witness spec.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The body is not a well-formed request or checkpoint note (400).
    #[error("{0}")]
    Malformed(String),
    /// No log with this origin is witnessed here (404); the origin, cut to 100 characters.
    #[error("this witness does not follow a log with origin {0:?}")]
    UnknownOrigin(String),
    /// No valid signature by a key trusted for the origin, or a bad one (403).
    #[error("the checkpoint is not validly signed by a key trusted for its origin: {0}")]
    Forbidden(NoteError),
    /// The old size is above the checkpoint's size (400).
    #[error("old size {old} is larger than the checkpoint size {size}")]
    OldSizeTooLarge {
        /// The request's old size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The old size is not the size of the latest cosigned checkpoint (409).
    #[error("old size {old} is not the size of the latest cosigned checkpoint, {current}")]
    Conflict {
        /// The request's old size.
        old: u64,
        /// The latest cosigned size (0 if none).
        current: u64,
    },
    /// The checkpoint is not consistent with the latest cosigned one (422).
    #[error("the checkpoint is not consistent with the latest cosigned one: {0}")]
    Inconsistent(ProofError),
    /// The new state could not be persisted (500); nothing was cosigned.
    #[error("cannot persist the checkpoint: {0}")]
    Storage(StoreError),
}

impl AddError {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            AddError::Malformed(_) | AddError::OldSizeTooLarge { .. } => 400,
            AddError::Forbidden(_) => 403,
            AddError::UnknownOrigin(_) => 404,
            AddError::Conflict { .. } => 409,
            AddError::Inconsistent(_) => 422,
            AddError::Storage(_) => 500,
        }
    }

    /// The stable error code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            AddError::Malformed(_) => "malformed_request",
            AddError::OldSizeTooLarge { .. } => "old_size_too_large",
            AddError::Forbidden(_) => "bad_signature",
            AddError::UnknownOrigin(_) => "unknown_origin",
            AddError::Conflict { .. } => "old_size_mismatch",
            AddError::Inconsistent(_) => "inconsistent_checkpoint",
            AddError::Storage(_) => "storage_failed",
        }
    }
}

impl From<MalformedRequest> for AddError {
    fn from(e: MalformedRequest) -> Self {
        AddError::Malformed(e.to_string())
    }
}

struct Log {
    keys: Vec<VerifierKey>,
    /// The latest cosigned checkpoint, `None` before the first. Held across the check and
    /// the save: this lock is what serialises one origin's requests.
    latest: Mutex<Option<Latest>>,
}

/// Why the witness cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory, key or a state file is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No log to witness was given.
    #[error("no log to witness: give at least one --log")]
    NoLogs,
    /// A log's origin is empty or not one checkpoint line.
    #[error("invalid origin {0:?}: it must be non-empty, without control characters")]
    BadOrigin(String),
}

/// A witness: its cosigner, its store, and the logs it follows (a fixed set, so its state is
/// bounded by the configuration).
pub struct Witness {
    cosigner: Cosigner,
    store: Arc<Store>,
    logs: HashMap<String, Log>,
    /// The monitoring path's origin hash (`store::origin_file_name`) of each log's origin.
    by_hash: HashMap<String, String>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("cosigner", &self.cosigner)
            .field("logs", &self.logs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Witness {
    /// Opens the witness directory and loads the latest checkpoint of each log. Several
    /// configs with one origin are merged (all their keys are trusted for it).
    ///
    /// # Errors
    ///
    /// [`OpenError`]: an unusable directory or state file, no logs, or a bad origin.
    pub fn open(dir: &std::path::Path, logs: Vec<LogConfig>) -> Result<Self, OpenError> {
        if logs.is_empty() {
            return Err(OpenError::NoLogs);
        }
        let (store, cosigner) = Store::open(dir)?;
        let mut merged: HashMap<String, Vec<VerifierKey>> = HashMap::new();
        for log in logs {
            if log.origin.is_empty() || log.origin.chars().any(char::is_control) {
                return Err(OpenError::BadOrigin(log.origin));
            }
            merged.entry(log.origin).or_default().extend(log.keys);
        }
        let mut table = HashMap::new();
        let mut by_hash = HashMap::new();
        for (origin, keys) in merged {
            let latest = store.load(&origin)?;
            by_hash.insert(origin_file_name(&origin), origin.clone());
            table.insert(origin, Log { keys, latest: Mutex::new(latest) });
        }
        Ok(Self { cosigner, store: Arc::new(store), logs: table, by_hash })
    }

    /// The witness's public key.
    pub fn witness_key(&self) -> WitnessKey {
        self.cosigner.witness_key()
    }

    /// The size of the latest checkpoint cosigned for `origin` (`None` for an unknown
    /// origin, `Some(0)` before the first).
    pub async fn latest_size(&self, origin: &str) -> Option<u64> {
        let log = self.logs.get(origin)?;
        Some(log.latest.lock().await.as_ref().map_or(0, |l| l.checkpoint.size))
    }

    /// The note of the latest checkpoint cosigned for the log whose origin has this
    /// lowercase hex SHA-256 (the tlog-witness monitoring path), with the log's signatures
    /// the witness verified and its cosignature; `None` if there is none.
    pub async fn latest_note(&self, origin_hash: &str) -> Option<String> {
        let log = self.logs.get(self.by_hash.get(origin_hash)?)?;
        log.latest.lock().await.as_ref().map(|l| l.note.clone())
    }

    /// Handles an `add-checkpoint` request body and returns the cosignature line(s).
    ///
    /// # Errors
    ///
    /// [`AddError`], whose [`AddError::status`] is the HTTP status to answer.
    pub async fn add_checkpoint(&self, body: &[u8]) -> Result<String, AddError> {
        let request = AddCheckpoint::parse(body)?;
        let (text, checkpoint) = cosignature::unverified_checkpoint(request.note)
            .map_err(|e| AddError::Malformed(e.to_string()))?;
        let log = self.logs.get(&checkpoint.origin).ok_or_else(|| {
            AddError::UnknownOrigin(checkpoint.origin.chars().take(MAX_ECHOED_ORIGIN).collect())
        })?;
        verify_log_signature(request.note, &log.keys)?;
        if request.old_size > checkpoint.size {
            return Err(AddError::OldSizeTooLarge { old: request.old_size, size: checkpoint.size });
        }

        // C2SP witnesses check RFC 6962 (SHA-256) trees, the tree of log format 2.
        let tree = merkle::TreeHash::Rfc6962;
        let mut latest = log.latest.lock().await;
        let (current_size, current_root) =
            latest.as_ref().map_or((0, tree.empty_root()), |l| (l.checkpoint.size, l.checkpoint.root));
        if request.old_size != current_size {
            return Err(AddError::Conflict { old: request.old_size, current: current_size });
        }
        if let Err(e) = merkle::verify_consistency(
            tree,
            current_size,
            checkpoint.size,
            &current_root,
            &checkpoint.root,
            &request.proof,
        ) {
            tracing::warn!(
                origin = %checkpoint.origin, old_size = current_size, size = checkpoint.size, error = %e,
                "refused a validly signed checkpoint that is not consistent with the latest cosigned one"
            );
            return Err(AddError::Inconsistent(e));
        }
        // Cosigned before it is saved, returned only after: the stored note carries the
        // very line the client receives.
        let line =
            self.cosigner.cosign(&text, now_seconds()).map_err(|e| AddError::Malformed(e.to_string()))?;
        let log_lines = cosignature::signature_lines_by(request.note, &log.keys)
            .map_err(|e| AddError::Malformed(e.to_string()))?;
        // Room for the cosignature within the note parser's limit on signature lines.
        let log_lines: String = log_lines.split_inclusive('\n').take(note::MAX_SIGNATURES - 1).collect();
        let size = checkpoint.size;
        let new = Latest { note: format!("{text}\n{log_lines}{line}"), checkpoint };
        // Never save a state that would not load again (the witness would refuse to start).
        cosignature::unverified_checkpoint(&new.note).map_err(|e| AddError::Malformed(e.to_string()))?;
        let store = Arc::clone(&self.store);
        let to_save = new.clone();
        tokio::task::spawn_blocking(move || store.save(&to_save))
            .await
            .map_err(|e| {
                AddError::Storage(StoreError::Invalid { path: "logs".into(), message: e.to_string() })
            })?
            .map_err(AddError::Storage)?;
        *latest = Some(new);
        drop(latest);
        tracing::info!(size, "cosigned a checkpoint");
        Ok(line)
    }
}

/// Accepts the note if at least one trusted key validly signed it and no signature line of
/// a trusted key fails (the spec's 403 rule; lines of other keys are ignored).
fn verify_log_signature(note_text: &str, keys: &[VerifierKey]) -> Result<(), AddError> {
    let mut verified = false;
    let mut missing = None;
    for key in keys {
        match note::open(note_text, key) {
            Ok(_) => verified = true,
            Err(e @ NoteError::NoSignatureByKey { .. }) => missing = Some(e),
            Err(e) => return Err(AddError::Forbidden(e)),
        }
    }
    match (verified, missing) {
        (true, _) => Ok(()),
        (false, Some(e)) => Err(AddError::Forbidden(e)),
        (false, None) => {
            Err(AddError::Forbidden(NoteError::MalformedNote("no key is trusted for this origin")))
        }
    }
}

/// The current POSIX time in seconds, at least 1 (a cosignature's time is never 0).
fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs().max(1))
}
