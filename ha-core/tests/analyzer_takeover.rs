//! Analyzer takeover on the in-memory backends: a crashed replica's
//! partitions are taken over by the standby subscriptions while its lease
//! is still live, every commit is fenced by an ownership epoch, and the
//! epochs never overlap.
#![cfg(feature = "server")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
use common::{eventually, publish};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ha_core::analyzer::{Analyzer, AnalyzerConfig};
use ha_core::conformance::reading;
use ha_core::queue::{MemoryQueue, partition_for};
use ha_core::store::{EpochRecord, MemoryStore, Store, find_overlaps};
use ha_core::wire::Reading;

const PARTITIONS: u32 = 4;
const GROUP: &str = "analyzers";

fn config(member: &str, lease_ttl: Duration) -> AnalyzerConfig {
    AnalyzerConfig {
        member_id: member.into(),
        heartbeat: Duration::from_millis(100),
        lease_ttl,
        batch_linger: Duration::from_millis(5),
        retention: None,
        ..AnalyzerConfig::default()
    }
}

/// `count` readings of `devices` devices from `from_seq` on.
fn readings(devices: usize, from_seq: u64, count: u64) -> Vec<Reading> {
    (0..devices)
        .flat_map(|d| {
            (from_seq..from_seq + count)
                .map(move |s| reading(&format!("dev-{d:02}"), s, 1_000 + s as i64, &[("v", 1.0)]))
        })
        .collect()
}

/// A replica on its own runtime, so that dropping the runtime ends every
/// task of it at once, as a crash does (its subscriptions vanish, its
/// lease stays until it lapses).
struct Process {
    analyzer: Analyzer,
    runtime: tokio::runtime::Runtime,
}

impl Process {
    fn start(queue: &MemoryQueue, store: &MemoryStore, config: AnalyzerConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let analyzer =
            Analyzer::new(Arc::new(queue.clone()), Arc::new(store.clone()), config).unwrap();
        let a = analyzer.clone();
        runtime.spawn(async move { a.run(std::future::pending(), Duration::from_secs(5)).await });
        Process { analyzer, runtime }
    }

    fn kill(self) {
        self.runtime.shutdown_background();
    }
}

/// The current owner of each partition in the epoch record.
fn current_owners(records: &[EpochRecord]) -> BTreeMap<u32, String> {
    records
        .iter()
        .filter(|r| r.superseded_at.is_none())
        .map(|r| (r.partition, r.owner.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replica_is_taken_over_while_its_lease_is_live() {
    // A lease far longer than the test: any takeover seen here came from
    // the broker's single-active-consumer, not from the lease lapsing.
    let ttl = Duration::from_secs(600);
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let a = Process::start(&queue, &store, config("analyzer-a", ttl));
    eventually("a owns everything", async || {
        a.analyzer.owned_partitions().len() == 4
    })
    .await;
    let first = readings(16, 0, 20);
    publish(&queue, &first).await;
    eventually("the first readings stored by a", async || {
        store.reading_rows() == first.len()
            && current_owners(&store.partition_epochs(GROUP).await.unwrap())
                == (0..PARTITIONS)
                    .map(|p| (p, "analyzer-a".to_string()))
                    .collect()
    })
    .await;
    let b = Process::start(&queue, &store, config("analyzer-b", ttl));
    eventually("an even split", async || {
        a.analyzer.owned_partitions() == [0, 2] && b.analyzer.owned_partitions() == [1, 3]
    })
    .await;
    // b is assigned 1 and 3, but a keeps consuming them: b has not held
    // its lease for a TTL yet (and will not within this test).
    let second = readings(16, 20, 5);
    publish(&queue, &second).await;
    eventually("the second readings stored", async || {
        store.reading_rows() == first.len() + second.len()
    })
    .await;
    assert_eq!(b.analyzer.metrics().active_partitions.get(), 0);

    a.kill();
    let third = readings(16, 25, 20);
    publish(&queue, &third).await;
    eventually("b stores every partition", async || {
        store.reading_rows() == first.len() + second.len() + third.len()
    })
    .await;
    let members = store.heartbeat(GROUP, "observer", ttl).await.unwrap();
    assert!(
        members.contains(&"analyzer-a".to_string()),
        "a's lease had lapsed: the takeover did not come from the broker"
    );
    assert_eq!(
        b.analyzer.owned_partitions(),
        [1, 3],
        "assignment unchanged"
    );
    assert_eq!(b.analyzer.metrics().active_partitions.get(), 4);
    let records = store.partition_epochs(GROUP).await.unwrap();
    assert!(current_owners(&records).values().all(|o| o == "analyzer-b"));
    assert_eq!(find_overlaps(&records), vec![]);
    for p in 0..PARTITIONS {
        let of_p: Vec<&EpochRecord> = records.iter().filter(|r| r.partition == p).collect();
        assert_eq!(of_p.len(), 2, "{of_p:?}");
        assert_eq!((of_p[0].owner.as_str(), of_p[0].epoch), ("analyzer-a", 1));
        assert_eq!((of_p[1].owner.as_str(), of_p[1].epoch), ("analyzer-b", 2));
        assert!(of_p[1].batches > 0);
    }
    b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_replica_gets_its_partitions_once_its_lease_has_held() {
    let ttl = Duration::from_millis(500);
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let a = Process::start(&queue, &store, config("analyzer-a", ttl));
    eventually("a owns everything", async || {
        a.analyzer.owned_partitions().len() == 4
    })
    .await;
    let mut seq = 0;
    let mut sent = 0;
    let mut feed = async || {
        let batch = readings(16, seq, 2);
        seq += 2;
        sent += batch.len();
        publish(&queue, &batch).await;
        sent
    };
    feed().await;
    let b = Process::start(&queue, &store, config("analyzer-b", ttl));
    // Keep traffic flowing: a makes way at a batch boundary once b has
    // held its lease for a TTL plus a heartbeat.
    eventually("claims follow the assignment", async || {
        feed().await;
        let owners = current_owners(&store.partition_epochs(GROUP).await.unwrap());
        owners.len() == 4
            && owners.iter().all(|(p, o)| {
                *o == if p % 2 == 0 {
                    "analyzer-a"
                } else {
                    "analyzer-b"
                }
            })
    })
    .await;
    let total = feed().await;
    eventually("everything stored", async || store.reading_rows() == total).await;
    assert!(a.analyzer.metrics().handovers.get() >= 2);
    assert_eq!(b.analyzer.metrics().handovers.get(), 0);
    assert_eq!(
        find_overlaps(&store.partition_epochs(GROUP).await.unwrap()),
        vec![]
    );
    assert!(queue.dead_letters().is_empty());
    a.kill();
    b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_batch_is_given_back_and_committed_after_a_new_claim() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let store = MemoryStore::new();
    let a = Process::start(&queue, &store, config("solo", Duration::from_secs(5)));
    let first = readings(8, 0, 5);
    publish(&queue, &first).await;
    eventually("stored", async || store.reading_rows() == first.len()).await;
    // Someone else claims every partition (as a replica that the broker
    // made active would): solo's next batches are refused, given back,
    // and committed under a new claim of its own.
    for p in 0..PARTITIONS {
        store.claim_partition(GROUP, p, "intruder").await.unwrap();
    }
    let second = readings(8, 5, 5);
    publish(&queue, &second).await;
    eventually("stored after re-claiming", async || {
        store.reading_rows() == first.len() + second.len()
    })
    .await;
    assert!(a.analyzer.metrics().fenced_batches.get() >= 1);
    let records = store.partition_epochs(GROUP).await.unwrap();
    assert_eq!(find_overlaps(&records), vec![]);
    for r in records.iter().filter(|r| r.owner == "intruder") {
        assert_eq!(r.batches, 0, "the intruder never committed");
    }
    let owners = current_owners(&records);
    for r in &second {
        let p = partition_for(&r.device_id, PARTITIONS);
        assert_eq!(owners[&p], "solo", "{owners:?}");
    }
    assert!(queue.dead_letters().is_empty());
    a.kill();
}
