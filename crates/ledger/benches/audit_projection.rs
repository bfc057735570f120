//! Benchmark of the projector's share of a verification: folding `used` events into the audit
//! indexes, without HTTP or the log.
//!
//! Run with `cargo bench -p keyledger-ledger --bench audit_projection`. Benchmark id:
//! - `projection/audit_usage_45k`: one projector transaction as the load test makes it
//!   (docs/benchmarks.md, "Each row pays for its audit indexes"): [`BATCH`] `used` events,
//!   about a second of verifications at full speed, over [`KEYS`] keys, each key seen from
//!   its own address with one user agent, one of [`PATHS`] paths per use and a new gateway
//!   request id per event, applied by [`AuditProjection`] in one durable redb transaction
//!   on indexes that already hold earlier transactions' events (a fresh database every
//!   [`RESET_EVERY`] transactions, outside the measurement, so the indexes a transaction
//!   meets do not depend on how many iterations criterion runs); the events are dropped
//!   inside the measurement, as the projector drops them. One iteration is one transaction;
//!   the throughput column counts events.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keyledger_core::{Actor, Event, KeyId, Payload, RequestId, Timestamp, Usage, UsageContext, WorkspaceId};
use keyledger_ledger::audit::AuditProjection;
use keyledger_ledger::projection::Projections;
use std::cell::RefCell;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Keys the events are spread over (round-robin, like the load test's).
const KEYS: u64 = 500;
/// Events per transaction.
const BATCH: u64 = 45_000;
/// Paths a key is used on (one per use, in turn).
const PATHS: u64 = 8;
/// Transactions applied to one database before the bench starts a fresh one.
const RESET_EVERY: u64 = 20;

const AGENTS: [&str; 3] = ["keyledger-load/1", "api-gateway/2.4", "curl/8.5.0"];

/// The `used` events of seqs `first..first + BATCH`, a millisecond apart.
fn batch(first: u64, start: Timestamp) -> Vec<Event> {
    let workspace: WorkspaceId = "acme".parse().expect("valid workspace id");
    (first..first + BATCH)
        .map(|seq| {
            let key = seq % KEYS;
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&key.to_be_bytes());
            let context = UsageContext {
                ip: Some(IpAddr::from([10, 1, (key / 250) as u8, (key % 250 + 1) as u8])),
                user_agent: Some(AGENTS[(key % 3) as usize].into()),
                method: Some("GET".into()),
                path: Some(format!("/v1/orders/{}", seq / KEYS % PATHS)),
                request_id: Some(format!("gw-{seq}")),
                scopes: vec!["read".into()],
                resource: None,
            };
            Event {
                seq,
                at: start.plus_micros(seq as i64 * 1_000),
                actor: Actor::Verifier,
                request_id: RequestId::generate(start.millis() + seq),
                payload: Payload::Used(Usage {
                    key_id: KeyId::from_bytes(id),
                    workspace: workspace.clone(),
                    context,
                }),
            }
        })
        .collect()
}

/// Indexes that already hold a transaction of events, as after the projector's first second.
fn fresh(dir: &Path, start: Timestamp) -> (Option<Projections>, u64) {
    let path = dir.join("projections.redb");
    let _ = std::fs::remove_file(&path);
    let mut projections = Projections::open(&path, vec![Box::new(AuditProjection)]).expect("open");
    projections.apply(&batch(0, start)).expect("first batch");
    (Some(projections), BATCH)
}

fn bench_audit_projection(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let start = Timestamp::now();
    // (The projections, the next seq), shared by the setup and the measured routine; the
    // projections are `None` only while the setup replaces them.
    let state = RefCell::new(fresh(dir.path(), start));
    let mut group = c.benchmark_group("projection");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("audit_usage_45k", |b| {
        b.iter_batched(
            || {
                let mut state = state.borrow_mut();
                if state.1 >= BATCH * (RESET_EVERY + 1) {
                    state.0 = None; // closes the database before its file is replaced
                    *state = fresh(dir.path(), start);
                }
                let events = batch(state.1, start);
                state.1 += BATCH;
                events
            },
            |events| {
                state.borrow_mut().0.as_mut().expect("projections open").apply(&events).expect("apply");
                drop(events);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Set here, not on the group, so that `--warm-up-time`/`--measurement-time` (as `cargo
    // xtask bench --quick` passes them) override it.
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(15));
    targets = bench_audit_projection
}
criterion_main!(benches);
