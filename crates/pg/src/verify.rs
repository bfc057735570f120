//! Offline verification of a database-held log (`keyledger log verify --store URL`).
//!
//! Trusts nothing in the database: it reads every event row in seq order, checks that the
//! seqs run from 0 without a gap, that each record decodes canonically to the event at its
//! seq (the data dir's check, [`keyledger_log::verify::check_record`]) and that the stored
//! `leaf` is the SHA-256 leaf hash of the record, recomputes the tree with the verifier's
//! [`Frontier`], and compares the head row (size, root, frontier) with it. Every stored
//! checkpoint must carry a valid signature of the identity's verifier key and the root of
//! the recomputed tree at its size; so must the cosigned checkpoint, if there is one.
//!
//! The whole check reads one `REPEATABLE READ`, read-only snapshot, so it sees one
//! consistent log even while nodes keep appending, and it changes nothing. Rows are fetched
//! through cursors in batches of [`BATCH_ROWS`]: memory stays bounded whatever the log's
//! length. On failure it names the first bad seq where one can be named.

use keyledger_log::verify::{LogVerifyError, check_record};
use keyledger_verify::merkle::{Frontier, Hash, TreeHash};
use keyledger_verify::note::{VerifierKey, open_checkpoint};
use postgres::{Client, Transaction};

/// Rows fetched per round trip from each cursor.
pub const BATCH_ROWS: i32 = 4096;

/// The only log format a database holds (docs/log-format.md, "PostgreSQL store").
const LOG_FORMAT: i32 = 2;

/// A summary of an intact database-held log.
#[derive(Debug, Clone)]
pub struct StoreVerifyReport {
    pub events: u64,
    pub checkpoints: u64,
    pub root: Hash,
    /// The checkpoint origin named by the identity.
    pub origin: String,
    /// The size of the cosigned checkpoint, if the database holds one.
    pub cosigned_size: Option<u64>,
}

/// The first thing found wrong, or why the database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreVerifyError {
    /// A check shared with the data dir's verify: an event, a checkpoint, a shortfall.
    #[error(transparent)]
    Log(#[from] LogVerifyError),
    #[error("the event row of seq {seq} is missing ({found})")]
    Gap { seq: u64, found: String },
    #[error("event {seq}: the stored leaf hash is not the SHA-256 leaf hash of its record")]
    Leaf { seq: u64 },
    #[error("the log head: {reason}")]
    Head { reason: String, first_bad_seq: Option<u64> },
    #[error("the cosigned checkpoint of size {size}: {reason}")]
    Cosigned { size: u64, reason: String },
    #[error("the ledger's identity: {0}")]
    Identity(String),
    #[error("the database: {0}")]
    Database(#[from] postgres::Error),
}

impl StoreVerifyError {
    /// The first sequence number known to be bad, when one can be named.
    pub fn first_bad_seq(&self) -> Option<u64> {
        match self {
            StoreVerifyError::Log(error) => error.first_bad_seq(),
            StoreVerifyError::Gap { seq, .. } | StoreVerifyError::Leaf { seq } => Some(*seq),
            StoreVerifyError::Head { first_bad_seq, .. } => *first_bad_seq,
            StoreVerifyError::Cosigned { size, .. } => Some(size.saturating_sub(1)),
            StoreVerifyError::Identity(_) | StoreVerifyError::Database(_) => None,
        }
    }
}

/// What the identity row says about the log.
struct Identity {
    origin: String,
    verifier: VerifierKey,
}

fn read_identity(tx: &mut Transaction<'_>) -> Result<Identity, StoreVerifyError> {
    let row = tx
        .query_opt("SELECT origin, log_format, verifier_key FROM keyledger_identity", &[])?
        .ok_or_else(|| StoreVerifyError::Identity("the database holds no keyledger ledger".into()))?;
    let (origin, format, key): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
    if format != LOG_FORMAT {
        return Err(StoreVerifyError::Identity(format!("log format {format}, expected {LOG_FORMAT}")));
    }
    let verifier: VerifierKey = key
        .parse()
        .map_err(|e| StoreVerifyError::Identity(format!("the verifier key does not parse: {e}")))?;
    if verifier.name() != Some(origin.as_str()) {
        return Err(StoreVerifyError::Identity(format!(
            "the verifier key is not named after the origin {origin:?}"
        )));
    }
    Ok(Identity { origin, verifier })
}

fn hash32(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

/// A checkpoint row, its signature checked, waiting for the tree to reach its size.
struct PendingCheckpoint {
    index: u64,
    size: u64,
    root: Hash,
}

/// Streams the checkpoint rows (by size) and checks each against the tree at its size.
struct Checkpoints {
    portal: postgres::Portal,
    verifier: VerifierKey,
    /// Rows fetched but not yet reached by the tree.
    buffered: std::collections::VecDeque<PendingCheckpoint>,
    exhausted: bool,
    read: u64,
}

impl Checkpoints {
    fn next(&mut self, tx: &mut Transaction<'_>) -> Result<Option<&PendingCheckpoint>, StoreVerifyError> {
        if self.buffered.is_empty() && !self.exhausted {
            let rows = tx.query_portal(&self.portal, BATCH_ROWS)?;
            self.exhausted = rows.len() < BATCH_ROWS as usize;
            for row in rows {
                let index = self.read;
                self.read += 1;
                let (size, root, note): (i64, Vec<u8>, String) = (row.get(0), row.get(1), row.get(2));
                let bad = |reason: String| LogVerifyError::Checkpoint { index, reason, first_bad_seq: None };
                let size = u64::try_from(size).map_err(|_| bad(format!("negative size {size}")))?;
                let checkpoint = open_checkpoint(&note, &self.verifier)
                    .map_err(|e| bad(format!("size {size}: the note does not verify: {e}")))?;
                if checkpoint.size != size || hash32(&root) != Some(checkpoint.root) {
                    return Err(
                        bad(format!("size {size}: its row's size or root is not the signed note's")).into()
                    );
                }
                self.buffered.push_back(PendingCheckpoint { index, size, root: checkpoint.root });
            }
        }
        Ok(self.buffered.front())
    }

    /// Checks every checkpoint of the frontier's size against its root.
    fn check(&mut self, tx: &mut Transaction<'_>, frontier: &Frontier) -> Result<(), StoreVerifyError> {
        while let Some(pending) = self.next(tx)? {
            if pending.size != frontier.size() {
                return Ok(());
            }
            if pending.root != frontier.root() {
                let size = pending.size;
                return Err(LogVerifyError::Checkpoint {
                    index: pending.index,
                    reason: format!("its root does not match the events' tree at size {size}"),
                    first_bad_seq: Some(size.saturating_sub(1)),
                }
                .into());
            }
            self.buffered.pop_front();
        }
        Ok(())
    }
}

/// Verifies the whole log held by the database `client` is connected to. `progress(done,
/// total)` is called periodically (total: the head's size).
pub fn verify_store(
    client: &mut Client,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<StoreVerifyReport, StoreVerifyError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let identity = read_identity(&mut tx)?;
    let head = tx.query_opt("SELECT size, root, frontier FROM keyledger_head", &[])?;
    let (head_size, head_root, head_frontier): (i64, Vec<u8>, Vec<u8>) = match &head {
        Some(row) => (row.get(0), row.get(1), row.get(2)),
        None => (0, TreeHash::Rfc6962.empty_root().to_vec(), Vec::new()),
    };
    let total = u64::try_from(head_size).unwrap_or(0);

    let events = tx.bind("SELECT seq, record, leaf FROM keyledger_events ORDER BY seq", &[])?;
    let portal = tx.bind("SELECT size, root, note FROM keyledger_checkpoints ORDER BY size", &[])?;
    let mut checkpoints = Checkpoints {
        portal,
        verifier: identity.verifier.clone(),
        buffered: Default::default(),
        exhausted: false,
        read: 0,
    };
    let cosigned =
        match tx.query_opt("SELECT size, note FROM keyledger_cosigned ORDER BY size DESC LIMIT 1", &[])? {
            Some(row) => {
                let (size, note): (i64, String) = (row.get(0), row.get(1));
                let size = u64::try_from(size).unwrap_or(0);
                let opened = open_checkpoint(&note, &identity.verifier).map_err(|e| {
                    StoreVerifyError::Cosigned { size, reason: format!("the log's signature: {e}") }
                })?;
                if opened.size != size {
                    return Err(StoreVerifyError::Cosigned {
                        size,
                        reason: format!("its note is of size {}", opened.size),
                    });
                }
                Some((size, opened.root))
            }
            None => None,
        };

    let mut frontier = Frontier::new(TreeHash::Rfc6962);
    let mut cosigned_checked = false;
    let mut check_cosigned = |frontier: &Frontier| -> Result<(), StoreVerifyError> {
        if let Some((size, root)) = cosigned
            && size == frontier.size()
        {
            if root != frontier.root() {
                let reason = "its root does not match the events' tree at its size".into();
                return Err(StoreVerifyError::Cosigned { size, reason });
            }
            cosigned_checked = true;
        }
        Ok(())
    };
    checkpoints.check(&mut tx, &frontier)?;
    check_cosigned(&frontier)?;
    loop {
        let rows = tx.query_portal(&events, BATCH_ROWS)?;
        let last_batch = rows.len() < BATCH_ROWS as usize;
        for row in rows {
            let expected = frontier.size();
            let (seq, record, leaf): (i64, Vec<u8>, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
            if seq != expected as i64 {
                let found = format!("the next stored row is seq {seq}");
                return Err(StoreVerifyError::Gap { seq: expected, found });
            }
            check_record(expected, &record)?;
            let computed = TreeHash::Rfc6962.leaf(&record);
            if hash32(&leaf) != Some(computed) {
                return Err(StoreVerifyError::Leaf { seq: expected });
            }
            frontier.push(computed);
            checkpoints.check(&mut tx, &frontier)?;
            check_cosigned(&frontier)?;
            if expected.is_multiple_of(65_536) {
                progress(expected, total);
            }
        }
        if last_batch {
            break;
        }
    }
    let events_read = frontier.size();
    progress(events_read, total.max(events_read));

    // The head must be this tree exactly: a shorter log than the head is missing its end.
    if total > events_read {
        let reason = format!("it covers {total} events but the database holds {events_read}");
        return Err(StoreVerifyError::Head { reason, first_bad_seq: Some(events_read) });
    }
    if total < events_read {
        let reason =
            format!("it covers {total} events but the database holds {events_read}: rows beyond the head");
        return Err(StoreVerifyError::Head { reason, first_bad_seq: Some(total) });
    }
    if head.is_some() && hash32(&head_root) != Some(frontier.root()) {
        let reason = "its root is not the events' tree root".into();
        return Err(StoreVerifyError::Head { reason, first_bad_seq: None });
    }
    if head.is_some() && head_frontier != frontier.peaks().concat() {
        let reason = "its frontier is not the events' tree's compact range".into();
        return Err(StoreVerifyError::Head { reason, first_bad_seq: None });
    }
    // A checkpoint left over is beyond the events: the log lost its end.
    if let Some(pending) = checkpoints.next(&mut tx)? {
        return Err(LogVerifyError::Missing {
            events: events_read,
            covered: pending.size,
            what: "a signed checkpoint",
        }
        .into());
    }
    if let Some((size, _)) = cosigned
        && !cosigned_checked
    {
        return Err(LogVerifyError::Missing {
            events: events_read,
            covered: size,
            what: "the cosigned checkpoint",
        }
        .into());
    }
    let report = StoreVerifyReport {
        events: events_read,
        checkpoints: checkpoints.read,
        root: frontier.root(),
        origin: identity.origin,
        cosigned_size: cosigned.map(|(size, _)| size),
    };
    tx.commit()?;
    Ok(report)
}
