//! Self-recovery of the log writer (docs/operations.md, "Failure behaviour"), over
//! [`FaultyStorage`] on real files.
//!
//! A failed write, fsync or short write poisons the writer: every command is refused. Once
//! the fault clears, the writer recovers by itself (no restart): it reopens the log from
//! disk, rewinds its sequencer to the records that remain and accepts appends again. After
//! a failed fsync it does not trust the page cache: records past the last successful fsync
//! are cut even though the file still shows them. A recovery attempt that fails leaves the
//! writer poisoned and is retried with backoff. Throughout, the subscriber sees each durable
//! event once, in order, and no seq it saw is ever given to another event.
//!
//! Every test runs twice: with the writer on its own thread, and (module `on_runtime`) as a
//! task on a multi-threaded runtime, as `keyledger serve` runs it, where its fsyncs,
//! checkpoints and recoveries are blocking work on a runtime worker.

use keyledger_core::{Event, encode_event};
use keyledger_log::segment::SegmentOptions;
use keyledger_log::segment::SegmentReader;
use keyledger_log::storage::{FaultSwitch, FaultyStorage, OsStorage};
use keyledger_log::verify::verify_log;
use keyledger_log::{Batch, Durability, Log, LogConfig, LogError, Sequencer, WriterHandle, WriterOptions};
use keyledger_verify::merkle::TreeHash;
use keyledger_verify::note::VerifierKey;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::{ORIGIN, signer};

/// Records one `used` event per command, tagged with the command's number in its request
/// id. Its "state" is the number of events it has applied, which `refused` (at a failure)
/// and `rewind` (at a recovery) reset to what the log holds; each call is recorded.
struct Counting {
    applied: Arc<Mutex<u64>>,
    rewinds: Arc<Mutex<Vec<u64>>>,
    refusals: Arc<Mutex<Vec<u64>>>,
}

impl Sequencer for Counting {
    type Command = u64;
    type Reply = u64;

    fn sequence(&mut self, tag: u64, batch: &mut Batch) -> u64 {
        let seq = support::push_usage(tag, batch);
        *self.applied.lock().unwrap() += 1;
        seq
    }

    fn rewind(&mut self, log: &SegmentReader, records: u64) -> Result<(), String> {
        assert!(log.len() >= records, "rewind to {records} but the log holds {}", log.len());
        *self.applied.lock().unwrap() = records;
        self.rewinds.lock().unwrap().push(records);
        Ok(())
    }

    fn refused(&mut self, log: &SegmentReader, records: u64) -> Result<(), String> {
        assert!(log.len() >= records, "refused at {records} but the log holds {}", log.len());
        *self.applied.lock().unwrap() = records;
        self.refusals.lock().unwrap().push(records);
        Ok(())
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    switch: Arc<FaultSwitch>,
    verifier: VerifierKey,
    writer: WriterHandle<Counting>,
    applied: Arc<Mutex<u64>>,
    rewinds: Arc<Mutex<Vec<u64>>>,
    refusals: Arc<Mutex<Vec<u64>>>,
    committed: keyledger_log::HandoffReceiver,
    /// Every event the subscriber received, by seq.
    seen: Vec<Event>,
    /// The runtime the writer runs on, in the `on_runtime` runs (dropped last).
    _runtime: Option<tokio::runtime::Runtime>,
}

thread_local! {
    /// Set by the `on_runtime` runs: the fixture starts the writer on a runtime.
    static ON_RUNTIME: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn options() -> WriterOptions {
    WriterOptions {
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..Default::default()
    }
}

fn start(options: WriterOptions) -> Fixture {
    start_with_queue(options, 4096)
}

/// [`start`] with a subscriber channel of `queue` batches.
fn start_with_queue(mut options: WriterOptions, queue: usize) -> Fixture {
    let runtime = ON_RUNTIME
        .with(|on| on.get())
        .then(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());
    options.run_on = runtime.as_ref().map(|runtime| runtime.handle().clone());
    let dir = tempfile::tempdir().unwrap();
    let switch = FaultSwitch::new();
    let signer = signer();
    let verifier = signer.verifier();
    let config = LogConfig {
        dir: dir.path().join("log"),
        storage: Arc::new(FaultyStorage::with_switch(switch.clone())),
        signer,
        origin: ORIGIN.into(),
        tree_hash: TreeHash::Rfc6962,
    };
    let log = Log::open(config).unwrap();
    let (applied, rewinds) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(Vec::new())));
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let (tx, committed) = keyledger_log::handoff(queue, usize::MAX);
    let sequencer =
        Counting { applied: applied.clone(), rewinds: rewinds.clone(), refusals: refusals.clone() };
    let writer = log.start(sequencer, options, Some(tx));
    assert_eq!(writer.runs_on_runtime(), runtime.is_some());
    Fixture {
        dir,
        switch,
        verifier,
        writer,
        applied,
        rewinds,
        refusals,
        committed,
        seen: Vec::new(),
        _runtime: runtime,
    }
}

impl Fixture {
    fn append(&self, tag: u64, durability: Durability) -> Result<u64, LogError> {
        self.writer.submit_blocking(tag, durability)
    }

    fn append_ok(&self, tags: std::ops::Range<u64>) {
        for tag in tags {
            self.append(tag, Durability::Synced).unwrap();
        }
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.writer.is_healthy() {
            assert!(Instant::now() < deadline, "the writer did not recover within {within:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_unhealthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.writer.is_healthy() {
            assert!(Instant::now() < deadline, "still healthy 5 s after the fault");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Takes what the subscriber received so far, checking it continues the sequence.
    fn drain(&mut self) {
        while let Ok(events) = self.committed.try_recv() {
            for event in events.iter() {
                assert_eq!(event.seq, self.seen.len() as u64, "subscribers get each seq once, in order");
                self.seen.push(event.clone());
            }
        }
    }

    fn last_segment_len(&self) -> u64 {
        let events = self.dir.path().join("log").join("events");
        let mut files: Vec<_> = std::fs::read_dir(events).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        std::fs::metadata(files.last().unwrap()).unwrap().len()
    }

    /// Stops the writer, checks the subscriber's events are exactly the log's (no seq given
    /// to two events), reopens with real storage and runs `log verify`. Returns the length.
    fn finish(mut self) -> u64 {
        self.writer.shutdown_blocking();
        self.drain();
        let log_dir = self.dir.path().join("log");
        let report =
            verify_log(OsStorage::shared(), &log_dir, &self.verifier, TreeHash::Rfc6962, &mut |_, _| {})
                .unwrap_or_else(|e| panic!("log verify fails after the recovery: {e}"));
        assert_eq!(report.events, self.seen.len() as u64, "the subscriber saw every durable event");
        let config = LogConfig {
            dir: log_dir,
            storage: OsStorage::shared(),
            signer: signer(),
            origin: ORIGIN.into(),
            tree_hash: TreeHash::Rfc6962,
        };
        let log = Log::open(config).unwrap();
        assert_eq!(log.recovery().truncated_bytes, 0, "the self-recovery left nothing to cut");
        let reader = log.reader();
        for event in &self.seen {
            assert_eq!(
                encode_event(&reader.event(event.seq).unwrap()),
                encode_event(event),
                "seq {} on disk is the event the subscriber received",
                event.seq
            );
        }
        report.events
    }
}

fn tag_of(event: &Event) -> u64 {
    u64::from_be_bytes(event.request_id.as_bytes()[8..].try_into().unwrap())
}

fn assert_unavailable(result: Result<u64, LogError>, what: &str) {
    assert!(matches!(result, Err(LogError::Unavailable(_))), "{what}: expected Unavailable, got {result:?}");
}

#[test]
fn a_failed_write_poisons_then_the_writer_recovers_by_itself() {
    let mut f = start(options());
    f.append_ok(0..5);
    f.switch.set_fail_writes(true);
    assert_unavailable(f.append(100, Durability::Synced), "the failing append");
    assert!(!f.writer.is_healthy());
    assert_unavailable(f.append(101, Durability::Written), "while poisoned");
    assert_eq!(*f.applied.lock().unwrap(), 5, "the refused command was rewound");
    f.switch.clear();
    f.wait_healthy(Duration::from_secs(5));
    assert_eq!(f.append(5, Durability::Synced).unwrap(), 5, "the refused commands took no seq");
    assert!(f.writer.stats().recoveries.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(f.writer.stats().failures.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(*f.applied.lock().unwrap(), 6);
    f.drain();
    let tags: Vec<u64> = f.seen.iter().map(tag_of).collect();
    assert_eq!(tags, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(f.finish(), 6);
}

#[test]
fn after_a_failed_fsync_recovery_cuts_what_only_the_page_cache_holds() {
    // A long sync window: the batched append below stays unsynced until a synced one comes.
    let mut f = start(WriterOptions { sync_window: Duration::from_secs(30), ..options() });
    f.append_ok(0..3);
    let durable_bytes = f.last_segment_len();
    // Answered once written (batched usage), before any fsync.
    assert_eq!(f.append(10, Durability::Written).unwrap(), 3);
    f.switch.set_fail_sync(true);
    assert_unavailable(f.append(11, Durability::Synced), "its fsync fails");
    f.wait_unhealthy();
    assert!(f.last_segment_len() > durable_bytes, "the file (page cache) still shows seqs 3 and 4");
    assert_eq!(*f.applied.lock().unwrap(), 3, "rewound to the last fsynced length at once");
    // At the failure the sequencer is told its refused commands' effects must go; the
    // full rewind (a start's work) is the recovery's, once.
    assert_eq!(*f.refusals.lock().unwrap(), vec![3]);
    assert!(f.rewinds.lock().unwrap().is_empty(), "{:?}", f.rewinds.lock().unwrap());
    f.switch.clear();
    f.wait_healthy(Duration::from_secs(5));
    assert_eq!(f.last_segment_len(), durable_bytes, "cut back to the last successful fsync");
    assert_eq!(*f.rewinds.lock().unwrap(), vec![3]);
    assert_eq!(f.append(12, Durability::Synced).unwrap(), 3, "seq 3 is free again");
    f.drain();
    let tags: Vec<u64> = f.seen.iter().map(tag_of).collect();
    assert_eq!(tags, vec![0, 1, 2, 12], "the subscriber never saw the unsynced events");
    assert_eq!(f.finish(), 4);
}

#[test]
fn a_short_write_is_cut_and_the_writer_recovers() {
    let mut f = start(options());
    f.append_ok(0..4);
    let bytes = f.last_segment_len();
    f.switch.set_short_write(true);
    assert_unavailable(f.append(100, Durability::Synced), "the torn append");
    assert!(f.last_segment_len() > bytes, "half a batch reached the file");
    f.switch.clear();
    f.wait_healthy(Duration::from_secs(5));
    assert_eq!(f.last_segment_len(), bytes, "the torn batch was cut");
    assert_eq!(f.append(4, Durability::Synced).unwrap(), 4);
    f.drain();
    assert_eq!(f.seen.iter().map(tag_of).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(f.finish(), 5);
}

#[test]
fn a_failed_write_keeps_earlier_batched_appends_and_delivers_them_once() {
    let mut f = start(WriterOptions { sync_window: Duration::from_secs(30), ..options() });
    f.append_ok(0..2);
    // Acknowledged as written, not yet fsynced.
    assert_eq!(f.append(2, Durability::Written).unwrap(), 2);
    f.drain();
    assert_eq!(f.seen.len(), 2, "not durable yet, not delivered");
    f.switch.set_fail_writes(true);
    assert_unavailable(f.append(100, Durability::Synced), "the failing write");
    // No fsync failed: the written batch is kept and fsynced by the recovery.
    f.switch.clear();
    f.wait_healthy(Duration::from_secs(5));
    assert_eq!(*f.applied.lock().unwrap(), 3);
    assert_eq!(f.append(3, Durability::Synced).unwrap(), 3);
    f.drain();
    assert_eq!(f.seen.iter().map(tag_of).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(f.finish(), 4);
}

#[test]
fn a_failed_recovery_stays_poisoned_and_retries_with_backoff() {
    let f = start(options());
    f.append_ok(0..2);
    f.switch.set_fail_writes(true);
    assert_unavailable(f.append(100, Durability::Synced), "the failing append");
    // 20 ms, then 40, 80, 160, 200 (the cap), …: a few attempts, all failing.
    std::thread::sleep(Duration::from_millis(400));
    let attempts = f.writer.stats().recovery_attempts.load(std::sync::atomic::Ordering::Relaxed);
    assert!((2..=8).contains(&attempts), "{attempts} attempts in 400 ms");
    assert!(!f.writer.is_healthy(), "a failed attempt leaves the writer poisoned");
    assert_eq!(f.writer.stats().recoveries.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_unavailable(f.append(101, Durability::Synced), "still refused");
    // The disk takes writes but fsync still fails: the recovery's probe catches it.
    f.switch.set_fail_writes(false);
    f.switch.set_fail_sync(true);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!f.writer.is_healthy(), "recovered although fsync fails");
    assert_unavailable(f.append(102, Durability::Synced), "still refused");
    f.switch.clear();
    f.wait_healthy(Duration::from_secs(2));
    assert_eq!(f.append(2, Durability::Synced).unwrap(), 2);
    assert_eq!(f.finish(), 3);
}

#[test]
fn checkpoints_resume_after_a_recovery() {
    let f = start(options());
    f.append_ok(0..3);
    f.switch.set_fail_writes(true);
    assert_unavailable(f.append(100, Durability::Synced), "the failing append");
    f.switch.clear();
    f.wait_healthy(Duration::from_secs(5));
    f.append_ok(3..6);
    let checkpoint = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f.writer.checkpoint_now())
        .expect("a checkpoint after the recovery");
    assert_eq!(checkpoint.size, 6);
    assert_eq!(f.finish(), 6);
}

/// A subscriber that does not keep up never stalls the writer: batches that find its
/// channel full are skipped (and counted), the ones it gets are still durable, in order and
/// never repeated, and what it missed is in the log.
#[test]
fn a_full_subscriber_channel_skips_batches_without_blocking_the_writer() {
    let fixture = start_with_queue(options(), 2);
    fixture.append_ok(0..50);
    let skipped = fixture.writer.stats().handoffs_skipped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(skipped >= 40, "50 synced appends, a channel of 2 never read: {skipped} skipped");
    let mut received = Vec::new();
    while let Ok(events) = fixture.committed.try_recv() {
        received.extend(events.iter().map(|e| e.seq));
    }
    assert!(!received.is_empty() && received.windows(2).all(|w| w[0] < w[1]), "{received:?}");
    fixture.append_ok(50..53);
    let mut after = Vec::new();
    while let Ok(events) = fixture.committed.try_recv() {
        after.extend(events.iter().map(|e| e.seq));
    }
    assert_eq!(after.first(), Some(&50), "a drained channel receives the next batch again");
    fixture.writer.shutdown_blocking();
    let reader = Log::open(LogConfig {
        dir: fixture.dir.path().join("log"),
        storage: OsStorage::shared(),
        signer: signer(),
        origin: ORIGIN.into(),
        tree_hash: TreeHash::Rfc6962,
    })
    .unwrap()
    .reader();
    assert_eq!(reader.len(), 53, "every skipped batch is in the log");
    assert_eq!(
        (0..53).map(|seq| tag_of(&reader.event(seq).unwrap())).collect::<Vec<_>>(),
        (0..53).collect::<Vec<_>>()
    );
}

/// Waits until an fsync begins after `before` syncs were counted (it then sleeps the
/// switch's sync delay).
fn wait_for_fsync_to_begin(switch: &FaultSwitch, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while switch.syncs() <= before {
        assert!(Instant::now() < deadline, "no fsync began within 5 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn fsyncs_done(f: &Fixture) -> u64 {
    f.writer.stats().fsyncs.load(std::sync::atomic::Ordering::SeqCst)
}

/// As a task, the writer's fsync runs off its path (docs/benchmarks.md, "The fsync off the
/// writer's path"): while the disk takes 2 s, a batched append is written and answered, and
/// a synced one waits for an fsync that began after it was written.
#[test]
fn as_a_task_the_writer_answers_batched_appends_while_an_fsync_runs() {
    ON_RUNTIME.with(|on| on.set(true));
    let mut f = start(WriterOptions { sync_window: Duration::from_millis(1), ..options() });
    f.append_ok(0..1);
    let done = fsyncs_done(&f);
    f.switch.set_sync_delay(Duration::from_secs(2));
    let before = f.switch.syncs();
    assert_eq!(f.append(1, Durability::Written).unwrap(), 1);
    wait_for_fsync_to_begin(&f.switch, before);
    assert_eq!(f.append(2, Durability::Written).unwrap(), 2);
    assert_eq!(fsyncs_done(&f), done, "answered while the fsync still ran");
    f.drain();
    assert_eq!(f.seen.len(), 1, "nothing is handed over before its fsync");
    let during = f.switch.syncs();
    assert_eq!(f.append(3, Durability::Synced).unwrap(), 3);
    assert!(f.switch.syncs() > during, "the synced append waited for an fsync begun after it");
    assert_eq!(fsyncs_done(&f), done + 2);
    f.switch.set_sync_delay(Duration::ZERO);
    f.drain();
    assert_eq!(f.seen.iter().map(tag_of).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(f.finish(), 4);
}

/// As a task, a batch that rolls the log to a new segment waits for the old segment's fsync
/// as blocking work: the runtime's only worker goes on running other tasks meanwhile.
#[test]
fn as_a_task_a_roll_waits_for_its_fsync_off_the_runtime_workers() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let switch = FaultSwitch::new();
    let config = LogConfig {
        dir: dir.path().join("log"),
        storage: Arc::new(FaultyStorage::with_switch(switch.clone())),
        signer: signer(),
        origin: ORIGIN.into(),
        tree_hash: TreeHash::Rfc6962,
    };
    // Every batch after the first rolls to a new segment.
    let log =
        Log::open_with_segments(config, SegmentOptions { segment_size: 1, ..Default::default() }).unwrap();
    let counting = Counting { applied: Arc::default(), rewinds: Arc::default(), refusals: Arc::default() };
    let writer = log.start(
        counting,
        WriterOptions {
            run_on: Some(runtime.handle().clone()),
            sync_window: Duration::from_secs(3600),
            ..options()
        },
        None,
    );
    assert_eq!(writer.submit_blocking(0, Durability::Written).unwrap(), 0);
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticking = ticks.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ticking.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    switch.set_sync_delay(Duration::from_millis(1500));
    let appending = std::thread::spawn(move || {
        let seq = writer.submit_blocking(1, Durability::Written);
        (seq, writer)
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = ticks.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(600));
    let during = ticks.load(std::sync::atomic::Ordering::SeqCst) - before;
    let (seq, writer) = appending.join().unwrap();
    assert_eq!(seq.unwrap(), 1);
    assert!(during >= 20, "the worker ran {during} ticks in 600 ms while the roll's fsync ran");
    switch.set_sync_delay(Duration::ZERO);
    drop(writer);
}

/// An fsync that fails off the writer's path poisons it like one in place: the synced
/// caller waiting is refused, and the recovery cuts back to what the last successful fsync
/// covered, including the batched appends written while the failing one ran.
#[test]
fn as_a_task_a_failed_fsync_off_the_writers_path_cuts_back_to_the_last_good_one() {
    ON_RUNTIME.with(|on| on.set(true));
    let mut f = start(WriterOptions { sync_window: Duration::from_millis(1), ..options() });
    f.append_ok(0..2);
    let durable_bytes = f.last_segment_len();
    f.switch.set_sync_delay(Duration::from_millis(500));
    f.switch.set_fail_sync(true);
    let before = f.switch.syncs();
    assert_eq!(f.append(2, Durability::Written).unwrap(), 2);
    wait_for_fsync_to_begin(&f.switch, before);
    assert_eq!(f.append(3, Durability::Written).unwrap(), 3, "written while the failing fsync runs");
    assert_unavailable(f.append(4, Durability::Synced), "the fsync failed");
    f.wait_unhealthy();
    f.switch.set_sync_delay(Duration::ZERO);
    f.switch.clear();
    f.wait_healthy(Duration::from_secs(5));
    assert_eq!(f.last_segment_len(), durable_bytes, "cut back to the last successful fsync");
    assert_eq!(f.append(5, Durability::Synced).unwrap(), 2, "seq 2 is free again");
    f.drain();
    assert_eq!(f.seen.iter().map(tag_of).collect::<Vec<_>>(), vec![0, 1, 5]);
    assert_eq!(f.finish(), 3);
}

/// Under a steady load some events always wait for the next fsync; checkpoints are still
/// signed as often as configured (each forces the fsync it needs).
#[test]
fn checkpoints_are_signed_under_a_steady_load() {
    let f = start(WriterOptions {
        sync_window: Duration::from_millis(1),
        checkpoint_every_events: 100,
        ..options()
    });
    f.switch.set_sync_delay(Duration::from_millis(5));
    for tag in 0..1_000 {
        f.append(tag, Durability::Written).unwrap();
    }
    let checkpoints = f.writer.stats().checkpoints.load(std::sync::atomic::Ordering::SeqCst);
    assert!(checkpoints >= 5, "{checkpoints} checkpoints while appending 1,000 events");
    f.switch.set_sync_delay(Duration::ZERO);
    assert_eq!(f.finish(), 1_000);
}

/// The same tests with the writer as a task on a multi-threaded runtime.
mod on_runtime {
    macro_rules! on_runtime {
        ($($test:ident),* $(,)?) => {$(
            #[test]
            fn $test() {
                super::ON_RUNTIME.with(|on| on.set(true));
                super::$test();
            }
        )*};
    }

    on_runtime!(
        a_failed_write_poisons_then_the_writer_recovers_by_itself,
        after_a_failed_fsync_recovery_cuts_what_only_the_page_cache_holds,
        a_short_write_is_cut_and_the_writer_recovers,
        a_failed_write_keeps_earlier_batched_appends_and_delivers_them_once,
        a_failed_recovery_stays_poisoned_and_retries_with_backoff,
        checkpoints_resume_after_a_recovery,
        a_full_subscriber_channel_skips_batches_without_blocking_the_writer,
        checkpoints_are_signed_under_a_steady_load,
    );
}
