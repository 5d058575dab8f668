//! Parse + validate of ingest bodies (`UncheckedBody::parse` → `validate`),
//! the CPU work ingest does per request before publishing, in readings/s.
//!
//! Run with `cargo bench -p ha-core --bench wire_parse` (no servers needed;
//! `scripts/bench wire_parse` works too).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ha_core::wire::{Timestamp, UncheckedBody};

/// A body of `n` readings of one device, two metrics each, like a device
/// flushing its buffer.
fn body(n: usize, now: Timestamp) -> Vec<u8> {
    let readings: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"device_id":"dev-00042","seq":{},"ts":"{now}","metrics":{{"pulse":{}.5,"spo2":97.25}}}}"#,
                1_000 + i,
                60 + i % 40
            )
        })
        .collect();
    format!(r#"{{"readings":[{}]}}"#, readings.join(",")).into_bytes()
}

fn bench(c: &mut Criterion) {
    let now = Timestamp::now();
    let mut group = c.benchmark_group("wire_parse");
    for n in [1usize, 100] {
        let bytes = body(n, now);
        // The body must be valid, or the bench measures the error path.
        let parsed = UncheckedBody::parse(&bytes)
            .and_then(|b| Ok(b.validate(now)?))
            .expect("the bench body is valid");
        assert_eq!(parsed.readings.len(), n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("parse_validate_{n}_readings"), |b| {
            b.iter(|| {
                let unchecked = UncheckedBody::parse(black_box(&bytes)).expect("valid");
                black_box(unchecked.validate(now).expect("valid"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
