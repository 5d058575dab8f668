//! The analyzer on the in-memory backends: exactly-once storage, detection
//! with warm start, balance across replicas, failover, poison messages and
//! store outages.
#![cfg(feature = "server")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ha_core::analyzer::{Analyzer, AnalyzerConfig};
use ha_core::conformance::reading;
use ha_core::queue::{MemoryQueue, OutgoingMessage, Queue, partition_for};
use ha_core::store::{
    Anomaly, AnomalyQuery, DeviceStatus, MemoryStore, Page, ReadingQuery, SeqGap, Store,
    StoreError, StoredValue, WriteOutcome,
};
use ha_core::wire::{Envelope, Reading, Timestamp};

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

async fn publish(queue: &MemoryQueue, readings: &[Reading]) {
    // One message per reading, like many small ingest requests.
    let messages = readings
        .iter()
        .map(|r| OutgoingMessage {
            partition: partition_for(&r.device_id, PARTITIONS),
            payload: Bytes::from(Envelope::encode(std::slice::from_ref(r))),
        })
        .collect();
    queue.publish(messages).await.unwrap();
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Replica {
    analyzer: Analyzer,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start(queue: &MemoryQueue, store: Arc<dyn Store>, member: &str) -> Replica {
    let analyzer = Analyzer::new(Arc::new(queue.clone()), store, config(member)).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

/// A store whose first `fail` writes report the database unavailable.
struct FlakyStore {
    inner: MemoryStore,
    fail: AtomicU32,
}

#[async_trait]
impl Store for FlakyStore {
    async fn write(&self, r: &[Reading], a: &[Anomaly]) -> Result<WriteOutcome, StoreError> {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("database restarting".into()));
        }
        self.inner.write(r, a).await
    }
    async fn recent_values(
        &self,
        d: &str,
        m: &str,
        s: u64,
        l: u32,
    ) -> Result<Vec<(u64, f64)>, StoreError> {
        self.inner.recent_values(d, m, s, l).await
    }
    async fn anomalies(&self, q: &AnomalyQuery) -> Result<Page<Anomaly>, StoreError> {
        self.inner.anomalies(q).await
    }
    async fn readings(&self, q: &ReadingQuery) -> Result<Vec<StoredValue>, StoreError> {
        self.inner.readings(q).await
    }
    async fn device_status(&self, d: &str) -> Result<Option<DeviceStatus>, StoreError> {
        self.inner.device_status(d).await
    }
    async fn seq_gaps(&self, d: &str, f: u64, t: u64, l: u32) -> Result<Vec<SeqGap>, StoreError> {
        self.inner.seq_gaps(d, f, t, l).await
    }
    async fn delete_readings_before(&self, c: Timestamp, b: u32) -> Result<u64, StoreError> {
        self.inner.delete_readings_before(c, b).await
    }
    async fn heartbeat(&self, g: &str, m: &str, t: Duration) -> Result<Vec<String>, StoreError> {
        self.inner.heartbeat(g, m, t).await
    }
    async fn leave(&self, g: &str, m: &str) -> Result<(), StoreError> {
        self.inner.leave(g, m).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_retried_holding_the_deliveries() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let inner = MemoryStore::new();
    let store = Arc::new(FlakyStore {
        inner: inner.clone(),
        fail: AtomicU32::new(4),
    });
    publish(&queue, &series("dev-f", 0..40, Some(35))).await;
    let a = start(&queue, store.clone(), "solo");
    eventually("stored after the outage", async || {
        inner.reading_rows() == 40
    })
    .await;
    assert_eq!(inner.anomaly_rows(), 1);
    assert!(
        queue.dead_letters().is_empty(),
        "no valid reading dead-lettered during the outage"
    );
    assert!(a.analyzer.metrics().store_retries.get() >= 4);
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
