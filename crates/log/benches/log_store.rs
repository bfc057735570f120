//! Benchmarks of keyledger-log on real files: appends through the group-commit writer,
//! proof generation from the stored tree, and offline `log verify`.
//!
//! Run with `cargo bench -p keyledger-log --bench log_store [-- <filter>]`. Benchmark ids:
//! - `append/written/{1,8,64}`: one `used` event per command through the real writer in
//!   batched mode ([`Durability::Written`]), from 1, 8 or 64 concurrent tokio tasks on one
//!   runtime thread; one criterion iteration is one appended event.
//! - `append/synced/64`: the same with [`Durability::Synced`] (each append waits for its
//!   fsync), 64 appenders.
//! - `proofs/inclusion_1m`, `proofs/consistency_1m`: one proof from a 1,000,000-leaf tree
//!   stored by [`TreeWriter`] (synthetic leaf hashes), at varying indexes / old sizes.
//! - `log_verify/200k_events`: [`verify_log`] over a 200,000-event log written through the
//!   writer (page cache warm); one iteration verifies the whole log.
//!
//! The append benches also record the writer's events per fsync
//! (`WriterStats::events_synced / fsyncs`, over warm-up and measurement) in a JSON side file
//! under `<criterion home>/keyledger-extra/`, which `cargo xtask bench` puts in the table.
//! Fixtures are built lazily, so a filter that skips a benchmark skips its setup too.

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use keyledger_core::{Actor, KeyId, Payload, RequestId, Usage, UsageContext, WorkspaceId};
use keyledger_log::storage::OsStorage;
use keyledger_log::tree::{LeafSource, TreeError, TreeReader, TreeWriter};
use keyledger_log::verify::verify_log;
use keyledger_log::{Batch, Durability, Log, LogConfig, Sequencer, WriterHandle, WriterOptions, WriterStats};
use keyledger_verify::merkle::{Hash, TreeHash, verify_consistency, verify_inclusion};
use keyledger_verify::note::{NoteSigner, VerifierKey};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The checkpoint origin (and note key name) of every benchmark log.
const ORIGIN: &str = "bench.keyledger.invalid/log";
/// Leaves of the tree the proof benchmarks read.
const PROOF_TREE_SIZE: u64 = 1_000_000;
/// Events in the log `log_verify` checks.
const VERIFY_LOG_EVENTS: u64 = 200_000;

// ----- a trivial sequencer ------------------------------------------------------------------

/// One verification's worth of log traffic: the key used and the request that used it.
struct UseKey {
    key_id: KeyId,
    request_id: RequestId,
}

/// Accepts every command and records it as one `used` event with a typical context, so
/// the benchmark measures the writer and the stores, not any ledger logic.
struct UsageSequencer {
    workspace: WorkspaceId,
    context: UsageContext,
}

impl UsageSequencer {
    fn new() -> Self {
        Self {
            workspace: "acme".parse().expect("valid workspace id"),
            context: UsageContext {
                ip: Some("203.0.113.7".parse().expect("valid ip")),
                user_agent: Some("api-gateway/2.4".into()),
                method: Some("GET".into()),
                path: Some("/v1/orders/42".into()),
                request_id: Some("gw-7f3a9c2e".into()),
                scopes: vec!["orders:read".into()],
                resource: Some("orders".into()),
            },
        }
    }
}

impl Sequencer for UsageSequencer {
    type Command = UseKey;
    /// The seq the event was given.
    type Reply = u64;

    fn sequence(&mut self, command: UseKey, batch: &mut Batch) -> u64 {
        let usage = Usage {
            key_id: command.key_id,
            workspace: self.workspace.clone(),
            context: self.context.clone(),
        };
        batch.push(Actor::Verifier, command.request_id, Payload::Used(usage)).seq
    }
}

/// The command appender `task` sends as its `n`th append.
fn use_key(task: u64, n: u64) -> UseKey {
    let mut request = [0u8; 16];
    request[..8].copy_from_slice(&task.to_be_bytes());
    request[8..].copy_from_slice(&n.to_be_bytes());
    UseKey { key_id: KeyId::from_bytes([task as u8; 16]), request_id: RequestId::from_bytes(request) }
}

// ----- fixtures -----------------------------------------------------------------------------

/// A fresh, empty log in `dir`, and the key its checkpoints verify with.
fn open_log(dir: &Path) -> (Log, VerifierKey) {
    let signer = NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[7; 32])).expect("valid key name");
    let verifier = signer.verifier();
    let config = LogConfig {
        dir: dir.to_owned(),
        storage: OsStorage::shared(),
        signer,
        origin: ORIGIN.into(),
        tree_hash: TreeHash::Rfc6962,
    };
    (Log::open(config).expect("open the benchmark log"), verifier)
}

/// The runtime the appenders run on: one thread, as a small server's verify path would.
fn single_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Appends `total` events from `appenders` concurrent tasks; returns the wall time taken.
async fn append_concurrently(
    writer: &WriterHandle<UsageSequencer>,
    appenders: u64,
    durability: Durability,
    total: u64,
) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..appenders {
        let share = total / appenders + u64::from(task < total % appenders);
        let writer = writer.clone();
        tasks.spawn(async move {
            for n in 0..share {
                writer.submit(use_key(task, n), durability).await.expect("append");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("appender task");
    }
    started.elapsed()
}

/// Where criterion writes its results (`$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, or
/// `criterion/` in the target dir holding this executable, `<target>/<profile>/deps/`).
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.ends_with("deps"))
                .and_then(|deps| deps.parent()?.parent())
                .map(Path::to_owned)
        })
        .map(|target| target.join("criterion"))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The writer's counters over one benchmark.
#[derive(Clone, Copy, Debug, Default)]
struct CommitStats {
    events: u64,
    batches: u64,
    fsyncs: u64,
    events_synced: u64,
    checkpoints: u64,
}

impl CommitStats {
    fn read(stats: &WriterStats) -> Self {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Self {
            events: get(&stats.events),
            batches: get(&stats.batches),
            fsyncs: get(&stats.fsyncs),
            events_synced: get(&stats.events_synced),
            checkpoints: get(&stats.checkpoints),
        }
    }
}

/// Records the writer's group-commit figures for benchmark `id` next to criterion's own
/// results, for `cargo xtask bench`.
fn record_commit_stats(id: &str, stats: CommitStats) {
    let CommitStats { events, batches, fsyncs, events_synced, checkpoints } = stats;
    let per_fsync = events_synced as f64 / fsyncs.max(1) as f64;
    let per_batch = events as f64 / batches.max(1) as f64;
    println!(
        "{id}: {per_fsync:.1} events per fsync ({events_synced} events over {fsyncs} fsyncs), {per_batch:.1} events per write batch, {checkpoints} checkpoints"
    );
    let dir = criterion_home().join("keyledger-extra");
    let json = format!(
        "{{\"id\":\"{id}\",\"events\":{events},\"batches\":{batches},\"fsyncs\":{fsyncs},\"events_synced\":{events_synced},\"events_per_fsync\":{per_fsync:.3},\"events_per_batch\":{per_batch:.3},\"checkpoints\":{checkpoints}}}\n"
    );
    let file = dir.join(format!("{}.json", id.replace('/', "_")));
    if let Err(error) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, json)) {
        eprintln!("could not record {}: {error}", file.display());
    }
}

// ----- append -------------------------------------------------------------------------------

fn append_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    let cases = [
        (Durability::Written, 1),
        (Durability::Written, 8),
        (Durability::Written, 64),
        (Durability::Synced, 64),
    ];
    for (durability, appenders) in cases {
        let mode = match durability {
            Durability::Written => "written",
            Durability::Synced => "synced",
        };
        let id = BenchmarkId::new(mode, appenders);
        // Each case gets its own log; it is created on first use so a filtered-out case costs nothing.
        let mut running: Option<(tempfile::TempDir, WriterHandle<UsageSequencer>)> = None;
        let runtime = single_thread_runtime();
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let (_, writer) = running.get_or_insert_with(|| {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let (log, _) = open_log(dir.path());
                    let writer = log.start(UsageSequencer::new(), WriterOptions::default(), None);
                    (dir, writer)
                });
                runtime.block_on(append_concurrently(writer, appenders, durability, iters))
            })
        });
        if let Some((_dir, writer)) = running {
            let stats = CommitStats::read(writer.stats());
            runtime.block_on(writer.shutdown());
            record_commit_stats(&format!("append/{mode}/{appenders}"), stats);
        }
    }
    group.finish();
}

// ----- proofs -------------------------------------------------------------------------------

/// A stored tree of [`PROOF_TREE_SIZE`] synthetic leaves, built through [`TreeWriter`].
struct ProofTree {
    _dir: tempfile::TempDir,
    _writer: TreeWriter,
    reader: TreeReader,
    root: Hash,
}

fn synthetic_leaf(index: u64) -> Hash {
    TreeHash::Rfc6962.leaf(&index.to_le_bytes())
}

fn build_proof_tree() -> ProofTree {
    let dir = tempfile::tempdir().expect("temp dir");
    let leaves: std::sync::Arc<dyn LeafSource> =
        std::sync::Arc::new(|seq: u64| -> Result<Hash, TreeError> { Ok(synthetic_leaf(seq)) });
    let mut writer = TreeWriter::open(dir.path(), TreeHash::Rfc6962, 0, leaves).expect("open tree store");
    let chunk = 65_536u64;
    for start in (0..PROOF_TREE_SIZE).step_by(chunk as usize) {
        let leaves: Vec<Hash> = (start..(start + chunk).min(PROOF_TREE_SIZE)).map(synthetic_leaf).collect();
        writer.append_leaves(&leaves).expect("append leaves");
    }
    writer.publish();
    writer.sync().expect("sync tree");
    let reader = writer.reader();
    let root = writer.root();
    ProofTree { _dir: dir, _writer: writer, reader, root }
}

/// Steps through `0..modulus` in a scattered order, so successive proofs touch different
/// parts of the tree.
fn scattered(step: &mut u64, modulus: u64) -> u64 {
    *step = (*step + 618_033) % modulus;
    *step
}

/// The proof tree, built (and its proofs checked once) on first use.
fn proof_tree(slot: &mut Option<ProofTree>) -> &ProofTree {
    slot.get_or_insert_with(|| {
        let tree = build_proof_tree();
        // Sanity: what is benchmarked is a valid proof.
        let proof = tree.reader.inclusion_proof(123_456, PROOF_TREE_SIZE).expect("inclusion proof");
        verify_inclusion(
            TreeHash::Rfc6962,
            123_456,
            PROOF_TREE_SIZE,
            &synthetic_leaf(123_456),
            &proof,
            &tree.root,
        )
        .expect("inclusion proof verifies");
        let old_root = tree.reader.root_at(654_321).expect("old root");
        let proof = tree.reader.consistency_proof(654_321, PROOF_TREE_SIZE).expect("consistency proof");
        verify_consistency(TreeHash::Rfc6962, 654_321, PROOF_TREE_SIZE, &old_root, &tree.root, &proof)
            .expect("consistency proof verifies");
        tree
    })
}

fn proof_benches(c: &mut Criterion) {
    let mut tree = None;
    let mut group = c.benchmark_group("proofs");
    group.throughput(Throughput::Elements(1));
    group.bench_function("inclusion_1m", |b| {
        let reader = proof_tree(&mut tree).reader.clone();
        let mut step = 0;
        b.iter(|| {
            let index = scattered(&mut step, PROOF_TREE_SIZE);
            reader.inclusion_proof(black_box(index), PROOF_TREE_SIZE).expect("inclusion proof")
        })
    });
    group.bench_function("consistency_1m", |b| {
        let reader = proof_tree(&mut tree).reader.clone();
        let mut step = 0;
        b.iter(|| {
            let old_size = 1 + scattered(&mut step, PROOF_TREE_SIZE - 1);
            reader.consistency_proof(black_box(old_size), PROOF_TREE_SIZE).expect("consistency proof")
        })
    });
    group.finish();
}

// ----- log verify ---------------------------------------------------------------------------

/// A log of [`VERIFY_LOG_EVENTS`] events written through the writer and cleanly shut down.
fn build_verify_log() -> (tempfile::TempDir, VerifierKey) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, verifier) = open_log(dir.path());
    let writer = log.start(UsageSequencer::new(), WriterOptions::default(), None);
    let runtime = single_thread_runtime();
    runtime.block_on(async {
        append_concurrently(&writer, 64, Durability::Written, VERIFY_LOG_EVENTS).await;
        writer.shutdown().await;
    });
    (dir, verifier)
}

fn verify_log_benches(c: &mut Criterion) {
    let mut fixture: Option<(tempfile::TempDir, VerifierKey)> = None;
    let mut group = c.benchmark_group("log_verify");
    group.throughput(Throughput::Elements(VERIFY_LOG_EVENTS));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("200k_events", |b| {
        let (dir, verifier) = fixture.get_or_insert_with(build_verify_log);
        b.iter(|| {
            let report =
                verify_log(OsStorage::shared(), dir.path(), verifier, TreeHash::Rfc6962, &mut |_, _| {})
                    .expect("log verifies");
            assert_eq!(report.events, VERIFY_LOG_EVENTS);
            report
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = append_benches, proof_benches, verify_log_benches
}
criterion_main!(benches);
