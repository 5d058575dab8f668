//! The broker side dies while publishes are unconfirmed: nothing is reported
//! confirmed that the broker did not confirm, every confirmed message is
//! delivered at least once after the reconnect, and the store keeps exactly
//! one row per key.
#![cfg(all(feature = "rabbitmq", feature = "postgres"))]

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_core::conformance::{reading, server_url, unique_name};
use ha_core::queue::amqp::{AmqpConfig, AmqpQueue};
use ha_core::queue::{OutgoingMessage, Queue, Subscription, partition_for};
use ha_core::store::Store;
use ha_core::store::postgres::{PostgresConfig, PostgresStore};
use ha_core::wire::Envelope;

const PUBLISHERS: u64 = 8;
const BATCH: u64 = 100;
const PARTITIONS: u32 = 2;
/// The publishers run until the kill is observed, within these caps (a
/// busy machine may take seconds to run `rabbitmqctl`): at most 400,000
/// messages in all, at most 3 minutes.
const MAX_BATCHES: u64 = 500;
const MAX_PUBLISHING: Duration = Duration::from_secs(180);
/// Confirmed before the kill, and again after the reconnect.
const WARM_UP: usize = 4_000;
const AFTER_KILL: usize = 2_000;
/// How long each phase (warm-up, the kill landing, publishing resuming) may
/// take before the test fails saying which did not happen.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

fn rabbitmqctl(ctl: &str, args: &[&str]) -> String {
    let out = Command::new(ctl)
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The broker-side process ids of connections whose name contains `name`.
fn connection_pids(ctl: &str, name: &str) -> Vec<String> {
    rabbitmqctl(
        ctl,
        &[
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "client_properties",
        ],
    )
    .lines()
    .filter(|l| l.contains(name))
    .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_survive_a_killed_connection() {
    let (Some(amqp), Some(pg), Some(ctl)) = (
        server_url("HA_TEST_AMQP_URL"),
        server_url("HA_TEST_POSTGRES_URL"),
        server_url("HA_TEST_RABBITMQCTL"),
    ) else {
        return;
    };
    let name = unique_name("kill");
    let queue = Arc::new(
        AmqpQueue::connect(AmqpConfig {
            urls: vec![amqp],
            partitions: PARTITIONS,
            queue_prefix: format!("{name}.readings"),
            connection_name: name.clone(),
            publish_timeout: Duration::from_secs(60),
            ..AmqpConfig::default()
        })
        .await
        .expect("connect"),
    );
    let publisher_pid = {
        let pids = connection_pids(&ctl, &format!("{name}-publish"));
        assert_eq!(pids.len(), 1, "one publishing connection: {pids:?}");
        pids[0].clone()
    };

    // Publishers: each message is one reading, so a message is a key. They
    // publish until told to stop (or a cap), so the kill always lands
    // mid-stream however slowly `rabbitmqctl` runs.
    let confirmed: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let failed_calls = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let publishing_deadline = tokio::time::Instant::now() + MAX_PUBLISHING;
    let mut tasks = Vec::new();
    for w in 0..PUBLISHERS {
        let (queue, confirmed, failed_calls, stop) = (
            queue.clone(),
            confirmed.clone(),
            failed_calls.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let device = format!("dev-{w}");
            let partition = partition_for(&device, PARTITIONS);
            for b in 0..MAX_BATCHES {
                if stop.load(Ordering::Relaxed) || tokio::time::Instant::now() > publishing_deadline
                {
                    return;
                }
                let seqs: Vec<u64> = (b * BATCH..(b + 1) * BATCH).collect();
                let messages = seqs
                    .iter()
                    .map(|&s| OutgoingMessage {
                        partition,
                        payload: Envelope::encode(&[reading(
                            &device,
                            s,
                            s as i64,
                            &[("v", s as f64)],
                        )])
                        .into(),
                    })
                    .collect();
                match queue.publish(messages).await {
                    Ok(()) => confirmed
                        .lock()
                        .unwrap()
                        .extend(seqs.iter().map(|&s| (device.clone(), s))),
                    Err(e) => {
                        eprintln!("publish failed (allowed; not counted as confirmed): {e}");
                        *failed_calls.lock().unwrap() += 1;
                    }
                }
            }
        }));
    }
    let confirmed_len = || confirmed.lock().unwrap().len();
    let publishing = |tasks: &[tokio::task::JoinHandle<()>]| tasks.iter().any(|t| !t.is_finished());

    // Kill the publishing connection mid-stream, under load.
    wait_for(
        "the warm-up: 4,000 confirmed and at least 100 publishes in flight",
        || confirmed_len() >= WARM_UP && queue.unconfirmed() >= 100,
        || publishing(&tasks),
    )
    .await;
    let unconfirmed_before = queue.unconfirmed();
    let republished_before = queue.republished();
    let ctl2 = ctl.clone();
    let pid = publisher_pid.clone();
    tokio::task::spawn_blocking(move || {
        rabbitmqctl(
            &ctl2,
            &["close_connection", &pid, "test: simulated broker failure"],
        )
    })
    .await
    .unwrap();
    // The kill has landed once the queue republishes what it had in flight.
    wait_for(
        "the kill to land (a republish after rabbitmqctl close_connection)",
        || queue.republished() > republished_before,
        || publishing(&tasks),
    )
    .await;
    let at_kill = confirmed_len();
    wait_for(
        "publishing to resume on the new connection (2,000 more confirmed)",
        || confirmed_len() >= at_kill + AFTER_KILL,
        || publishing(&tasks),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let republished = queue.republished() - republished_before;
    let confirmed: Vec<(String, u64)> = confirmed.lock().unwrap().clone();
    let failed_calls = *failed_calls.lock().unwrap();
    eprintln!(
        "kill of {publisher_pid} landed with {unconfirmed_before} publishes unconfirmed just before it; \
         {republished} republished after it; {} confirmed ({at_kill} when the kill was observed); \
         {failed_calls} publish calls failed",
        confirmed.len()
    );
    assert!(
        republished >= 100,
        "at least 100 publishes must have been unconfirmed when the connection died (republished {republished})"
    );

    // Drain every partition into the store, batch by batch, acking after
    // the write is committed.
    let store = Arc::new(
        PostgresStore::new(PostgresConfig {
            url: pg,
            schema: Some(unique_name("k")),
            ..PostgresConfig::default()
        })
        .unwrap(),
    );
    store.migrate().await.unwrap();
    let want: HashSet<(String, u64)> = confirmed.iter().cloned().collect();
    let seen: Arc<Mutex<HashSet<(String, u64)>>> = Arc::default();
    let deliveries = Arc::new(Mutex::new(0u64));
    let mut consumers = Vec::new();
    for p in 0..PARTITIONS {
        let (queue, store, seen, deliveries) = (
            queue.clone(),
            store.clone(),
            seen.clone(),
            deliveries.clone(),
        );
        consumers.push(tokio::spawn(async move {
            let mut sub = queue.subscribe(p, 500).await.unwrap();
            loop {
                let Some(batch) = next_batch(&mut sub, 200).await else {
                    return;
                };
                let mut readings = Vec::new();
                for d in &batch {
                    readings.extend(Envelope::decode(&d.payload).unwrap().readings);
                }
                store.write(&readings, &[]).await.unwrap();
                *deliveries.lock().unwrap() += batch.len() as u64;
                seen.lock()
                    .unwrap()
                    .extend(readings.iter().map(|r| (r.device_id.clone(), r.seq)));
                if let Some(last) = batch.into_iter().last() {
                    last.ack_up_to().await.unwrap();
                }
            }
        }));
    }
    for c in consumers {
        c.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let lost: Vec<_> = want.difference(&seen).take(5).collect();
    assert!(
        lost.is_empty(),
        "confirmed but never delivered: {lost:?} ..."
    );

    let mut rows = 0;
    for w in 0..PUBLISHERS {
        let values = store
            .recent_values(&format!("dev-{w}"), "v", u64::MAX, 100_000)
            .await
            .unwrap();
        let unique: HashSet<u64> = values.iter().map(|(s, _)| *s).collect();
        assert_eq!(unique.len(), values.len(), "one row per key");
        rows += values.len();
    }
    assert_eq!(
        rows,
        seen.len(),
        "exactly the delivered keys are stored, once each"
    );
    let deliveries = *deliveries.lock().unwrap();
    eprintln!(
        "delivered {deliveries} messages for {} distinct keys ({} duplicates from republishing); stored {rows} rows",
        seen.len(),
        deliveries - seen.len() as u64
    );
}

/// Polls `done` every 10 ms until it holds; fails naming `what` when
/// [`PHASE_TIMEOUT`] passes first or when the publishers stopped (their
/// cap) before it held.
async fn wait_for(what: &str, done: impl Fn() -> bool, publishing: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while !done() {
        assert!(
            publishing(),
            "the publishers reached their cap ({MAX_BATCHES} batches each or {MAX_PUBLISHING:?}) before {what}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PHASE_TIMEOUT:?} for {what}; it did not happen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Up to `max` deliveries: waits for the first, then takes what arrives
/// within 100 ms. `None` once the partition stays empty for 3 s.
async fn next_batch(
    sub: &mut Box<dyn Subscription>,
    max: usize,
) -> Option<Vec<ha_core::queue::Delivery>> {
    let first = tokio::time::timeout(Duration::from_secs(3), sub.next())
        .await
        .ok()?;
    let mut batch = vec![first.expect("subscription alive")];
    while batch.len() < max {
        match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            Ok(d) => batch.push(d.expect("subscription alive")),
            Err(_) => break,
        }
    }
    Some(batch)
}
