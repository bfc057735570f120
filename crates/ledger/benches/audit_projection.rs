//! Benchmark of the projector's share of a verification: folding `used` events into the audit
//! indexes, without HTTP or the log.
//!
//! Run with `cargo bench -p keyledger-ledger --bench audit_projection`. Benchmark id:
//! - `projection/audit_usage_45k`: one projector transaction as the load test makes it
//!   (docs/benchmarks.md, "Each row pays for its audit indexes"): [`BATCH`] `used` events,
//!   about a second of verifications at full speed, over [`KEYS`] keys, each key seen from
//!   its own address with one of a few user agents and paths and a new gateway request id
//!   per event, applied by [`AuditProjection`] in one durable redb transaction on indexes
//!   that already hold the earlier iterations' events; the events are dropped inside the
//!   measurement, as the projector drops them. One iteration is one transaction; the
//!   throughput column counts events.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keyledger_core::{Actor, Event, KeyId, Payload, RequestId, Timestamp, Usage, UsageContext, WorkspaceId};
use keyledger_ledger::audit::AuditProjection;
use keyledger_ledger::projection::Projections;
use std::net::IpAddr;
use std::time::Duration;

/// Keys the events are spread over (round-robin, like the load test's).
const KEYS: u64 = 500;
/// Events per transaction.
const BATCH: u64 = 45_000;

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
                path: Some(format!("/v1/orders/{}", key % 8)),
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

fn bench_audit_projection(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut projections =
        Projections::open(&dir.path().join("projections.redb"), vec![Box::new(AuditProjection)])
            .expect("open");
    let start = Timestamp::now();
    let mut next = 0u64;
    // Indexes that already hold rows for every key, address and value, as after a first second.
    projections.apply(&batch(next, start)).expect("first batch");
    next += BATCH;
    let mut group = c.benchmark_group("projection");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    group.bench_function("audit_usage_45k", |b| {
        b.iter_batched(
            || {
                let events = batch(next, start);
                next += BATCH;
                events
            },
            |events| {
                projections.apply(&events).expect("apply");
                drop(events);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_audit_projection);
criterion_main!(benches);
