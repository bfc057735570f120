//! Moving a log between a data dir and a database (`keyledger store copy`).
//!
//! The copy keeps everything that is signed or hashed exactly: the same seqs and the same
//! record bytes (so the same tree and roots), every checkpoint's signed note byte for byte
//! with its signing time, the latest cosigned checkpoint and the witnesses' fork alarms
//! (docs/operations.md, "Witnesses"). The secrets never enter the
//! database: it receives the identity row (origin, verifier key, a check value of the
//! pepper), and the key files are the caller's business (`crates/cli/src/store.rs`).
//!
//! Guarantees: the target must be empty, or nothing is written; the database side is written
//! in one transaction that holds the identity and head tables exclusively, so a failed or
//! concurrent copy (or `init`) leaves the database as it was; rows are streamed in both
//! directions (`COPY … FROM STDIN BINARY` into the database, a cursor out of it), so memory
//! stays bounded whatever the log's length. Verifying the target is the caller's last step
//! ([`crate::verify::verify_store`], or the data dir's `verify_log`).
//!
//! A data dir upgraded from log format 1 keeps checkpoints of its BLAKE3 tree and a
//! transition note, which the database has no place for: it is refused.

use keyledger_core::Timestamp;
use keyledger_log::checkpoint::{
    COSIGNED_FILE, TRANSITION_FILE, decode_record, load_cosigned, store_cosigned,
};
use keyledger_log::segment::{SegmentError, SegmentLog, SegmentOptions};
use keyledger_log::storage::Storage;
use keyledger_log::witnessed::{DirRecords, WitnessRecords};
use keyledger_verify::merkle::{Frontier, Hash, TreeHash};
use keyledger_verify::note::{VerifierKey, open_checkpoint};
use postgres::Client;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use std::path::Path;
use std::sync::Arc;

/// Rows fetched per round trip, and records written per segment batch.
const BATCH_ROWS: i32 = 4096;

/// The log format a database holds.
const LOG_FORMAT: i32 = 2;

pub use crate::identity::pepper_check;

/// The ledger's identity as the database holds it. Nothing in it is secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreIdentity {
    /// The checkpoint origin (the verifier key's name).
    pub origin: String,
    /// The C2SP note verifier key of the signing key.
    pub verifier_key: String,
    /// [`pepper_check`] of the pepper.
    pub pepper_check: [u8; 32],
}

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub events: u64,
    pub checkpoints: u64,
    pub root: Hash,
    pub cosigned: bool,
    /// Fork alarms copied (the latest of each witness).
    pub alarms: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the target database already holds a keyledger ledger or part of one; nothing was copied")]
    TargetNotEmpty,
    #[error("the database holds no keyledger ledger")]
    NoLedger,
    #[error(
        "the data dir's log was upgraded from format 1 (it holds {TRANSITION_FILE}): its BLAKE3 checkpoints cannot be held by a database"
    )]
    UpgradedLog,
    #[error("the source log: {0}")]
    Source(String),
    #[error("the database: {0}")]
    Database(#[from] postgres::Error),
    #[error("the target log: {0}")]
    Target(String),
    #[error("the witnesses' fork alarms: {0}")]
    Alarms(String),
}

impl From<SegmentError> for CopyError {
    fn from(error: SegmentError) -> Self {
        CopyError::Source(error.to_string())
    }
}

/// Copies the log in `log_dir` (a data dir's `log/`, not in use) into the empty database of
/// `client`, with `identity` as its identity row. `progress(done, total)` is called
/// periodically.
pub fn copy_log_to_store(
    storage: Arc<dyn Storage>,
    log_dir: &Path,
    identity: &StoreIdentity,
    client: &mut Client,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport, CopyError> {
    let verifier: VerifierKey =
        identity.verifier_key.parse().map_err(|e| CopyError::Source(format!("verifier key: {e}")))?;
    if keyledger_log::checkpoints_dir(log_dir).join(TRANSITION_FILE).exists() {
        return Err(CopyError::UpgradedLog);
    }
    let (events, _) =
        SegmentLog::inspect(storage.clone(), &keyledger_log::events_dir(log_dir), SegmentOptions::default())?;
    let (checkpoints, _) =
        SegmentLog::inspect(storage, &keyledger_log::checkpoints_dir(log_dir), SegmentOptions::default())?;
    let total = events.len();

    // Read first: a damaged alarms file refuses the copy before anything is written.
    let alarms =
        DirRecords::new(log_dir.to_owned()).stored_alarms().map_err(|e| CopyError::Alarms(e.to_string()))?;

    crate::schema::migrate(client).map_err(|e| CopyError::Source(format!("schema: {e}")))?;
    let mut tx = client.transaction()?;
    tx.batch_execute(
        "LOCK TABLE keyledger_identity, keyledger_head, keyledger_events, keyledger_checkpoints, keyledger_cosigned,
             keyledger_fork_alarms IN ACCESS EXCLUSIVE MODE",
    )?;
    let occupied: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM keyledger_identity) OR EXISTS (SELECT 1 FROM keyledger_head)
                 OR EXISTS (SELECT 1 FROM keyledger_events) OR EXISTS (SELECT 1 FROM keyledger_checkpoints)
                 OR EXISTS (SELECT 1 FROM keyledger_cosigned) OR EXISTS (SELECT 1 FROM keyledger_fork_alarms)",
            &[],
        )?
        .get(0);
    if occupied {
        return Err(CopyError::TargetNotEmpty);
    }
    tx.execute(
        "INSERT INTO keyledger_identity (origin, log_format, verifier_key, pepper_check) VALUES ($1, $2, $3, $4)",
        &[&identity.origin, &LOG_FORMAT, &identity.verifier_key, &identity.pepper_check.as_slice()],
    )?;

    // The events, streamed in binary COPY; the tree recomputed on the way.
    let mut frontier = Frontier::new(TreeHash::Rfc6962);
    {
        let sink = tx.copy_in("COPY keyledger_events (seq, record, leaf) FROM STDIN BINARY")?;
        let mut writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::BYTEA, Type::BYTEA]);
        for record in events.iter(0).take(total as usize) {
            let (seq, bytes) = record?;
            let leaf = TreeHash::Rfc6962.leaf(&bytes);
            let seq_i64 =
                i64::try_from(seq).map_err(|_| CopyError::Source(format!("seq {seq} out of range")))?;
            writer.write(&[&seq_i64, &bytes, &leaf.as_slice()])?;
            frontier.push(leaf);
            if seq.is_multiple_of(65_536) {
                progress(seq, total);
            }
        }
        writer.finish()?;
    }
    progress(total, total);
    let size = i64::try_from(total).map_err(|_| CopyError::Source("too many events".into()))?;
    tx.execute(
        "INSERT INTO keyledger_head (size, root, frontier) VALUES ($1, $2, $3)",
        &[&size, &frontier.root().as_slice(), &frontier.peaks().concat()],
    )?;

    // The checkpoints: each note as signed, with its signing time. A size signed twice (a
    // restart signs the size it stopped at again) is one row: the same note.
    let mut copied = 0u64;
    let mut last: Option<(u64, Hash)> = None;
    for record in checkpoints.iter(0) {
        let (index, bytes) = record?;
        let checkpoint = decode_record(&bytes, &verifier)
            .map_err(|reason| CopyError::Source(format!("checkpoint #{index}: {reason}")))?;
        match last {
            Some((size, root)) if size == checkpoint.size && root == checkpoint.root => continue,
            Some((size, _)) if size >= checkpoint.size => {
                return Err(CopyError::Source(format!(
                    "checkpoint #{index} (size {}) does not extend the one before it (size {size})",
                    checkpoint.size
                )));
            }
            _ => {}
        }
        let size =
            i64::try_from(checkpoint.size).map_err(|_| CopyError::Source("size out of range".into()))?;
        tx.execute(
            "INSERT INTO keyledger_checkpoints (size, root, note, signed_at)
                 VALUES ($1, $2, $3, timestamptz 'epoch' + $4::bigint * interval '1 microsecond')",
            &[&size, &checkpoint.root.as_slice(), &checkpoint.note, &checkpoint.timestamp.0],
        )?;
        last = Some((checkpoint.size, checkpoint.root));
        copied += 1;
    }

    let cosigned = load_cosigned(log_dir).map_err(|e| CopyError::Source(format!("{COSIGNED_FILE}: {e}")))?;
    if let Some(note) = &cosigned {
        let opened = open_checkpoint(note, &verifier)
            .map_err(|e| CopyError::Source(format!("{COSIGNED_FILE}: the log's signature: {e}")))?;
        let size = i64::try_from(opened.size).map_err(|_| CopyError::Source("size out of range".into()))?;
        tx.execute("INSERT INTO keyledger_cosigned (size, note) VALUES ($1, $2)", &[&size, note])?;
    }
    for alarm in &alarms {
        crate::witnessed::upsert_alarm(&mut tx, alarm)
            .map_err(|e| CopyError::Alarms(format!("{}: {e}", alarm.witness)))?;
    }
    tx.commit()?;
    Ok(CopyReport {
        events: total,
        checkpoints: copied,
        root: frontier.root(),
        cosigned: cosigned.is_some(),
        alarms: alarms.len(),
    })
}

/// The identity row of the database `client` is connected to.
pub fn read_identity(client: &mut Client) -> Result<StoreIdentity, CopyError> {
    let present: bool = client.query_one("SELECT to_regclass('keyledger_identity') IS NOT NULL", &[])?.get(0);
    if !present {
        return Err(CopyError::NoLedger);
    }
    let row = client
        .query_opt("SELECT origin, verifier_key, pepper_check FROM keyledger_identity", &[])?
        .ok_or(CopyError::NoLedger)?;
    let check: Vec<u8> = row.get(2);
    Ok(StoreIdentity {
        origin: row.get(0),
        verifier_key: row.get(1),
        pepper_check: check
            .try_into()
            .map_err(|_| CopyError::Source("pepper_check is not 32 bytes".into()))?,
    })
}

/// Copies the database's log into `log_dir` (a new data dir's `log/`, absent or empty): its
/// events and checkpoints as segment logs, its cosigned checkpoint and its fork alarms (none
/// from a database of schema version 1, which has no table for them). The tree is the
/// caller's to build (opening the log recomputes it from the events). Reads one consistent
/// snapshot, so nodes may keep appending meanwhile: the copy is the log as of its start.
pub fn copy_store_to_log(
    client: &mut Client,
    storage: Arc<dyn Storage>,
    log_dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport, CopyError> {
    let target = |e: SegmentError| CopyError::Target(e.to_string());
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let head = tx.query_opt("SELECT size FROM keyledger_head", &[])?;
    let total = head.map_or(0, |row| row.get::<_, i64>(0)).max(0) as u64;

    let (mut events, _) =
        SegmentLog::open(storage.clone(), &keyledger_log::events_dir(log_dir), SegmentOptions::default())
            .map_err(target)?;
    if !events.is_empty() {
        return Err(CopyError::Target(format!("{} already holds events", log_dir.display())));
    }
    let mut frontier = Frontier::new(TreeHash::Rfc6962);
    let portal =
        tx.bind("SELECT seq, record FROM keyledger_events WHERE seq < $1 ORDER BY seq", &[&(total as i64)])?;
    loop {
        let rows = tx.query_portal(&portal, BATCH_ROWS)?;
        let last_batch = rows.len() < BATCH_ROWS as usize;
        let records: Vec<Vec<u8>> = rows
            .iter()
            .map(|row| {
                let seq: i64 = row.get(0);
                if seq as u64 != frontier.size() {
                    return Err(CopyError::Source(format!(
                        "the event row of seq {} is missing",
                        frontier.size()
                    )));
                }
                let record: Vec<u8> = row.get(1);
                frontier.push(TreeHash::Rfc6962.leaf(&record));
                Ok(record)
            })
            .collect::<Result<_, _>>()?;
        if !records.is_empty() {
            let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            events.append_batch(&slices).map_err(target)?;
            progress(frontier.size(), total);
        }
        if last_batch {
            break;
        }
    }
    if frontier.size() != total {
        return Err(CopyError::Source(format!(
            "the head covers {total} events but the database holds {}",
            frontier.size()
        )));
    }
    events.sync().map_err(target)?;
    events.close().map_err(target)?;

    let (mut checkpoints, _) =
        SegmentLog::open(storage, &keyledger_log::checkpoints_dir(log_dir), SegmentOptions::default())
            .map_err(target)?;
    let rows = tx.bind(
        "SELECT (extract(epoch FROM signed_at) * 1000000)::bigint, note FROM keyledger_checkpoints ORDER BY size",
        &[],
    )?;
    let mut copied = 0u64;
    loop {
        let batch = tx.query_portal(&rows, BATCH_ROWS)?;
        let last_batch = batch.len() < BATCH_ROWS as usize;
        for row in &batch {
            let (micros, note): (i64, String) = (row.get(0), row.get(1));
            let mut record = Timestamp(micros).0.to_le_bytes().to_vec();
            record.extend_from_slice(note.as_bytes());
            checkpoints.append_batch(&[&record]).map_err(target)?;
            copied += 1;
        }
        if last_batch {
            break;
        }
    }
    checkpoints.sync().map_err(target)?;
    checkpoints.close().map_err(target)?;

    let cosigned = tx.query_opt("SELECT note FROM keyledger_cosigned ORDER BY size DESC LIMIT 1", &[])?;
    if let Some(row) = &cosigned {
        let note: String = row.get(0);
        store_cosigned(log_dir, &note).map_err(|e| CopyError::Target(format!("{COSIGNED_FILE}: {e}")))?;
    }
    let has_alarms: bool =
        tx.query_one("SELECT to_regclass('keyledger_fork_alarms') IS NOT NULL", &[])?.get(0);
    let alarms = match has_alarms {
        true => {
            crate::witnessed::select_alarms(&mut tx, None).map_err(|e| CopyError::Alarms(e.to_string()))?
        }
        false => Vec::new(),
    };
    let records = DirRecords::new(log_dir.to_owned());
    for alarm in &alarms {
        records.record_alarm(alarm).map_err(|e| CopyError::Alarms(e.to_string()))?;
    }
    tx.commit()?;
    Ok(CopyReport {
        events: total,
        checkpoints: copied,
        root: frontier.root(),
        cosigned: cosigned.is_some(),
        alarms: alarms.len(),
    })
}
