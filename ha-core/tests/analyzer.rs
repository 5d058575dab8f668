//! The analyzer on the in-memory backends: exactly-once storage, detection
//! with warm start, balance across replicas, failover, poison messages and
//! store outages.
//!
//! Every test runs on tokio's paused clock: the in-memory backends keep
//! leases, lingering and back-off on tokio's time, so a 5 s lease lapses in
//! no real time, idle waits advance the clock at once, and no outcome
//! depends on how busy the machine is. Store outages are switched on and
//! off with `MemoryStore::set_write_failure`, not a hand-written fake.
#![cfg(feature = "server")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
use common::{eventually, publish};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ha_core::analyzer::{Analyzer, AnalyzerConfig};
use ha_core::conformance::reading;
use ha_core::queue::{MemoryQueue, OutgoingMessage, Queue, partition_for};
use ha_core::store::{AnomalyQuery, MemoryStore, Store, WriteFailure};
use ha_core::wire::{Envelope, Reading};

const PARTITIONS: u32 = 8;

fn config(member: &str) -> AnalyzerConfig {
    AnalyzerConfig {
        member_id: member.into(),
        heartbeat: Duration::from_millis(100),
        lease_ttl: Duration::from_millis(500),
        batch_linger: Duration::from_millis(5),
        retention: None,
        ..AnalyzerConfig::default()
    }
}

/// A smooth series with a spike of +50 (≫ 10σ) at `spike_at`, if any.
fn series(device: &str, seqs: std::ops::Range<u64>, spike_at: Option<u64>) -> Vec<Reading> {
    seqs.map(|s| {
        let base = 70.0 + (s % 7) as f64 * 0.5;
        let v = if Some(s) == spike_at {
            base + 50.0
        } else {
            base
        };
        reading(device, s, 1_000 + s as i64, &[("pulse", v)])
    })
    .collect()
}

struct Replica {
    analyzer: Analyzer,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start(queue: &MemoryQueue, store: Arc<dyn Store>, member: &str) -> Replica {
    start_with(queue, store, config(member))
}

fn start_with(queue: &MemoryQueue, store: Arc<dyn Store>, config: AnalyzerConfig) -> Replica {
    let analyzer = Analyzer::new(Arc::new(queue.clone()), store, config).unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let a = analyzer.clone();
    let task = tokio::spawn(async move {
        a.run(
            async {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        )
        .await;
    });
    Replica {
        analyzer,
        stop,
        task,
    }
}

#[tokio::test(start_paused = true)]
async fn two_replicas_store_everything_once_detect_spikes_and_rebalance() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let a = start(&queue, Arc::new(store.clone()), "analyzer-a");
    let b = start(&queue, Arc::new(store.clone()), "analyzer-b");
    eventually("an even split", async || {
        a.analyzer.owned_partitions().len() == 4 && b.analyzer.owned_partitions().len() == 4
    })
    .await;

    let mut all = Vec::new();
    for d in 0..20 {
        let spike = (d % 2 == 0).then_some(40 + d as u64);
        all.extend(series(&format!("dev-{d:02}"), 0..60, spike));
    }
    publish(&queue, &all).await;
    eventually("every reading stored", async || {
        store.reading_rows() == all.len()
    })
    .await;
    eventually("ten anomalies", async || store.anomaly_rows() == 10).await;
    let page = store
        .anomalies(&AnomalyQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut found: Vec<(String, u64)> = page
        .items
        .iter()
        .map(|x| (x.device_id.clone(), x.seq))
        .collect();
    found.sort();
    let want: Vec<(String, u64)> = (0..20)
        .step_by(2)
        .map(|d| (format!("dev-{d:02}"), 40 + d as u64))
        .collect();
    assert_eq!(found, want, "exactly the injected spikes");
    assert!(
        page.items
            .iter()
            .all(|x| x.score > 10.0 && x.detector == "zscore")
    );

    // Replica b leaves gracefully: a takes everything, and the windows of
    // b's devices are rebuilt from the store, so the next spike is caught.
    b.stop.send(()).unwrap();
    b.task.await.unwrap();
    eventually("a owns all partitions", async || {
        a.analyzer.owned_partitions().len() == 8
    })
    .await;
    let mut more = Vec::new();
    for d in 0..20 {
        let spike = (d == 1).then_some(70);
        more.extend(series(&format!("dev-{d:02}"), 60..80, spike));
    }
    publish(&queue, &more).await;
    eventually("the new readings stored", async || {
        store.reading_rows() == all.len() + more.len()
    })
    .await;
    eventually("the spike after takeover", async || {
        store.anomaly_rows() == 11
    })
    .await;
    assert!(
        queue.dead_letters().is_empty(),
        "valid readings are never dead-lettered"
    );

    // A replica that joins takes half back.
    let c = start(&queue, Arc::new(store.clone()), "analyzer-c");
    eventually("a new even split", async || {
        a.analyzer.owned_partitions().len() == 4 && c.analyzer.owned_partitions().len() == 4
    })
    .await;
    for r in [a, c] {
        r.stop.send(()).unwrap();
        r.task.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn redeliveries_and_resends_store_nothing_twice() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let readings = series("dev-x", 0..50, Some(45));
    // Everything twice (a device resend), then a third time later.
    publish(&queue, &readings).await;
    publish(&queue, &readings).await;
    let a = start(&queue, Arc::new(store.clone()), "solo");
    eventually("stored", async || store.reading_rows() == 50).await;
    publish(&queue, &readings).await;
    eventually("the queue drained", async || {
        queue
            .depth(partition_for("dev-x", PARTITIONS))
            .await
            .unwrap()
            == 0
            && queue.unacked(partition_for("dev-x", PARTITIONS)) == 0
    })
    .await;
    assert_eq!(store.reading_rows(), 50);
    assert_eq!(store.anomaly_rows(), 1);
    assert!(a.analyzer.metrics().duplicates.get() >= 100);
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn poison_messages_are_dead_lettered_and_the_rest_flows() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let p = partition_for("dev-p", PARTITIONS);
    queue
        .publish(vec![OutgoingMessage {
            partition: p,
            payload: Bytes::from_static(b"not an envelope"),
        }])
        .await
        .unwrap();
    publish(&queue, &series("dev-p", 0..10, None)).await;
    let a = start(&queue, Arc::new(store.clone()), "solo");
    eventually("stored", async || store.reading_rows() == 10).await;
    eventually("dead-lettered", async || queue.dead_letters().len() == 1).await;
    assert_eq!(
        queue.dead_letters()[0].payload,
        Bytes::from_static(b"not an envelope")
    );
    assert_eq!(a.analyzer.metrics().dead_lettered.get(), 1);
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_is_retried_holding_the_deliveries() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    store.set_write_failure(Some(WriteFailure {
        permanent: false,
        device_id: None,
    }));
    publish(&queue, &series("dev-f", 0..40, Some(35))).await;
    let a = start(&queue, Arc::new(store.clone()), "solo");
    let m = a.analyzer.metrics();
    eventually("four failed writes", async || m.store_retries.get() >= 4).await;
    assert_eq!(store.reading_rows(), 0);
    store.set_write_failure(None);
    eventually("stored after the outage", async || {
        store.reading_rows() == 40
    })
    .await;
    assert_eq!(store.anomaly_rows(), 1);
    assert!(
        queue.dead_letters().is_empty(),
        "no valid reading dead-lettered during the outage"
    );
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn seq_gaps_and_late_readings_are_counted() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let mut readings = series("dev-g", 0..10, None);
    readings.extend(series("dev-g", 15..20, None));
    readings.extend(series("dev-g", 3..5, None)); // late copies
    publish(&queue, &readings).await;
    let a = start(&queue, Arc::new(store.clone()), "solo");
    eventually("stored", async || store.reading_rows() == 15).await;
    eventually("counted", async || {
        a.analyzer.metrics().late_readings.get() == 2
    })
    .await;
    let m = a.analyzer.metrics();
    assert_eq!((m.seq_gaps.get(), m.missing_readings.get()), (1, 5));
    assert_eq!(m.devices.get(), 1);
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}

/// Readings of `device` from `seq`, each with `names` metrics named
/// `{prefix}{i}`.
fn wide(device: &str, seqs: std::ops::Range<u64>, prefix: &str, names: usize) -> Vec<Reading> {
    seqs.map(|s| {
        let metrics: Vec<(String, f64)> = (0..names)
            .map(|i| (format!("{prefix}{i}"), (s % 5) as f64))
            .collect();
        let refs: Vec<(&str, f64)> = metrics.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        reading(device, s, 1_000 + s as i64, &refs)
    })
    .collect()
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_new_metric_names_is_stored_with_bounded_series() {
    // 12 devices each send 20 readings with 32 fresh metric names apiece
    // (7,680 values, 640 distinct names per device), while one device keeps
    // a normal series with a spike.
    const MAX_SERIES: usize = 8 * 24;
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let a = start_with(
        &queue,
        Arc::new(store.clone()),
        AnalyzerConfig {
            max_series: MAX_SERIES,
            max_metrics_per_device: 16,
            ..config("solo")
        },
    );
    let mut total = 0;
    let mut most_series = 0;
    for round in 0..20u64 {
        let mut batch = Vec::new();
        for d in 0..12 {
            batch.extend(wide(
                &format!("flood-{d}"),
                round..round + 1,
                &format!("r{round}-m"),
                32,
            ));
        }
        total += batch.iter().map(|r| r.metrics.len()).sum::<usize>();
        publish(&queue, &batch).await;
        most_series = most_series.max(a.analyzer.metrics().series.get());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    publish(&queue, &series("steady", 0..60, Some(50))).await;
    total += 60;
    let m = a.analyzer.metrics();
    eventually("every value stored", async || {
        most_series = most_series.max(m.series.get());
        store.reading_rows() == total
    })
    .await;
    eventually("the steady spike found", async || store.anomaly_rows() == 1).await;
    most_series = most_series.max(m.series.get());
    assert!(
        most_series as usize <= MAX_SERIES,
        "{most_series} series held, cap {MAX_SERIES}"
    );
    // Per device at most 16 of its 640 names were analysed at a time; the
    // rest were stored only.
    assert!(m.unanalysed.get() >= (total - 60 - 12 * 16 * 20) as u64);
    // 12 devices on 8 partitions: some partition holds two, 32 > 24 series.
    assert!(m.series_evicted.get() > 0);
    assert_eq!(m.readings_stored.get(), total as u64);
    assert!(queue.dead_letters().is_empty());
    println!(
        "flood: {total} values stored, at most {most_series} series held (cap {MAX_SERIES}), \
         {} values not analysed, {} series evicted, {} warm starts",
        m.unanalysed.get(),
        m.series_evicted.get(),
        m.warm_starts.get()
    );
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}

/// Two devices on the same partition.
fn same_partition_devices() -> (String, String) {
    let first = "dev-0".to_string();
    let p = partition_for(&first, PARTITIONS);
    let second = (1..)
        .map(|i| format!("dev-{i}"))
        .find(|d| partition_for(d, PARTITIONS) == p)
        .unwrap();
    (first, second)
}

#[tokio::test(start_paused = true)]
async fn a_permanently_refused_message_is_dead_lettered_and_the_partition_continues() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let (bad, good) = same_partition_devices();
    store.set_write_failure(Some(WriteFailure {
        permanent: true,
        device_id: Some(bad.clone()),
    }));
    let mut readings = series(&good, 0..20, None);
    readings.extend(series(&bad, 0..3, None));
    readings.extend(series(&good, 20..40, None));
    publish(&queue, &readings).await;
    let a = start_with(
        &queue,
        Arc::new(store.clone()),
        AnalyzerConfig {
            permanent_error_tries: 2,
            ..config("solo")
        },
    );
    eventually("the good device's readings stored", async || {
        store.reading_rows() == 40
    })
    .await;
    eventually("the bad messages dead-lettered", async || {
        queue.dead_letters().len() == 3
    })
    .await;
    let m = a.analyzer.metrics();
    assert_eq!(m.dead_lettered_store.get(), 3);
    // The whole batch was tried once, then each bad message twice.
    assert!(m.store_permanent_errors.get() >= 6);
    // The partition goes on after the failure clears.
    store.set_write_failure(None);
    publish(&queue, &series(&bad, 3..6, None)).await;
    eventually("later readings stored", async || store.reading_rows() == 43).await;
    assert_eq!(queue.dead_letters().len(), 3);
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_and_nothing_is_dead_lettered() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    store.set_write_failure(Some(WriteFailure {
        permanent: false,
        device_id: None,
    }));
    publish(&queue, &series("dev-t", 0..40, Some(35))).await;
    let a = start_with(
        &queue,
        Arc::new(store.clone()),
        AnalyzerConfig {
            permanent_error_tries: 1,
            ..config("solo")
        },
    );
    eventually("retrying", async || {
        a.analyzer.metrics().store_retries.get() >= 5
    })
    .await;
    assert_eq!(store.reading_rows(), 0);
    assert!(queue.dead_letters().is_empty());
    store.set_write_failure(None);
    eventually("stored after the failure", async || {
        store.reading_rows() == 40
    })
    .await;
    assert_eq!(store.anomaly_rows(), 1);
    assert!(queue.dead_letters().is_empty());
    assert_eq!(a.analyzer.metrics().dead_lettered.get(), 0);
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unacknowledged_bytes_stay_within_the_bound() {
    // 40 messages of about 33 KB on one partition; the bound is 120 KB
    // while prefetch (2,000) and batch size (500) would take them all.
    const BOUND: usize = 120_000;
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let device = "dev-bytes";
    let p = partition_for(device, PARTITIONS);
    let mut sizes = Vec::new();
    for m in 0..40u64 {
        let readings = wide(device, m * 200..(m + 1) * 200, "k", 10);
        let payload = Bytes::from(Envelope::encode(&readings));
        sizes.push(payload.len());
        queue
            .publish(vec![OutgoingMessage {
                partition: p,
                payload,
            }])
            .await
            .unwrap();
    }
    let largest = *sizes.iter().max().unwrap();
    assert!(largest > 20_000 && largest < BOUND / 3, "{largest} bytes");
    store.set_write_failure(Some(WriteFailure {
        permanent: false,
        device_id: None,
    }));
    let a = start_with(
        &queue,
        Arc::new(store.clone()),
        AnalyzerConfig {
            max_unacked_bytes: BOUND,
            ..config("solo")
        },
    );
    let m = a.analyzer.metrics();
    eventually("a batch held by the outage", async || {
        m.store_retries.get() >= 2
    })
    .await;
    // Pulling stopped at the bound (plus at most the delivery crossing it).
    let held = queue.unacked(p);
    let bytes = m.unacked_bytes.get() as usize;
    assert!(
        bytes >= BOUND && bytes < BOUND + largest,
        "{bytes} bytes held"
    );
    assert!(held <= BOUND / 20_000 + 1, "{held} deliveries held");
    store.set_write_failure(None);
    eventually("everything stored", async || {
        store.reading_rows() == 40 * 200 * 10
    })
    .await;
    eventually("nothing held", async || m.unacked_bytes.get() == 0).await;
    assert!(queue.dead_letters().is_empty());
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}
