//! keyledger's append-only, tamper-evident event log.
//!
//! The log is three stores kept in step by one writer (its own thread, or a task on the
//! server's runtime):
//! - [`segment`]: the events' bytes in CRC-framed, append-only segment files (the source of
//!   truth; a torn last batch is cut on recovery);
//! - [`tree`]: the Merkle tree's node hashes (RFC 6962 / RFC 9162: SHA-256 in log format 2,
//!   BLAKE3 in format 1), for O(log n) proofs;
//! - [`checkpoint`]: Ed25519-signed C2SP checkpoints of the tree.
//!
//! [`Log::open`] recovers all three and checks them against each other; [`Log::start`] hands
//! the log to the [`writer`], the only code that appends. [`LogReader`] reads concurrently.
//! [`verify`] checks a log offline; [`upgrade`] prepares a format-1 log for format 2.
//! [`witnessed`] keeps what the witnesses said of the log (the cosigned checkpoint, fork
//! alarms) with the log's store.
#![forbid(unsafe_code)]

pub mod checkpoint;
mod handoff;
pub mod proof;
pub mod segment;
pub mod storage;
pub mod store;
pub mod tree;
pub mod upgrade;
pub mod verify;
pub mod witnessed;
mod writer;

use checkpoint::{CheckpointError, CheckpointStore, StoredCheckpoint};
pub use handoff::{HandoffError, HandoffReceiver, HandoffSender, handoff};
use keyledger_core::{DecodeError, Event, decode_event};
use keyledger_verify::merkle::{Hash, TreeHash};
use keyledger_verify::note::{NoteSigner, VerifierKey};
use segment::{SegmentError, SegmentLog, SegmentOptions, SegmentReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use storage::Storage;
use tree::{TreeError, TreeReader, TreeWriter};
pub use writer::{
    Batch, CommittedEvents, Durability, LogError, Sequencer, WriterHandle, WriterOptions, WriterStats,
};

/// Everything that can go wrong opening or reading the log.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("event {seq} cannot be decoded: {source}")]
    Decode { seq: u64, source: DecodeError },
    #[error(
        "the log holds {len} events but its latest signed checkpoint covers {size}: acknowledged events are missing; refusing to continue"
    )]
    ShorterThanCheckpoint { len: u64, size: u64 },
    #[error(
        "the log's tree at size {size} does not match its signed checkpoint: the log was altered; refusing to continue"
    )]
    CheckpointMismatch { size: u64 },
    #[error(
        "the log's tree at size {size} does not match the SHA-256 root of its signed transition note: the log was altered; refusing to continue"
    )]
    TransitionMismatch { size: u64 },
}

/// Where the log lives and how it signs.
pub struct LogConfig {
    pub dir: PathBuf,
    pub storage: Arc<dyn Storage>,
    pub signer: NoteSigner,
    /// The checkpoint origin line (also the verifier key's name).
    pub origin: String,
    /// How the tree is hashed: [`TreeHash::Rfc6962`] for log format 2, the only format that
    /// is written; [`TreeHash::Blake3`] only to read a format-1 log (docs/log-format.md).
    pub tree_hash: TreeHash,
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub events: u64,
    pub truncated_bytes: u64,
    pub truncated_records: u64,
}

/// An opened, recovered log, not yet written to.
pub struct Log {
    segments: SegmentLog,
    tree: TreeWriter,
    checkpoints: CheckpointStore,
    recovery: RecoveryReport,
    verifier: VerifierKey,
}

impl Log {
    /// Opens (or creates) the log under `config.dir`, cuts a torn tail, brings the tree up
    /// to the log (recomputing it if its files hold another hash) and checks both against
    /// the latest signed checkpoint, and against the transition note of a log upgraded from
    /// format 1. If that upgrade signed no SHA-256 checkpoint yet (a crash right after it),
    /// one is signed now, so the latest checkpoint is always of the tree being extended.
    pub fn open(config: LogConfig) -> Result<Self, OpenError> {
        Self::open_with_segments(config, SegmentOptions::default())
    }

    /// [`Self::open`] with the event segments tuned by `segments` (their size, e.g.).
    pub fn open_with_segments(config: LogConfig, segments: SegmentOptions) -> Result<Self, OpenError> {
        let hash = config.tree_hash;
        let (segments, recovery) =
            SegmentLog::open(config.storage.clone(), &events_dir(&config.dir), segments)?;
        let leaves =
            Arc::new(SegmentLeaves { reader: segments.reader(), dir: events_dir(&config.dir), hash });
        let tree = TreeWriter::open(&tree_dir(&config.dir), hash, segments.len(), leaves)?;
        let verifier = config.signer.verifier();
        let mut checkpoints = CheckpointStore::open(
            config.storage.clone(),
            &checkpoints_dir(&config.dir),
            config.signer,
            config.origin,
            hash,
        )?;
        check_checkpoint(&tree, &checkpoints)?;
        if let Some(transition) = checkpoints.transition() {
            let latest = checkpoints.latest();
            if latest.is_none_or(|latest| checkpoint::predates(&latest, transition)) {
                tree.sync()?;
                checkpoints.sign_and_store(tree.size(), tree.root())?;
            }
        }
        let report = RecoveryReport {
            events: segments.len(),
            truncated_bytes: recovery.truncated_bytes,
            truncated_records: recovery.truncated_records,
        };
        Ok(Self { segments, tree, checkpoints, recovery: report, verifier })
    }

    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn len(&self) -> u64 {
        self.tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reader(&self) -> LogReader {
        LogReader {
            events: self.segments.reader(),
            tree: self.tree.reader(),
            latest: self.checkpoints.shared_latest(),
            verifier: self.verifier.clone(),
        }
    }

    /// Brings this log's files, the local mirror of a shared store, up to the store before
    /// the writer starts: appends what the store holds past them, checks that they then are
    /// the store's head (same size, same root), and stores the store's latest checkpoint
    /// locally. [`store::StoreError::Diverged`] when the files are not a prefix of the
    /// store's log (e.g. the database failed over and lost commits this node had seen): the
    /// caller rebuilds the mirror from the store. Returns the records appended.
    pub fn follow_store(&mut self, store: &mut dyn store::LogStore) -> Result<u64, store::StoreError> {
        let io = |e: &dyn std::fmt::Display| store::StoreError::Unavailable(format!("local mirror: {e}"));
        let start = self.tree.size();
        let hash = self.tree.tree_hash();
        let append = |log: &mut Self, records: Vec<Vec<u8>>| -> Result<(), store::StoreError> {
            if records.is_empty() {
                return Ok(());
            }
            let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            log.segments.append_batch(&slices).map_err(|e| io(&e))?;
            let leaves: Vec<Hash> = records.iter().map(|r| hash.leaf(r)).collect();
            log.tree.append_leaves(&leaves).map_err(|e| io(&e))?;
            log.tree.publish();
            Ok(())
        };
        loop {
            let records = store.follow(self.tree.size(), 4096)?;
            let count = records.len();
            append(self, records)?;
            if count < 4096 {
                break;
            }
        }
        let foreign = store.begin(self.tree.size())?;
        let result = append(self, foreign.records).and_then(|()| match foreign.head {
            Some(head) if head.size != self.tree.size() || head.root != self.tree.root() => {
                Err(store::StoreError::Diverged(format!(
                    "the store holds {} events, this node's mirror {} events with another root",
                    head.size,
                    self.tree.size()
                )))
            }
            _ => Ok(()),
        });
        store.abort();
        result?;
        self.segments.sync().map_err(|e| io(&e))?;
        self.tree.sync().map_err(|e| io(&e))?;
        if let Some(latest) = store.latest_checkpoint()? {
            let root = self.tree.reader().root_at(latest.size).map_err(|e| io(&e))?;
            if root != latest.root {
                return Err(store::StoreError::Diverged(format!(
                    "the store's checkpoint at size {} is not of this node's tree",
                    latest.size
                )));
            }
            if self.checkpoints.latest().is_none_or(|local| local.size < latest.size) {
                self.checkpoints.store_note(&latest.note).map_err(|e| io(&e))?;
            }
        }
        Ok(self.tree.size() - start)
    }

    /// Hands the log to its writer. `subscriber` receives the durable batches, in seq
    /// order, those that find its queue full excepted (see [`writer`]'s guarantees and
    /// [`handoff()`]).
    pub fn start<S: Sequencer>(
        self,
        sequencer: S,
        options: WriterOptions,
        subscriber: Option<HandoffSender>,
    ) -> WriterHandle<S> {
        self.start_with_store(sequencer, options, subscriber, Box::new(store::Embedded))
    }

    /// [`Self::start`] over a log store: [`store::Embedded`] (what `start` uses) or a shared
    /// store, of which this log's files are then the local mirror.
    pub fn start_with_store<S: Sequencer>(
        self,
        sequencer: S,
        options: WriterOptions,
        subscriber: Option<HandoffSender>,
        store: Box<dyn store::LogStore>,
    ) -> WriterHandle<S> {
        let last_at = match self.segments.len() {
            0 => keyledger_core::Timestamp::default(),
            len => self.reader().event(len - 1).map(|e| e.at).unwrap_or_default(),
        };
        let parts = writer::WriterParts {
            segments: self.segments,
            tree: self.tree,
            checkpoints: self.checkpoints,
            store,
        };
        writer::spawn(parts, last_at, sequencer, options, subscriber)
    }
}

/// The leaf hashes of the log's records, read from its segments: what the tree recomputes on
/// open and the nodes it does not store ([`tree::LOWEST_STORED_LEVEL`]).
struct SegmentLeaves {
    reader: SegmentReader,
    dir: PathBuf,
    hash: TreeHash,
}

impl tree::LeafSource for SegmentLeaves {
    fn leaves(&self, start: u64, out: &mut [Hash]) -> Result<(), TreeError> {
        let error = |e: SegmentError| TreeError::Io {
            op: "read event",
            path: self.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut records = self.reader.iter(start);
        for (seq, slot) in (start..).zip(out.iter_mut()) {
            match records.next() {
                Some(record) => *slot = self.hash.leaf(&record.map_err(error)?.1),
                None => return Err(TreeError::OutOfRange { level: 0, index: seq, size: seq }),
            }
        }
        Ok(())
    }
}

/// Refuses a tree that is shorter than the latest signed checkpoint or disagrees with it,
/// or, in a log upgraded from format 1, disagrees with the SHA-256 root of its transition
/// note. A latest checkpoint signed before the upgrade commits to a BLAKE3 root, which the
/// SHA-256 tree cannot be compared with: the transition note, signed when that checkpoint
/// was checked, stands for it.
pub(crate) fn check_checkpoint(tree: &TreeWriter, checkpoints: &CheckpointStore) -> Result<(), OpenError> {
    let transition = checkpoints.transition();
    if let Some(transition) = transition {
        if transition.size > tree.size() {
            return Err(OpenError::ShorterThanCheckpoint { len: tree.size(), size: transition.size });
        }
        if tree.reader().root_at(transition.size)? != transition.sha256_root {
            return Err(OpenError::TransitionMismatch { size: transition.size });
        }
    }
    if let Some(latest) = checkpoints.latest() {
        if latest.size > tree.size() {
            return Err(OpenError::ShorterThanCheckpoint { len: tree.size(), size: latest.size });
        }
        let before_upgrade = transition.is_some_and(|t| checkpoint::predates(&latest, t));
        if !before_upgrade && tree.reader().root_at(latest.size)? != latest.root {
            return Err(OpenError::CheckpointMismatch { size: latest.size });
        }
    }
    Ok(())
}

/// Concurrent read access to the log: events, proofs, checkpoints. Cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    events: SegmentReader,
    tree: TreeReader,
    latest: Arc<RwLock<Option<StoredCheckpoint>>>,
    verifier: VerifierKey,
}

impl LogReader {
    /// Events visible to readers (written; possibly not yet fsynced).
    pub fn len(&self) -> u64 {
        self.tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn event(&self, seq: u64) -> Result<Event, OpenError> {
        let bytes = self.events.read(seq)?;
        decode_event(&bytes).map_err(|source| OpenError::Decode { seq, source })
    }

    /// The raw stored bytes of an event.
    pub fn raw(&self, seq: u64) -> Result<Vec<u8>, OpenError> {
        Ok(self.events.read(seq)?)
    }

    /// Events from `from` on, decoded, in seq order.
    pub fn events_from(&self, from: u64) -> impl Iterator<Item = Result<Event, OpenError>> + '_ {
        let end = self.len();
        self.events.iter(from).take_while(move |r| r.as_ref().map_or(true, |(seq, _)| *seq < end)).map(
            |record| {
                let (seq, bytes) = record?;
                decode_event(&bytes).map_err(|source| OpenError::Decode { seq, source })
            },
        )
    }

    /// Like [`Self::events_from`], with each event's stored bytes (`0x01 ‖ postcard`), which
    /// re-encode from the event exactly (decoding accepts only the canonical encoding).
    pub fn records_from(&self, from: u64) -> impl Iterator<Item = Result<(Event, Vec<u8>), OpenError>> + '_ {
        let end = self.len();
        self.events.iter(from).take_while(move |r| r.as_ref().map_or(true, |(seq, _)| *seq < end)).map(
            |record| {
                let (seq, bytes) = record?;
                let event = decode_event(&bytes).map_err(|source| OpenError::Decode { seq, source })?;
                Ok((event, bytes))
            },
        )
    }

    pub fn tree(&self) -> &TreeReader {
        &self.tree
    }

    /// How the tree is hashed (SHA-256 for every log that is written: format 2).
    pub fn tree_hash(&self) -> TreeHash {
        self.tree.tree_hash()
    }

    pub fn latest_checkpoint(&self) -> Option<StoredCheckpoint> {
        self.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        self.tree.root_at(size)
    }

    /// The first seq whose event is at or after `at` (the log is ordered by time: batch
    /// times never decrease). `len()` if there is none. O(log n) reads.
    pub fn seq_at_or_after(&self, at: keyledger_core::Timestamp) -> Result<u64, OpenError> {
        first_at_or_after(self.len(), at, |seq| self.event(seq).map(|e| e.at))
    }

    /// The stored records underneath, for readers that decode them themselves.
    pub fn segments(&self) -> &SegmentReader {
        &self.events
    }
}

/// The first of the seqs `0..len` whose time (`time_of(seq)`) is at or after `at`, `len` if
/// there is none: a binary search, since batch times never decrease along the log.
pub fn first_at_or_after<E>(
    len: u64,
    at: keyledger_core::Timestamp,
    mut time_of: impl FnMut(u64) -> Result<keyledger_core::Timestamp, E>,
) -> Result<u64, E> {
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = low + (high - low) / 2;
        if time_of(middle)? < at {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

/// Where the log keeps its events' segment files inside its directory (also for tools that
/// inspect the files directly).
pub fn events_dir(log_dir: &Path) -> PathBuf {
    log_dir.join("events")
}

/// Where the log keeps its Merkle tree's node hashes inside its directory.
pub fn tree_dir(log_dir: &Path) -> PathBuf {
    log_dir.join("tree")
}

/// Where the log keeps its signed checkpoints (a segment log of notes) and the transition
/// note of a tree-hash upgrade, inside its directory.
pub fn checkpoints_dir(log_dir: &Path) -> PathBuf {
    log_dir.join("checkpoints")
}
