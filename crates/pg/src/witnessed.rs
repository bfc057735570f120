//! [`PgWitnessRecords`]: what the witnesses said of the log, in the database, so every node
//! serves it (keyledger_log::witnessed; docs/architecture.md, "The log store seam").
//!
//! The node holding the `jobs` lease writes; every node reads. Tables:
//!
//! - `keyledger_cosigned` (schema version 1): one row, the latest cosigned checkpoint. A
//!   write replaces it in one transaction holding the table in `SHARE ROW EXCLUSIVE` mode
//!   (writers queue, readers and `store verify` do not wait), and keeps the stored row if it
//!   is of a larger size: a node that lost the lease while a request was under way never
//!   takes the database back to an older checkpoint. `store verify` checks that row against
//!   the log (crate::verify).
//! - `keyledger_fork_alarms` (version 2): the latest alarm per witness, upserted.
//!
//! Reads are bounded: the note is sent only if it is at most
//! [`MAX_COSIGNED_BYTES`] long (checked by the database), and alarms only for the witnesses
//! asked about, one row each (`store copy` asks for all: at most [`MAX_ALARMS`]). The
//! connection is its own (the writer's is inside batches), opened on first use and again
//! after a failure. Like every synchronous client here, it
//! is used from threads of its own, never from an async runtime's.

use crate::error::describe;
use crate::session::Session;
use keyledger_core::Timestamp;
use keyledger_log::checkpoint::MAX_COSIGNED_BYTES;
use keyledger_log::witnessed::{AlarmRecord, WitnessRecords, WitnessRecordsError};
use postgres::{Client, Config};

/// The witness records of the database `config` connects to.
pub struct PgWitnessRecords {
    session: Session,
}

impl std::fmt::Debug for PgWitnessRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the connection string: it may hold a password.
        f.debug_struct("PgWitnessRecords").finish_non_exhaustive()
    }
}

fn unavailable(error: postgres::Error) -> WitnessRecordsError {
    WitnessRecordsError::Unavailable(describe(&error))
}

fn to_i64(value: u64, what: &str) -> Result<i64, WitnessRecordsError> {
    i64::try_from(value).map_err(|_| WitnessRecordsError::Malformed(format!("{what} {value} out of range")))
}

fn to_u64(value: i64, what: &str) -> Result<u64, WitnessRecordsError> {
    u64::try_from(value).map_err(|_| WitnessRecordsError::Malformed(format!("negative {what} {value}")))
}

impl PgWitnessRecords {
    /// Records reached with `config` (see [`crate::store::parse_config`]); connects on first
    /// use.
    pub fn new(config: Config) -> Self {
        Self { session: Session::new(config) }
    }

    /// Runs `op` on the session's connection.
    fn run<T>(
        &self,
        op: impl FnOnce(&mut Client) -> Result<T, WitnessRecordsError>,
    ) -> Result<T, WitnessRecordsError> {
        self.session.run(|e| WitnessRecordsError::Unavailable(e.to_string()), op)
    }
}

impl WitnessRecords for PgWitnessRecords {
    fn is_shared(&self) -> bool {
        true
    }

    fn cosigned(&self) -> Result<Option<String>, WitnessRecordsError> {
        let limit = MAX_COSIGNED_BYTES as i64;
        let row = self.run(|c| {
            c.query_opt(
                "SELECT CASE WHEN octet_length(note)::bigint <= $1 THEN note END
                 FROM keyledger_cosigned ORDER BY size DESC LIMIT 1",
                &[&limit],
            )
            .map_err(unavailable)
        })?;
        match row {
            None => Ok(None),
            Some(row) => match row.get::<_, Option<String>>(0) {
                Some(note) => Ok(Some(note)),
                None => Err(WitnessRecordsError::TooLarge { limit: MAX_COSIGNED_BYTES }),
            },
        }
    }

    fn store_cosigned(&self, size: u64, note: &str) -> Result<(), WitnessRecordsError> {
        let size = to_i64(size, "size")?;
        self.run(|c| {
            let mut tx = c.transaction().map_err(unavailable)?;
            tx.batch_execute("LOCK TABLE keyledger_cosigned IN SHARE ROW EXCLUSIVE MODE")
                .map_err(unavailable)?;
            let larger: bool = tx
                .query_one("SELECT EXISTS (SELECT 1 FROM keyledger_cosigned WHERE size > $1)", &[&size])
                .map_err(unavailable)?
                .get(0);
            if !larger {
                tx.execute("DELETE FROM keyledger_cosigned WHERE size <> $1", &[&size])
                    .map_err(unavailable)?;
                tx.execute(
                    "INSERT INTO keyledger_cosigned (size, note) VALUES ($1, $2)
                     ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note",
                    &[&size, &note],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
    }

    fn alarms(&self, witnesses: &[String]) -> Result<Vec<AlarmRecord>, WitnessRecordsError> {
        if witnesses.is_empty() {
            return Ok(Vec::new());
        }
        self.run(|c| select_alarms(c, Some(witnesses)))
    }

    fn record_alarm(&self, alarm: &AlarmRecord) -> Result<(), WitnessRecordsError> {
        self.run(|c| upsert_alarm(c, alarm))
    }

    fn clear_alarm(&self, witness: &str) -> Result<(), WitnessRecordsError> {
        self.run(|c| {
            c.execute(
                "UPDATE keyledger_fork_alarms SET cleared = true WHERE witness = $1 AND NOT cleared",
                &[&witness],
            )
            .map(drop)
            .map_err(unavailable)
        })
    }
}

/// Most alarms read when all are asked for ([`select_alarms`] without names, by `store
/// copy`): one per witness ever configured, far fewer in practice.
pub const MAX_ALARMS: i64 = 1024;

/// The stored alarms of `witnesses` (one row each), or of every witness (more than
/// [`MAX_ALARMS`] is an error, never a silent cut), ordered by witness.
pub(crate) fn select_alarms(
    c: &mut impl postgres::GenericClient,
    witnesses: Option<&[String]>,
) -> Result<Vec<AlarmRecord>, WitnessRecordsError> {
    const COLUMNS: &str = "SELECT witness, kind, log_size, log_root, witness_size,
                (extract(epoch FROM detected_at) * 1000000)::bigint, cleared
         FROM keyledger_fork_alarms";
    let rows = match witnesses {
        Some(names) => {
            let limit = i64::try_from(names.len()).unwrap_or(i64::MAX);
            c.query(
                &format!("{COLUMNS} WHERE witness = ANY($1) ORDER BY witness LIMIT $2"),
                &[&names, &limit],
            )
        }
        None => c.query(&format!("{COLUMNS} ORDER BY witness LIMIT $1"), &[&(MAX_ALARMS + 1)]),
    }
    .map_err(unavailable)?;
    if witnesses.is_none() && rows.len() as i64 > MAX_ALARMS {
        return Err(WitnessRecordsError::Malformed(format!("more than {MAX_ALARMS} fork alarms are stored")));
    }
    rows.into_iter()
        .map(|row| {
            let root: Vec<u8> = row.get(3);
            Ok(AlarmRecord {
                witness: row.get(0),
                kind: row.get(1),
                log_size: to_u64(row.get(2), "log size")?,
                log_root: root
                    .try_into()
                    .map_err(|_| WitnessRecordsError::Malformed("an alarm's root is not 32 bytes".into()))?,
                witness_size: row
                    .get::<_, Option<i64>>(4)
                    .map(|size| to_u64(size, "witness size"))
                    .transpose()?,
                detected_at: Timestamp(row.get(5)),
                cleared: row.get(6),
            })
        })
        .collect()
}

/// Keeps `alarm` as its witness's latest.
pub(crate) fn upsert_alarm(
    c: &mut impl postgres::GenericClient,
    alarm: &AlarmRecord,
) -> Result<(), WitnessRecordsError> {
    let log_size = to_i64(alarm.log_size, "log size")?;
    let witness_size = alarm.witness_size.map(|size| to_i64(size, "witness size")).transpose()?;
    let micros = alarm.detected_at.micros();
    c.execute(
        "INSERT INTO keyledger_fork_alarms
             (witness, kind, log_size, log_root, witness_size, detected_at, cleared)
         VALUES ($1, $2, $3, $4, $5, to_timestamp(0) + $6::bigint * interval '1 microsecond', $7)
         ON CONFLICT (witness) DO UPDATE SET kind = EXCLUDED.kind, log_size = EXCLUDED.log_size,
             log_root = EXCLUDED.log_root, witness_size = EXCLUDED.witness_size,
             detected_at = EXCLUDED.detected_at, cleared = EXCLUDED.cleared",
        &[
            &alarm.witness,
            &alarm.kind,
            &log_size,
            &alarm.log_root.as_slice(),
            &witness_size,
            &micros,
            &alarm.cleared,
        ],
    )
    .map(drop)
    .map_err(unavailable)
}
