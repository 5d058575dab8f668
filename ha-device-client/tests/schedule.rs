//! The seed's retry schedule, checked exactly on a paused clock.

use std::time::Duration;

use ha_core::wire::{Metric, Reading, Timestamp};
use ha_device_client::{Buffer, BufferLimits, Client, ClientConfig, Event, MemoryBuffer};

#[tokio::test(start_paused = true)]
async fn default_policy_retries_after_1_to_10_s_then_gives_up() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    let start = tokio::time::Instant::now();
    let config = ClientConfig::new(format!("http://127.0.0.1:{port}"), "dev-1", "t")
        .with_plain_http()
        .with_event_callback(move |e| {
            let entry = match e {
                Event::Retry { attempt, delay, .. } => (*attempt, Some(*delay)),
                Event::GaveUp { retries, .. } => (*retries, None),
                _ => return,
            };
            sink.lock()
                .unwrap()
                .push((entry.0, entry.1, start.elapsed()));
        });
    let mut client = Client::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap();
    let reading = Reading {
        device_id: "dev-1".into(),
        seq: 1,
        ts: Timestamp::now(),
        metrics: vec![Metric::new("pulse", 72.0)],
    };
    let err = client.send(reading).await.unwrap_err();
    assert!(err.is_gave_up(), "{err}");
    let log = log.lock().unwrap().clone();
    let delays: Vec<(u32, Option<Duration>)> = log.iter().map(|(a, d, _)| (*a, *d)).collect();
    let mut want: Vec<(u32, Option<Duration>)> = (1..=10)
        .map(|n| (n, Some(Duration::from_secs(n.into()))))
        .collect();
    want.push((10, None)); // the give-up
    assert_eq!(delays, want);
    // The client really waited: retry n happens after 1 + 2 + ... + n
    // seconds of (virtual) time, plus connect attempts that may burn their
    // timeout on the paused clock.
    for w in log.windows(2) {
        let (gap, delay) = (w[1].2 - w[0].2, w[0].1.unwrap());
        assert!(
            gap >= delay && gap <= delay + Duration::from_secs(2),
            "{gap:?} vs {delay:?}"
        );
    }
    assert_eq!(client.buffer().len(), 1, "the reading stays buffered");
    assert_eq!(client.counters().retried, 10);
}

/// The client's futures can run on a multi-threaded runtime (a fleet
/// emulator spawns one task per device).
#[test]
fn flush_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let config =
        ha_device_client::ClientConfig::new("http://127.0.0.1:9", "dev-1", "t").with_plain_http();
    let mut client =
        ha_device_client::Client::new(config, ha_device_client::MemoryBuffer::default()).unwrap();
    let flush = client.flush();
    assert_send(&flush);
}
