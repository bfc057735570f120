//! Benchmarks of key verification in keyledger-ledger, without HTTP.
//!
//! Run with `cargo bench -p keyledger-ledger --bench ledger_verify [-- <filter>]`. Benchmark ids:
//! - `ledger/decide`: the in-memory decision [`decide`] for an active key that passes every
//!   check (scope, resource, environment, workspace): the longest path through it, on the
//!   key as the registry holds it (a `KeyView` of its compact slot).
//! - `engine_verify/batched/{1,64}`: [`Engine::verify`] of valid keys in batched mode
//!   (`used` events written, fsynced within the window) on a data dir holding
//!   [`KEYS`] keys, from 1 or 64 concurrent tasks on one tokio worker thread, the log writer
//!   on its own thread (as a `strict` server or a PostgreSQL node runs it). One criterion
//!   iteration is one verification: checksum, keyed hash, registry lookup, the round trip to
//!   the log writer (decision + `used` event) and the reply. The 64-task figure is the
//!   throughput one; the 1-task figure is the latency of a lone verification, two
//!   cross-thread wake-ups included.
//! - `engine_verify/task/{1,64}`: the same with the log writer as a task on a runtime of two
//!   workers that also runs the verifying tasks, as `keyledger serve` runs it on the
//!   embedded store (docs/architecture.md, `writer.rs`).
//!
//! - `import_lookup/{native_hit,native_miss}/{0,100000}`: the registry part of a native
//!   verification (checksum, keyed hash, lookup, and the foreign lookup the engine adds on a
//!   miss, docs/import.md) on a registry of [`KEYS`] native keys and 0 or 100,000 imported
//!   keys not yet used: what importing costs the keys issued here.
//!
//! Like the log's append benches, the engine benches record the writer's events per fsync
//! in a JSON side file under `<criterion home>/keyledger-extra/` for `cargo xtask bench`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keyledger_core::{Actor, Environment, KeyHash, KeyId, RequestId, Timestamp, UsageContext, WorkspaceId};
use keyledger_ledger::state::decide;
use keyledger_ledger::{
    Caller, Engine, EngineOptions, Expiry, KeyRecord, KeySpec, LastUsed, LedgerState, VerifyOutcome,
    VerifyRequirements,
};
use keyledger_log::WriterStats;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Keys created in the engine before verifying; verifications cycle through them.
const KEYS: usize = 2_000;

fn workspace() -> WorkspaceId {
    "acme".parse().expect("valid workspace id")
}

/// What a typical gateway asks of a key: one scope, a resource, the environment and workspace.
fn requirements() -> VerifyRequirements {
    VerifyRequirements {
        scopes: vec!["orders:read".into()],
        resource: Some("orders".into()),
        environment: Some(Environment::Live),
        workspace: Some(workspace()),
        cost: None,
        ratelimits: Vec::new(),
    }
}

/// The context a gateway typically reports with a verification.
fn usage_context() -> UsageContext {
    UsageContext {
        ip: Some("203.0.113.7".parse().expect("valid ip")),
        user_agent: Some("api-gateway/2.4".into()),
        method: Some("GET".into()),
        path: Some("/v1/orders/42".into()),
        request_id: Some("gw-7f3a9c2e".into()),
        scopes: vec!["orders:read".into()],
        resource: Some("orders".into()),
    }
}

// ----- decide -------------------------------------------------------------------------------

/// An active key that every check of [`requirements`] passes.
fn active_record() -> KeyRecord {
    KeyRecord {
        key_id: KeyId::from_bytes([1; 16]),
        workspace: workspace(),
        name: "checkout service".into(),
        hash: KeyHash([0xab; 32]),
        hint: "kl_live_…abcd".into(),
        prefix: "kl".parse().expect("valid prefix"),
        environment: Environment::Live,
        scopes: vec!["orders:read".into(), "orders:write".into(), "payments:read".into()],
        resources: vec!["invoices".into(), "orders".into()],
        owner: Some("payments-team".into()),
        metadata: "{}".into(),
        created_at: Timestamp(1_700_000_000_000_000),
        created_by: Actor::System,
        expires_at: Some(Timestamp(4_000_000_000_000_000)),
        lifetime: None,
        revoked_at: None,
        revoked_reason: None,
        rotated_from: None,
        rotated_to: None,
        disabled: None,
        expiry_recorded: false,
        last_used: LastUsed::default(),
        allowed_sources: None,
    }
}

fn decide_benches(c: &mut Criterion) {
    let record = active_record();
    let mut state = LedgerState::default();
    state.insert(record.clone());
    let key = state.view(&record.key_id).expect("the key was just inserted");
    let wants = requirements();
    let now = Timestamp::now();
    assert_eq!(decide(&key, &wants, now), Ok(()), "the benchmarked key must be allowed");
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decide", |b| b.iter(|| decide(black_box(&key), black_box(&wants), now)));
    group.finish();
}

// ----- engine verify ------------------------------------------------------------------------

/// A running engine over a temp data dir holding [`KEYS`] keys, and their secrets.
struct EngineFixture {
    engine: Arc<Engine>,
    secrets: Arc<Vec<String>>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// Where the engine's log writer runs.
#[derive(Clone, Copy)]
enum WriterOn {
    /// Its own thread; the verifying tasks on a current-thread runtime.
    Thread,
    /// A task on a runtime of two workers, which also runs the verifying tasks.
    Task,
}

fn build_engine(writer_on: WriterOn) -> EngineFixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let runtime = match writer_on {
        WriterOn::Thread => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        WriterOn::Task => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
    }
    .expect("tokio runtime");
    let mut options = EngineOptions::default();
    if let WriterOn::Task = writer_on {
        options.writer.run_on = Some(runtime.handle().clone());
    }
    // `init` (and so `open`, which we keep beside it) is synchronous: it must not run on a
    // runtime thread.
    let engine = std::thread::spawn(move || {
        Engine::init(&data, EngineOptions::default()).expect("init data dir");
        Engine::open(&data, options).expect("open engine")
    })
    .join()
    .expect("engine setup thread");
    let engine = Arc::new(engine);
    let secrets = runtime.block_on(async {
        let mut creates = tokio::task::JoinSet::new();
        for n in 0..KEYS {
            let engine = engine.clone();
            creates.spawn(async move {
                let spec = KeySpec {
                    name: format!("service {n}"),
                    scopes: vec!["orders:read".into(), "orders:write".into()],
                    resources: vec!["invoices".into(), "orders".into()],
                    environment: Environment::Live,
                    owner: None,
                    metadata: "{}".into(),
                    expiry: Expiry::Never,
                    credits: None,
                };
                let (_, secret) =
                    engine.create(Caller::system(), workspace(), spec).await.expect("create key");
                secret.expose().to_owned()
            });
        }
        creates.join_all().await
    });
    EngineFixture { engine, secrets: Arc::new(secrets), runtime, _dir: dir }
}

/// Verifies `total` keys from `verifiers` concurrent tasks; returns the wall time taken.
async fn verify_concurrently(
    fixture: &EngineFixture,
    verifiers: u64,
    total: u64,
    counter: &AtomicU64,
) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..verifiers {
        let share = total / verifiers + u64::from(task < total % verifiers);
        let first = counter.fetch_add(share, Ordering::Relaxed);
        let (engine, secrets) = (fixture.engine.clone(), fixture.secrets.clone());
        let (wants, context) = (requirements(), usage_context());
        tasks.spawn(async move {
            for n in first..first + share {
                let secret = &secrets[n as usize % secrets.len()];
                let request_id = RequestId::from_bytes(u128::from(n).to_be_bytes());
                let outcome =
                    engine.verify(request_id, secret, wants.clone(), context.clone()).await.expect("verify");
                assert!(matches!(&outcome, VerifyOutcome::Known(verdict) if verdict.outcome.is_ok()));
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("verifier task");
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

    /// What happened between `earlier` and `self`.
    fn since(self, earlier: Self) -> Self {
        Self {
            events: self.events - earlier.events,
            batches: self.batches - earlier.batches,
            fsyncs: self.fsyncs - earlier.fsyncs,
            events_synced: self.events_synced - earlier.events_synced,
            checkpoints: self.checkpoints - earlier.checkpoints,
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

fn engine_benches(c: &mut Criterion) {
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("engine_verify");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    for (name, writer_on) in [("batched", WriterOn::Thread), ("task", WriterOn::Task)] {
        let mut fixture: Option<EngineFixture> = None;
        for verifiers in [1u64, 64] {
            let load = |fixture: &EngineFixture| CommitStats::read(fixture.engine.writer_stats());
            let mut before = None;
            group.bench_function(BenchmarkId::new(name, verifiers), |b| {
                let fixture = fixture.get_or_insert_with(|| build_engine(writer_on));
                before.get_or_insert_with(|| load(fixture));
                b.iter_custom(|iters| {
                    fixture.runtime.block_on(verify_concurrently(fixture, verifiers, iters, &counter))
                })
            });
            if let (Some(fixture), Some(before)) = (&fixture, before) {
                let stats = load(fixture).since(before);
                record_commit_stats(&format!("engine_verify/{name}/{verifiers}"), stats);
            }
        }
        if let Some(fixture) = fixture {
            fixture.runtime.block_on(fixture.engine.shutdown());
        }
    }
    group.finish();
}

// ----- import lookup ------------------------------------------------------------------------

/// A registry of [`KEYS`] native keys and `imported` imported ones, with native secrets.
fn registry_with_imports(pepper: &keyledger_core::Pepper, imported: usize) -> (LedgerState, Vec<String>) {
    use keyledger_core::{Created, Event, ForeignAlgorithm, ForeignHash, KeyImported, Payload, Secret};
    let mut state = LedgerState::default();
    let mut secrets = Vec::with_capacity(KEYS);
    let prefix: keyledger_core::KeyPrefix = "kl".parse().expect("valid prefix");
    let mut seq = 0;
    let mut event = |payload| {
        seq += 1;
        Event {
            seq: seq - 1,
            at: Timestamp(1_700_000_000_000_000),
            actor: Actor::System,
            request_id: RequestId::from_bytes([0; 16]),
            payload,
        }
    };
    for n in 0..KEYS {
        let secret = Secret::generate(&prefix, Environment::Live).expect("secret");
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        state.apply(&event(Payload::Created(Created {
            key_id: KeyId::from_bytes(id),
            workspace: workspace(),
            name: format!("native {n}"),
            hash: pepper.hash(secret.expose()),
            hint: secret.hint(),
            prefix: prefix.clone(),
            environment: Environment::Live,
            scopes: vec!["orders:read".into()],
            resources: vec![],
            owner: None,
            metadata: "{}".into(),
            expires_at: None,
            rotated_from: None,
        })));
        secrets.push(secret.expose().to_owned());
    }
    for n in 0..imported {
        let mut id = [0xffu8; 16];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        let digest = *blake3::hash(&(n as u64).to_le_bytes()).as_bytes();
        state.apply(&event(Payload::KeyImported(KeyImported {
            key_id: KeyId::from_bytes(id),
            workspace: workspace(),
            name: format!("imported {n}"),
            foreign: ForeignHash { algorithm: ForeignAlgorithm::Sha256, digest },
            environment: Environment::Live,
            scopes: vec!["orders:read".into()],
            resources: vec![],
            owner: None,
            metadata: "{}".into(),
            expires_at: None,
            external_id: None,
        })));
    }
    (state, secrets)
}

/// What the engine's lookup does for a presented secret (see `Engine::lookup`).
fn lookup(state: &LedgerState, pepper: &keyledger_core::Pepper, presented: &str) -> Option<KeyId> {
    if keyledger_core::Secret::check(presented).is_err() {
        return None;
    }
    let hash = pepper.hash(presented);
    state.id_by_hash(&hash).or_else(|| state.imported.find(presented))
}

fn import_benches(c: &mut Criterion) {
    let pepper = keyledger_core::Pepper::generate().expect("pepper");
    let prefix: keyledger_core::KeyPrefix = "kl".parse().expect("valid prefix");
    let mut group = c.benchmark_group("import_lookup");
    group.throughput(Throughput::Elements(1));
    for imported in [0usize, 100_000] {
        let (state, secrets) = registry_with_imports(&pepper, imported);
        let unknown: Vec<String> = (0..64)
            .map(|_| {
                let secret = keyledger_core::Secret::generate(&prefix, Environment::Live).expect("secret");
                secret.expose().to_owned()
            })
            .collect();
        let mut n = 0usize;
        group.bench_function(BenchmarkId::new("native_hit", imported), |b| {
            b.iter(|| {
                n = (n + 1) % secrets.len();
                black_box(lookup(&state, &pepper, black_box(&secrets[n]))).expect("found")
            })
        });
        group.bench_function(BenchmarkId::new("native_miss", imported), |b| {
            b.iter(|| {
                n = (n + 1) % unknown.len();
                black_box(lookup(&state, &pepper, black_box(&unknown[n])))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = decide_benches, engine_benches, import_benches
}
criterion_main!(benches);
