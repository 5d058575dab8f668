//! The scenarios, each taking the transport as its parameter. Every one
//! ends on the store's rows: the exact `(seq, value)` set per device, so a
//! lost reading, an extra one or one stored with another's value fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ha_core::wire::Timestamp;
use ha_device_client::{ClockRefusal, Event};
use ha_test_support::wait_until_async;

use crate::Transport;
use crate::pipeline::{Events, MAX_AGE, Pipeline, expected, reading, reading_at};

/// (a) Readings from several devices, sent concurrently in batches, are
/// each stored exactly once.
pub async fn readings_from_several_devices_are_stored_once(transport: Transport) {
    let Some(p) = Pipeline::start(transport).await else {
        return;
    };
    const N: u64 = 40;
    let devices = ["fleet-a", "fleet-b", "fleet-c", "fleet-d"];
    let mut sends = Vec::new();
    for device in devices {
        let (mut client, _) = p.client(device, None);
        sends.push(tokio::spawn(async move {
            // Pushed in two rounds so flushes interleave with pushes.
            for half in [0..N / 2, N / 2..N] {
                for seq in half {
                    client.push(reading(device, seq)).unwrap();
                }
                client.flush().await.unwrap();
            }
            client.counters()
        }));
    }
    for send in sends {
        let counters = send.await.unwrap();
        assert_eq!((counters.acknowledged, counters.buffered), (N, 0));
    }
    for device in devices {
        assert_eq!(p.stored(device, N as usize).await, expected(device, 0..N));
    }
    // Nothing was resent: the pipeline saw each reading once.
    assert_eq!(p.accepted(), (N as usize * devices.len()) as f64);
}

/// (b) The same `seq` sent again — by the client after its ack was lost,
/// and by a fresh client that sends readings already stored — reaches
/// ingest again, is acknowledged again, and is stored once.
pub async fn resends_of_the_same_seq_are_stored_once(transport: Transport) {
    let Some(p) = Pipeline::start(transport).await else {
        return;
    };
    let device = "resender";
    let (mut client, events) = p.client(device, None);
    for seq in 0..10 {
        client.push(reading(device, seq)).unwrap();
    }
    assert_eq!(client.flush().await.unwrap().acknowledged, 10);
    assert_eq!(p.accepted(), 10.0);

    // The next batch reaches ingest, which acknowledges it, but the ack is
    // lost on the way back; then the connection breaks.
    p.relay.swallow_answers(true);
    for seq in 10..15 {
        client.push(reading(device, seq)).unwrap();
    }
    let flush = tokio::spawn(async move {
        let report = client.flush().await;
        (client, report)
    });
    wait_until_async(
        "ingest acknowledged the batch whose ack is lost",
        Duration::from_secs(30),
        || async { p.accepted() >= 15.0 },
    )
    .await;
    // Cut before letting answers through again: ingest may count the
    // readings a moment before it writes their ack.
    p.relay.cut();
    p.relay.swallow_answers(false);
    let (client, report) = flush.await.unwrap();
    assert_eq!(report.unwrap().acknowledged, 5);
    assert_eq!(client.counters().buffered, 0);
    // Resent on a new connection: at once (the session was found closed
    // before any answer) or after a retry delay; either way sent again.
    assert_eq!(
        connects(&events),
        2,
        "the lost ack made the client reconnect: {:?}",
        events.lock().unwrap()
    );
    assert_eq!(p.accepted(), 20.0, "the batch was accepted twice");

    // A raw duplicate: another client (a device that lost its buffer's
    // acknowledgements) sends readings 0..15 once more, plain.
    let (mut again, _) = p.client(device, None);
    for seq in 0..15 {
        again.push(reading(device, seq)).unwrap();
    }
    assert_eq!(again.flush().await.unwrap().acknowledged, 15);
    assert_eq!(p.accepted(), 35.0);

    assert_eq!(p.stored(device, 15).await, expected(device, 0..15));
}

/// (c) Every connection is cut again and again while several devices
/// stream: every acknowledged reading is stored once, none is lost, and
/// each device's readings are acknowledged in `seq` order.
pub async fn a_connection_cut_mid_stream_loses_nothing_and_doubles_nothing(transport: Transport) {
    let Some(p) = Pipeline::start(transport).await else {
        return;
    };
    const N: u64 = 60;
    const CUTS: usize = 6;
    let devices = ["stream-a", "stream-b", "stream-c"];
    let mut sends = Vec::new();
    let mut all_events = Vec::new();
    for device in devices {
        let (mut client, events) = p.client(device, None);
        all_events.push(events.clone());
        sends.push(tokio::spawn(async move {
            for seq in 0..N {
                client.push(reading(device, seq)).unwrap();
            }
            // Flushed batch by batch (5 readings each), so cuts land
            // between and during publishes.
            let report = client.flush().await;
            (client, report)
        }));
    }
    // A cut after every few acknowledged batches across the fleet, not on
    // a timer, so the cuts land mid-stream however slow the machine is.
    // Before each cut the answers are lost until ingest has acknowledged
    // more readings: those were taken but the client never heard so, and
    // must be resent.
    let done = AtomicBool::new(false);
    let cutter = async {
        let mut cuts = 0;
        let mut last = 0;
        while cuts < CUTS && !done.load(Ordering::SeqCst) {
            let batches: usize = all_events.iter().map(acknowledged_batches).sum();
            if batches >= last + 3 {
                let before = p.accepted();
                p.relay.swallow_answers(true);
                // Bounds a hang only: a batch is normally in flight.
                let limit = Instant::now() + Duration::from_secs(10);
                while p.accepted() <= before && Instant::now() < limit {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                p.relay.cut();
                p.relay.swallow_answers(false);
                cuts += 1;
                last = all_events.iter().map(acknowledged_batches).sum();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cuts
    };
    let sent = async {
        let mut out = Vec::new();
        for send in sends {
            out.push(send.await.unwrap());
        }
        done.store(true, Ordering::SeqCst);
        out
    };
    let (cuts, sent) = tokio::join!(cutter, sent);
    assert!(cuts >= 3, "only {cuts} cuts landed mid-stream");
    assert!(p.relay.accepted() > devices.len(), "clients reconnected");

    for ((client, report), events) in sent.into_iter().zip(&all_events) {
        let device = client.device_id().to_owned();
        assert_eq!(report.unwrap().acknowledged, N as usize, "{device}");
        assert_eq!(client.counters().acknowledged, N, "{device}");
        assert_eq!(client.counters().buffered, 0, "{device}");
        // In order: the acknowledged ranges follow each other, 0..N.
        let mut next = 0;
        for e in events.lock().unwrap().iter() {
            if let Event::Acknowledged {
                first_seq,
                last_seq,
                ..
            } = e
            {
                assert_eq!(*first_seq, next, "{device}: acknowledged out of order");
                next = last_seq + 1;
            }
        }
        assert_eq!(next, N, "{device}");
        assert_eq!(p.stored(&device, N as usize).await, expected(&device, 0..N));
    }
    // The cuts did make the clients resend acknowledged readings (or the
    // test proved nothing): ingest took more readings than were stored.
    let accepted = p.accepted();
    let unique = (N as usize * devices.len()) as f64;
    assert!(accepted > unique, "no resend after {cuts} cuts: {accepted}");
    eprintln!("{transport:?}: {cuts} cuts, {accepted} readings accepted for {unique} stored");
}

/// (d) Permanent refusals are reported to the client as the same kind on
/// both transports, keep or set aside the readings as documented, and
/// store nothing.
pub async fn permanent_refusals_are_reported_alike_and_store_nothing(transport: Transport) {
    let Some(p) = Pipeline::start(transport).await else {
        return;
    };
    // A wrong token: unauthorized (401), no retry, the readings stay.
    let impostor = "impostor";
    let (mut client, events) = p.client(impostor, Some(&"00".repeat(32)));
    for seq in 0..5 {
        client.push(reading(impostor, seq)).unwrap();
    }
    let err = client.flush().await.unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert_eq!(err.server_error().map(|s| s.status), Some(401), "{err}");
    assert_eq!(client.counters().buffered, 5);
    assert_eq!(retried(&events), 0);
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Unauthorized { reason } if reason.status == 401)),
        "{:?}",
        events.lock().unwrap()
    );

    // Readings older than ingest's maximum age: refused with `ts_too_old`,
    // held apart by the client (not resent, not dropped silently).
    let late = "late-clock";
    let (mut client, events) = p.client(late, None);
    let old = Timestamp::now().saturating_sub(MAX_AGE * 2);
    for seq in 0..3 {
        client.push(reading_at(late, seq, old)).unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!((report.acknowledged, report.held), (0, 3));
    assert_eq!(client.held(ClockRefusal::TooOld).unwrap().len(), 3);
    let held: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Held {
                refusal, reason, ..
            } => Some((*refusal, reason.code.clone())),
            _ => None,
        })
        .collect();
    assert!(!held.is_empty(), "{:?}", events.lock().unwrap());
    assert!(
        held.iter()
            .all(|(r, code)| *r == ClockRefusal::TooOld && code == "ts_too_old"),
        "{held:?}"
    );
    assert_eq!(retried(&events), 0);

    // A good reading after both, over the same transport: once it is
    // stored, the refused ones would have been too.
    let (mut good, _) = p.client("witness", None);
    good.push(reading("witness", 0)).unwrap();
    assert_eq!(good.flush().await.unwrap().acknowledged, 1);
    assert_eq!(p.stored("witness", 1).await, expected("witness", 0..1));
    assert_eq!(p.rows(impostor).await, []);
    assert_eq!(p.rows(late).await, []);
    assert_eq!(p.accepted(), 1.0, "only the witness was accepted");
}

fn retried(events: &Events) -> usize {
    let events = events.lock().unwrap();
    events
        .iter()
        .filter(|e| matches!(e, Event::Retry { .. }))
        .count()
}

fn connects(events: &Events) -> usize {
    let events = events.lock().unwrap();
    events
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count()
}

fn acknowledged_batches(events: &Events) -> usize {
    let events = events.lock().unwrap();
    events
        .iter()
        .filter(|e| matches!(e, Event::Acknowledged { .. }))
        .count()
}
