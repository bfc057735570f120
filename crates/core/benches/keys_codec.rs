//! Micro-benchmarks of keyledger-core's hot paths: the work every verification does before
//! any lookup (checksum, keyed hash) and the canonical event encoding every append pays.
//!
//! Run with `cargo bench -p keyledger-core --bench keys_codec [-- <filter>]`. Benchmark ids:
//! - `secret/check`: [`Secret::check`] (shape + BLAKE3 checksum) of a valid key;
//! - `pepper/hash`: [`Pepper::hash`] (keyed BLAKE3) of a valid key;
//! - `codec/encode_used`, `codec/decode_used`: [`encode_event`] / [`decode_event`] (which
//!   re-encodes to enforce canonical form) of a typical `used` event.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyledger_core::{
    Actor, Environment, Event, KeyId, KeyPrefix, Payload, Pepper, RequestId, Secret, Timestamp, Usage,
    UsageContext, decode_event, encode_event,
};
use std::hint::black_box;
use std::time::Duration;

/// A `used` event as a gateway verification typically records it.
fn typical_used_event() -> Event {
    Event {
        seq: 1_234_567,
        at: Timestamp(1_700_000_000_123_456),
        actor: Actor::Verifier,
        request_id: RequestId::from_bytes([7; 16]),
        payload: Payload::Used(Usage {
            key_id: KeyId::from_bytes([1; 16]),
            workspace: "acme".parse().expect("valid workspace id"),
            context: UsageContext {
                ip: Some("203.0.113.7".parse().expect("valid ip")),
                user_agent: Some("api-gateway/2.4 (+https://example.invalid)".into()),
                method: Some("GET".into()),
                path: Some("/v1/orders/42".into()),
                request_id: Some("gw-7f3a9c2e".into()),
                scopes: vec!["orders:read".into()],
                resource: Some("orders".into()),
            },
        }),
    }
}

fn secret_benches(c: &mut Criterion) {
    let secret = Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).expect("OS randomness");
    let text = secret.expose().to_owned();

    let mut group = c.benchmark_group("secret");
    group.throughput(Throughput::Elements(1));
    group.bench_function("check", |b| b.iter(|| Secret::check(black_box(&text)).is_ok()));
    group.finish();

    let pepper = Pepper::from_bytes([0x5a; 32]);
    let mut group = c.benchmark_group("pepper");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hash", |b| b.iter(|| pepper.hash(black_box(&text))));
    group.finish();
}

fn codec_benches(c: &mut Criterion) {
    let event = typical_used_event();
    let bytes = encode_event(&event);
    assert_eq!(decode_event(&bytes).as_ref(), Ok(&event), "the example event must round-trip");

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_used", |b| b.iter(|| encode_event(black_box(&event))));
    group.bench_function("decode_used", |b| b.iter(|| decode_event(black_box(&bytes))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = secret_benches, codec_benches
}
criterion_main!(benches);
