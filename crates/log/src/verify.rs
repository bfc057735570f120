//! Offline verification of a whole log directory (`keyledger log verify`).
//!
//! Trusts nothing on disk: re-reads every frame (CRC), decodes every event (canonical form,
//! seq = position), recomputes every leaf and node hash and compares the stored tree with
//! them, and checks every stored checkpoint's signature and root. It changes nothing, and on
//! failure names the first bad seq (or tree node, or checkpoint).
//!
//! The tree is hashed as the log's format says ([`TreeHash`]). In a log upgraded from
//! format 1 it also opens the transition note (docs/log-format.md, "The transition note"),
//! recomputes the BLAKE3 tree of the events it covers, and checks that note's two roots and
//! every checkpoint signed before the upgrade against that BLAKE3 tree. A stored tree whose
//! files name another hash is not compared: it is recomputed at the next start.

use crate::checkpoint::{TRANSITION_FILE, decode_record, read_transition};
use crate::segment::{SegmentError, SegmentLog, SegmentOptions};
use crate::storage::Storage;
use crate::tree::{LOWEST_STORED_LEVEL, level_path, read_hash, read_state};
use keyledger_core::decode_event;
use keyledger_verify::merkle::{Frontier, Hash, TreeHash};
use keyledger_verify::note::VerifierKey;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

/// A summary of an intact log.
#[derive(Debug, Clone)]
pub struct LogVerifyReport {
    pub events: u64,
    pub checkpoints: u64,
    pub root: Hash,
    /// Bytes after the last complete batch, which the next start will cut (a crash's
    /// unacknowledged tail, not damage).
    pub torn_tail_bytes: u64,
    /// The same for the checkpoint log (a checkpoint whose write a crash interrupted).
    pub torn_checkpoint_bytes: u64,
    /// How the tree is hashed.
    pub tree_hash: TreeHash,
    /// The size at which the log was upgraded from format 1, if it was (its transition note
    /// verified).
    pub transition_size: Option<u64>,
}

/// The first thing found wrong.
#[derive(Debug, thiserror::Error)]
pub enum LogVerifyError {
    #[error("event {seq}: {reason}")]
    Event { seq: u64, reason: String },
    #[error(
        "stored tree node (level {level}, index {index}), covering events from {first_seq}, does not match the events"
    )]
    Node { level: u32, index: u64, first_seq: u64 },
    #[error("checkpoint #{index}: {reason}")]
    Checkpoint { index: u64, reason: String, first_bad_seq: Option<u64> },
    #[error(
        "the log has {events} events but {what} covers {covered}: events from seq {events} on are missing"
    )]
    Missing { events: u64, covered: u64, what: &'static str },
    #[error("{0}")]
    Storage(String),
}

impl LogVerifyError {
    /// The first sequence number known to be bad, when one can be named.
    pub fn first_bad_seq(&self) -> Option<u64> {
        match self {
            LogVerifyError::Event { seq, .. } => Some(*seq),
            LogVerifyError::Node { first_seq, .. } => Some(*first_seq),
            LogVerifyError::Checkpoint { first_bad_seq, .. } => *first_bad_seq,
            LogVerifyError::Missing { events, .. } => Some(*events),
            LogVerifyError::Storage(_) => None,
        }
    }
}

impl From<SegmentError> for LogVerifyError {
    fn from(error: SegmentError) -> Self {
        match error {
            SegmentError::Corrupt { seq, .. } => LogVerifyError::Event { seq, reason: error.to_string() },
            other => LogVerifyError::Storage(other.to_string()),
        }
    }
}

/// Streams one stored tree level, comparing it with recomputed nodes in order.
struct StoredLevel {
    reader: Option<BufReader<File>>,
}

/// Checkpoints of one tree hash, matched against that tree's roots as the events go by.
struct Roots {
    /// `(stored index, root, size)` in stored order; no index for the transition note.
    checkpoints: Vec<(Option<u64>, Hash, u64)>,
    next: usize,
}

impl Roots {
    /// Checks every checkpoint of the frontier's size against its root.
    fn check(&mut self, frontier: &Frontier) -> Result<(), LogVerifyError> {
        while let Some(&(index, root, size)) = self.checkpoints.get(self.next) {
            if size != frontier.size() {
                break;
            }
            if root != frontier.root() {
                let tree = frontier.tree_hash().name();
                return Err(LogVerifyError::Checkpoint {
                    index: index.unwrap_or(0),
                    reason: match index {
                        Some(_) => format!("its root does not match the events' {tree} tree at size {size}"),
                        None => format!(
                            "the transition note ({TRANSITION_FILE}): its {tree} root does not match the events' {tree} tree at size {size}"
                        ),
                    },
                    first_bad_seq: Some(size.saturating_sub(1)),
                });
            }
            self.next += 1;
        }
        Ok(())
    }
}

/// Verifies the log in `log_dir`, whose tree is hashed with `tree_hash`, against
/// `verifier`. `progress(done, total)` is called periodically.
pub fn verify_log(
    storage: Arc<dyn Storage>,
    log_dir: &Path,
    verifier: &VerifierKey,
    tree_hash: TreeHash,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<LogVerifyReport, LogVerifyError> {
    let (events, recovery) =
        SegmentLog::inspect(storage.clone(), &crate::events_dir(log_dir), SegmentOptions::default())?;
    let total = events.len();

    // Checkpoints: every signature must verify; sizes never decrease.
    let checkpoint_error = |index: u64, error: SegmentError| LogVerifyError::Checkpoint {
        index,
        reason: format!("the checkpoint log is damaged: {error}"),
        first_bad_seq: None,
    };
    let (checkpoint_reader, checkpoint_recovery) =
        SegmentLog::inspect(storage, &crate::checkpoints_dir(log_dir), SegmentOptions::default())
            .map_err(|e| checkpoint_error(0, e))?;
    let mut checkpoints = Vec::new();
    for (position, record) in checkpoint_reader.iter(0).enumerate() {
        let (index, bytes) = record.map_err(|e| checkpoint_error(position as u64, e))?;
        let checkpoint = decode_record(&bytes, verifier).map_err(|reason| LogVerifyError::Checkpoint {
            index,
            reason,
            first_bad_seq: None,
        })?;
        if let Some(previous) = checkpoints.last().map(|c: &crate::checkpoint::StoredCheckpoint| c.size)
            && checkpoint.size < previous
        {
            return Err(LogVerifyError::Checkpoint {
                index,
                reason: format!("size {} is below the previous checkpoint's {previous}", checkpoint.size),
                first_bad_seq: None,
            });
        }
        checkpoints.push(checkpoint);
    }

    // An upgraded log: the checkpoints before the transition are of the BLAKE3 tree.
    let transition = match tree_hash {
        TreeHash::Rfc6962 => read_transition(&crate::checkpoints_dir(log_dir), verifier).map_err(|e| {
            LogVerifyError::Checkpoint { index: 0, reason: e.to_string(), first_bad_seq: None }
        })?,
        TreeHash::Blake3 => None,
    };
    let mut current = Roots { checkpoints: Vec::new(), next: 0 };
    let mut format1 = Roots { checkpoints: Vec::new(), next: 0 };
    for (index, checkpoint) in (0u64..).zip(&checkpoints) {
        let entry = (Some(index), checkpoint.root, checkpoint.size);
        match &transition {
            // Every checkpoint before the first of the SHA-256 tree (beyond the transition's
            // size, or at it with its SHA-256 root) is checked against the BLAKE3 tree.
            Some(t)
                if current.checkpoints.is_empty()
                    && (checkpoint.size < t.size
                        || (checkpoint.size == t.size && checkpoint.root != t.sha256_root)) =>
            {
                format1.checkpoints.push(entry)
            }
            _ => current.checkpoints.push(entry),
        }
    }
    let transition_error = |reason: String| LogVerifyError::Checkpoint {
        index: checkpoints.len() as u64,
        reason: format!("the transition note ({TRANSITION_FILE}): {reason}"),
        first_bad_seq: None,
    };
    // The transition's two roots are checkpoints of their trees at its size.
    if let Some(t) = &transition {
        if t.origin != verifier.name().unwrap_or(&t.origin) {
            return Err(transition_error(format!("its origin {:?} is not the log's", t.origin)));
        }
        format1.checkpoints.push((None, t.blake3_root, t.size));
        let at = current.checkpoints.partition_point(|&(_, _, size)| size < t.size);
        current.checkpoints.insert(at, (None, t.sha256_root, t.size));
    }

    // The stored tree is trusted (and so checked) up to the size recorded in its state file,
    // if its files hold this hash (else the next start recomputes them).
    let tree_dir = crate::tree_dir(log_dir);
    let tree_size = match read_hash(&tree_dir) {
        Ok(stored) if stored == tree_hash => {
            read_state(&tree_dir).map_err(|e| LogVerifyError::Storage(e.to_string()))?
        }
        Ok(_) => 0,
        Err(e) => return Err(LogVerifyError::Storage(e.to_string())),
    };
    let mut levels: Vec<StoredLevel> = Vec::new();

    let mut frontier = Frontier::new(tree_hash);
    let mut old_frontier = Frontier::new(TreeHash::Blake3);
    let format1_size = transition.as_ref().map_or(0, |t| t.size);
    current.check(&frontier)?;
    if transition.is_some() {
        format1.check(&old_frontier)?;
    }
    for record in events.iter(0) {
        let (seq, bytes) = record?;
        check_record(seq, &bytes)?;
        let leaf = tree_hash.leaf(&bytes);
        if seq < tree_size {
            compare_completed_nodes(&mut levels, &tree_dir, &frontier, leaf, seq)?;
        }
        frontier.push(leaf);
        current.check(&frontier)?;
        if seq < format1_size {
            old_frontier.push(TreeHash::Blake3.leaf(&bytes));
            format1.check(&old_frontier)?;
        }
        if seq % 65_536 == 0 {
            progress(seq, total);
        }
    }
    progress(total, total);
    // Only now, with every present event checked, can a shortfall be blamed on the end.
    if let Some(checkpoint) = checkpoints.last()
        && checkpoint.size > total
    {
        return Err(LogVerifyError::Missing {
            events: total,
            covered: checkpoint.size,
            what: "the latest signed checkpoint",
        });
    }
    if let Some(t) = &transition
        && t.size > total
    {
        return Err(LogVerifyError::Missing { events: total, covered: t.size, what: "the transition note" });
    }
    // Every checkpoint was matched above (their sizes are in order and reached); a checkpoint
    // left over would be one no tree was compared with.
    for roots in [&format1, &current] {
        if let Some(&(index, _, size)) = roots.checkpoints.get(roots.next) {
            return Err(LogVerifyError::Checkpoint {
                index: index.unwrap_or(0),
                reason: format!("its size {size} was never compared with the events' tree"),
                first_bad_seq: None,
            });
        }
    }
    if tree_size > total {
        return Err(LogVerifyError::Missing { events: total, covered: tree_size, what: "the stored tree" });
    }
    Ok(LogVerifyReport {
        events: total,
        checkpoints: checkpoints.len() as u64,
        root: frontier.root(),
        torn_tail_bytes: recovery.truncated_bytes,
        torn_checkpoint_bytes: checkpoint_recovery.truncated_bytes,
        tree_hash,
        transition_size: transition.map(|t| t.size),
    })
}

/// Checks the stored bytes of the event at position `seq`: they decode, in the one canonical
/// encoding, to an event that carries `seq`. The same check for every store (the data dir's
/// segments here, the database's rows in `keyledger-pg`'s verify).
pub fn check_record(seq: u64, bytes: &[u8]) -> Result<keyledger_core::Event, LogVerifyError> {
    let event = decode_event(bytes).map_err(|e| LogVerifyError::Event { seq, reason: e.to_string() })?;
    if event.seq != seq {
        return Err(LogVerifyError::Event {
            seq,
            reason: format!("carries seq {} at position {seq}: an event was removed or inserted", event.seq),
        });
    }
    Ok(event)
}

/// Compares the nodes that leaf `seq` completes with the stored ones, level by level.
fn compare_completed_nodes(
    levels: &mut Vec<StoredLevel>,
    tree_dir: &Path,
    frontier: &Frontier,
    leaf: Hash,
    seq: u64,
) -> Result<(), LogVerifyError> {
    // Recompute the nodes completed by this leaf: the leaf itself, then its parent for every
    // trailing one-bit of `seq` (peaks of the frontier are the left siblings, right to left).
    // Levels below the lowest stored one are not on disk (nor read if an older version left
    // them there): they are the leaves and their first parents, recomputed here anyway.
    let peaks = frontier.peaks();
    let mut node = leaf;
    let mut level = 0u32;
    loop {
        if level >= LOWEST_STORED_LEVEL {
            compare_one(levels, tree_dir, level, seq >> level, node)?;
        }
        if (seq >> level) & 1 == 0 {
            return Ok(());
        }
        let left = peaks[peaks.len() - 1 - level as usize];
        node = frontier.tree_hash().node(&left, &node);
        level += 1;
    }
}

fn compare_one(
    levels: &mut Vec<StoredLevel>,
    tree_dir: &Path,
    level: u32,
    index: u64,
    node: Hash,
) -> Result<(), LogVerifyError> {
    let at = (level - LOWEST_STORED_LEVEL) as usize;
    while levels.len() <= at {
        let path = level_path(tree_dir, levels.len() + LOWEST_STORED_LEVEL as usize);
        levels.push(StoredLevel {
            reader: File::open(path).ok().map(|f| BufReader::with_capacity(1 << 16, f)),
        });
    }
    let mut stored = [0u8; 32];
    let readable = levels[at].reader.as_mut().is_some_and(|r| r.read_exact(&mut stored).is_ok());
    if !readable || stored != node {
        return Err(LogVerifyError::Node { level, index, first_seq: index << level });
    }
    Ok(())
}
