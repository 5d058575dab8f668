//! The MQTT transport against a real broker: Debian's `mosquitto`, run as
//! a child process on a free 127.0.0.1 port with a TLS listener and a test
//! CA (`ha_test_support::mosquitto::Broker`), and `mosquitto_sub` (an MQTT
//! client not written here) as the observer of what was published.
//!
//! Needs `mosquitto` and `mosquitto-clients` (`scripts/test` installs
//! them). Without them the tests fail when `CI` is set and are skipped,
//! loudly, otherwise.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_core::wire::{IngestBody, Metric, Reading, Timestamp};
use ha_device_client::{
    Buffer, BufferLimits, Client, ClientConfig, Event, MemoryBuffer, RetryPolicy,
};
use ha_test_support::mosquitto::{self, Broker};

const TOOLS: [&str; 4] = [
    "mosquitto",
    "mosquitto_sub",
    "mosquitto_pub",
    "mosquitto_passwd",
];

/// Only `dev-1` (`c0ffee`) and the observer may connect.
const USERS: [(&str, &str); 2] = [("dev-1", "c0ffee"), ("observer", "watch")];

/// The observer's `mosquitto_sub`/`mosquitto_pub` arguments: it logs in
/// when the broker has a password file.
fn observer_args(broker: &Broker) -> Vec<String> {
    let login = broker.dir.join("passwords").exists().then_some(USERS[1]);
    broker.client_args(login)
}

/// `mosquitto_sub` on `readings/#`, collecting `(topic, payload)` lines.
struct Observer {
    child: Child,
    lines: Arc<Mutex<Vec<(String, String)>>>,
}

impl Observer {
    /// Subscribes and waits until a probe published with `mosquitto_pub`
    /// comes back, so nothing published afterwards can be missed.
    fn start(broker: &Broker) -> Observer {
        let mut child = Command::new("mosquitto_sub")
            .args(observer_args(broker))
            .args(["-t", "readings/#", "-F", "%t %p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some((t, p)) = line.split_once(' ') {
                    sink.lock().unwrap().push((t.to_owned(), p.to_owned()));
                }
            }
        });
        let observer = Observer { child, lines };
        let start = Instant::now();
        loop {
            let ok = Command::new("mosquitto_pub")
                .args(observer_args(broker))
                .args(["-t", "readings/probe", "-m", "probe"])
                .status()
                .unwrap();
            assert!(ok.success(), "mosquitto_pub failed");
            std::thread::sleep(Duration::from_millis(100));
            if observer
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.0 == "readings/probe")
            {
                return observer;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "observer never subscribed"
            );
        }
    }

    /// The seqs of each `readings/dev-1` message, in arrival order, once
    /// `expected` readings arrived (or after 10 s).
    fn publishes(&self, expected: usize) -> Vec<Vec<u64>> {
        let start = Instant::now();
        loop {
            let got: Vec<Vec<u64>> = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.0 == "readings/dev-1")
                .map(|l| {
                    IngestBody::parse(l.1.as_bytes(), Timestamp::now())
                        .unwrap()
                        .readings
                        .iter()
                        .map(|r| r.seq)
                        .collect()
                })
                .collect();
            if got.iter().map(Vec::len).sum::<usize>() >= expected
                || start.elapsed() > Duration::from_secs(30)
            {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reading(seq: u64) -> Reading {
    Reading {
        device_id: "dev-1".into(),
        seq,
        ts: Timestamp::now().saturating_sub(Duration::from_secs(60)),
        metrics: vec![Metric::new("pulse", 60.0 + (seq % 40) as f64)],
    }
}

fn client(broker: &Broker, token: &str, batch: usize) -> (Client, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let config = ClientConfig::new(broker.url(), "dev-1", token)
        .with_ca_file(broker.ca())
        .with_batch(batch, 1 << 20)
        .with_pacing(Duration::from_millis(10))
        .with_retry_policy(
            RetryPolicy::linear(Duration::from_millis(20), Duration::from_millis(100), 5).unwrap(),
        )
        .with_event_callback(move |e| sink.lock().unwrap().push(e.clone()));
    let client = Client::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap();
    (client, events)
}

/// Returns once `n` batches were acknowledged (polling the events).
async fn after_acks(events: &Mutex<Vec<Event>>, n: usize) {
    let start = Instant::now();
    while acknowledged(events).len() < n {
        assert!(start.elapsed() < Duration::from_secs(30), "no PUBACKs");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn acknowledged(events: &Mutex<Vec<Event>>) -> Vec<(u64, u64)> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Acknowledged {
                first_seq,
                last_seq,
                ..
            } => Some((*first_seq, *last_seq)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn publishes_arrive_in_order_over_tls_and_leave_the_buffer_on_puback() {
    if !mosquitto::installed(&TOOLS) {
        return;
    }
    let broker = Broker::start(&USERS);
    let observer = Observer::start(&broker);
    let (mut client, events) = client(&broker, "c0ffee", 20);
    for s in (0..250).rev() {
        client.push(reading(s)).unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!((report.acknowledged, report.requests), (250, 13));
    assert!(client.buffer().is_empty());
    // One PUBLISH per batch, in seq order, each batch acknowledged once.
    let got = observer.publishes(250);
    assert_eq!(got.len(), 13);
    assert_eq!(got.concat(), (0..250).collect::<Vec<_>>());
    let acks = acknowledged(&events);
    assert_eq!(acks.len(), 13);
    assert!(acks.windows(2).all(|w| w[1].0 == w[0].1 + 1));
    let connects = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count();
    assert_eq!(connects, 1, "one session for the whole flush");
}

#[tokio::test(flavor = "current_thread")]
async fn a_wrong_password_is_unauthorized_and_nothing_leaves_the_buffer() {
    if !mosquitto::installed(&TOOLS) {
        return;
    }
    let broker = Broker::start(&USERS);
    let (mut client, events) = client(&broker, "not-the-token", 20);
    for s in 0..5 {
        client.push(reading(s)).unwrap();
    }
    let err = client.flush().await.unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert_eq!(client.buffer().len(), 5);
    assert!(acknowledged(&events).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_broker_killed_mid_stream_loses_nothing_and_the_rest_is_resent_in_order() {
    if !mosquitto::installed(&TOOLS) {
        return;
    }
    let mut broker = Broker::start(&[]);
    let before = Observer::start(&broker);
    let (mut client, events) = client(&broker, "c0ffee", 5);
    let n = 200u64;
    for s in 0..n {
        client.push(reading(s)).unwrap();
    }
    // 40 publishes at least 10 ms apart; the broker dies (SIGKILL) after
    // the third PUBACK, and stays down longer than the retry budget (~0.4 s).
    let (first, ()) = tokio::join!(client.flush(), async {
        after_acks(&events, 3).await;
        broker.kill();
    });
    let err = first.unwrap_err();
    assert!(err.is_gave_up(), "{err}");
    let left = client.buffer().len() as u64;
    assert!(left > 0 && left < n, "killed mid-stream: {left} left");
    // What was acknowledged before the kill was delivered to the observer
    // (wait for its reader to catch up).
    let seen_before = before.publishes((n - left) as usize).concat();
    drop(before);

    broker.run();
    let after = Observer::start(&broker);
    client.flush().await.unwrap();
    assert!(client.buffer().is_empty());
    let seen_after = after.publishes(left as usize).concat();

    // Before the kill: a prefix, in order. After: exactly the readings
    // that were still buffered, oldest first.
    assert_eq!(
        seen_before,
        (0..seen_before.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(seen_after, (n - left..n).collect::<Vec<_>>());
    // None lost: every seq seen, and only the batch in flight at the kill
    // (at most one batch) possibly twice.
    let mut all: Vec<u64> = seen_before.iter().chain(&seen_after).copied().collect();
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    assert!(total - all.len() <= 5, "{} duplicates", total - all.len());
    // The client's view: every seq acknowledged exactly once, in order.
    let acks = acknowledged(&events);
    let acked: Vec<u64> = acks.iter().flat_map(|&(a, b)| a..=b).collect();
    assert_eq!(acked, (0..n).collect::<Vec<_>>());
    let ev = events.lock().unwrap();
    assert!(ev.iter().any(|e| matches!(e, Event::Disconnected { .. })));
    assert!(ev.iter().any(|e| matches!(e, Event::GaveUp { .. })));
}

#[tokio::test(flavor = "current_thread")]
async fn a_broker_restarted_within_the_retry_budget_gets_the_rest_in_the_same_flush() {
    if !mosquitto::installed(&TOOLS) {
        return;
    }
    let mut broker = Broker::start(&[]);
    let (client, events) = client(&broker, "c0ffee", 5);
    let policy =
        RetryPolicy::linear(Duration::from_millis(100), Duration::from_millis(300), 30).unwrap();
    let mut client = {
        // Same settings, a retry budget (~8 s) longer than the outage.
        let buffer = client.into_buffer();
        let sink = events.clone();
        let config = ClientConfig::new(broker.url(), "dev-1", "c0ffee")
            .with_ca_file(broker.ca())
            .with_batch(5, 1 << 20)
            .with_pacing(Duration::from_millis(10))
            .with_retry_policy(policy)
            .with_event_callback(move |e| sink.lock().unwrap().push(e.clone()));
        Client::new(config, buffer).unwrap()
    };
    let n = 200u64;
    for s in 0..n {
        client.push(reading(s)).unwrap();
    }
    let (flushed, ()) = tokio::join!(client.flush(), async {
        after_acks(&events, 3).await;
        broker.kill();
        tokio::time::sleep(Duration::from_millis(400)).await;
        broker.run();
    });
    flushed.unwrap();
    assert!(client.buffer().is_empty());
    // Every seq acknowledged exactly once, in order, across two sessions.
    let acked: Vec<u64> = acknowledged(&events)
        .iter()
        .flat_map(|&(a, b)| a..=b)
        .collect();
    assert_eq!(acked, (0..n).collect::<Vec<_>>());
    let ev = events.lock().unwrap();
    let connects = ev
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count();
    assert_eq!(connects, 2);
    assert!(ev.iter().any(|e| matches!(e, Event::Retry { .. })));
}
