//! RabbitMQ backend of the [`Queue`] contract (feature `rabbitmq`), via lapin.
//!
//! - Partition `p` is the durable quorum queue `{queue_prefix}.{p}`, declared
//!   with `x-queue-type: quorum` and `x-single-active-consumer: true` and
//!   nothing else. The delivery limit, dead-lettering and overflow come from
//!   a broker **policy**, e.g.
//!   ```text
//!   rabbitmqctl set_policy ha-readings '\.readings\.[0-9]+$' \
//!     '{"delivery-limit":20,"dead-letter-exchange":"ha.dlx","dead-letter-strategy":"at-least-once","overflow":"reject-publish"}' \
//!     --apply-to queues
//!   ```
//!   so the default prefix `ha.readings` matches it.
//! - Publishing: messages are persistent and `mandatory`; every message of a
//!   batch is issued at once on a confirm-mode channel and the call resolves
//!   when all are confirmed. A nacked message is republished on a fresh
//!   channel; a lost connection is replaced (next broker address in the list
//!   if the first does not answer) and the unconfirmed messages republished,
//!   until `publish_timeout`. Nothing is reported confirmed that the broker
//!   did not confirm.
//! - Consuming: one channel per subscription with `basic.qos(prefetch)` and
//!   manual acks. Dropping the subscription closes its channel, so the broker
//!   redelivers what was not acknowledged.
//! - Publishers and consumers use separate connections, so flow control on
//!   publishing never stalls acknowledgements.

mod config;
mod connector;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

pub use self::config::AmqpConfig;
use self::connector::{Connector, close_channel, declare_partition, unavailable};
use super::{
    Acknowledger, BoxError, Delivery, OutgoingMessage, Queue, QueueError, QueueErrorKind,
    Subscription,
};

/// RabbitMQ quorum-queue backend: see the [module docs](self).
pub struct AmqpQueue {
    config: AmqpConfig,
    publisher: Connector,
    consumer: Connector,
    unconfirmed: Arc<AtomicU64>,
    republished: AtomicU64,
}

impl AmqpQueue {
    /// Connects to the first broker that answers and declares the
    /// partition queues.
    ///
    /// Errors: [`QueueError::Misconfigured`] for invalid settings or queues
    /// declared differently on the broker, [`QueueError::Unavailable`] when
    /// no broker answered.
    pub async fn connect(config: AmqpConfig) -> Result<Self, QueueError> {
        let queue = Self::new(config)?;
        queue.publisher.publish_channel().await?;
        Ok(queue)
    }

    /// A queue that connects on first use (services start, and report not
    /// ready, while the broker is still down).
    ///
    /// Errors: [`QueueError::Misconfigured`] for invalid settings.
    pub fn new(config: AmqpConfig) -> Result<Self, QueueError> {
        config.validate()?;
        let tls = tls::load(&config)?;
        Ok(AmqpQueue {
            publisher: Connector::new(
                "publish",
                config.clone(),
                tls.clone(),
                config.publish_channels,
            ),
            consumer: Connector::new("consume", config.clone(), tls, 0),
            config,
            unconfirmed: Arc::new(AtomicU64::new(0)),
            republished: AtomicU64::new(0),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// Messages published and not yet confirmed (or failed), right now.
    pub fn unconfirmed(&self) -> u64 {
        self.unconfirmed.load(Ordering::Relaxed)
    }

    /// Messages published again after a nack or a lost connection, since start.
    pub fn republished(&self) -> u64 {
        self.republished.load(Ordering::Relaxed)
    }

    fn check_partition(&self, partition: u32) -> Result<(), QueueError> {
        if partition < self.config.partitions {
            Ok(())
        } else {
            Err(QueueError::InvalidPartition {
                partition,
                partitions: self.config.partitions,
            })
        }
    }
}

/// What happened to one message of a publish round.
enum Outcome {
    Confirmed,
    Nacked,
    Failed(BoxError),
}

/// Counts a message as unconfirmed for as long as it lives.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn publish_one(ch: &Channel, queue: &str, payload: &[u8], counter: &AtomicU64) -> Outcome {
    let _in_flight = InFlight::new(counter);
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let confirm = match ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            payload,
            properties,
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e.into()),
    };
    match confirm.await {
        Ok(Confirmation::Ack(None)) => Outcome::Confirmed,
        // Acked but returned: the queue does not exist (deleted under us).
        Ok(Confirmation::Ack(Some(_))) => {
            Outcome::Failed(format!("queue {queue} is missing").into())
        }
        Ok(Confirmation::Nack(_)) => Outcome::Nacked,
        Ok(Confirmation::NotRequested) => Outcome::Failed("channel not in confirm mode".into()),
        Err(e) => Outcome::Failed(e.into()),
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        for m in &messages {
            self.check_partition(m.partition)?;
        }
        let deadline = tokio::time::Instant::now() + self.config.publish_timeout;
        let names: Vec<String> = messages
            .iter()
            .map(|m| self.config.queue_name(m.partition))
            .collect();
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut round = 0u32;
        loop {
            let (generation, ch) = match self.publisher.publish_channel().await {
                Ok(c) => c,
                Err(e) if e.is_misconfigured() => return Err(e),
                Err(e) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    round += 1;
                    tokio::time::sleep(backoff(round)).await;
                    continue;
                }
            };
            if round > 0 {
                self.republished
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
            }
            // Issue every publish at once: the futures are first polled in
            // order, which sends the frames in order, then all confirms are
            // awaited together.
            let outcomes =
                join_all(pending.iter().map(|&i| {
                    publish_one(&ch, &names[i], &messages[i].payload, &self.unconfirmed)
                }))
                .await;
            let mut nacked = false;
            let mut failure = None;
            let mut still = Vec::new();
            for (&i, outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    Outcome::Confirmed => {}
                    Outcome::Nacked => {
                        nacked = true;
                        still.push(i);
                    }
                    Outcome::Failed(e) => {
                        failure.get_or_insert(e);
                        still.push(i);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            tracing::warn!(
                unconfirmed = pending.len(),
                nacked,
                error = failure.as_ref().map_or(String::new(), |e| e.to_string()),
                round,
                "Publish not confirmed; republishing on a fresh channel."
            );
            if failure.is_some() {
                self.publisher.reset(generation).await;
            } else {
                self.publisher.replace_channel(generation, &ch).await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(match failure {
                    Some(e) => QueueError::broker(
                        QueueErrorKind::Unavailable,
                        format!(
                            "{} messages unconfirmed after {:?}",
                            pending.len(),
                            self.config.publish_timeout
                        ),
                        e,
                    ),
                    None => QueueError::Rejected(format!(
                        "broker nacked {} messages (queue full?)",
                        pending.len()
                    )),
                });
            }
            round += 1;
            tokio::time::sleep(backoff(round)).await;
        }
    }

    async fn subscribe(
        &self,
        partition: u32,
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        self.check_partition(partition)?;
        let (generation, ch) = self.consumer.new_channel().await?;
        let queue = self.config.queue_name(partition);
        let setup = async {
            ch.basic_qos(prefetch.max(1), BasicQosOptions::default())
                .await?;
            ch.basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        };
        let consumer = match setup.await {
            Ok(c) => c,
            Err(e) => {
                close_channel(ch).await;
                self.consumer.reset(generation).await;
                return Err(unavailable("subscribing")(e));
            }
        };
        Ok(Box::new(AmqpSubscription {
            partition,
            acker: Arc::new(AmqpAcker {
                channel: ch,
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
            consumer,
        }))
    }

    async fn depth(&self, partition: u32) -> Result<u64, QueueError> {
        self.check_partition(partition)?;
        let (_, ch) = self.consumer.new_channel().await?;
        // A redeclare with the same arguments is a no-op that reports the
        // ready-message count.
        let count = declare_partition(&ch, &self.config.queue_name(partition)).await;
        close_channel(ch).await;
        Ok(u64::from(count?))
    }
}

/// 50 ms, 100 ms, 200 ms, ... capped at 1 s.
fn backoff(round: u32) -> Duration {
    Duration::from_millis(50u64 << round.min(5)).min(Duration::from_secs(1))
}

struct AmqpSubscription {
    partition: u32,
    acker: Arc<AmqpAcker>,
    consumer: lapin::Consumer,
}

#[async_trait]
impl Subscription for AmqpSubscription {
    fn partition(&self) -> u32 {
        self.partition
    }

    async fn next(&mut self) -> Result<Delivery, QueueError> {
        match self.consumer.next().await {
            Some(Ok(d)) => Ok(Delivery::new(
                Bytes::from(d.data),
                d.redelivered,
                self.partition,
                d.delivery_tag,
                self.acker.clone(),
            )),
            Some(Err(e)) => Err(QueueError::broker(QueueErrorKind::Closed, "consuming", e)),
            None => Err(QueueError::Closed("consumer cancelled".into())),
        }
    }
}

impl Drop for AmqpSubscription {
    fn drop(&mut self) {
        // Closing the channel returns its unacknowledged deliveries to the
        // queue; a cancel alone would leave them held. Deliveries still
        // alive keep a clone of the channel, so close it explicitly.
        self.acker.closed.store(true, Ordering::SeqCst);
        let ch = self.acker.channel.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(close_channel(ch));
        }
    }
}

struct AmqpAcker {
    channel: Channel,
    /// Set when the subscription is dropped: its deliveries are being
    /// returned to the queue and can no longer be settled.
    closed: std::sync::atomic::AtomicBool,
}

impl AmqpAcker {
    fn check_open(&self) -> Result<(), QueueError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(QueueError::Closed(
                "the subscription was dropped; the delivery will be redelivered".into(),
            ))
        } else {
            Ok(())
        }
    }
}

fn closed(e: lapin::Error) -> QueueError {
    QueueError::broker(QueueErrorKind::Closed, "settling a delivery", e)
}

#[async_trait]
impl Acknowledger for AmqpAcker {
    async fn ack(&self, tag: u64, multiple: bool) -> Result<(), QueueError> {
        self.check_open()?;
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple })
            .await
            .map_err(closed)
    }

    async fn nack(&self, tag: u64, requeue: bool) -> Result<(), QueueError> {
        self.check_open()?;
        self.channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: false,
                    requeue,
                },
            )
            .await
            .map_err(closed)
    }
}
