//! Where what the witnesses said of the log is kept: the latest cosigned checkpoint and
//! the fork alarms (docs/architecture.md, "The log store seam"; docs/operations.md,
//! "Witnesses").
//!
//! It lives with the log's store, so every node serving a log sees the same thing:
//!
//! - [`DirRecords`] (the embedded store): the cosigned checkpoint is the file
//!   [`COSIGNED_FILE`](crate::checkpoint::COSIGNED_FILE) in the log's directory, the fork
//!   alarms the file [`ALARMS_FILE`] beside it (a JSON array, one alarm per witness), each
//!   replaced atomically, so a restart shows the alarms raised before it.
//! - a shared store (keyledger-pg's `PgWitnessRecords`): the database's tables, written by
//!   the node holding the `jobs` lease and read back by every node.
//!
//! Nothing read here is trusted: the caller verifies the log's signature and every
//! cosignature before serving a cosigned checkpoint. Reads are bounded
//! ([`MAX_COSIGNED_BYTES`](crate::checkpoint::MAX_COSIGNED_BYTES), one alarm per witness
//! asked about).

use keyledger_core::Timestamp;
use keyledger_verify::merkle::Hash;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The embedded store's fork alarms, in the log's directory.
pub const ALARMS_FILE: &str = "witness-alarms.json";

/// Most bytes of [`ALARMS_FILE`] read: far more than one alarm for each witness a policy
/// may name.
pub const MAX_ALARMS_BYTES: u64 = 256 * 1024;

/// The kinds of fork alarm kept (what the database's table accepts too).
const ALARM_KINDS: [&str; 2] = ["witness_ahead", "foreign_cosignature"];

/// Why the records could not be read or written. Never holds a connection string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessRecordsError {
    #[error("the witness records are unavailable: {0}")]
    Unavailable(String),
    #[error("the stored cosigned checkpoint is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the stored fork alarms ({ALARMS_FILE}) are larger than {limit} bytes")]
    AlarmsTooLarge { limit: u64 },
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

/// The embedded store's records: files in the log's directory (see the module docs).
#[derive(Clone, Debug)]
pub struct DirRecords {
    log_dir: PathBuf,
    /// One read-modify-write of the alarms file at a time (each witness has its thread).
    alarms_file: Arc<Mutex<()>>,
}

impl DirRecords {
    pub fn new(log_dir: PathBuf) -> Self {
        Self { log_dir, alarms_file: Arc::new(Mutex::new(())) }
    }

    /// Every stored alarm, of whichever witness (`store copy` carries them all).
    pub fn stored_alarms(&self) -> Result<Vec<AlarmRecord>, WitnessRecordsError> {
        let bytes = match crate::checkpoint::read_bounded(&self.log_dir, ALARMS_FILE, MAX_ALARMS_BYTES) {
            Ok(None) => return Ok(Vec::new()),
            Ok(Some(bytes)) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(WitnessRecordsError::AlarmsTooLarge { limit: MAX_ALARMS_BYTES });
            }
            Err(e) => return Err(io(std::io::Error::new(e.kind(), format!("{ALARMS_FILE}: {e}")))),
        };
        let malformed = |what: String| WitnessRecordsError::Malformed(format!("{ALARMS_FILE}: {what}"));
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        let list = value.as_array().ok_or_else(|| malformed("not an array".into()))?;
        list.iter()
            .map(|item| alarm_from_json(item).ok_or_else(|| malformed(format!("bad alarm {item}"))))
            .collect()
    }

    /// Applies `change` to the stored alarms and stores the result.
    fn change_alarms(&self, change: impl FnOnce(&mut Vec<AlarmRecord>)) -> Result<(), WitnessRecordsError> {
        let _one_at_a_time = self.alarms_file.lock().unwrap_or_else(|e| e.into_inner());
        let mut alarms = self.stored_alarms()?;
        change(&mut alarms);
        let text = Value::Array(alarms.iter().map(alarm_json).collect()).to_string();
        crate::checkpoint::replace_file(&self.log_dir, ALARMS_FILE, text.as_bytes())
            .map_err(|e| io(std::io::Error::new(e.kind(), format!("{ALARMS_FILE}: {e}"))))
    }
}

fn io(error: std::io::Error) -> WitnessRecordsError {
    WitnessRecordsError::Unavailable(error.to_string())
}

fn alarm_json(alarm: &AlarmRecord) -> Value {
    json!({
        "witness": alarm.witness,
        "kind": alarm.kind,
        "log_size": alarm.log_size,
        "log_root": hex::encode(alarm.log_root),
        "witness_size": alarm.witness_size,
        "detected_at": alarm.detected_at.micros(),
        "cleared": alarm.cleared,
    })
}

fn alarm_from_json(value: &Value) -> Option<AlarmRecord> {
    let kind = value["kind"].as_str().filter(|kind| ALARM_KINDS.contains(kind))?;
    let mut log_root = [0u8; 32];
    hex::decode_to_slice(value["log_root"].as_str()?, &mut log_root).ok()?;
    let witness_size = match &value["witness_size"] {
        Value::Null => None,
        size => Some(size.as_u64()?),
    };
    Some(AlarmRecord {
        witness: value["witness"].as_str()?.to_owned(),
        kind: kind.to_owned(),
        log_size: value["log_size"].as_u64()?,
        log_root,
        witness_size,
        detected_at: Timestamp::from_micros(value["detected_at"].as_i64()?),
        cleared: value["cleared"].as_bool()?,
    })
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

    fn alarms(&self, witnesses: &[String]) -> Result<Vec<AlarmRecord>, WitnessRecordsError> {
        let mut alarms = self.stored_alarms()?;
        alarms.retain(|alarm| witnesses.contains(&alarm.witness));
        Ok(alarms)
    }

    fn record_alarm(&self, alarm: &AlarmRecord) -> Result<(), WitnessRecordsError> {
        if !ALARM_KINDS.contains(&alarm.kind.as_str()) {
            return Err(WitnessRecordsError::Malformed(format!("no fork alarm is of kind {:?}", alarm.kind)));
        }
        self.change_alarms(|alarms| {
            alarms.retain(|kept| kept.witness != alarm.witness);
            alarms.push(alarm.clone());
        })
    }

    fn clear_alarm(&self, witness: &str) -> Result<(), WitnessRecordsError> {
        self.change_alarms(|alarms| {
            for alarm in alarms.iter_mut().filter(|alarm| alarm.witness == witness) {
                alarm.cleared = true;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(witness: &str, kind: &str, witness_size: Option<u64>) -> AlarmRecord {
        AlarmRecord {
            witness: witness.into(),
            kind: kind.into(),
            log_size: 12,
            log_root: [3; 32],
            witness_size,
            detected_at: Timestamp(1_764_800_000_123_456),
            cleared: false,
        }
    }

    #[test]
    fn fork_alarms_are_kept_one_per_witness_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let records = DirRecords::new(dir.path().to_owned());
        let names = ["w1".to_owned(), "w2".to_owned()];
        assert_eq!(records.alarms(&names).unwrap(), []);
        records.record_alarm(&alarm("w1", "witness_ahead", Some(99))).unwrap();
        records.record_alarm(&alarm("w1", "foreign_cosignature", None)).unwrap();
        records.record_alarm(&alarm("gone", "witness_ahead", Some(1))).unwrap();
        records.record_alarm(&alarm("w2", "witness_ahead", Some(u64::MAX))).unwrap();
        assert_eq!(
            records.alarms(&names).unwrap(),
            [alarm("w1", "foreign_cosignature", None), alarm("w2", "witness_ahead", Some(u64::MAX))]
        );
        records.clear_alarm("w1").unwrap();
        // A restart (a new handle on the same directory) reads what was kept.
        let reopened = DirRecords::new(dir.path().to_owned());
        assert_eq!(
            reopened.alarms(&names).unwrap(),
            [
                AlarmRecord { cleared: true, ..alarm("w1", "foreign_cosignature", None) },
                alarm("w2", "witness_ahead", Some(u64::MAX))
            ]
        );
        assert_eq!(reopened.alarms(&[]).unwrap(), []);
        assert!(matches!(
            reopened.record_alarm(&alarm("w2", "made_up", None)),
            Err(WitnessRecordsError::Malformed(_))
        ));
        assert_eq!(reopened.alarms(&names).unwrap().len(), 2, "a refused alarm changes nothing");
    }

    #[test]
    fn a_damaged_or_oversized_alarms_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let records = DirRecords::new(dir.path().to_owned());
        let path = dir.path().join(ALARMS_FILE);
        for damaged in ["", "{}", "[1]", "[{\"witness\": \"w\"}]", "not json"] {
            std::fs::write(&path, damaged).unwrap();
            assert!(
                matches!(records.alarms(&["w".into()]), Err(WitnessRecordsError::Malformed(_))),
                "{damaged:?}"
            );
            // Nor is it overwritten by a later alarm: what it held is not known.
            assert!(records.record_alarm(&alarm("w", "witness_ahead", None)).is_err());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), damaged);
        }
        std::fs::write(&path, vec![b' '; MAX_ALARMS_BYTES as usize + 1]).unwrap();
        assert_eq!(records.alarms(&[]), Err(WitnessRecordsError::AlarmsTooLarge { limit: MAX_ALARMS_BYTES }));
    }
}
