//! The single writer of the log and its group commit.
//!
//! Every append goes through one writer: its own thread, or (with
//! [`WriterOptions::run_on`], as `keyledger serve` runs it on the embedded store with batched
//! usage durability) one task on
//! the server's runtime, so that a verification reaches it without waking a sleeping thread
//! and is answered without a context switch (docs/benchmarks.md, "The writer as a task");
//! there, its group commit's fsync runs on the runtime's blocking pool while the writer goes
//! on appending ([`InFlightSync`]; docs/benchmarks.md, "The fsync off the writer's path"),
//! and what else waits for the disk (a checkpoint, a recovery, a roll to a new segment)
//! runs as blocking work ([`may_block`]) while the worker's other tasks move to another
//! thread. Either way it is one loop, one batch at a time. Callers send commands over a channel; the writer
//! takes everything queued, lets the [`Sequencer`] turn each command into events (assigning
//! consecutive seqs in channel order), writes the whole batch with one write per segment,
//! fsyncs once, and only then acknowledges the callers who asked for durability. Callers who
//! asked only for [`Durability::Written`] (usage events in `batched` mode) are answered as
//! soon as their batch is in the page cache, and the fsync follows within the configured
//! window. One fsync runs at a time; it covers what was written before it began, and what
//! is written meanwhile waits for the next.
//!
//! Guarantees:
//! - seqs are consecutive, in the order the sequencer saw the commands, and a command's
//!   events land in one batch (recovery cuts a torn batch whole);
//! - a [`Durability::Synced`] reply is sent only after the fsync that covers it succeeded;
//! - a failed write or fsync poisons the writer: every later command is refused with
//!   [`LogError::Unavailable`] (fail closed); a failed fsync is never retried;
//! - a poisoned writer recovers by itself: with backoff ([`WriterOptions::retry_initial`]
//!   doubling to [`WriterOptions::retry_max`]) it checks that the disk takes a write and an
//!   fsync again, then reopens all three stores from disk exactly as a restart would (after a
//!   failed fsync it first cuts the log back to the last fsynced length, never trusting the
//!   page cache), rewinds the [`Sequencer`] to the records that remain, hands subscribers the
//!   records the reopen made durable, and only then accepts appends again; a failed attempt
//!   leaves it poisoned until the next one;
//! - subscribers receive events only once durable, in seq order, each at most once, and a
//!   recovery never cuts below what they received: no seq is ever given to two events a
//!   subscriber sees. The hand-off never blocks the writer: a batch that finds the
//!   subscriber's queue full (bounded in batches and in events, [`crate::handoff()`]) is not
//!   handed over (counted in [`WriterStats::handoffs_skipped`]); the subscriber sees the gap
//!   in seqs and reads those durable events from the log, so a slow subscriber costs
//!   re-reads, never more memory than its queue's bound.
//!
//! The state machine: `healthy --failed write/fsync/checkpoint--> poisoned --probe + reopen
//! succeed--> healthy`; `poisoned --attempt fails--> poisoned` (next attempt after the
//! doubled delay). [`WriterHandle::is_healthy`] is false exactly while poisoned.
//!
//! With a shared [`LogStore`] (several nodes over one database, docs/architecture.md,
//! "The log store seam") each batch is framed by the store: the writer begins it (taking
//! the store's append lock), first appends to its local files and applies to the
//! sequencer every record the other nodes appended, then sequences its own commands against
//! that current state, commits the batch to the store and only then writes it to its local
//! files. Both durabilities are answered after the store's commit. Between batches the
//! writer follows the store (woken by [`WriterHandle::wake`], and every
//! [`LogStore::follow_every`]) so that the local files and the projections track the log.
//! Checkpoints are signed under the store's lock, only after checking that the store's
//! latest checkpoint is of this very tree. A failed begin, commit or follow poisons the
//! writer like a failed fsync; its recovery reconnects and follows the store, which also
//! settles a commit whose outcome was unknown (its callers were refused).

use crate::checkpoint::{CheckpointStore, StoredCheckpoint};
use crate::segment::{SegmentError, SegmentLog, SyncMark};
use crate::store::{LogStore, SharedCheckpoint, StoreError};
use crate::tree::TreeWriter;
use keyledger_core::{Actor, Event, Payload, RequestId, Timestamp, encode_event, encode_event_into};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// How durable an append must be before its caller is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Written to the operating system (survives a crash of keyledger, not a power cut);
    /// fsynced within the configured window.
    Written,
    /// fsynced.
    Synced,
}

/// Why an append was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("the log cannot be written: {0}")]
    Unavailable(String),
    #[error("the log writer has stopped")]
    Stopped,
}

/// Turns commands into events, in the writer, in seq order. The sequencer owns the
/// state that decides whether a command is valid, so validation and sequencing are one step.
pub trait Sequencer: Send + 'static {
    type Command: Send + 'static;
    type Reply: Send + 'static;
    /// Decides `command` against the current state, appending its events (if any) to
    /// `batch`, and returns the answer for its caller.
    fn sequence(&mut self, command: Self::Command, batch: &mut Batch) -> Self::Reply;

    /// Called after each recovery: the state built while sequencing commands that were
    /// never acknowledged must go. `log` holds (at least) the `records` records that
    /// remain; the sequencer rebuilds its state to match exactly the first `records`, as a
    /// start would. An error keeps the writer poisoned (the next recovery attempt rewinds
    /// again).
    fn rewind(&mut self, log: &crate::segment::SegmentReader, records: u64) -> Result<(), String> {
        let _ = (log, records);
        Ok(())
    }

    /// Called when the writer fails (any failure that poisons it), before it refuses
    /// anything: what readers see must lose the effects of commands that will never be
    /// acknowledged, now. Nothing is sequenced or applied again before the recovery's
    /// [`Self::rewind`], so state only the sequencer itself reads may wait for it. The
    /// default rewinds. An error is logged; the recovery rewinds anyway.
    fn refused(&mut self, log: &crate::segment::SegmentReader, records: u64) -> Result<(), String> {
        self.rewind(log, records)
    }

    /// Applies an event another writer appended to a shared store (see [`crate::store`]),
    /// before this writer decides anything after it. The default refuses: a sequencer that
    /// cannot follow other writers cannot run over a shared store.
    fn apply_foreign(&mut self, event: &Event) -> Result<(), String> {
        let _ = event;
        Err("this sequencer cannot follow other writers".into())
    }
}

/// The batch being assembled: hands out seqs and the batch's timestamp.
pub struct Batch {
    next_seq: u64,
    at: Timestamp,
    events: Vec<Event>,
    /// Set by the sequencer when the current command must be fsynced before its answer,
    /// whatever durability its caller asked for.
    sync_required: bool,
}

impl Batch {
    /// A batch starting at seq `next_seq`, stamped `at`, outside any writer: lets a
    /// sequencer's decisions be tested at a chosen time (nothing it holds is ever written).
    pub fn detached(next_seq: u64, at: Timestamp) -> Self {
        Self { next_seq, at, events: Vec::new(), sync_required: false }
    }

    /// The events pushed so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The time every event of this batch carries.
    pub fn now(&self) -> Timestamp {
        self.at
    }

    /// The seq the next pushed event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq + self.events.len() as u64
    }

    /// Makes the current command's answer wait for the fsync (e.g. because it produced a
    /// lifecycle event although its caller asked only for [`Durability::Written`]).
    pub fn require_sync(&mut self) {
        self.sync_required = true;
    }

    /// Appends an event and returns it (with its seq), so the sequencer can apply it.
    pub fn push(&mut self, actor: Actor, request_id: RequestId, payload: Payload) -> &Event {
        let seq = self.next_seq();
        self.events.push(Event { seq, at: self.at, actor, request_id, payload });
        &self.events[self.events.len() - 1]
    }
}

/// Settings of the writer.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Longest time written-but-unsynced events may wait for their fsync.
    pub sync_window: Duration,
    /// Sign a checkpoint after this many events…
    pub checkpoint_every_events: u64,
    /// …or this long after the last one, whichever comes first (if anything was appended).
    pub checkpoint_every: Duration,
    /// Most commands taken into one batch.
    pub max_batch_commands: usize,
    /// Delay before the first recovery attempt after a failure; it doubles after each
    /// failed attempt…
    pub retry_initial: Duration,
    /// …up to this.
    pub retry_max: Duration,
    /// Run the writer as a task on this runtime (the server's) instead of on its own
    /// thread: a command then reaches it without waking a sleeping thread. Ignored with a
    /// shared store, whose database calls block.
    pub run_on: Option<tokio::runtime::Handle>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            sync_window: Duration::from_millis(10),
            checkpoint_every_events: 100_000,
            checkpoint_every: Duration::from_secs(10),
            max_batch_commands: 8192,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            run_on: None,
        }
    }
}

/// Counters the writer keeps, for metrics and benchmarks.
#[derive(Default, Debug)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub fsyncs: AtomicU64,
    pub events_synced: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Failed writes, fsyncs or checkpoints (each poisoned the writer).
    pub failures: AtomicU64,
    /// Recovery attempts, successful or not.
    pub recovery_attempts: AtomicU64,
    /// Successful recoveries (the writer accepts appends again).
    pub recoveries: AtomicU64,
    /// Durable batches not handed to the subscriber because its queue was full (it reads
    /// them from the log).
    pub handoffs_skipped: AtomicU64,
}

type ReplySender<S> = oneshot::Sender<Result<<S as Sequencer>::Reply, LogError>>;

enum Message<S: Sequencer> {
    Command {
        command: S::Command,
        durability: Durability,
        reply: ReplySender<S>,
    },
    Checkpoint(oneshot::Sender<Result<StoredCheckpoint, LogError>>),
    /// Follow a shared store now (answered once followed, if a reply is given).
    Follow(Option<oneshot::Sender<Result<(), LogError>>>),
    Shutdown(oneshot::Sender<()>),
}

/// Where commands go: the writer's own thread, or its task on the server's runtime
/// ([`WriterOptions::run_on`]).
enum Inbox<S: Sequencer> {
    Thread(Sender<Message<S>>),
    Task(tokio::sync::mpsc::UnboundedSender<Message<S>>),
}

impl<S: Sequencer> Clone for Inbox<S> {
    fn clone(&self) -> Self {
        match self {
            Self::Thread(tx) => Self::Thread(tx.clone()),
            Self::Task(tx) => Self::Task(tx.clone()),
        }
    }
}

impl<S: Sequencer> Inbox<S> {
    /// Queues a message; an error once the writer has stopped.
    fn send(&self, message: Message<S>) -> Result<(), ()> {
        match self {
            Self::Thread(tx) => tx.send(message).map_err(|_| ()),
            Self::Task(tx) => tx.send(message).map_err(|_| ()),
        }
    }
}

/// A handle for submitting commands to the writer. Cheap to clone.
pub struct WriterHandle<S: Sequencer> {
    tx: Inbox<S>,
    healthy: Arc<AtomicBool>,
    committed: watch::Receiver<u64>,
    stats: Arc<WriterStats>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// A wake-up is queued and not yet taken: wake-ups coalesce into one.
    follow_pending: Arc<AtomicBool>,
}

impl<S: Sequencer> Clone for WriterHandle<S> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            healthy: self.healthy.clone(),
            committed: self.committed.clone(),
            stats: self.stats.clone(),
            thread: self.thread.clone(),
            follow_pending: self.follow_pending.clone(),
        }
    }
}

impl<S: Sequencer> WriterHandle<S> {
    /// Submits a command and waits for its answer at the requested durability.
    pub async fn submit(&self, command: S::Command, durability: Durability) -> Result<S::Reply, LogError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Message::Command { command, durability, reply }).map_err(|_| LogError::Stopped)?;
        answer.await.map_err(|_| LogError::Stopped)?
    }

    /// The same, for synchronous callers (tools, generators). Must not be called from
    /// within an async runtime thread.
    pub fn submit_blocking(&self, command: S::Command, durability: Durability) -> Result<S::Reply, LogError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Message::Command { command, durability, reply }).map_err(|_| LogError::Stopped)?;
        answer.blocking_recv().map_err(|_| LogError::Stopped)?
    }

    /// Makes everything appended so far durable and returns a checkpoint covering it (signing
    /// a new one unless the latest already does).
    pub async fn checkpoint_now(&self) -> Result<StoredCheckpoint, LogError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Message::Checkpoint(reply)).map_err(|_| LogError::Stopped)?;
        answer.await.map_err(|_| LogError::Stopped)?
    }

    /// Wakes the writer to follow a shared store (another node appended). Wake-ups that
    /// arrive before the writer took the last one coalesce, so this never queues more than
    /// one message.
    pub fn wake(&self) {
        if !self.follow_pending.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Message::Follow(None));
        }
    }

    /// Follows a shared store now and answers once this node's log holds everything the
    /// store held when the writer took the request (a read's barrier on another node's
    /// writes). Immediate with the embedded store.
    pub async fn follow_now(&self) -> Result<(), LogError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Message::Follow(Some(reply))).map_err(|_| LogError::Stopped)?;
        answer.await.map_err(|_| LogError::Stopped)?
    }

    /// False from a failed write or fsync until the writer has recovered.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// The number of durable events (updated after each fsync).
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Whether the writer runs as a task on a runtime ([`WriterOptions::run_on`]) rather
    /// than on its own thread.
    pub fn runs_on_runtime(&self) -> bool {
        matches!(self.tx, Inbox::Task(_))
    }

    /// Drains everything queued, fsyncs, writes a final checkpoint and stops the thread.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Blocking variant of [`Self::shutdown`].
    pub fn shutdown_blocking(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Shutdown(done)).is_ok() {
            let _ = wait.blocking_recv();
        }
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Durable events, handed to subscribers (projections) in seq order.
pub type CommittedEvents = Arc<Vec<Event>>;

pub(crate) struct WriterParts {
    pub segments: SegmentLog,
    pub tree: TreeWriter,
    pub checkpoints: CheckpointStore,
    pub store: Box<dyn LogStore>,
}

/// Most records a follow reads from a shared store in one query.
const FOLLOW_CHUNK: usize = 4096;

struct Writer<S: Sequencer> {
    parts: WriterParts,
    sequencer: S,
    options: WriterOptions,
    healthy: Arc<AtomicBool>,
    failure: Option<String>,
    committed: watch::Sender<u64>,
    subscriber: Option<crate::HandoffSender>,
    stats: Arc<WriterStats>,
    /// Events written but not yet fsynced.
    unsynced: Vec<Event>,
    unsynced_since: Option<Instant>,
    waiting_for_sync: Vec<(ReplySender<S>, S::Reply)>,
    last_checkpoint: Instant,
    last_checkpoint_size: u64,
    /// The time of the last batch: batch times never go backwards, so the log is ordered
    /// by time as well as by seq.
    last_at: Timestamp,
    /// While poisoned: when to try to recover next.
    retry_at: Option<Instant>,
    /// Failures (and failed recovery attempts) since the last successful fsync: the backoff
    /// doubles with each.
    failures_in_row: u32,
    /// The first seq of a batch whose write failed part-way (e.g. its events reached the
    /// segment but not the tree): its callers were refused, so the recovery cuts it.
    refused_from: Option<u64>,
    /// When the writer last followed a shared store.
    last_follow: Instant,
    follow_pending: Arc<AtomicBool>,
    /// Runs as a task on the server's runtime ([`WriterOptions::run_on`]): what waits for
    /// the disk (fsyncs, checkpoints, recovery) goes through [`may_block`].
    on_runtime: bool,
    /// The fsync running on the runtime's blocking pool while this writer goes on appending
    /// (as a task only; see [`InFlightSync`]).
    in_flight: Option<InFlightSync>,
    /// A round's commands, kept (empty) between rounds so each round reuses the room.
    commands: Vec<(S::Command, Durability, ReplySender<S>)>,
    /// A batch's encoded events back to back, and where each ends, reused the same way.
    encoded: Vec<u8>,
    record_ends: Vec<usize>,
}

/// The most room for encoded events the writer keeps between batches.
const KEPT_ENCODED_BYTES: usize = 1 << 20;

/// A group commit's fsync running off the writer (as a task, on the runtime's blocking
/// pool), so that batches go on being appended, and `Written` callers answered, while the
/// disk works: the stall an inline fsync puts on every caller is gone (docs/benchmarks.md,
/// "The fsync off the writer's path"). One at a time; what was appended after it began
/// waits for the next one.
struct InFlightSync {
    covered: Covered,
    done: oneshot::Receiver<Result<(), SegmentError>>,
}

impl InFlightSync {
    /// Waits for its end; a lost report counts as a failed fsync.
    fn wait(self, on_runtime: bool) -> (Covered, Result<(), SegmentError>) {
        let result = may_block(on_runtime, || self.done.blocking_recv());
        (self.covered, result.unwrap_or(Err(SegmentError::Poisoned)))
    }
}

/// What an fsync covers: the segment log's mark, the first `events` unsynced events and the
/// first `waiters` callers waiting for a sync (all appended before it began).
#[derive(Clone, Copy)]
struct Covered {
    mark: SyncMark,
    events: usize,
    waiters: usize,
    started: Instant,
}

/// Runs `wait`, which may wait for the disk: on the runtime as blocking work (the worker's
/// other tasks move to another thread meanwhile), on the writer's own thread as it is.
fn may_block<T>(on_runtime: bool, wait: impl FnOnce() -> T) -> T {
    if on_runtime { tokio::task::block_in_place(wait) } else { wait() }
}

pub(crate) fn spawn<S: Sequencer>(
    parts: WriterParts,
    last_at: Timestamp,
    sequencer: S,
    options: WriterOptions,
    subscriber: Option<crate::HandoffSender>,
) -> WriterHandle<S> {
    let healthy = Arc::new(AtomicBool::new(true));
    let size = parts.tree.size();
    let (committed_tx, committed_rx) = watch::channel(size);
    let stats = Arc::new(WriterStats::default());
    let last_checkpoint_size = parts.checkpoints.latest().map(|c| c.size).unwrap_or(0);
    let writer = Writer {
        parts,
        sequencer,
        options,
        healthy: healthy.clone(),
        failure: None,
        committed: committed_tx,
        subscriber,
        stats: stats.clone(),
        unsynced: Vec::new(),
        unsynced_since: None,
        waiting_for_sync: Vec::new(),
        last_checkpoint: Instant::now(),
        last_checkpoint_size,
        last_at,
        retry_at: None,
        failures_in_row: 0,
        refused_from: None,
        last_follow: Instant::now(),
        follow_pending: Arc::new(AtomicBool::new(false)),
        on_runtime: false,
        in_flight: None,
        commands: Vec::new(),
        encoded: Vec::new(),
        record_ends: Vec::new(),
    };
    let follow_pending = writer.follow_pending.clone();
    let runtime = writer.options.run_on.clone().filter(|runtime| {
        runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && !writer.parts.store.is_shared()
    });
    let (tx, thread) = match runtime {
        Some(runtime) => {
            let mut writer = writer;
            writer.on_runtime = true;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            runtime.spawn(writer.run_on_runtime(rx));
            (Inbox::Task(tx), None)
        }
        None => {
            let (tx, rx) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("keyledger-log-writer".into())
                .spawn(move || writer.run(rx))
                .expect("cannot start the log writer thread");
            (Inbox::Thread(tx), Some(thread))
        }
    };
    WriterHandle {
        tx,
        healthy,
        committed: committed_rx,
        stats,
        thread: Arc::new(Mutex::new(thread)),
        follow_pending,
    }
}

impl<S: Sequencer> Writer<S> {
    fn run(mut self, rx: Receiver<Message<S>>) {
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        while shutdown.is_none() {
            let first = match self.next_deadline() {
                Some(deadline) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(message) => Some(message),
                    Err(_) => break,
                },
            };
            shutdown = self.round(first, &mut || rx.try_recv().ok());
        }
        self.finish(shutdown);
    }

    /// [`Self::run`] as a task on the server's runtime.
    async fn run_on_runtime(mut self, mut rx: tokio::sync::mpsc::UnboundedReceiver<Message<S>>) {
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        while shutdown.is_none() {
            let deadline = self.next_deadline();
            let received = async {
                match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline.into(), rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            };
            let synced = async {
                match &mut self.in_flight {
                    Some(in_flight) => (&mut in_flight.done).await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                biased;
                outcome = synced => {
                    self.end_in_flight(outcome.unwrap_or(Err(SegmentError::Poisoned)));
                    None
                }
                received = received => match received {
                    Some(Some(message)) => Some(message),
                    Some(None) => break,
                    None => None,
                },
            };
            if first.is_some() {
                // A woken task runs next on its worker, so without this the writer ran as
                // soon as the first verification of a worker's turn waited for its answer,
                // and wrote batches of one or two events. Yielding defers it until that
                // worker has run its other ready tasks (or its periodic maintenance comes):
                // their commands join this round's batch (docs/benchmarks.md, "The
                // writer's batch").
                tokio::task::yield_now().await;
            }
            shutdown = self.round(first, &mut || rx.try_recv().ok());
        }
        self.finish(shutdown);
    }

    /// One round: the first message and whatever else is queued, processed as one batch;
    /// then the fsync, checkpoint and follow that are due. Returns the shutdown request's
    /// answer once one was taken.
    fn round(
        &mut self,
        first: Option<Message<S>>,
        next: &mut dyn FnMut() -> Option<Message<S>>,
    ) -> Option<oneshot::Sender<()>> {
        let mut shutdown = None;
        self.recover_if_due();
        let mut commands = std::mem::take(&mut self.commands);
        // Follows asked during this drain: one round after it serves them all, since each
        // was asked before that round begins (many verifications of keys this node cannot
        // place cost one database read, not one each).
        let mut follow_asked = false;
        let mut follow_waiters = Vec::new();
        let mut message = first;
        while let Some(m) = message.take() {
            match m {
                Message::Command { command, durability, reply } => {
                    commands.push((command, durability, reply))
                }
                Message::Checkpoint(reply) => {
                    // Everything queued before this request is part of the checkpoint.
                    if !commands.is_empty() {
                        self.process(&mut commands);
                    }
                    self.sync_if_due(true);
                    self.checkpoint_if_due(true);
                    let answer = match (&self.failure, self.parts.checkpoints.latest()) {
                        (Some(reason), _) => Err(LogError::Unavailable(reason.clone())),
                        (None, Some(latest)) if latest.size == self.parts.tree.size() => Ok(latest),
                        (None, _) => Err(LogError::Unavailable("no checkpoint could be signed".into())),
                    };
                    let _ = reply.send(answer);
                }
                Message::Follow(reply) => {
                    follow_asked = true;
                    follow_waiters.extend(reply);
                }
                Message::Shutdown(done) => {
                    shutdown = Some(done);
                    break;
                }
            }
            if commands.len() < self.options.max_batch_commands
                && follow_waiters.len() < self.options.max_batch_commands
            {
                message = next();
            }
        }
        if !commands.is_empty() {
            self.process(&mut commands);
        }
        self.commands = commands;
        if follow_asked {
            self.follow_pending.store(false, Ordering::Release);
            self.follow_store();
            for reply in follow_waiters {
                let answer = match &self.failure {
                    Some(reason) => Err(LogError::Unavailable(reason.clone())),
                    None => Ok(()),
                };
                let _ = reply.send(answer);
            }
        }
        self.sync_if_due(false);
        self.checkpoint_if_due(false);
        if self.parts.store.follow_every().is_some_and(|every| self.last_follow.elapsed() >= every) {
            self.follow_store();
        }
        shutdown
    }

    /// Clean stop: everything durable, a final checkpoint, the tree files synced.
    fn finish(mut self, shutdown: Option<oneshot::Sender<()>>) {
        self.sync_if_due(true);
        self.checkpoint_if_due(true);
        if let Some(done) = shutdown {
            let _ = done.send(());
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        // While an fsync runs, its end wakes the writer.
        let sync =
            self.unsynced_since.filter(|_| self.in_flight.is_none()).map(|t| t + self.options.sync_window);
        let checkpoint = (self.parts.tree.size() > self.last_checkpoint_size && self.failure.is_none())
            .then(|| self.last_checkpoint + self.options.checkpoint_every);
        let follow = self.parts.store.follow_every().map(|every| self.last_follow + every);
        [sync, checkpoint, self.retry_at, follow].into_iter().flatten().min()
    }

    /// Decides, writes and answers `commands` as one batch, leaving the vector empty.
    fn process(&mut self, commands: &mut Vec<(S::Command, Durability, ReplySender<S>)>) {
        if let Some(reason) = &self.failure {
            for (_, _, reply) in commands.drain(..) {
                let _ = reply.send(Err(LogError::Unavailable(reason.clone())));
            }
            return;
        }
        let shared = self.parts.store.is_shared();
        if shared && let Err(reason) = self.begin_shared() {
            self.fail(reason.clone());
            for (_, _, reply) in commands.drain(..) {
                let _ = reply.send(Err(LogError::Unavailable(reason.clone())));
            }
            return;
        }
        self.last_at = self.last_at.max(Timestamp::now());
        let mut batch = Batch {
            next_seq: self.parts.tree.size(),
            at: self.last_at,
            events: Vec::new(),
            sync_required: false,
        };
        let mut answers = Vec::with_capacity(commands.len());
        for (command, durability, reply) in commands.drain(..) {
            batch.sync_required = false;
            let answer = self.sequencer.sequence(command, &mut batch);
            let durability = if batch.sync_required { Durability::Synced } else { durability };
            answers.push((reply, answer, durability));
        }
        if shared {
            // Only what the store committed is written locally, and answered.
            if let Err(reason) = self.commit_shared(batch.next_seq, &batch.events) {
                self.fail(reason.clone());
                for (reply, _, _) in answers {
                    let _ = reply.send(Err(LogError::Unavailable(reason.clone())));
                }
                return;
            }
        }
        if !batch.events.is_empty() {
            let started = Instant::now();
            if let Err(reason) = self.write(&batch.events) {
                self.refused_from = Some(batch.next_seq);
                self.fail(reason.clone());
                if shared {
                    // Committed to the store, so durable: answered. The recovery rebuilds
                    // the local files from the store.
                    for (reply, answer, _) in answers {
                        let _ = reply.send(Ok(answer));
                    }
                    return;
                }
                for (reply, _, _) in answers {
                    let _ = reply.send(Err(LogError::Unavailable(reason.clone())));
                }
                return;
            }
            metrics::histogram!("keyledger_log_write_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("keyledger_log_batch_events").record(batch.events.len() as f64);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.events.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
            self.unsynced.append(&mut batch.events);
            self.unsynced_since.get_or_insert_with(Instant::now);
        }
        for (reply, answer, durability) in answers {
            // A shared store's commit is its durability: nothing waits for the local fsync.
            let durability = if shared { Durability::Written } else { durability };
            match durability {
                Durability::Written => {
                    let _ = reply.send(Ok(answer));
                }
                Durability::Synced => self.waiting_for_sync.push((reply, answer)),
            }
        }
    }

    /// Appends `events` to the segment log and the tree (written, not yet synced), encoded
    /// into one buffer the writer keeps.
    fn write(&mut self, events: &[Event]) -> Result<(), String> {
        let (mut encoded, mut ends) =
            (std::mem::take(&mut self.encoded), std::mem::take(&mut self.record_ends));
        encoded.clear();
        ends.clear();
        for event in events {
            encode_event_into(event, &mut encoded);
            ends.push(encoded.len());
        }
        let records: Vec<&[u8]> =
            ends.iter().scan(0, |start, &end| Some(&encoded[std::mem::replace(start, end)..end])).collect();
        let result = self.append(&records);
        drop(records);
        // A rare huge batch (a bulk import, a revoke-all) does not pin its room for good.
        if encoded.capacity() <= KEPT_ENCODED_BYTES {
            (self.encoded, self.record_ends) = (encoded, ends);
        }
        result
    }

    /// Appends encoded records to the segment log and the tree.
    fn append(&mut self, records: &[&[u8]]) -> Result<(), String> {
        // A batch that rolls the log waits for the old segment's fsync: as a task, as blocking
        // work, like every other wait for the disk.
        let rolls = self.parts.segments.rolls_next();
        let segments = &mut self.parts.segments;
        may_block(self.on_runtime && rolls, || segments.append_batch(records)).map_err(|e| e.to_string())?;
        let hash = self.parts.tree.tree_hash();
        let leaves: Vec<_> = records.iter().map(|bytes| hash.leaf(bytes)).collect();
        self.parts.tree.append_leaves(&leaves).map_err(|e| e.to_string())?;
        self.parts.tree.publish();
        Ok(())
    }

    /// Syncs if an fsync is due: a caller waits for one, the oldest unsynced event is as old
    /// as the sync window, or `force`. As a task, an fsync that is not forced runs on the
    /// runtime's blocking pool while the writer goes on ([`InFlightSync`]); a forced one (a
    /// checkpoint, a shutdown) first waits for one that is running, then runs in place.
    fn sync_if_due(&mut self, force: bool) {
        if self.in_flight.is_some() {
            if !force {
                return;
            }
            if let Err(reason) = self.settle_in_flight() {
                return self.fail(reason);
            }
        }
        let due = !self.waiting_for_sync.is_empty()
            || self.unsynced_since.is_some_and(|t| force || t.elapsed() >= self.options.sync_window);
        if !due {
            return;
        }
        if self.failure.is_none() && self.unsynced_since.is_some() {
            let mut pending = match self.parts.segments.begin_sync() {
                Ok(pending) => pending,
                Err(error) => return self.fail(format!("fsync failed: {error}")),
            };
            let covered = Covered {
                mark: pending.mark(),
                events: self.unsynced.len(),
                waiters: self.waiting_for_sync.len(),
                started: Instant::now(),
            };
            if self.on_runtime && !force {
                let (report, done) = oneshot::channel();
                tokio::task::spawn_blocking(move || {
                    let _ = report.send(pending.run());
                });
                self.in_flight = Some(InFlightSync { covered, done });
                return;
            }
            let result = may_block(self.on_runtime, || pending.run());
            return self.synced(covered, result);
        }
        // Nothing to sync: the waiting callers are answered as things stand.
        let waiting = std::mem::take(&mut self.waiting_for_sync);
        match &self.failure {
            Some(reason) => {
                for (reply, _) in waiting {
                    let _ = reply.send(Err(LogError::Unavailable(reason.clone())));
                }
            }
            None => {
                for (reply, answer) in waiting {
                    let _ = reply.send(Ok(answer));
                }
            }
        }
    }

    /// Waits for the fsync running off the writer and records its outcome: what it made
    /// durable is confirmed; its failure is returned, for the caller to fail with (or, in
    /// [`Self::fail`], already failing, to pass over: the segment log then distrusts
    /// everything past what was durable before it).
    fn settle_in_flight(&mut self) -> Result<(), String> {
        let Some(in_flight) = self.in_flight.take() else { return Ok(()) };
        let (covered, result) = in_flight.wait(self.on_runtime);
        self.parts.segments.end_sync(covered.mark, result).map_err(|e| format!("fsync failed: {e}"))?;
        self.confirm_synced(covered);
        Ok(())
    }

    /// Records the outcome of the fsync that ran off the writer, as reported to the task.
    fn end_in_flight(&mut self, result: Result<(), SegmentError>) {
        if let Some(in_flight) = self.in_flight.take() {
            self.synced(in_flight.covered, result);
        }
    }

    /// An fsync has ended with `result`: on success what it covers is durable (its events
    /// handed to subscribers, its callers answered); a failure poisons the writer.
    fn synced(&mut self, covered: Covered, result: Result<(), SegmentError>) {
        match self.parts.segments.end_sync(covered.mark, result) {
            Ok(()) => self.confirm_synced(covered),
            Err(error) => self.fail(format!("fsync failed: {error}")),
        }
    }

    /// The fsync of `covered` succeeded.
    fn confirm_synced(&mut self, covered: Covered) {
        let Covered { mark, events, waiters, started } = covered;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("keyledger_log_fsync_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("keyledger_log_events_per_fsync").record(events as f64);
        self.stats.events_synced.fetch_add(events as u64, Ordering::Relaxed);
        self.failures_in_row = 0;
        let durable: Vec<Event> = self.unsynced.drain(..events).collect();
        // What was appended while the fsync ran is at most as old as the fsync.
        self.unsynced_since = (!self.unsynced.is_empty()).then_some(started);
        self.committed.send_replace(mark.covers());
        if !durable.is_empty() {
            self.hand_over(durable);
        }
        let answered: Vec<_> = self.waiting_for_sync.drain(..waiters).collect();
        for (reply, answer) in answered {
            let _ = reply.send(Ok(answer));
        }
    }

    fn checkpoint_if_due(&mut self, force: bool) {
        if self.parts.store.is_shared() {
            return self.checkpoint_shared(force);
        }
        let size = self.parts.tree.size();
        if self.failure.is_some() || size == self.last_checkpoint_size {
            return;
        }
        let due = force
            || size - self.last_checkpoint_size >= self.options.checkpoint_every_events
            || self.last_checkpoint.elapsed() >= self.options.checkpoint_every;
        if !due {
            return;
        }
        // A checkpoint covers synced events only: under a steady load some are always
        // waiting for the next fsync, so it is done now.
        if self.unsynced_since.is_some() || self.in_flight.is_some() {
            self.sync_if_due(true);
            if self.failure.is_some() || self.unsynced_since.is_some() {
                return;
            }
        }
        let (tree, checkpoints) = (&mut self.parts.tree, &mut self.parts.checkpoints);
        let result = may_block(self.on_runtime, || {
            tree.sync()
                .map_err(|e| e.to_string())
                .and_then(|()| checkpoints.sign_and_store(size, tree.root()).map_err(|e| e.to_string()))
        });
        match result {
            Ok(()) => {
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.last_checkpoint = Instant::now();
                self.last_checkpoint_size = size;
            }
            Err(reason) => self.fail(format!("checkpoint failed: {reason}")),
        }
    }

    fn fail(&mut self, reason: String) {
        // An fsync still running is waited for: what it made durable is answered, and if it
        // failed, nothing past what was durable before it is trusted (this failure stands).
        let _ = self.settle_in_flight();
        tracing::error!(%reason, "log writer failed; refusing appends (fail closed) until it recovers");
        metrics::counter!("keyledger_log_failures_total").increment(1);
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.healthy.store(false, Ordering::Release);
        self.failure = Some(reason.clone());
        self.parts.store.abort();
        self.schedule_retry();
        // After a failed fsync nothing past the last confirmed fsync is trusted: hide it from
        // readers now; the recovery cuts it.
        let segments = &self.parts.segments;
        let written = if segments.sync_failed() { segments.durable_len() } else { segments.len() };
        let trusted = self.refused_from.map_or(written, |from| from.min(written));
        self.parts.tree.hide_after(trusted);
        self.unsynced.clear();
        self.unsynced_since = None;
        // Readers must not see the effects of refused commands, from before the refusal.
        if let Err(error) = self.sequencer.refused(&self.parts.segments.reader(), trusted) {
            tracing::error!(%error, "cannot rewind the sequencer after a log failure; the recovery will retry");
        }
        for (reply, _) in std::mem::take(&mut self.waiting_for_sync) {
            let _ = reply.send(Err(LogError::Unavailable(reason.clone())));
        }
    }

    /// Sets the next recovery attempt: `retry_initial` doubled per failure in a row, at most
    /// `retry_max`.
    fn schedule_retry(&mut self) {
        let factor = 1u32 << self.failures_in_row.min(16);
        let delay = self.options.retry_initial.saturating_mul(factor).min(self.options.retry_max);
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Tries to recover if poisoned and the backoff has passed.
    fn recover_if_due(&mut self) {
        let (Some(_), Some(at)) = (&self.failure, self.retry_at) else { return };
        if Instant::now() < at {
            return;
        }
        self.stats.recovery_attempts.fetch_add(1, Ordering::Relaxed);
        let on_runtime = self.on_runtime;
        match may_block(on_runtime, || self.recover()) {
            Ok(cut) => {
                self.failure = None;
                self.retry_at = None;
                self.stats.recoveries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("keyledger_log_recoveries_total").increment(1);
                tracing::warn!(
                    events = self.parts.tree.size(),
                    cut_records = cut.truncated_records,
                    cut_bytes = cut.truncated_bytes,
                    "log writer recovered from disk; accepting appends again"
                );
                self.healthy.store(true, Ordering::Release);
            }
            Err(reason) => {
                self.schedule_retry();
                let retry_in =
                    self.retry_at.map_or(0, |at| at.saturating_duration_since(Instant::now()).as_millis());
                tracing::error!(%reason, retry_in_ms = retry_in as u64, "log writer recovery failed; still refusing appends");
                self.failure = Some(reason);
            }
        }
    }

    /// Hands durable events to the subscriber without ever waiting for it (see the module
    /// docs: a full queue skips the batch, which the subscriber reads from the log).
    fn hand_over(&mut self, events: Vec<Event>) {
        let Some(subscriber) = &self.subscriber else { return };
        match subscriber.try_send(Arc::new(events)) {
            Ok(()) => {}
            Err(crate::HandoffError::Full) => {
                self.stats.handoffs_skipped.fetch_add(1, Ordering::Relaxed);
            }
            Err(crate::HandoffError::Disconnected) => self.subscriber = None,
        }
    }

    /// Reopens the log from disk as a restart would, and resynchronises the sequencer and
    /// the subscribers with it. Returns what the segment recovery cut.
    fn recover(&mut self) -> Result<crate::segment::Recovery, String> {
        let committed = *self.committed.borrow();
        // First make sure the disk takes a write and an fsync again (a write-and-delete
        // probe beside the log, never the log itself).
        self.parts.segments.probe_writable().map_err(|e| format!("the disk is still not writable: {e}"))?;
        let cut = self
            .parts
            .reopen(committed, self.refused_from)
            .map_err(|e| format!("reopening the log failed: {e}"))?;
        self.refused_from = None;
        if self.parts.store.is_shared() {
            // Reconnect, and learn from the store what was committed meanwhile (including
            // a batch whose commit had an unknown outcome).
            self.parts.store.reconnect().map_err(|e| e.to_string())?;
            self.mirror_store()?;
            self.last_follow = Instant::now();
        }
        let len = self.parts.tree.size();
        let reader = self.parts.segments.reader();
        self.sequencer.rewind(&reader, len).map_err(|e| format!("rewinding the sequencer failed: {e}"))?;
        self.last_checkpoint_size = self.parts.checkpoints.latest().map_or(0, |c| c.size);
        self.last_checkpoint = Instant::now();
        // Records written before a failed write (not an fsync) are kept and were made
        // durable by the reopen: subscribers get them now, in order, once.
        if len > committed {
            let mut events = Vec::with_capacity((len - committed) as usize);
            for record in reader.iter(committed).take((len - committed) as usize) {
                let (seq, bytes) = record.map_err(|e| e.to_string())?;
                let event = keyledger_core::decode_event(&bytes).map_err(|e| format!("event {seq}: {e}"))?;
                self.last_at = self.last_at.max(event.at);
                events.push(event);
            }
            self.committed.send_replace(len);
            self.hand_over(events);
        }
        Ok(cut)
    }
}

impl WriterParts {
    /// Reopens the three stores from disk (see [`crate::Log::open`]) and checks them against
    /// each other. `floor`: events subscribers already received; a recovery that would cut
    /// below it fails (those events were durable, so this means data was lost).
    /// `refused_from`: cut the records from there on (a batch whose callers were refused).
    fn reopen(
        &mut self,
        floor: u64,
        refused_from: Option<u64>,
    ) -> Result<crate::segment::Recovery, crate::OpenError> {
        let cut = self.segments.reopen(refused_from)?;
        let len = self.segments.len();
        if len < floor {
            return Err(crate::segment::SegmentError::Lost { durable: floor, found: len }.into());
        }
        self.tree.reopen(len)?;
        self.checkpoints.reopen()?;
        crate::check_checkpoint(&self.tree, &self.checkpoints)?;
        Ok(cut)
    }
}

/// The writer over a shared store (see the module docs and [`crate::store`]).
impl<S: Sequencer> Writer<S> {
    /// Begins a batch in the shared store and applies what the other nodes appended, then
    /// checks that this node's tree is the store's head.
    fn begin_shared(&mut self) -> Result<(), String> {
        let foreign = match self.parts.store.begin(self.parts.tree.size()) {
            Err(StoreError::Behind { .. }) => {
                self.follow_records()?;
                self.parts.store.begin(self.parts.tree.size())
            }
            other => other,
        }
        .map_err(|e| e.to_string())?;
        self.apply_foreign(foreign.records)?;
        if let Some(head) = foreign.head
            && (head.size != self.parts.tree.size() || head.root != self.parts.tree.root())
        {
            let error = StoreError::Diverged(format!(
                "the store's head is {} events, this node's log {} events with another root; restart this node to rebuild its local mirror from the store",
                head.size,
                self.parts.tree.size()
            ));
            return Err(error.to_string());
        }
        Ok(())
    }

    /// Commits the batch `events` (starting at `first`) to the shared store, ending the
    /// batch (with no events it only releases the store's lock).
    fn commit_shared(&mut self, first: u64, events: &[Event]) -> Result<(), String> {
        let hash = self.parts.tree.tree_hash();
        let encoded: Vec<Vec<u8>> = events.iter().map(encode_event).collect();
        let leaves: Vec<_> = encoded.iter().map(|bytes| hash.leaf(bytes)).collect();
        let mut after = self.parts.tree.frontier().clone();
        for leaf in &leaves {
            after.push(*leaf);
        }
        let started = Instant::now();
        let result = self.parts.store.commit(first, &encoded, &leaves, &after).map_err(|e| e.to_string());
        metrics::histogram!("keyledger_store_commit_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    /// Appends records another node committed to the local files and applies them to the
    /// sequencer; subscribers receive them with the next sync, like this node's own.
    fn apply_foreign(&mut self, records: Vec<Vec<u8>>) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let first = self.parts.tree.size();
        let mut events = Vec::with_capacity(records.len());
        for (seq, bytes) in (first..).zip(&records) {
            let event = keyledger_core::decode_event(bytes).map_err(|e| format!("event {seq}: {e}"))?;
            if event.seq != seq {
                return Err(StoreError::Diverged(format!(
                    "the store's record {seq} carries seq {}",
                    event.seq
                ))
                .to_string());
            }
            events.push(event);
        }
        if let Err(reason) = self.append(&records.iter().map(Vec::as_slice).collect::<Vec<_>>()) {
            self.refused_from = Some(first);
            return Err(reason);
        }
        for event in &events {
            self.sequencer.apply_foreign(event)?;
            self.last_at = self.last_at.max(event.at);
        }
        self.stats.events.fetch_add(events.len() as u64, Ordering::Relaxed);
        self.unsynced.extend(events);
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Reads and applies everything the store holds past this node's log.
    fn follow_records(&mut self) -> Result<(), String> {
        loop {
            let records =
                self.parts.store.follow(self.parts.tree.size(), FOLLOW_CHUNK).map_err(|e| e.to_string())?;
            let count = records.len();
            self.apply_foreign(records)?;
            if count < FOLLOW_CHUNK {
                return Ok(());
            }
        }
    }

    /// Follows a shared store between batches: its records, then its latest checkpoint.
    fn follow_store(&mut self) {
        if !self.parts.store.is_shared() || self.failure.is_some() {
            return;
        }
        self.last_follow = Instant::now();
        let result = self.follow_records().and_then(|()| {
            let latest = self.parts.store.latest_checkpoint().map_err(|e| e.to_string())?;
            match latest {
                Some(latest) if latest.size <= self.parts.tree.size() => self.mirror_checkpoint(&latest),
                _ => Ok(()),
            }
        });
        if let Err(reason) = result {
            self.fail(reason);
        }
    }

    /// During recovery: appends to the local files everything the store holds past them,
    /// without the sequencer (which the recovery rewinds from the files next).
    fn mirror_store(&mut self) -> Result<(), String> {
        loop {
            let records =
                self.parts.store.follow(self.parts.tree.size(), FOLLOW_CHUNK).map_err(|e| e.to_string())?;
            let count = records.len();
            if count > 0 {
                self.append(&records.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
            }
            if count < FOLLOW_CHUNK {
                return self.parts.segments.sync().map_err(|e| e.to_string());
            }
        }
    }

    /// Stores locally a checkpoint of the shared store, after checking it is of this
    /// node's tree. A checkpoint of another root is a fork: refused, and the writer fails.
    fn mirror_checkpoint(&mut self, checkpoint: &SharedCheckpoint) -> Result<(), String> {
        let local = self.parts.checkpoints.latest().map_or(0, |c| c.size);
        if checkpoint.size <= local && local > 0 {
            return Ok(());
        }
        let root = self.parts.tree.reader().root_at(checkpoint.size).map_err(|e| e.to_string())?;
        if root != checkpoint.root {
            tracing::error!(
                size = checkpoint.size,
                "the store's checkpoint is not of this node's tree: a fork; refusing to go on"
            );
            return Err(StoreError::Diverged(format!(
                "the store's checkpoint at size {} has another root than this node's tree",
                checkpoint.size
            ))
            .to_string());
        }
        self.parts.tree.sync().map_err(|e| e.to_string())?;
        self.parts.checkpoints.store_note(&checkpoint.note).map_err(|e| e.to_string())?;
        self.last_checkpoint_size = checkpoint.size;
        self.last_checkpoint = Instant::now().checked_sub(checkpoint.age).unwrap_or_else(Instant::now);
        Ok(())
    }

    /// Signs a checkpoint for a shared store, under its lock: only when the store's latest
    /// is older than the configured interval or size (or `force`), and only after checking
    /// that the store's latest checkpoint is of this very tree.
    fn checkpoint_shared(&mut self, force: bool) {
        let size = self.parts.tree.size();
        if self.failure.is_some() || size == self.last_checkpoint_size {
            return;
        }
        let due = force
            || size - self.last_checkpoint_size >= self.options.checkpoint_every_events
            || self.last_checkpoint.elapsed() >= self.options.checkpoint_every;
        if !due {
            return;
        }
        if let Err(reason) = self.begin_shared() {
            return self.fail(format!("checkpoint failed: {reason}"));
        }
        self.sync_if_due(true);
        if self.failure.is_some() {
            return;
        }
        let result = self.sign_shared(force);
        let released = self.commit_shared(self.parts.tree.size(), &[]);
        match result.and_then(|signed| released.map(|()| signed)) {
            Ok(Some(note)) => match self.parts.checkpoints.store_note(&note) {
                Ok(stored) => {
                    self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                    self.last_checkpoint = Instant::now();
                    self.last_checkpoint_size = stored.size;
                }
                Err(error) => self.fail(format!("checkpoint failed: {error}")),
            },
            Ok(None) => {}
            Err(reason) => self.fail(format!("checkpoint failed: {reason}")),
        }
    }

    /// Inside a shared batch: checks the store's latest checkpoint against this tree, and
    /// signs and stores a new one if due. Returns the new note, to store locally once the
    /// batch committed.
    fn sign_shared(&mut self, force: bool) -> Result<Option<String>, String> {
        let size = self.parts.tree.size();
        let latest = self.parts.store.latest_checkpoint().map_err(|e| e.to_string())?;
        if let Some(latest) = &latest {
            self.mirror_checkpoint(latest)?;
            let recent = latest.age < self.options.checkpoint_every
                && size - latest.size < self.options.checkpoint_every_events;
            if latest.size == size || (recent && !force) {
                return Ok(None);
            }
        }
        let root = self.parts.tree.root();
        self.parts.tree.sync().map_err(|e| e.to_string())?;
        let note = self.parts.checkpoints.sign_note(size, root).map_err(|e| e.to_string())?;
        self.parts.store.store_checkpoint(size, root, &note).map_err(|e| e.to_string())?;
        Ok(Some(note))
    }
}
