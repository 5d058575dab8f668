//! Many clients sharing a small `ConnectionPool` against the scripted fake
//! server: per-device credentials, retries and acknowledgements, a bounded
//! number of connections. Current-thread runtime, like the other tests.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use ha_device_client::{
    Buffer, BufferLimits, Client, ClientConfig, ConnectionPool, Event, MemoryBuffer, PoolConfig,
    RetryCause,
};
use support::{Events, FakeServer, Reply, fast_policy, reading_of};

const DEVICES: usize = 12;
const READINGS: u64 = 25;

fn pool(server: &FakeServer, connections: usize) -> ConnectionPool {
    ConnectionPool::new(
        PoolConfig::new(server.url(), connections).with_ca_pem(server.ca_pem.clone()),
    )
    .unwrap()
}

fn device(i: usize) -> String {
    format!("dev-{i}")
}

/// A pooled client for `device`, batches of 10, events in `events`.
fn client(pool: &ConnectionPool, device: &str, events: &Events) -> Client {
    let events = events.clone();
    let config = ClientConfig::new(pool.url(), device, format!("token-{device}"))
        .with_connection_pool(pool.clone())
        .with_retry_policy(fast_policy())
        .with_request_timeout(Duration::from_millis(500))
        .with_pacing(Duration::from_millis(1))
        .with_batch(10, 1 << 20)
        .with_event_callback(move |e| events.0.lock().unwrap().push(e.clone()));
    Client::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap()
}

/// Runs every device's flush concurrently; returns each device's events.
async fn run_fleet(pool: &ConnectionPool) -> Vec<Events> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut all = Vec::new();
    for i in 0..DEVICES {
        let events = Events::default();
        let mut client = client(pool, &device(i), &events);
        all.push(events);
        tasks.spawn(async move {
            for seq in 0..READINGS {
                client.push(reading_of(client.device_id(), seq)).unwrap();
            }
            client.flush().await.unwrap();
            assert!(client.buffer().is_empty());
            assert!(
                !client.is_connected(),
                "a pooled client holds no connection"
            );
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    all
}

fn every_reading_once(server: &FakeServer) {
    server.seen(|s| {
        let mut counts: HashMap<(String, u64), usize> = HashMap::new();
        for r in &s.accepted_readings {
            *counts.entry(r.clone()).or_default() += 1;
        }
        assert_eq!(
            counts.len(),
            DEVICES * READINGS as usize,
            "every reading acknowledged"
        );
        assert!(counts.values().all(|&n| n == 1), "none acknowledged twice");
        assert_eq!(
            s.auth_mismatches, 0,
            "each request carries its own device's credentials"
        );
    });
}

#[tokio::test]
async fn many_clients_share_two_connections_and_each_reading_is_acknowledged_once() {
    let server = FakeServer::start(|_, _| Reply::Accept).await;
    let pool = pool(&server, 2);
    let events = run_fleet(&pool).await;
    every_reading_once(&server);
    server.seen(|s| {
        assert!(
            s.max_open_connections <= 2,
            "{} connections at once",
            s.max_open_connections
        );
        assert!(s.connections <= 2, "healthy connections are reused");
        assert_eq!(
            s.requests.len(),
            DEVICES * 3,
            "25 readings in batches of 10"
        );
    });
    assert_eq!(
        (pool.lent(), pool.idle_connections()),
        (0, server.seen(|s| s.connections))
    );
    assert!(events.iter().all(|e| e.retries().is_empty()));
    pool.close_idle();
    assert_eq!(pool.idle_connections(), 0);
}

#[tokio::test]
async fn broken_connections_are_replaced_and_retries_stay_per_device() {
    // dev-3's first two requests get 503; the 5th and 17th requests of the
    // other devices (whichever they are) are cut off without an answer.
    // Counted apart, so a drop can never land on one of dev-3's 503s (which
    // made the expected number of retries depend on scheduling).
    let (mut dev3, mut others) = (0, 0);
    let server = FakeServer::start(move |_, readings| {
        if readings[0].device_id == "dev-3" {
            dev3 += 1;
            return if dev3 <= 2 {
                Reply::status(503, "broker_unavailable")
            } else {
                Reply::Accept
            };
        }
        others += 1;
        match others {
            5 | 17 => Reply::Drop,
            _ => Reply::Accept,
        }
    })
    .await;
    let pool = pool(&server, 2);
    let events = run_fleet(&pool).await;
    every_reading_once(&server);
    server.seen(|s| {
        assert!(
            s.max_open_connections <= 2,
            "{} connections at once",
            s.max_open_connections
        );
        assert!(s.connections >= 3, "a dropped connection was replaced");
    });
    // dev-3 retried its own 503s with its own backoff: attempts 1 and 2.
    let dev3_503: Vec<(u32, Duration)> = events[3]
        .all()
        .iter()
        .filter_map(|e| match e {
            Event::Retry {
                attempt,
                delay,
                cause: RetryCause::Status(503),
            } => Some((*attempt, *delay)),
            _ => None,
        })
        .collect();
    assert_eq!(
        dev3_503,
        [
            (1, Duration::from_millis(10)),
            (2, Duration::from_millis(20))
        ]
    );
    let total: usize = events.iter().map(|e| e.retries().len()).sum();
    assert_eq!(
        total, 4,
        "two 503s for dev-3 plus one retry per dropped request"
    );
    for (i, e) in events.iter().enumerate() {
        for event in e.all() {
            if let Event::Retry { cause, .. } = event {
                assert!(
                    i == 3 || cause == RetryCause::ConnectionLost,
                    "dev-{i} retried for {cause}"
                );
            }
        }
    }
}

#[tokio::test]
async fn waiting_longer_than_the_request_timeout_for_a_connection_is_retried() {
    // The only connection is held by a request the server leaves
    // unanswered for 600 ms; the other device's request timeout is 200 ms.
    let server = FakeServer::start(|n, _| match n {
        0 => Reply::Stall(Duration::from_millis(600)),
        _ => Reply::Accept,
    })
    .await;
    let pool = pool(&server, 1);
    let slow_events = Events::default();
    let mut slow = client(&pool, "dev-slow", &slow_events);
    slow.push(reading_of("dev-slow", 1)).unwrap();
    let waiting_events = Events::default();
    let waiting_config = ClientConfig::new(pool.url(), "dev-waiting", "t")
        .with_connection_pool(pool.clone())
        .with_retry_policy(fast_policy())
        .with_request_timeout(Duration::from_millis(200))
        .with_event_callback({
            let events = waiting_events.clone();
            move |e| events.0.lock().unwrap().push(e.clone())
        });
    let mut waiting = Client::new(waiting_config, MemoryBuffer::default()).unwrap();
    waiting.push(reading_of("dev-waiting", 1)).unwrap();
    let first = tokio::spawn(async move { slow.flush().await.map(|r| r.acknowledged) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.lent(), 1);
    waiting.flush().await.unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    let causes: Vec<RetryCause> = waiting_events
        .all()
        .iter()
        .filter_map(|e| match e {
            Event::Retry { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect();
    assert!(!causes.is_empty());
    assert!(
        causes.iter().all(|c| *c == RetryCause::RequestTimeout),
        "{causes:?}"
    );
    server.seen(|s| {
        let mut accepted = s.accepted_readings.clone();
        accepted.sort();
        assert_eq!(
            accepted,
            [("dev-slow".to_owned(), 1), ("dev-waiting".to_owned(), 1)]
        );
    });
}

#[tokio::test]
async fn a_pooled_config_must_match_the_pool() {
    let server = FakeServer::start(|_, _| Reply::Accept).await;
    let pool = pool(&server, 1);
    let other_url =
        ClientConfig::new("https://localhost:1", "dev-1", "t").with_connection_pool(pool.clone());
    assert!(other_url.validate().is_err());
    let own_ca = ClientConfig::new(pool.url(), "dev-1", "t")
        .with_ca_pem(server.ca_pem.clone())
        .with_connection_pool(pool.clone());
    assert!(
        own_ca.validate().is_err(),
        "TLS settings belong to the pool"
    );
    // The pool, not the client config, holds the CA.
    ClientConfig::new(pool.url(), "dev-1", "t")
        .with_connection_pool(pool.clone())
        .validate()
        .unwrap();
    assert!(
        ConnectionPool::new(PoolConfig::new(server.url(), 0).with_ca_pem(server.ca_pem.clone()))
            .is_err()
    );
    assert!(
        ConnectionPool::new(PoolConfig::new(server.url(), 4)).is_err(),
        "https needs a CA"
    );
    assert!(
        ConnectionPool::new(PoolConfig::new("http://127.0.0.1:1", 4)).is_err(),
        "plain HTTP only when asked"
    );
    ConnectionPool::new(PoolConfig::new("http://127.0.0.1:1", 4).with_plain_http()).unwrap();
}
