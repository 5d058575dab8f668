//! The [`Store`] conformance suite.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::sync::Arc;

pub use super::ownership::{
    fenced_writes_follow_the_newest_claim, racing_claims_get_distinct_epochs,
};
use super::reading;
use crate::store::{Anomaly, AnomalyCursor, AnomalyQuery, ReadingQuery, SeqGap, Store, StoreError};
use crate::wire::{Reading, Timestamp};

fn anomaly(device: &str, seq: u64, metric: &str, ts_secs: i64) -> Anomaly {
    Anomaly {
        device_id: device.to_owned(),
        seq,
        metric: metric.to_owned(),
        ts: Timestamp::from_unix_micros(ts_secs * 1_000_000),
        value: seq as f64,
        score: 4.5,
        anomaly_score: 0.99999,
        detector: "zscore".to_owned(),
    }
}

fn secs(s: i64) -> Timestamp {
    Timestamp::from_unix_micros(s * 1_000_000)
}

pub async fn writes_are_idempotent_and_conflicts_counted(store: Arc<dyn Store>) {
    let batch = vec![
        reading("dev-a", 1, 100, &[("pulse", 70.0), ("spo2", 98.0)]),
        reading("dev-a", 2, 101, &[("pulse", 71.5)]),
    ];
    let first = store.write(&batch, &[]).await.unwrap();
    assert_eq!(
        (first.inserted, first.duplicates, first.conflicts),
        (3, 0, 0)
    );
    let again = store.write(&batch, &[]).await.unwrap();
    assert_eq!(
        (again.inserted, again.duplicates, again.conflicts),
        (0, 3, 0)
    );

    // A different value, or a different ts, under a stored key: a conflict,
    // and the first write wins. A new metric of the same reading is new.
    let changed = vec![
        reading("dev-a", 1, 100, &[("pulse", 99.0), ("temp", 36.6)]),
        reading("dev-a", 2, 555, &[("pulse", 71.5)]),
    ];
    let out = store.write(&changed, &[]).await.unwrap();
    assert_eq!((out.inserted, out.duplicates, out.conflicts), (1, 0, 2));
    let pulse = store.recent_values("dev-a", "pulse", 10, 10).await.unwrap();
    assert_eq!(pulse, vec![(1, 70.0), (2, 71.5)]);

    // The same key twice within one batch: the first copy wins.
    let twice = vec![
        reading("dev-b", 7, 100, &[("x", 1.0)]),
        reading("dev-b", 7, 100, &[("x", 2.0)]),
    ];
    let out = store.write(&twice, &[]).await.unwrap();
    assert_eq!((out.inserted, out.duplicates, out.conflicts), (1, 0, 1));
    assert_eq!(
        store.recent_values("dev-b", "x", 8, 5).await.unwrap(),
        vec![(7, 1.0)]
    );

    // Extreme but valid values survive exactly.
    let edge = vec![reading(
        "dev-c",
        crate::wire::MAX_SEQ,
        -1,
        &[("v", f64::MIN_POSITIVE), ("w", -1.5e300)],
    )];
    assert_eq!(store.write(&edge, &[]).await.unwrap().inserted, 2);
    let v = store
        .recent_values("dev-c", "w", u64::MAX, 1)
        .await
        .unwrap();
    assert_eq!(v, vec![(crate::wire::MAX_SEQ, -1.5e300)]);
}

pub async fn anomalies_are_idempotent(store: Arc<dyn Store>) {
    let readings = vec![reading("dev-a", 5, 100, &[("pulse", 180.0)])];
    let anomalies = vec![anomaly("dev-a", 5, "pulse", 100)];
    let out = store.write(&readings, &anomalies).await.unwrap();
    assert_eq!((out.inserted, out.anomalies_inserted), (1, 1));
    let out = store.write(&readings, &anomalies).await.unwrap();
    assert_eq!(
        (out.inserted, out.duplicates, out.anomalies_inserted),
        (0, 1, 0)
    );
    let page = store
        .anomalies(&AnomalyQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items, anomalies);
    assert!(page.next.is_none());
}

pub async fn recent_values_many_equals_one_query_per_series(store: Arc<dyn Store>) {
    let batch: Vec<Reading> = (0..30u64)
        .map(|s| reading("dev-m", s, 1000 + s as i64, &[("t", s as f64), ("u", 2.0)]))
        .chain((0..5u64).map(|s| reading("dev-n", s, 1, &[("t", -(s as f64))])))
        .collect();
    store.write(&batch, &[]).await.unwrap();
    let series: Vec<(String, String, u64)> = [
        ("dev-m", "t", 20),
        ("dev-m", "u", 3),
        ("dev-n", "t", u64::MAX),
        ("dev-m", "missing", 10),
        ("dev-m", "t", 0),
        ("dev-m", "t", 20),
    ]
    .iter()
    .map(|(d, m, b)| (d.to_string(), m.to_string(), *b))
    .collect();
    let many = store.recent_values_many(&series, 4).await.unwrap();
    assert_eq!(many.len(), series.len());
    for ((d, m, b), got) in series.iter().zip(&many) {
        assert_eq!(got, &store.recent_values(d, m, *b, 4).await.unwrap());
    }
    assert_eq!(
        many[0],
        vec![(16, 16.0), (17, 17.0), (18, 18.0), (19, 19.0)]
    );
    assert!(many[3].is_empty() && many[4].is_empty());
    assert!(store.recent_values_many(&[], 4).await.unwrap().is_empty());
}

pub async fn recent_values_are_the_newest_in_seq_order(store: Arc<dyn Store>) {
    // Written out of order and in several batches, with a second metric and
    // a second device interleaved.
    let mut batch: Vec<Reading> = (0..50u64)
        .rev()
        .map(|s| {
            reading(
                "dev-a",
                s * 2,
                1000 + s as i64,
                &[("t", s as f64), ("u", -(s as f64))],
            )
        })
        .collect();
    batch.push(reading("dev-aa", 3, 1, &[("t", 1e9)]));
    store.write(&batch[..20], &[]).await.unwrap();
    store.write(&batch[20..], &[]).await.unwrap();

    let got = store.recent_values("dev-a", "t", 40, 5).await.unwrap();
    assert_eq!(
        got,
        vec![(30, 15.0), (32, 16.0), (34, 17.0), (36, 18.0), (38, 19.0)]
    );
    let got = store.recent_values("dev-a", "u", 3, 10).await.unwrap();
    assert_eq!(got, vec![(0, -0.0), (2, -1.0)]);
    assert!(
        store
            .recent_values("dev-a", "t", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .recent_values("dev-a", "missing", 99, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .recent_values("dev-a", "t", u64::MAX, 1000)
            .await
            .unwrap()
            .len(),
        50
    );
}

pub async fn anomalies_page_stably_under_concurrent_inserts(store: Arc<dyn Store>) {
    // 30 anomalies; several share a timestamp, so the tie-breakers matter.
    let initial: Vec<Anomaly> = (0..30u64)
        .map(|i| {
            anomaly(
                &format!("dev-{}", i % 4),
                i,
                if i % 2 == 0 { "a" } else { "b" },
                1000 + (i / 3) as i64,
            )
        })
        .collect();
    store.write(&[], &initial).await.unwrap();

    let mut seen = Vec::new();
    let mut after: Option<AnomalyCursor> = None;
    let mut round = 0;
    loop {
        let page = store
            .anomalies(&AnomalyQuery {
                limit: 7,
                after: after.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().cloned());
        // Between pages, insert anomalies newer than everything (must not
        // appear in this walk) and older than everything (must appear once).
        round += 1;
        store
            .write(
                &[],
                &[
                    anomaly("dev-new", 1000 + round, "a", 5000),
                    anomaly("dev-old", round, "a", 1),
                ],
            )
            .await
            .unwrap();
        match page.next {
            Some(c) => {
                // The cursor survives its text form.
                after = Some(c.to_string().parse().unwrap());
            }
            None => break,
        }
    }
    let keys: Vec<(Timestamp, String, u64, String)> = seen
        .iter()
        .map(|a| (a.ts, a.device_id.clone(), a.seq, a.metric.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted, "newest first, no reordering");
    let unique: HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no anomaly twice");
    assert!(seen.iter().all(|a| a.device_id != "dev-new"));
    for a in &initial {
        assert!(seen.contains(a), "missing {a:?}");
    }
    let old = seen.iter().filter(|a| a.device_id == "dev-old").count() as u64;
    assert!(old >= 1 && old <= round, "{old} of {round} older anomalies");

    let bad = AnomalyQuery {
        limit: 5,
        ..Default::default()
    };
    assert!(store.anomalies(&bad).await.is_ok());
    assert!(matches!(
        "garbage".parse::<AnomalyCursor>(),
        Err(StoreError::InvalidQuery(_))
    ));
}

pub async fn anomaly_filters_apply(store: Arc<dyn Store>) {
    let all = vec![
        anomaly("dev-a", 1, "pulse", 100),
        anomaly("dev-a", 2, "spo2", 200),
        anomaly("dev-b", 1, "pulse", 300),
        anomaly("dev-b", 2, "pulse", 400),
    ];
    store.write(&[], &all).await.unwrap();
    let q = |device: Option<&str>, metric: Option<&str>, from: Option<i64>, to: Option<i64>| {
        AnomalyQuery {
            device_id: device.map(str::to_owned),
            metric: metric.map(str::to_owned),
            from: from.map(secs),
            to: to.map(secs),
            after: None,
            limit: 100,
        }
    };
    let seqs = |p: crate::store::Page<Anomaly>| -> Vec<(String, u64)> {
        p.items.into_iter().map(|a| (a.device_id, a.seq)).collect()
    };
    let s = |d: &str, n: u64| (d.to_owned(), n);
    assert_eq!(
        seqs(
            store
                .anomalies(&q(Some("dev-a"), None, None, None))
                .await
                .unwrap()
        ),
        vec![s("dev-a", 2), s("dev-a", 1)]
    );
    assert_eq!(
        seqs(
            store
                .anomalies(&q(None, Some("pulse"), None, None))
                .await
                .unwrap()
        ),
        vec![s("dev-b", 2), s("dev-b", 1), s("dev-a", 1)]
    );
    assert_eq!(
        seqs(
            store
                .anomalies(&q(None, None, Some(200), Some(400)))
                .await
                .unwrap()
        ),
        vec![s("dev-b", 1), s("dev-a", 2)]
    );
    assert_eq!(
        seqs(
            store
                .anomalies(&q(Some("dev-b"), Some("pulse"), Some(301), None))
                .await
                .unwrap()
        ),
        vec![s("dev-b", 2)]
    );
    assert!(
        store
            .anomalies(&q(Some("nobody"), None, None, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn readings_in_a_time_range(store: Arc<dyn Store>) {
    let batch: Vec<Reading> = (0..10u64)
        .map(|s| reading("dev-a", s, 100 + s as i64, &[("t", s as f64), ("u", 0.5)]))
        .chain([reading("dev-b", 3, 103, &[("t", -1.0)])])
        .collect();
    store.write(&batch, &[]).await.unwrap();
    let rows = store
        .readings(&ReadingQuery {
            device_id: "dev-a".into(),
            metric: None,
            from: secs(102),
            to: secs(105),
            limit: 100,
        })
        .await
        .unwrap();
    let got: Vec<(u64, &str)> = rows.iter().map(|r| (r.seq, r.metric.as_str())).collect();
    assert_eq!(
        got,
        vec![(2, "t"), (2, "u"), (3, "t"), (3, "u"), (4, "t"), (4, "u")]
    );
    assert_eq!(rows[0].ts, secs(102));
    let rows = store
        .readings(&ReadingQuery {
            device_id: "dev-a".into(),
            metric: Some("t".into()),
            from: secs(0),
            to: secs(1000),
            limit: 3,
        })
        .await
        .unwrap();
    let got: Vec<(u64, f64)> = rows.iter().map(|r| (r.seq, r.value)).collect();
    assert_eq!(got, vec![(0, 0.0), (1, 1.0), (2, 2.0)]);
}

pub async fn device_status_and_seq_gaps(store: Arc<dyn Store>) {
    assert_eq!(store.device_status("dev-a").await.unwrap(), None);
    let seqs = [3u64, 4, 5, 9, 10, 20, 21, 22];
    let batch: Vec<Reading> = seqs
        .iter()
        .map(|&s| reading("dev-a", s, 1000 - s as i64, &[("t", 1.0), ("u", 2.0)]))
        .chain([reading("dev-a0", 7, 5000, &[("t", 1.0)])])
        .collect();
    store.write(&batch, &[]).await.unwrap();
    let status = store.device_status("dev-a").await.unwrap().unwrap();
    assert_eq!(status.last_seq, 22);
    assert_eq!(
        status.last_seen,
        secs(997),
        "the newest ts, whatever its seq"
    );
    let gap = |from, to| SeqGap { from, to };
    assert_eq!(
        store.seq_gaps("dev-a", 0, u64::MAX, 100).await.unwrap(),
        vec![gap(6, 8), gap(11, 19)]
    );
    assert_eq!(
        store.seq_gaps("dev-a", 0, u64::MAX, 1).await.unwrap(),
        vec![gap(6, 8)]
    );
    assert_eq!(
        store.seq_gaps("dev-a", 9, 21, 100).await.unwrap(),
        vec![gap(11, 19)]
    );
    assert!(
        store
            .seq_gaps("dev-a", 20, 22, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .seq_gaps("nobody", 0, 100, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn retention_deletes_in_bounded_batches(store: Arc<dyn Store>) {
    let batch: Vec<Reading> = (0..25u64)
        .map(|s| reading("dev-a", s, 100 + s as i64, &[("t", 1.0)]))
        .collect();
    store.write(&batch, &[]).await.unwrap();
    let cutoff = secs(120); // seqs 0..20 are older
    let mut rounds = Vec::new();
    loop {
        let n = store.delete_readings_before(cutoff, 8).await.unwrap();
        rounds.push(n);
        if n < 8 {
            break;
        }
    }
    assert_eq!(rounds, vec![8, 8, 4]);
    let left = store
        .recent_values("dev-a", "t", u64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![20, 21, 22, 23, 24]
    );
}

pub async fn concurrent_writers_store_one_row_per_key(store: Arc<dyn Store>) {
    // Four writers with overlapping batches, as after a redelivery storm.
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut total = crate::store::WriteOutcome::default();
            for round in 0..5u64 {
                let batch: Vec<Reading> = (0..40u64)
                    .map(|i| {
                        let seq = (round * 20 + i + w * 10) % 120;
                        reading(
                            &format!("dev-{}", seq % 3),
                            seq,
                            seq as i64,
                            &[("t", seq as f64)],
                        )
                    })
                    .collect();
                total += store.write(&batch, &[]).await.unwrap();
            }
            total
        }));
    }
    let mut total = crate::store::WriteOutcome::default();
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total.inserted, 120, "{total:?}");
    assert_eq!(total.conflicts, 0);
    assert_eq!(total.inserted + total.duplicates, 4 * 5 * 40);
    let mut rows = 0;
    for d in 0..3 {
        rows += store
            .recent_values(&format!("dev-{d}"), "t", u64::MAX, 1000)
            .await
            .unwrap()
            .len();
    }
    assert_eq!(rows, 120);
}

pub async fn empty_write_is_fine(store: Arc<dyn Store>) {
    let out = store.write(&[], &[]).await.unwrap();
    assert_eq!(out, crate::store::WriteOutcome::default());
}

pub async fn membership_leases_expire_and_leave(store: Arc<dyn Store>) {
    use std::time::Duration;
    let long = Duration::from_secs(30);
    assert_eq!(
        store.heartbeat("g", "b-2", long).await.unwrap(),
        vec!["b-2"]
    );
    assert_eq!(
        store.heartbeat("g", "a-1", long).await.unwrap(),
        vec!["a-1", "b-2"]
    );
    assert_eq!(
        store.heartbeat("other", "z", long).await.unwrap(),
        vec!["z"],
        "groups are separate"
    );
    // A short lease lapses by the store's clock.
    store
        .heartbeat("g", "c-3", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        store.heartbeat("g", "a-1", long).await.unwrap(),
        vec!["a-1", "b-2", "c-3"]
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        store.heartbeat("g", "a-1", long).await.unwrap(),
        vec!["a-1", "b-2"]
    );
    // Leaving is immediate; renewing is idempotent.
    store.leave("g", "b-2").await.unwrap();
    store.leave("g", "never-joined").await.unwrap();
    assert_eq!(
        store.heartbeat("g", "a-1", long).await.unwrap(),
        vec!["a-1"]
    );
    assert_eq!(
        store.heartbeat("g", "a-1", long).await.unwrap(),
        vec!["a-1"]
    );
}
