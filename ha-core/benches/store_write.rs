//! `PostgresStore::write` of 500-reading batches next to a raw binary
//! `COPY ... FROM STDIN BINARY` of the same 500 rows into a plain table via
//! tokio-postgres, against the same server in the same run; prints the
//! ratio ours / raw. A second raw contender copies into a table with the
//! store's primary key `(device_id, seq, metric)`, to tell the cost of the
//! index from the cost of our statement.
//!
//! Run with the servers up: `scripts/bench store_write` (or set
//! `HA_TEST_POSTGRES_URL` and `cargo bench -p ha-core --features postgres --bench store_write`).
//! Absolute numbers depend on the machine; the ratio is the figure to quote.

use std::cell::Cell;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::pin_mut;
use ha_core::conformance::unique_name;
use ha_core::store::Store;
use ha_core::store::postgres::{PostgresConfig, PostgresStore};
use ha_core::wire::{Metric, Reading, Timestamp};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

/// Readings (one metric each, so one row each) per write.
const BATCH: usize = 500;

/// Batch `n`: new keys every time, so neither contender meets a conflict.
fn batch(n: u64) -> Vec<Reading> {
    let base = Timestamp::from_unix_micros(1_795_694_400_000_000);
    (0..BATCH as u64)
        .map(|i| Reading {
            device_id: format!("dev-{:05}", i % 100),
            seq: n * BATCH as u64 + i,
            ts: base.saturating_add(Duration::from_millis(n * BATCH as u64 + i)),
            metrics: vec![Metric::new("pulse", 60.0 + (i % 40) as f64)],
        })
        .collect()
}

async fn raw_copy(client: &Client, table: &str, readings: &[Reading]) -> Duration {
    let start = Instant::now();
    let sink = client
        .copy_in(&format!(
            "COPY {table} (device_id, seq, metric, ts, value) FROM STDIN BINARY"
        ))
        .await
        .expect("COPY");
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::FLOAT8,
        ],
    );
    pin_mut!(writer);
    for r in readings {
        let ts = UNIX_EPOCH + Duration::from_micros(r.ts.unix_micros() as u64);
        for m in &r.metrics {
            let seq = r.seq as i64;
            let row: [&(dyn ToSql + Sync); 5] = [&r.device_id, &seq, &m.name, &ts, &m.value];
            writer.as_mut().write(&row).await.expect("row");
        }
    }
    let rows = writer.finish().await.expect("finish COPY");
    assert_eq!(rows as usize, readings.len());
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("HA_TEST_POSTGRES_URL") else {
        eprintln!("HA_TEST_POSTGRES_URL is not set: run scripts/bench to start a database");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let schema = unique_name("bench_");
    let store = PostgresStore::new(PostgresConfig {
        url: url.clone(),
        schema: Some(schema.clone()),
        ..PostgresConfig::default()
    })
    .expect("store config");
    rt.block_on(store.migrate()).expect("migrate");
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    });
    let table = format!("{schema}.raw_readings");
    let table_pk = format!("{schema}.raw_readings_pk");
    let columns = "device_id TEXT NOT NULL, seq INT8 NOT NULL, metric TEXT NOT NULL, \
         ts TIMESTAMPTZ NOT NULL, value FLOAT8 NOT NULL";
    rt.block_on(client.batch_execute(&format!(
        "CREATE TABLE {table} ({columns}); \
         CREATE TABLE {table_pk} ({columns}, PRIMARY KEY (device_id, seq, metric));"
    )))
    .expect("create raw tables");

    // Totals over every measured iteration, for the ratio printed at the end.
    let ours = Cell::new((Duration::ZERO, 0u64));
    let raw = Cell::new((Duration::ZERO, 0u64));
    let raw_pk = Cell::new((Duration::ZERO, 0u64));
    let next_batch = Cell::new(0u64);
    let take = || {
        let n = next_batch.get();
        next_batch.set(n + 1);
        batch(n)
    };

    let mut group = c.benchmark_group("store_write");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for (name, table, totals) in [
        ("raw_binary_copy_500", &table, &raw),
        ("raw_binary_copy_500_with_pk", &table_pk, &raw_pk),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let batches: Vec<_> = (0..iters).map(|_| take()).collect();
                let elapsed = rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for readings in &batches {
                        total += raw_copy(&client, table, readings).await;
                    }
                    total
                });
                let (d, n) = totals.get();
                totals.set((d + elapsed, n + iters));
                elapsed
            })
        });
    }
    group.bench_function("postgres_store_write_500", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<_> = (0..iters).map(|_| take()).collect();
            let elapsed = rt.block_on(async {
                let mut total = Duration::ZERO;
                for readings in &batches {
                    let start = Instant::now();
                    let outcome = store.write(readings, &[]).await.expect("write");
                    total += start.elapsed();
                    assert_eq!(outcome.inserted as usize, BATCH);
                }
                total
            });
            let (d, n) = ours.get();
            ours.set((d + elapsed, n + iters));
            elapsed
        })
    });
    group.finish();

    let rate = |(d, n): (Duration, u64)| (n * BATCH as u64) as f64 / d.as_secs_f64().max(1e-9);
    let (ours_rate, raw_rate, pk_rate) = (rate(ours.get()), rate(raw.get()), rate(raw_pk.get()));
    println!(
        "store_write: PostgresStore::write {ours_rate:.0} rows/s, raw binary COPY {raw_rate:.0} rows/s \
         (ours/raw = {:.2}), raw binary COPY into a table with the primary key {pk_rate:.0} rows/s \
         (ours/raw_pk = {:.2})",
        ours_rate / raw_rate,
        ours_rate / pk_rate
    );
    let _ = rt.block_on(client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")));
}

criterion_group!(benches, bench);
criterion_main!(benches);
