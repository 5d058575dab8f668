//! Conformance of the partition-ownership record: claims, fenced writes
//! and the epochs [`find_overlaps`] audits. Part of the [`store`](super::store)
//! suite.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use super::{reading, unique_name};
use crate::store::{Store, find_overlaps};

pub async fn fenced_writes_follow_the_newest_claim(store: Arc<dyn Store>) {
    let group = unique_name("own");
    let a = store.claim_partition(&group, 3, "a").await.unwrap();
    assert_eq!((a.partition, a.epoch, a.owner.as_str()), (3, 1, "a"));
    let batch = [reading("fence-1", 1, 100, &[("pulse", 60.0)])];
    let out = store.write_fenced(&a, &batch, &[]).await.unwrap();
    assert_eq!(out.inserted, 1);
    let out = store.write_fenced(&a, &batch, &[]).await.unwrap();
    assert_eq!(out.duplicates, 1, "a fenced write is still idempotent");
    // Another replica takes the partition over: the old owner is refused
    // and writes nothing.
    let b = store.claim_partition(&group, 3, "b").await.unwrap();
    assert_eq!(b.epoch, 2);
    let late = [reading("fence-1", 2, 101, &[("pulse", 61.0)])];
    let e = store.write_fenced(&a, &late, &[]).await.unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(!e.is_transient() && !e.is_permanent());
    let status = store.device_status("fence-1").await.unwrap().unwrap();
    assert_eq!(status.last_seq, 1, "the fenced batch left no row");
    assert_eq!(
        store.write_fenced(&b, &late, &[]).await.unwrap().inserted,
        1
    );
    // Partitions and groups are independent.
    let other = store.claim_partition(&group, 4, "a").await.unwrap();
    assert_eq!(other.epoch, 1);
    let elsewhere = unique_name("own-other");
    assert_eq!(
        store
            .claim_partition(&elsewhere, 3, "z")
            .await
            .unwrap()
            .epoch,
        1
    );
    let epochs = store.partition_epochs(&group).await.unwrap();
    let summary: Vec<(u32, u64, &str, bool, u64)> = epochs
        .iter()
        .map(|r| {
            (
                r.partition,
                r.epoch,
                r.owner.as_str(),
                r.superseded_at.is_some(),
                r.batches,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (3, 1, "a", true, 2),
            (3, 2, "b", false, 1),
            (4, 1, "a", false, 0)
        ]
    );
    let (old, new) = (&epochs[0], &epochs[1]);
    assert!(old.first_commit_at <= old.last_commit_at);
    assert!(old.last_commit_at.unwrap() <= old.superseded_at.unwrap());
    assert!(old.superseded_at.unwrap() <= new.first_commit_at.unwrap());
    assert_eq!(epochs[2].first_commit_at, None);
    assert_eq!(find_overlaps(&epochs), vec![]);
}

pub async fn racing_claims_get_distinct_epochs(store: Arc<dyn Store>) {
    let group = unique_name("race");
    let claims: Vec<_> = (0..6)
        .map(|i| {
            let (store, group) = (store.clone(), group.clone());
            tokio::spawn(async move {
                store
                    .claim_partition(&group, 0, &format!("r{i}"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut epochs = Vec::new();
    let mut last = None;
    for c in claims {
        let fence = c.await.unwrap();
        epochs.push(fence.epoch);
        if last
            .as_ref()
            .is_none_or(|l: &crate::store::Fence| l.epoch < fence.epoch)
        {
            last = Some(fence);
        }
    }
    epochs.sort_unstable();
    assert_eq!(epochs, [1, 2, 3, 4, 5, 6]);
    // Only the newest claim may write.
    let newest = last.unwrap();
    let row = [reading("race-1", 1, 5, &[("pulse", 1.0)])];
    store.write_fenced(&newest, &row, &[]).await.unwrap();
    let records = store.partition_epochs(&group).await.unwrap();
    assert_eq!(
        records.iter().filter(|r| r.superseded_at.is_none()).count(),
        1
    );
    assert_eq!(find_overlaps(&records), vec![]);
}
