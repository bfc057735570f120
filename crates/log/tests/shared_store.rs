//! The writer over a shared log store (crates/log/src/store.rs), with an in-memory store
//! standing in for the database: other writers' records are applied before a batch is
//! decided, and a commit whose answer was lost is never acknowledged but is found again by
//! the recovery, so the local files hold exactly what the store holds.

use keyledger_core::{Actor, Event, KeyId, Payload, RequestId, Timestamp, Usage, UsageContext, encode_event};
use keyledger_log::segment::SegmentReader;
use keyledger_log::store::{Foreign, Head, LogStore, SharedCheckpoint, StoreError};
use keyledger_log::{Batch, Durability, Log, LogConfig, LogError, Sequencer, WriterOptions};
use keyledger_verify::merkle::{Frontier, Hash, TreeHash};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::{ORIGIN, signer};

/// The store's log: records and the head's root.
struct Shared {
    records: Vec<Vec<u8>>,
    root: Hash,
}

#[derive(Clone)]
struct Memory {
    log: Arc<Mutex<Shared>>,
    /// The next commit happens, but its answer is lost (the connection died during COMMIT).
    lose_answer: Arc<AtomicBool>,
    /// Reads of other writers' records (`follow`) so far.
    follows: Arc<AtomicUsize>,
    /// The next read takes 300 ms (a slow database).
    slow_follow: Arc<AtomicBool>,
}

impl Memory {
    fn new() -> Self {
        Self {
            log: Arc::new(Mutex::new(Shared { records: Vec::new(), root: TreeHash::Rfc6962.empty_root() })),
            lose_answer: Arc::new(AtomicBool::new(false)),
            follows: Arc::new(AtomicUsize::new(0)),
            slow_follow: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl LogStore for Memory {
    fn is_shared(&self) -> bool {
        true
    }
    fn begin(&mut self, local_len: u64) -> Result<Foreign, StoreError> {
        let log = self.log.lock().unwrap();
        let records = log.records[local_len as usize..].to_vec();
        Ok(Foreign { head: Some(Head { size: log.records.len() as u64, root: log.root }), records })
    }
    fn commit(
        &mut self,
        first: u64,
        records: &[Vec<u8>],
        _: &[Hash],
        after: &Frontier,
    ) -> Result<(), StoreError> {
        let mut log = self.log.lock().unwrap();
        assert_eq!(first, log.records.len() as u64, "a batch appends at the head");
        log.records.extend_from_slice(records);
        if !records.is_empty() {
            log.root = after.root();
        }
        if !records.is_empty() && self.lose_answer.swap(false, Ordering::AcqRel) {
            return Err(StoreError::Unavailable("connection lost during COMMIT".into()));
        }
        Ok(())
    }
    fn abort(&mut self) {}
    fn follow(&mut self, local_len: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.follows.fetch_add(1, Ordering::AcqRel);
        if self.slow_follow.swap(false, Ordering::AcqRel) {
            std::thread::sleep(Duration::from_millis(300));
        }
        let log = self.log.lock().unwrap();
        Ok(log.records.iter().skip(local_len as usize).take(limit).cloned().collect())
    }
    fn follow_every(&self) -> Option<Duration> {
        Some(Duration::from_secs(3600))
    }
    fn latest_checkpoint(&mut self) -> Result<Option<SharedCheckpoint>, StoreError> {
        Ok(None)
    }
    fn store_checkpoint(&mut self, _: u64, _: Hash, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn reconnect(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One `used` event per command; counts the events it applied, its own and other writers'.
struct Following {
    applied: Arc<Mutex<Vec<u64>>>,
}

impl Sequencer for Following {
    type Command = u64;
    type Reply = u64;

    fn sequence(&mut self, tag: u64, batch: &mut Batch) -> u64 {
        let seq = support::push_usage(tag, batch);
        self.applied.lock().unwrap().push(seq);
        seq
    }

    fn rewind(&mut self, _: &SegmentReader, records: u64) -> Result<(), String> {
        // The state of the first `records` events: what it applied below, then the rest.
        let mut applied = self.applied.lock().unwrap();
        applied.retain(|seq| *seq < records);
        let have = applied.len() as u64;
        applied.extend(have..records);
        Ok(())
    }

    fn apply_foreign(&mut self, event: &Event) -> Result<(), String> {
        self.applied.lock().unwrap().push(event.seq);
        Ok(())
    }
}

fn open_log(dir: &std::path::Path) -> Log {
    Log::open(LogConfig {
        dir: dir.join("log"),
        storage: keyledger_log::storage::OsStorage::shared(),
        signer: signer(),
        origin: ORIGIN.into(),
        tree_hash: TreeHash::Rfc6962,
    })
    .unwrap()
}

fn foreign_event(seq: u64) -> Vec<u8> {
    let usage = Usage {
        key_id: KeyId::from_bytes([2; 16]),
        workspace: "acme".parse().unwrap(),
        context: UsageContext::default(),
    };
    let event = Event {
        seq,
        at: Timestamp::now(),
        actor: Actor::Verifier,
        request_id: RequestId::from_bytes([9; 16]),
        payload: Payload::Used(usage),
    };
    encode_event(&event)
}

#[test]
fn the_writer_applies_other_writers_records_first_and_never_acknowledges_an_unknown_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let reader = log.reader();
    let store = Memory::new();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = keyledger_log::handoff(64, usize::MAX);
    let options = WriterOptions { retry_initial: Duration::from_millis(10), ..WriterOptions::default() };
    let writer = log.start_with_store(
        Following { applied: applied.clone() },
        options,
        Some(tx),
        Box::new(store.clone()),
    );

    assert_eq!(writer.submit_blocking(1, Durability::Synced), Ok(0));
    // Another writer appends two records: the next batch applies them first.
    {
        let mut shared = store.log.lock().unwrap();
        let mut frontier = Frontier::new(TreeHash::Rfc6962);
        shared.records.push(foreign_event(1));
        shared.records.push(foreign_event(2));
        for record in &shared.records {
            frontier.push(TreeHash::Rfc6962.leaf(record));
        }
        shared.root = frontier.root();
    }
    assert_eq!(writer.submit_blocking(2, Durability::Written), Ok(3), "decided after the foreign records");
    assert_eq!(*applied.lock().unwrap(), vec![0, 1, 2, 3]);

    // The store commits seq 4 but the answer is lost: the caller is refused, never told Ok.
    store.lose_answer.store(true, Ordering::Release);
    assert!(matches!(writer.submit_blocking(3, Durability::Synced), Err(LogError::Unavailable(_))));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !writer.is_healthy() {
        assert!(Instant::now() < deadline, "the writer did not recover");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The recovery followed the store: the committed batch is in the local files, once.
    assert_eq!(writer.submit_blocking(4, Durability::Synced), Ok(5));
    let stored = store.log.lock().unwrap().records.clone();
    assert_eq!(stored.len(), 6);
    assert_eq!(reader.len(), 6);
    let local: Vec<Vec<u8>> = (0..6).map(|seq| reader.raw(seq).unwrap()).collect();
    assert_eq!(local, stored, "the local files are exactly the store's log");
    assert_eq!(*applied.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    writer.shutdown_blocking();
    let seen: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
        .flat_map(|batch| batch.iter().map(|e| e.seq).collect::<Vec<_>>())
        .collect();
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5], "the subscriber saw every event once, in order");
}

#[test]
fn follows_asked_while_the_writer_is_busy_are_served_by_one_read_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let store = Memory::new();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let writer = log.start_with_store(
        Following { applied: applied.clone() },
        WriterOptions::default(),
        None,
        Box::new(store.clone()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        // The first follow finds the database slow; twenty more are asked meanwhile.
        store.slow_follow.store(true, Ordering::Release);
        let before = store.follows.load(Ordering::Acquire);
        let first = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.follow_now().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another writer appends while they wait: every follower must see it.
        {
            let mut shared = store.log.lock().unwrap();
            shared.records.push(foreign_event(0));
            let mut frontier = Frontier::new(TreeHash::Rfc6962);
            frontier.push(TreeHash::Rfc6962.leaf(&shared.records[0]));
            shared.root = frontier.root();
        }
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.follow_now().await })
            })
            .collect();
        assert_eq!(first.await.unwrap(), Ok(()));
        for follower in waiting {
            assert_eq!(follower.await.unwrap(), Ok(()));
        }
        let reads = store.follows.load(Ordering::Acquire) - before;
        assert!(
            reads <= 3,
            "21 follows asked, {reads} reads of the store (one for the first, one for the rest)"
        );
    });
    assert_eq!(*applied.lock().unwrap(), vec![0], "the other writer's record was applied once");
    writer.shutdown_blocking();
}
