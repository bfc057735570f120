//! The projector thread: folds the writer's durable batches into the redb projections.
//!
//! The writer hands every durable batch to a bounded queue and never waits for it; this
//! thread gathers those batches (usage events for up to a second, lifecycle events at once
//! with whatever else is already queued, or sooner when an audit read waits for them),
//! applies them to every projection in one redb transaction, and announces how far it got.
//! It exists apart from the engine so that the engine only composes it:
//! [`Projector::start`] spawns the thread and [`Projector::stopper`] stops it, the way the
//! webhook service starts and stops its own.
//!
//! **Guarantees.**
//! - Only durable events are projected, in seq order, each once: a batch the writer skipped
//!   (full queue) is read back from the log, and events already applied are skipped by
//!   the cursors.
//! - Memory is bounded by the queue (in batches and in events, `keyledger_log::handoff`) and
//!   by the most events one transaction applies, whatever the load.
//! - A redb failure never stops the thread: it reopens the database with backoff and
//!   catches up from the log, which stays the truth.
//! - It runs at a lower CPU priority than the request path ([`crate::background`]): its
//!   bursts do not hold up verifications on busy cores.
//! - A clean stop persists the projections, then compacts their file if it grew enough
//!   since it was opened (never on open, so a start stays proportional to the registry).
//!
//! See docs/architecture.md (the ledger's invariants on projections).

use crate::error::LedgerError;
use crate::projection::{Projections, ProjectionsDb};
use keyledger_log::{CommittedEvents, LogReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the projector reads from and reports to.
pub(crate) struct Feed {
    /// The writer's durable batches (a bounded queue; the writer skips a batch when full).
    pub events: keyledger_log::HandoffReceiver,
    /// The next seq the projections expect, announced after each transaction.
    pub applied: watch::Sender<u64>,
    /// The log, to read what the writer did not hand over.
    pub log: LogReader,
    /// The writer's durable length.
    pub committed: watch::Receiver<u64>,
    /// The seq an audit read waits for: events held below it are applied at once.
    pub demand: Arc<AtomicU64>,
}

/// The running projector thread of an engine.
pub(crate) struct Projector {
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    db: ProjectionsDb,
    path: PathBuf,
    /// The size of the projections file when it was opened (see [`should_compact`]).
    len_at_open: u64,
}

impl Projector {
    /// Spawns the thread, which owns `projections` until it stops.
    pub(crate) fn start(projections: Projections, feed: Feed) -> Result<Self, LedgerError> {
        let db = projections.database();
        let path = projections.path().to_owned();
        let len_at_open = projections.len_at_open();
        let thread = std::thread::Builder::new()
            .name("keyledger-projector".into())
            .spawn(move || run(projections, feed))
            .map_err(|e| LedgerError::Internal(format!("cannot start the projector: {e}")))?;
        Ok(Self { thread: Mutex::new(Some(thread)), db, path, len_at_open })
    }

    /// What stops the projections once the writer has stopped (so the projector has seen its
    /// last batch): joins the thread, which persists the projections, then compacts the file
    /// if it grew enough ([`compact`]). Blocking; async callers run it on a blocking thread.
    pub(crate) fn stopper(&self) -> impl FnOnce() + Send + 'static {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (db, path, len_at_open) = (self.db.clone(), self.path.clone(), self.len_at_open);
        move || {
            if let Some(thread) = thread {
                let _ = thread.join();
            }
            compact(&db, &path, len_at_open);
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Growth of the projections file since it was opened below which a clean stop does not
/// compact it (see [`should_compact`]).
const COMPACT_AFTER_GROWTH: u64 = 64 << 20;

/// Whether a clean stop compacts the projections file: only if it grew by at least
/// [`COMPACT_AFTER_GROWTH`] and an eighth since it was opened. Free pages come from the
/// projector's writes, and a compaction walks the whole file whether or not it finds pages
/// to move (5.5 s for a 1.5 GB file on a loaded 2-core VM), so a stop after little indexing
/// skips it.
fn should_compact(len_at_open: u64, len_now: u64) -> bool {
    len_now.saturating_sub(len_at_open) >= COMPACT_AFTER_GROWTH.max(len_at_open / 8)
}

/// Compacts the projections once the projector has stopped, if they grew enough (see
/// [`should_compact`] and [`ProjectionsDb::compact`]). A failure loses nothing: the file
/// stays as it was, or redb repairs it on the next open.
fn compact(db: &ProjectionsDb, path: &Path, len_at_open: u64) {
    let len_now = file_len(path);
    if !should_compact(len_at_open, len_now) {
        tracing::debug!(len_at_open, len_now, "projections grew little since the start; not compacting");
        return;
    }
    let started = Instant::now();
    match db.compact(Duration::from_secs(2)) {
        Ok(compacted) => {
            tracing::info!(compacted, ms = started.elapsed().as_millis() as u64, "projections compacted")
        }
        Err(error) => tracing::warn!(%error, "could not compact the projections at shutdown"),
    }
}

/// The longest the projector holds durable usage events before applying them when no audit
/// read waits: one redb transaction then folds many writer batches, so aggregates merge in
/// memory and index inserts share the leaf pages they copy (a key's rows are appended to the
/// same leaf once a second instead of once per writer batch), and each (durable) commit
/// costs one fsync a second. Lifecycle events are applied at once.
const PROJECTION_LAG: Duration = Duration::from_millis(1000);
/// How often the projector looks for a waiting audit read while it holds events.
const PROJECTION_POLL: Duration = Duration::from_millis(2);
/// The most events one projection transaction applies.
const PROJECTION_MAX_EVENTS: usize = 131_072;

/// How long an idle projector waits before it compares the projections with the log's
/// durable length (batches the writer skipped are read from the log).
const PROJECTION_IDLE_CHECK: Duration = Duration::from_millis(50);

/// Applies the durable events before `end` from the log (the batches the writer did not
/// hand over). False if the projections could not be written.
fn catch_up_from_log(
    projections: &mut Projections,
    log: &LogReader,
    end: u64,
    applied: &watch::Sender<u64>,
) -> bool {
    match projections.catch_up_to(log, end) {
        Ok(next) => {
            applied.send_replace(next);
            true
        }
        Err(error) => {
            tracing::error!(%error, "projection catch-up from the log failed; reopening the projections");
            false
        }
    }
}

/// True if the batch has an event other than a use or a denial: those are applied at
/// once, so that key reads, webhooks and other projection readers see a lifecycle change
/// without the usage lag.
fn has_lifecycle(batch: &CommittedEvents) -> bool {
    batch.iter().any(|e| !e.payload.kind().is_usage())
}

/// What [`gather`] stopped at.
struct Gathered {
    /// A batch received past a gap (batches the writer skipped), to apply after the gap has
    /// been read from the log.
    carried: Option<CommittedEvents>,
    /// False once the writer has hung up.
    open: bool,
}

/// Adds to `pending` (which holds the first batch) the batches that join it in one
/// transaction: usage batches until `deadline`, unless an audit read waits (`demand` past
/// `applied`) or a batch has a lifecycle event, which make the transaction due at once. A
/// due transaction still takes every batch already queued, without waiting: a burst of
/// lifecycle events (a bulk creation, a revoke-all) then costs one durable commit per
/// drain of the queue instead of one per writer batch, so the projector keeps up with the
/// writer instead of falling further behind with every fsync.
fn gather(
    events: &keyledger_log::HandoffReceiver,
    pending: &mut Vec<CommittedEvents>,
    demand: &AtomicU64,
    applied: u64,
    deadline: Instant,
) -> Gathered {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    let mut held = pending.iter().map(|b| b.len()).sum::<usize>();
    let mut urgent = pending.iter().any(has_lifecycle);
    loop {
        let received = pending.last().and_then(|b| b.last()).map_or(0, |e| e.seq + 1);
        if held >= PROJECTION_MAX_EVENTS {
            return Gathered { carried: None, open: true };
        }
        let due = urgent || demand.load(Ordering::Acquire) > applied && received > applied;
        let next = if due {
            match events.try_recv() {
                Ok(batch) => Ok(batch),
                Err(TryRecvError::Empty) => return Gathered { carried: None, open: true },
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            }
        } else {
            let now = Instant::now();
            if now >= deadline {
                return Gathered { carried: None, open: true };
            }
            events.recv_timeout((deadline - now).min(PROJECTION_POLL))
        };
        match next {
            Ok(more) if more.first().is_some_and(|e| e.seq > received) => {
                // The writer skipped batches in between: apply what is held, then read
                // the gap from the log before this one.
                return Gathered { carried: Some(more), open: true };
            }
            Ok(more) => {
                held += more.len();
                urgent |= has_lifecycle(&more);
                pending.push(more);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Gathered { carried: None, open: false },
        }
    }
}

/// Folds durable batches into redb until the writer hangs up (at shutdown). Batches are
/// gathered for up to [`PROJECTION_LAG`], or until `demand` (an audit read's barrier) asks
/// for events already received.
///
/// If redb fails (e.g. the disk is full), the projector does not stop: it reopens the
/// database with backoff (100 ms doubling to 5 s) and catches up from the log up to the
/// writer's durable length, then resumes with the batches queued meanwhile (events already
/// applied are skipped by the cursors).
///
/// The writer's queue is bounded and the writer never waits for it: when it is full, a
/// batch is skipped. The projector notices the gap (a batch starting past what it expects,
/// or, when idle, a durable length past it) and reads the missing events from the log, so
/// its memory is bounded by the queue and [`PROJECTION_MAX_EVENTS`] whatever the load.
/// Readers meanwhile get [`crate::projection::ProjectionError::Reopening`] or the last
/// snapshot; the log stays the truth.
fn run(mut projections: Projections, feed: Feed) {
    use std::sync::mpsc::RecvTimeoutError;
    crate::background::lower_current_thread();
    let Feed { events, applied, log, committed, demand } = feed;
    const RETRY_INITIAL: Duration = Duration::from_millis(100);
    const RETRY_MAX: Duration = Duration::from_secs(5);
    let mut broken: Option<Duration> = None;
    let mut open = true;
    let mut pending: Vec<CommittedEvents> = Vec::new();
    let mut carried: Option<CommittedEvents> = None;
    while open {
        if let Some(delay) = broken {
            let end = *committed.borrow();
            let repaired =
                projections.reopen(Duration::from_secs(10)).and_then(|()| projections.catch_up_to(&log, end));
            match repaired {
                Ok(next) => {
                    tracing::warn!(events = next, "projections reopened and caught up with the log");
                    applied.send_replace(next);
                    broken = None;
                }
                Err(error) => {
                    tracing::error!(%error, retry_in_ms = delay.as_millis() as u64, "projections still cannot be written");
                    // Batches arriving meanwhile are covered by the next catch-up.
                    match events.recv_timeout(delay) {
                        Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    broken = Some((delay * 2).min(RETRY_MAX));
                }
            }
            continue;
        }
        // The next seq the projections expect: what is applied, or what is held to apply.
        let expected = *applied.borrow();
        let first = match carried.take() {
            Some(batch) => batch,
            None => match events.recv_timeout(PROJECTION_IDLE_CHECK) {
                Ok(batch) => batch,
                Err(RecvTimeoutError::Timeout) => {
                    // Nothing handed over for a while: durable events beyond the projections
                    // are batches the writer skipped (full queue); read them from the log.
                    let end = *committed.borrow();
                    if end > expected && !catch_up_from_log(&mut projections, &log, end, &applied) {
                        broken = Some(RETRY_INITIAL);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        if let Some(start) = first.first().map(|e| e.seq)
            && start > expected
            && !catch_up_from_log(&mut projections, &log, start, &applied)
        {
            broken = Some(RETRY_INITIAL);
            continue;
        }
        pending.push(first);
        let gathered =
            gather(&events, &mut pending, &demand, *applied.borrow(), Instant::now() + PROJECTION_LAG);
        carried = gathered.carried;
        open = gathered.open;
        let batches: Vec<&[keyledger_core::Event]> = pending.iter().map(|b| b.as_slice()).collect();
        let Some(last) = batches.iter().rev().find_map(|b| b.last()).map(|e| e.seq) else {
            pending.clear();
            continue;
        };
        let result = projections.apply_batches(&batches);
        drop(batches);
        pending.clear();
        match result {
            Ok(()) => {
                applied.send_replace(last + 1);
            }
            Err(error) => {
                tracing::error!(%error, "projection update failed; reopening the projections and catching up from the log");
                broken = Some(RETRY_INITIAL);
            }
        }
    }
    if let Err(error) = projections.persist() {
        tracing::error!(%error, "could not persist projections at shutdown; they catch up from the log on the next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_core::{Actor, Event, KeyId, KeyRef, Payload, RequestId, Timestamp, Usage, UsageContext};
    use std::sync::Arc;

    /// A writer batch of `len` events from `seq`: uses, or lifecycle events (`expired`).
    fn batch(seq: u64, len: u64, lifecycle: bool) -> CommittedEvents {
        let (key_id, workspace): (_, keyledger_core::WorkspaceId) =
            (KeyId::from_bytes([1; 16]), "acme".parse().unwrap());
        Arc::new(
            (seq..seq + len)
                .map(|seq| Event {
                    seq,
                    at: Timestamp::now(),
                    actor: Actor::System,
                    request_id: RequestId::generate(seq),
                    payload: if lifecycle {
                        Payload::Expired(KeyRef { key_id, workspace: workspace.clone() })
                    } else {
                        Payload::Used(Usage {
                            key_id,
                            workspace: workspace.clone(),
                            context: UsageContext::default(),
                        })
                    },
                })
                .collect(),
        )
    }

    fn seqs(pending: &[CommittedEvents]) -> Vec<u64> {
        pending.iter().flat_map(|b| b.iter().map(|e| e.seq)).collect()
    }

    #[test]
    fn a_due_transaction_takes_every_batch_already_queued_and_waits_for_none() {
        let (sender, receiver) = keyledger_log::handoff(64, 1 << 16);
        for i in 1..6 {
            sender.try_send(batch(i * 2, 2, true)).unwrap();
        }
        let mut pending = vec![batch(0, 2, true)];
        let started = Instant::now();
        let far = started + Duration::from_secs(60);
        let gathered = gather(&receiver, &mut pending, &AtomicU64::new(0), 0, far);
        assert!(gathered.open && gathered.carried.is_none());
        assert_eq!(seqs(&pending), (0..12).collect::<Vec<_>>(), "one transaction for the whole burst");
        assert!(started.elapsed() < Duration::from_secs(30), "a due transaction waits for nothing");

        // Usage batches wait for the deadline, or for an audit read that asks for them.
        sender.try_send(batch(14, 3, false)).unwrap();
        let mut pending = vec![batch(12, 2, false)];
        let soon = Instant::now() + Duration::from_millis(30);
        let gathered = gather(&receiver, &mut pending, &AtomicU64::new(0), 12, soon);
        assert!(Instant::now() >= soon && gathered.open);
        assert_eq!(seqs(&pending), (12..17).collect::<Vec<_>>());
        sender.try_send(batch(18, 1, false)).unwrap();
        let mut pending = vec![batch(17, 1, false)];
        let gathered = gather(&receiver, &mut pending, &AtomicU64::new(18), 17, far);
        assert!(gathered.open);
        assert_eq!(seqs(&pending), vec![17, 18], "an audit read's demand makes it due at once");

        // A batch past a gap is carried over; a hung-up writer closes.
        sender.try_send(batch(25, 1, true)).unwrap();
        let mut pending = vec![batch(19, 1, true)];
        let gathered = gather(&receiver, &mut pending, &AtomicU64::new(0), 19, far);
        assert_eq!(gathered.carried.map(|b| b[0].seq), Some(25));
        assert_eq!(seqs(&pending), vec![19]);
        drop(sender);
        let mut pending = vec![batch(26, 1, false)];
        assert!(!gather(&receiver, &mut pending, &AtomicU64::new(0), 26, far).open);
    }

    #[test]
    fn a_clean_stop_compacts_only_after_enough_growth() {
        const MIB: u64 = 1 << 20;
        // A fresh file that indexing grew: compacted.
        assert!(should_compact(0, 300 * MIB));
        assert!(should_compact(MIB, 65 * MIB));
        // Little growth, in absolute terms or relative to a large file: left alone.
        assert!(!should_compact(0, 63 * MIB));
        assert!(!should_compact(1500 * MIB, 1500 * MIB));
        assert!(!should_compact(1500 * MIB, 1600 * MIB));
        assert!(should_compact(1500 * MIB, 1700 * MIB));
        // A file that shrank (or vanished) is never compacted.
        assert!(!should_compact(300 * MIB, 0));
    }
}
