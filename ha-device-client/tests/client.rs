//! The client against a real local HTTPS server that fails on purpose.
//! Every test runs on tokio's current-thread runtime.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::time::Duration;

use ha_device_client::{
    Buffer, BufferLimits, Client, ClientConfig, Event, FileBuffer, MemoryBuffer, OverflowPolicy,
    RetryCause, RetryPolicy,
};
use support::{Events, FakeServer, Reply, reading};

const MS: Duration = Duration::from_millis(1);

fn memory() -> MemoryBuffer {
    MemoryBuffer::new(BufferLimits::default())
}

#[tokio::test]
async fn flushes_in_seq_order_in_batches_on_one_connection() {
    let server = FakeServer::start(|_, _| Reply::Accept).await;
    let events = Events::default();
    let mut client = Client::new(server.config(&events), memory()).unwrap();
    // Pushed out of order, sent in order.
    for s in (0..250).rev() {
        client.push(reading(s)).unwrap();
    }
    assert_eq!(client.counters().buffered, 250);
    let report = client.flush().await.unwrap();
    assert_eq!((report.acknowledged, report.requests), (250, 3));
    server.seen(|s| {
        assert_eq!(
            s.requests.iter().map(Vec::len).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert_eq!(s.accepted, (0..250).collect::<Vec<_>>());
        assert_eq!(s.connections, 1, "one kept-alive connection");
        // base64("dev-1:c0ffee")
        assert!(s.auth.iter().all(|a| a == "Basic ZGV2LTE6YzBmZmVl"));
    });
    let c = client.counters();
    assert_eq!(
        (c.sent, c.acknowledged, c.buffered, c.retried),
        (250, 250, 0, 0)
    );
    assert!(matches!(events.all()[0], Event::Connected { .. }));
}

#[tokio::test]
async fn dropped_connections_resend_after_reconnect_and_lose_nothing() {
    // Requests 1, 2 and 5 are cut off without an answer.
    let server = FakeServer::start(|n, _| match n {
        1 | 2 | 5 => Reply::Drop,
        _ => Reply::Accept,
    })
    .await;
    let events = Events::default();
    let config = server.config(&events).with_batch(10, 1 << 20);
    let mut client = Client::new(config, memory()).unwrap();
    for s in 0..60 {
        client.push(reading(s)).unwrap();
    }
    client.flush().await.unwrap();
    server.seen(|s| {
        assert_eq!(
            s.accepted,
            (0..60).collect::<Vec<_>>(),
            "each seq accepted once, in order"
        );
        assert!(s.resent_after_ack.is_empty());
        assert!(s.connections >= 3, "reconnected after each drop");
    });
    assert!(client.buffer().is_empty());
    let retries = events.retries();
    assert!(!retries.is_empty());
    assert!(
        events
            .all()
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. }))
    );
}
#[tokio::test]
async fn a_stalled_server_times_out_and_the_send_is_retried() {
    let server = FakeServer::start(|n, _| match n {
        0 => Reply::Stall(Duration::from_secs(3)),
        _ => Reply::Accept,
    })
    .await;
    let events = Events::default();
    let config = server
        .config(&events)
        .with_request_timeout(Duration::from_millis(300));
    let mut client = Client::new(config, memory()).unwrap();
    client.send(reading(1)).await.unwrap();
    let causes: Vec<RetryCause> = events
        .all()
        .iter()
        .filter_map(|e| match e {
            Event::Retry { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect();
    assert_eq!(causes, [RetryCause::RequestTimeout]);
    server.seen(|s| assert_eq!(s.accepted, [1]));
}

#[tokio::test]
async fn exactly_ten_retries_then_give_up_with_readings_kept() {
    let server = FakeServer::start(|_, _| Reply::status(503, "broker_unavailable")).await;
    let events = Events::default();
    let mut client = Client::new(server.config(&events), memory()).unwrap();
    for s in 0..5 {
        client.push(reading(s)).unwrap();
    }
    let err = client.flush().await.unwrap_err();
    assert!(err.is_gave_up(), "{err}");
    assert_eq!(err.server_error().unwrap().code, "broker_unavailable");
    let want: Vec<(u32, Duration)> = (1..=10u32).map(|n| (n, (10 * n).min(50) * MS)).collect();
    assert_eq!(events.retries(), want);
    assert!(events.all().contains(&Event::GaveUp {
        retries: 10,
        cause: RetryCause::Status(503)
    }));
    server.seen(|s| assert_eq!(s.requests.len(), 11, "first attempt + 10 retries"));
    assert_eq!(client.buffer().len(), 5, "readings stay buffered");
    assert_eq!(
        (client.counters().retried, client.counters().gave_up),
        (10, 1)
    );

    // Next cycle: the server is back, everything goes through.
    server.set_script(|_, _| Reply::Accept);
    client.flush().await.unwrap();
    server.seen(|s| assert_eq!(s.accepted, [0, 1, 2, 3, 4]));
}

#[tokio::test]
async fn retry_after_is_a_floor_on_429_and_503() {
    let server = FakeServer::start(|n, _| match n {
        0 => Reply::Status {
            status: 429,
            code: "rate_limited",
            index: None,
            retry_after: Some(1),
        },
        1 => Reply::status(503, "draining"),
        _ => Reply::Accept,
    })
    .await;
    let events = Events::default();
    let mut client = Client::new(server.config(&events), memory()).unwrap();
    client.send(reading(7)).await.unwrap();
    // max(Retry-After 1 s, 10 ms), then the linear 20 ms: both count.
    assert_eq!(
        events.retries(),
        [(1, Duration::from_secs(1)), (2, 20 * MS)]
    );
    server.seen(|s| assert_eq!(s.accepted, [7]));
}

#[tokio::test]
async fn too_large_splits_the_batch() {
    let server = FakeServer::start(|_, readings| {
        if readings.len() > 7 {
            Reply::status(413, "body_too_large")
        } else {
            Reply::Accept
        }
    })
    .await;
    let events = Events::default();
    let mut client = Client::new(server.config(&events), memory()).unwrap();
    for s in 0..20 {
        client.push(reading(s)).unwrap();
    }
    client.flush().await.unwrap();
    let splits: Vec<usize> = events
        .all()
        .iter()
        .filter_map(|e| match e {
            Event::Split { batch_limit } => Some(*batch_limit),
            _ => None,
        })
        .collect();
    assert_eq!(splits, [10, 5]);
    server.seen(|s| {
        assert_eq!(s.accepted, (0..20).collect::<Vec<_>>());
        assert!(s.resent_after_ack.is_empty());
    });
    assert_eq!(client.counters().retried, 0, "a split is not a retry");
}

#[tokio::test]
async fn unauthorized_keeps_the_readings_and_surfaces_a_typed_error() {
    let server = FakeServer::start(|_, _| Reply::status(401, "bad_credentials")).await;
    let events = Events::default();
    let mut client = Client::new(server.config(&events), memory()).unwrap();
    client.push(reading(1)).unwrap();
    client.push(reading(2)).unwrap();
    let err = client.flush().await.unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert!(!err.is_transient());
    assert_eq!(err.server_error().unwrap().status, 401);
    assert_eq!(client.buffer().len(), 2);
    assert!(
        events.retries().is_empty(),
        "no retry storm on bad credentials"
    );
    server.set_script(|_, _| Reply::status(403, "wrong_device"));
    assert!(client.flush().await.unwrap_err().is_auth());
    // The token was rotated on the server side: the same readings go through.
    server.set_script(|_, _| Reply::Accept);
    client.flush().await.unwrap();
    server.seen(|s| assert_eq!(s.accepted, [1, 2]));
}

#[tokio::test]
async fn invalid_readings_are_sunk_to_the_file_and_reported() {
    // 422 names seq 3 by its index; 400 without an index for seq 6 makes
    // the client bisect until seq 6 is alone. (A clock refusal is held
    // instead: see tests/clock.rs.)
    let server = FakeServer::start(|_, readings| {
        if let Some(i) = readings.iter().position(|r| r.seq == 3) {
            Reply::Status {
                status: 422,
                code: "non_finite_value",
                index: Some(i),
                retry_after: None,
            }
        } else if readings.iter().any(|r| r.seq == 6) {
            Reply::status(400, "malformed")
        } else {
            Reply::Accept
        }
    })
    .await;
    let dir = std::env::temp_dir().join(format!("ha-dc-sink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let buffer = FileBuffer::open(dir.join("buf"), BufferLimits::default()).unwrap();
    let events = Events::default();
    let mut client = Client::new(server.config(&events), buffer).unwrap();
    for s in 0..10 {
        client.push(reading(s)).unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!((report.acknowledged, report.rejected), (8, 2));
    let rejected: Vec<(u64, String)> = events
        .all()
        .iter()
        .filter_map(|e| match e {
            Event::Rejected { readings, reason } => Some((readings[0].seq, reason.code.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (3, "non_finite_value".to_string()),
            (6, "malformed".to_string())
        ]
    );
    server.seen(|s| {
        let mut acc = s.accepted.clone();
        acc.sort();
        assert_eq!(acc, [0, 1, 2, 4, 5, 7, 8, 9]);
        assert!(s.resent_after_ack.is_empty());
    });
    let sink = std::fs::read_to_string(client.buffer().rejected_path()).unwrap();
    let lines: Vec<serde_json::Value> = sink
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["reading"]["seq"], 3);
    assert_eq!(lines[0]["reason"]["field"], "ts");
    assert_eq!(lines[1]["reason"]["status"], 400);
    assert_eq!(client.counters().rejected, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn overflow_is_counted_under_both_policies() {
    let server = FakeServer::start(|_, _| Reply::Accept).await;
    let events = Events::default();
    let limits = BufferLimits {
        max_readings: 5,
        max_bytes: 1 << 20,
        overflow: OverflowPolicy::DropOldest,
    };
    let mut client = Client::new(server.config(&events), MemoryBuffer::new(limits)).unwrap();
    for s in 0..8 {
        client.push(reading(s)).unwrap();
    }
    assert_eq!(client.counters().dropped, 3);
    assert!(events.all().contains(&Event::Overflow {
        policy: OverflowPolicy::DropOldest,
        dropped: vec![0],
    }));
    client.flush().await.unwrap();
    server.seen(|s| assert_eq!(s.accepted, [3, 4, 5, 6, 7]));

    let limits = BufferLimits {
        overflow: OverflowPolicy::RejectNew,
        ..limits
    };
    let mut client = Client::new(server.config(&events), MemoryBuffer::new(limits)).unwrap();
    for s in 100..105 {
        client.push(reading(s)).unwrap();
    }
    assert!(client.push(reading(105)).unwrap_err().is_buffer_full());
    assert_eq!(client.counters().dropped, 1);
    assert!(events.all().contains(&Event::Overflow {
        policy: OverflowPolicy::RejectNew,
        dropped: vec![105],
    }));
}

#[tokio::test]
async fn file_buffer_carries_readings_across_a_restart() {
    let server = FakeServer::start(|_, _| Reply::Drop).await;
    let dir = std::env::temp_dir().join(format!("ha-dc-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("buf");
    let events = Events::default();
    let quick = RetryPolicy::linear(MS, MS, 2).unwrap();
    {
        let buffer = FileBuffer::open(&path, BufferLimits::default()).unwrap();
        let mut client =
            Client::new(server.config(&events).with_retry_policy(quick), buffer).unwrap();
        for s in 0..10 {
            client.push(reading(s)).unwrap();
        }
        assert!(client.flush().await.unwrap_err().is_gave_up());
        // The process ends here with nothing acknowledged.
    }
    server.set_script(|_, _| Reply::Accept);
    let buffer = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    assert_eq!(buffer.recovery().readings, 10);
    let mut client = Client::new(server.config(&events), buffer).unwrap();
    client.push(reading(10)).unwrap();
    client.flush().await.unwrap();
    server.seen(|s| assert_eq!(s.accepted, (0..=10).collect::<Vec<_>>()));
    drop(client);
    assert!(
        FileBuffer::open(&path, BufferLimits::default())
            .unwrap()
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_readings_never_enter_the_buffer() {
    let server = FakeServer::start(|_, _| Reply::Accept).await;
    let mut client = Client::new(server.config(&Events::default()), memory()).unwrap();
    let mut nan = reading(1);
    nan.metrics[0].value = f64::NAN;
    assert!(client.push(nan).unwrap_err().is_bad_reading());
    let mut other = reading(2);
    other.device_id = "dev-2".into();
    assert!(client.push(other).unwrap_err().is_bad_reading());
    client.push(reading(3)).unwrap();
    assert!(client.push(reading(3)).unwrap_err().is_bad_reading());
    assert_eq!(client.buffer().len(), 1);
}

#[tokio::test]
async fn plain_http_only_when_asked_and_https_needs_a_ca() {
    let plain = ClientConfig::new("http://127.0.0.1:1", "dev-1", "t");
    assert!(Client::new(plain, memory()).is_err());
    let no_ca = ClientConfig::new("https://127.0.0.1:1", "dev-1", "t");
    assert!(Client::new(no_ca, memory()).is_err());
    let bad_ca =
        ClientConfig::new("https://127.0.0.1:1", "dev-1", "t").with_ca_pem(b"junk".to_vec());
    assert!(Client::new(bad_ca, memory()).is_err());
}

#[tokio::test]
async fn an_unknown_ca_is_a_tls_error_and_retried() {
    let server = FakeServer::start(|_, _| Reply::Accept).await;
    let other = FakeServer::start(|_, _| Reply::Accept).await;
    // Trust only the other server's CA.
    let config = ClientConfig::new(server.url(), "dev-1", "c0ffee")
        .with_ca_pem(other.ca_pem.clone())
        .with_retry_policy(RetryPolicy::linear(MS, MS, 1).unwrap());
    let mut client = Client::new(config, memory()).unwrap();
    let err = client.send(reading(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ha_device_client::Error::GaveUp {
                cause: RetryCause::Tls,
                retries: 1,
                ..
            }
        ),
        "{err}"
    );
    server.seen(|s| assert!(s.requests.is_empty()));
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let server = FakeServer::start_with(true, |_, _| Reply::Accept).await;
    let quick = RetryPolicy::linear(MS, MS, 1).unwrap();
    let events = Events::default();
    // Without a client certificate the server refuses the handshake.
    let mut client =
        Client::new(server.config(&events).with_retry_policy(quick), memory()).unwrap();
    let err = client.send(reading(1)).await.unwrap_err();
    assert!(err.is_gave_up(), "{err}");
    // With one, the same reading goes through.
    let (chain, key) = server.client_cert.clone();
    let config = server.config(&events).with_client_cert_pem(chain, key);
    let mut client = Client::new(config, client.into_buffer()).unwrap();
    client.flush().await.unwrap();
    server.seen(|s| assert_eq!(s.accepted, [1]));
}

#[tokio::test]
async fn batches_respect_the_byte_budget() {
    let server = FakeServer::start(|_, _| Reply::Accept).await;
    let config = server.config(&Events::default()).with_batch(1000, 1024);
    let mut client = Client::new(config, memory()).unwrap();
    for s in 0..100 {
        client.push(reading(s)).unwrap();
    }
    client.flush().await.unwrap();
    server.seen(|s| {
        assert!(s.requests.len() > 5);
        assert!(
            s.body_sizes.iter().all(|&n| n <= 1024),
            "{:?}",
            s.body_sizes
        );
        assert_eq!(s.accepted, (0..100).collect::<Vec<_>>());
    });
}

#[tokio::test]
async fn other_client_errors_keep_the_readings() {
    let server = FakeServer::start(|_, _| Reply::status(404, "not_found")).await;
    let events = Events::default();
    let mut client = Client::new(server.config(&events), memory()).unwrap();
    let err = client.send(reading(1)).await.unwrap_err();
    assert_eq!(err.server_error().unwrap().status, 404);
    assert!(!err.is_transient());
    assert_eq!(client.buffer().len(), 1);
    assert!(events.retries().is_empty());
}

#[tokio::test]
async fn an_abandoned_flush_loses_nothing() {
    let server = FakeServer::start(|n, _| match n {
        0 => Reply::Stall(Duration::from_secs(2)),
        _ => Reply::Accept,
    })
    .await;
    let mut client = Client::new(server.config(&Events::default()), memory()).unwrap();
    client.push(reading(1)).unwrap();
    // The caller gives up on the flush halfway through the request.
    let abandoned = tokio::time::timeout(Duration::from_millis(100), client.flush()).await;
    assert!(abandoned.is_err());
    assert_eq!(client.buffer().len(), 1);
    client.push(reading(2)).unwrap();
    client.flush().await.unwrap();
    server.seen(|s| {
        assert_eq!(s.accepted, [1, 2]);
        assert!(
            s.connections >= 2,
            "the half-used connection was not reused"
        );
    });
}
