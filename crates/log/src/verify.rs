//! Offline verification of a whole log directory (`keyledger log verify`).
//!
//! Trusts nothing on disk: re-reads every frame (CRC), decodes every event (canonical form,
//! seq = position), recomputes every leaf and node hash and compares the stored tree with
//! them, and checks every stored checkpoint's signature and root. It changes nothing, and on
//! failure names the first bad seq (or tree node, or checkpoint).

use crate::checkpoint::decode_record;
use crate::segment::{SegmentError, SegmentLog, SegmentOptions};
use crate::storage::Storage;
use crate::tree::{LOWEST_STORED_LEVEL, level_path, read_state};
use keyledger_core::decode_event;
use keyledger_verify::merkle::{Frontier, Hash, leaf_hash};
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

/// Verifies the log in `log_dir` against `verifier`. `progress(done, total)` is called
/// periodically.
pub fn verify_log(
    storage: Arc<dyn Storage>,
    log_dir: &Path,
    verifier: &VerifierKey,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<LogVerifyReport, LogVerifyError> {
    let (events, recovery) =
        SegmentLog::inspect(storage.clone(), &log_dir.join("events"), SegmentOptions::default())?;
    let total = events.len();

    // Checkpoints: every signature must verify; sizes never decrease.
    let checkpoint_error = |index: u64, error: SegmentError| LogVerifyError::Checkpoint {
        index,
        reason: format!("the checkpoint log is damaged: {error}"),
        first_bad_seq: None,
    };
    let (checkpoint_reader, checkpoint_recovery) =
        SegmentLog::inspect(storage, &log_dir.join("checkpoints"), SegmentOptions::default())
            .map_err(|e| checkpoint_error(0, e))?;
    let mut checkpoints = Vec::new();
    for (position, record) in checkpoint_reader.iter(0).enumerate() {
        let (index, bytes) = record.map_err(|e| checkpoint_error(position as u64, e))?;
        let checkpoint = decode_record(&bytes, verifier).map_err(|reason| LogVerifyError::Checkpoint {
            index,
            reason,
            first_bad_seq: None,
        })?;
        if let Some((_, previous)) = checkpoints.last()
            && checkpoint.size < *previous
        {
            return Err(LogVerifyError::Checkpoint {
                index,
                reason: format!("size {} is below the previous checkpoint's {previous}", checkpoint.size),
                first_bad_seq: None,
            });
        }
        checkpoints.push((checkpoint.root, checkpoint.size));
    }

    // The stored tree is trusted (and so checked) up to the size recorded in its state file.
    let tree_dir = log_dir.join("tree");
    let tree_size = read_state(&tree_dir).map_err(|e| LogVerifyError::Storage(e.to_string()))?;
    let mut levels: Vec<StoredLevel> = Vec::new();

    let mut frontier = Frontier::default();
    let mut next_checkpoint = 0usize;
    let check_root = |frontier: &Frontier, next: &mut usize| -> Result<(), LogVerifyError> {
        while let Some(&(root, size)) = checkpoints.get(*next) {
            if size != frontier.size() {
                break;
            }
            if root != frontier.root() {
                return Err(LogVerifyError::Checkpoint {
                    index: *next as u64,
                    reason: format!("its root does not match the events' tree at size {size}"),
                    first_bad_seq: Some(size.saturating_sub(1)),
                });
            }
            *next += 1;
        }
        Ok(())
    };
    check_root(&frontier, &mut next_checkpoint)?;
    for record in events.iter(0) {
        let (seq, bytes) = record?;
        let event = decode_event(&bytes).map_err(|e| LogVerifyError::Event { seq, reason: e.to_string() })?;
        if event.seq != seq {
            return Err(LogVerifyError::Event {
                seq,
                reason: format!(
                    "carries seq {} at position {seq}: an event was removed or inserted",
                    event.seq
                ),
            });
        }
        let leaf = leaf_hash(&bytes);
        if seq < tree_size {
            compare_completed_nodes(&mut levels, &tree_dir, &frontier, leaf, seq)?;
        }
        frontier.push(leaf);
        check_root(&frontier, &mut next_checkpoint)?;
        if seq % 65_536 == 0 {
            progress(seq, total);
        }
    }
    progress(total, total);
    // Only now, with every present event checked, can a shortfall be blamed on the end.
    if let Some(&(_, size)) = checkpoints.last()
        && size > total
    {
        return Err(LogVerifyError::Missing {
            events: total,
            covered: size,
            what: "the latest signed checkpoint",
        });
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
    })
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
        node = keyledger_verify::merkle::node_hash(&left, &node);
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
