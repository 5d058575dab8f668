//! Readings the server refuses for their time stamp (`ts_in_future`,
//! `ts_too_old`) are held apart, bounded and counted, not sunk with the
//! malformed ones; `ts_in_future` ones are sent again after the clock-retry
//! interval, `ts_too_old` ones wait for the application. Held readings
//! survive a restart of a `FileBuffer`.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ha_device_client::{
    Buffer, BufferLimits, Client, ClockRefusal, Event, FileBuffer, MemoryBuffer, OverflowPolicy,
};
use support::{Events, FakeServer, Reply, reading};

/// Refuses seq 3 with `ts_in_future` until `caught_up`, and seq 5 with
/// `ts_too_old` always.
async fn clock_server(caught_up: Arc<AtomicBool>) -> FakeServer {
    FakeServer::start(move |_, readings| {
        let refuse = |seq, code| {
            readings
                .iter()
                .position(|r| r.seq == seq)
                .map(|i| Reply::Status {
                    status: 422,
                    code,
                    index: Some(i),
                    retry_after: None,
                })
        };
        let future = if caught_up.load(Ordering::SeqCst) {
            None
        } else {
            refuse(3, "ts_in_future")
        };
        future
            .or_else(|| refuse(5, "ts_too_old"))
            .unwrap_or(Reply::Accept)
    })
    .await
}

fn held_events(events: &Events) -> Vec<(ClockRefusal, Vec<u64>, String)> {
    events
        .all()
        .iter()
        .filter_map(|e| match e {
            Event::Held {
                refusal,
                readings,
                reason,
                dropped,
            } => {
                assert!(dropped.is_empty());
                Some((
                    *refusal,
                    readings.iter().map(|r| r.seq).collect(),
                    reason.code.clone(),
                ))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn clock_refusals_are_held_retried_and_kept_across_a_restart() {
    let caught_up = Arc::new(AtomicBool::new(false));
    let server = clock_server(caught_up.clone()).await;
    let dir = std::env::temp_dir().join(format!("ha-dc-clock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("buf");
    // Long enough that the flushes "before the interval" below come before
    // it even on a busy machine (a 200 ms interval once passed between
    // them).
    let retry = Duration::from_secs(3);

    let events = Events::default();
    let buffer = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    let mut client = Client::new(server.config(&events).with_clock_retry(retry), buffer).unwrap();
    for s in 0..8 {
        client.push(reading(s)).unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!(
        (report.acknowledged, report.rejected, report.held),
        (6, 0, 2)
    );
    assert_eq!(
        held_events(&events),
        [
            (ClockRefusal::InFuture, vec![3], "ts_in_future".into()),
            (ClockRefusal::TooOld, vec![5], "ts_too_old".into()),
        ]
    );
    let c = client.counters();
    assert_eq!((c.held, c.rejected, c.buffered), (2, 0, 0));
    assert!(!client.buffer().rejected_path().exists(), "nothing sunk");
    assert_eq!(client.buffer().held_len(ClockRefusal::InFuture), 1);
    assert_eq!(client.buffer().held_len(ClockRefusal::TooOld), 1);

    // Before the interval: nothing to send.
    let requests = server.seen(|s| s.requests.len());
    assert_eq!(client.flush().await.unwrap().requests, 0);
    // After it, seq 3 is tried again, still refused (the server's clock has
    // not caught up), and held again.
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    let report = client.flush().await.unwrap();
    assert_eq!((report.requests, report.held), (1, 1));
    assert_eq!(server.seen(|s| s.requests.len()), requests + 1);
    assert_eq!((client.counters().released, client.counters().held), (1, 3));
    drop(client);

    // Restart: the held readings are still there; the server's clock has
    // caught up, and the first flush sends seq 3 at once.
    caught_up.store(true, Ordering::SeqCst);
    let events = Events::default();
    let buffer = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    assert_eq!(buffer.held_len(ClockRefusal::InFuture), 1);
    assert_eq!(buffer.held_len(ClockRefusal::TooOld), 1);
    let mut client = Client::new(server.config(&events).with_clock_retry(retry), buffer).unwrap();
    let report = client.flush().await.unwrap();
    assert_eq!(report.acknowledged, 1);
    assert!(events.all().contains(&Event::Released {
        refusal: ClockRefusal::InFuture,
        count: 1,
        dropped: vec![],
    }));
    server.seen(|s| {
        let mut acc = s.accepted.clone();
        acc.sort();
        assert_eq!(acc, [0, 1, 2, 3, 4, 6, 7]);
    });

    // ts_too_old waits for the application: export, then forget.
    let old = client.held(ClockRefusal::TooOld).unwrap();
    assert_eq!(old.iter().map(|r| r.seq).collect::<Vec<_>>(), [5]);
    assert_eq!(client.flush().await.unwrap().requests, 0, "not resent");
    client.forget_held(&[5]).unwrap();
    assert_eq!(client.buffer().held_len(ClockRefusal::TooOld), 0);
    drop(client);
    let buffer = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    assert_eq!(buffer.held_len(ClockRefusal::TooOld), 0);
    assert_eq!(buffer.held_len(ClockRefusal::InFuture), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_holding_area_is_bounded_and_counts_what_it_drops() {
    let server = FakeServer::start(|_, _| Reply::Status {
        status: 422,
        code: "ts_too_old",
        index: Some(0),
        retry_after: None,
    })
    .await;
    let events = Events::default();
    let hold = BufferLimits {
        max_readings: 3,
        max_bytes: 1 << 20,
        overflow: OverflowPolicy::DropOldest,
    };
    let buffer = MemoryBuffer::new(BufferLimits::default()).with_hold_limits(hold);
    let mut client = Client::new(server.config(&events), buffer).unwrap();
    for s in 0..5 {
        client.push(reading(s)).unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!((report.held, report.acknowledged), (5, 0));
    let c = client.counters();
    assert_eq!((c.held, c.held_dropped, c.buffered), (5, 2, 0));
    let kept: Vec<u64> = client
        .held(ClockRefusal::TooOld)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(kept, [2, 3, 4], "the oldest are dropped");
    let dropped: Vec<u64> = events
        .all()
        .iter()
        .flat_map(|e| match e {
            Event::Held { dropped, .. } => dropped.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(dropped, [0, 1]);

    // Released by the application (the server's maximum age was raised).
    assert_eq!(client.release_held(ClockRefusal::TooOld).unwrap(), 3);
    assert_eq!(client.buffer().len(), 3);
    assert_eq!(client.counters().released, 3);
}
