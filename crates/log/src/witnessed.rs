//! Where what the witnesses said of the log is kept: the latest cosigned checkpoint and
//! the fork alarms (docs/architecture.md, "The log store seam"; docs/operations.md,
//! "Witnesses").
//!
//! It lives with the log's store, so every node serving a log sees the same thing:
//!
//! - [`DirRecords`] (the embedded store): the cosigned checkpoint is the file
//!   [`COSIGNED_FILE`](crate::checkpoint::COSIGNED_FILE) in the log's directory; fork
//!   alarms are not kept (the one node holds them in memory, until it restarts).
//! - a shared store (keyledger-pg's `PgWitnessRecords`): the database's tables, written by
//!   the node holding the `jobs` lease and read back by every node.
//!
//! Nothing read here is trusted: the caller verifies the log's signature and every
//! cosignature before serving a cosigned checkpoint. Reads are bounded
//! ([`MAX_COSIGNED_BYTES`](crate::checkpoint::MAX_COSIGNED_BYTES), one alarm per witness
//! asked about).

use keyledger_core::Timestamp;
use keyledger_verify::merkle::Hash;
use std::path::PathBuf;

/// Why the records could not be read or written. Never holds a connection string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessRecordsError {
    #[error("the witness records are unavailable: {0}")]
    Unavailable(String),
    #[error("the stored cosigned checkpoint is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("a stored witness record is malformed: {0}")]
    Malformed(String),
}

/// A fork alarm as kept (the ledger's `ForkAlarm`, with whether a later cosignature by the
/// same witness cleared it for deduplication; it stays on show either way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmRecord {
    /// The configured witness's name.
    pub witness: String,
    /// `witness_ahead` or `foreign_cosignature`.
    pub kind: String,
    pub log_size: u64,
    pub log_root: Hash,
    pub witness_size: Option<u64>,
    pub detected_at: Timestamp,
    /// Whether the witness cosigned since: the same answer again is a new alarm.
    pub cleared: bool,
}

/// Where the cosigned checkpoint and the fork alarms are kept (see the module docs).
pub trait WitnessRecords: Send + Sync + 'static {
    /// Whether other nodes write and read the same records (then a node that does not
    /// submit to the witnesses reads them back periodically).
    fn is_shared(&self) -> bool;

    /// The stored cosigned checkpoint (the log's note and cosignature lines), unchecked.
    fn cosigned(&self) -> Result<Option<String>, WitnessRecordsError>;

    /// Replaces the stored cosigned checkpoint with `note`, of size `size`. A shared store
    /// keeps the stored one if it is of a larger size (a late write of a node that lost
    /// the `jobs` lease); one node never stores a smaller size than it stored before.
    fn store_cosigned(&self, size: u64, note: &str) -> Result<(), WitnessRecordsError>;

    /// The latest alarm of each of `witnesses` (at most one each).
    fn alarms(&self, witnesses: &[String]) -> Result<Vec<AlarmRecord>, WitnessRecordsError>;

    /// Keeps `alarm` as its witness's latest.
    fn record_alarm(&self, alarm: &AlarmRecord) -> Result<(), WitnessRecordsError>;

    /// Marks `witness`'s latest alarm cleared (it cosigned since).
    fn clear_alarm(&self, witness: &str) -> Result<(), WitnessRecordsError>;
}

/// The embedded store's records: the cosigned checkpoint file in the log's directory.
#[derive(Clone, Debug)]
pub struct DirRecords {
    log_dir: PathBuf,
}

impl DirRecords {
    pub fn new(log_dir: PathBuf) -> Self {
        Self { log_dir }
    }
}

fn io(error: std::io::Error) -> WitnessRecordsError {
    WitnessRecordsError::Unavailable(error.to_string())
}

impl WitnessRecords for DirRecords {
    fn is_shared(&self) -> bool {
        false
    }

    fn cosigned(&self) -> Result<Option<String>, WitnessRecordsError> {
        crate::checkpoint::load_cosigned(&self.log_dir).map_err(io)
    }

    fn store_cosigned(&self, _size: u64, note: &str) -> Result<(), WitnessRecordsError> {
        crate::checkpoint::store_cosigned(&self.log_dir, note).map_err(io)
    }

    fn alarms(&self, _witnesses: &[String]) -> Result<Vec<AlarmRecord>, WitnessRecordsError> {
        Ok(Vec::new())
    }

    fn record_alarm(&self, _alarm: &AlarmRecord) -> Result<(), WitnessRecordsError> {
        Ok(())
    }

    fn clear_alarm(&self, _witness: &str) -> Result<(), WitnessRecordsError> {
        Ok(())
    }
}
