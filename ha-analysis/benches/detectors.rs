//! Readings per second: incremental detectors against a naive recompute of
//! the window, for W = 200 and W = 2000; and the keyed container with
//! 100,000 series.
//!
//! `cargo bench -p ha-analysis -- --warm-up-time 1 --measurement-time 3`
#![allow(
    clippy::unwrap_used,
    reason = "benchmark set-up on fixed inputs: a failure aborts the run"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ha_analysis::{
    DetectorConfig, DetectorKind, MadDetector, SeriesSet, WindowDetector, ZScoreDetector,
};
use support::{Contract, Rng, naive_verdict};

/// Readings judged per benchmark iteration.
const BATCH: usize = 10_000;

fn noise(count: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| 50.0 + rng.normal()).collect()
}

fn config(window: usize, kind: DetectorKind) -> DetectorConfig {
    DetectorConfig {
        window,
        kind,
        ..DetectorConfig::default()
    }
}

fn single_series(c: &mut Criterion) {
    let mut group = c.benchmark_group("single_series");
    group.throughput(Throughput::Elements(BATCH as u64));
    for window in [200, 2000] {
        let values = noise(window + BATCH, 1);
        let z = config(window, DetectorKind::ZScore).z_threshold().unwrap();

        let mut zscore = ZScoreDetector::new(&config(window, DetectorKind::ZScore)).unwrap();
        group.bench_function(BenchmarkId::new("zscore_incremental", window), |b| {
            b.iter(|| {
                let mut anomalies = 0u32;
                for &x in &values[window..] {
                    anomalies += u32::from(zscore.observe(black_box(x)).unwrap().is_anomaly);
                }
                anomalies
            })
        });

        let mut mad = MadDetector::new(&config(window, DetectorKind::Mad)).unwrap();
        group.bench_function(BenchmarkId::new("mad_incremental", window), |b| {
            b.iter(|| {
                let mut anomalies = 0u32;
                for &x in &values[window..] {
                    anomalies += u32::from(mad.observe(black_box(x)).unwrap().is_anomaly);
                }
                anomalies
            })
        });

        for (name, robust) in [("zscore_naive", false), ("mad_naive", true)] {
            let contract = Contract {
                window,
                recent: 3,
                min_history: 30,
                z,
                robust,
            };
            group.bench_function(BenchmarkId::new(name, window), |b| {
                b.iter(|| {
                    let mut anomalies = 0u32;
                    for end in window + 1..=window + BATCH {
                        let verdict =
                            naive_verdict(black_box(&values[end - window..end]), contract);
                        anomalies += u32::from(verdict.is_some_and(|(_, a)| a));
                    }
                    anomalies
                })
            });
        }
    }
    group.finish();
}

/// Kestrel beside the z-score in the same run, both through `SeriesSet`
/// (one series, the analyzer's code path), default config (W = 200), on
/// noise with a spike every 500 readings; prints heap bytes per series.
fn kestrel_vs_zscore(c: &mut Criterion) {
    let mut group = c.benchmark_group("kestrel_vs_zscore");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut values = noise(200 + BATCH, 5);
    for (i, x) in values.iter_mut().enumerate().skip(250).step_by(500) {
        *x += 10.0 + (i % 7) as f64;
    }
    for kind in [DetectorKind::Kestrel, DetectorKind::ZScore] {
        let mut set: SeriesSet<u8> = SeriesSet::new(&config(200, kind)).unwrap();
        let mut seq = 0u64;
        for &x in &values[..200] {
            seq += 1;
            set.feed(0, seq, x).unwrap();
        }
        println!(
            "{kind}: {} heap bytes per series (its buffers), {} with its map slot",
            set.heap_bytes_per_series(),
            set.memory_per_series(),
        );
        // Takeover: rebuild series from their 200 stored values; 50 series
        // per iteration = 10,000 values = BATCH, so the throughput reads
        // as stored values replayed per second.
        let stored: Vec<(u64, f64)> = (0u64..).zip(values[..200].iter().copied()).collect();
        group.bench_function(BenchmarkId::new("warm_start_200", kind.as_str()), |b| {
            let mut fresh: SeriesSet<u8> = SeriesSet::new(&config(200, kind)).unwrap();
            b.iter(|| {
                for key in 0..50u8 {
                    fresh
                        .warm_start(key, black_box(stored.iter().copied()))
                        .unwrap();
                }
            })
        });
        group.bench_function(BenchmarkId::new("feed", kind.as_str()), |b| {
            b.iter(|| {
                let mut anomalies = 0u32;
                for &x in &values[200..] {
                    seq += 1;
                    let verdict = set.feed(0, seq, black_box(x)).unwrap();
                    anomalies += u32::from(verdict.is_some_and(|v| v.is_anomaly));
                }
                anomalies
            })
        });
    }
    group.finish();
}

fn keyed_100k(c: &mut Criterion) {
    const SERIES: u64 = 100_000;
    let mut group = c.benchmark_group("keyed_100k_series");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    for kind in [DetectorKind::ZScore, DetectorKind::Mad] {
        let mut set: SeriesSet<u64> = SeriesSet::new(&config(200, kind)).unwrap();
        let history = noise(200, 2);
        for key in 0..SERIES {
            let rows = history.iter().enumerate().map(|(seq, &x)| (seq as u64, x));
            set.warm_start(key, rows).unwrap();
        }
        // Readings arrive for random devices, like a busy analyzer's queue.
        let mut rng = Rng::new(3);
        let keys: Vec<u64> = (0..BATCH).map(|_| rng.next_u64() % SERIES).collect();
        let values = noise(BATCH, 4);
        let mut seq = 1_000u64;
        println!(
            "{kind}: {} series, {} bytes per series, {:.1} MiB in the container",
            set.len(),
            set.memory_per_series(),
            set.memory_bytes() as f64 / (1 << 20) as f64
        );
        group.bench_function(BenchmarkId::new("feed", kind.as_str()), |b| {
            b.iter(|| {
                let mut anomalies = 0u32;
                for (&key, &x) in keys.iter().zip(&values) {
                    seq += 1;
                    let verdict = set.feed(key, seq, black_box(x)).unwrap();
                    anomalies += u32::from(verdict.is_some_and(|v| v.is_anomaly));
                }
                anomalies
            })
        });
    }
    group.finish();
}

criterion_group!(benches, single_series, kestrel_vs_zscore, keyed_100k);
criterion_main!(benches);
