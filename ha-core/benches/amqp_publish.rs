//! Confirmed-publish throughput of `AmqpQueue` next to raw lapin publishing
//! concurrently with confirms in flight, against the same broker in the same
//! run.
//!
//! Run with the servers up: `scripts/bench amqp_publish` (or set
//! `HA_TEST_AMQP_URL` and `cargo bench -p ha-core --features rabbitmq --bench amqp_publish`).
//! Report the ratio `queue / raw`; absolute numbers depend on the machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ha_core::conformance::unique_name;
use ha_core::queue::amqp::{AmqpConfig, AmqpQueue};
use ha_core::queue::{OutgoingMessage, Queue};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Messages per measured iteration.
const MESSAGES: usize = 10_000;
/// Publishes in flight at once, for both contenders.
const WINDOW: usize = 256;
/// Messages per `Queue::publish` call; WINDOW / BATCH callers run at once.
const BATCH: usize = 64;

fn payload() -> Bytes {
    // About the size of a one-reading envelope.
    Bytes::from(vec![b'x'; 160])
}

async fn raw_lapin(url: &str, queue: &str, messages: usize) -> Duration {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let body = payload();
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut issued = 0;
    let mut confirmed = 0;
    while confirmed < messages {
        while issued < messages && in_flight.len() < WINDOW {
            let (ch, body) = (ch.clone(), body.clone());
            let queue = queue.to_owned();
            in_flight.push(async move {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("publish");
                assert!(confirm.await.expect("confirm").is_ack());
            });
            issued += 1;
        }
        in_flight.next().await;
        confirmed += 1;
    }
    let elapsed = start.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "bye".into())).await;
    elapsed
}

async fn through_queue(queue: Arc<AmqpQueue>, messages: usize) -> Duration {
    let body = payload();
    let start = Instant::now();
    let callers = WINDOW / BATCH;
    let per_caller = messages / callers;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (queue, body) = (queue.clone(), body.clone());
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < per_caller {
                    let n = BATCH.min(per_caller - sent);
                    let batch = (0..n)
                        .map(|_| OutgoingMessage {
                            partition: 0,
                            payload: body.clone(),
                        })
                        .collect();
                    queue.publish(batch).await.expect("publish");
                    sent += n;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("publisher task");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("HA_TEST_AMQP_URL") else {
        eprintln!("HA_TEST_AMQP_URL is not set: run scripts/bench to start a broker");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let prefix = format!("{}.readings", unique_name("bench"));
    let queue = Arc::new(
        rt.block_on(AmqpQueue::connect(AmqpConfig {
            urls: vec![url.clone()],
            partitions: 1,
            queue_prefix: prefix.clone(),
            ..AmqpConfig::default()
        }))
        .expect("AmqpQueue::connect"),
    );
    let raw_queue = format!("{}-raw", prefix);
    // Nobody consumes: empty both queues before each sample so a growing
    // backlog does not slow the later contender.
    let purger = rt
        .block_on(async {
            let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            Ok::<_, lapin::Error>((conn, ch))
        })
        .expect("purge channel");
    let purge = |name: &str| {
        rt.block_on(async {
            // The raw queue does not exist before the first raw sample.
            let ch = purger.0.create_channel().await.expect("channel");
            let _ = ch
                .queue_purge(name.into(), QueuePurgeOptions::default())
                .await;
        })
    };
    let _ = &purger.1;

    let mut group = c.benchmark_group("confirmed_publish");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("raw_lapin_window_256", |b| {
        b.iter_custom(|iters| {
            purge(&raw_queue);
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += raw_lapin(&url, &raw_queue, MESSAGES).await;
                }
                total
            })
        })
    });
    group.bench_function("amqp_queue_4x64", |b| {
        b.iter_custom(|iters| {
            purge(&format!("{prefix}.0"));
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += through_queue(queue.clone(), MESSAGES).await;
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
