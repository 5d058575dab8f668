//! The queue between ingest and analysis: the [`Queue`] contract and its
//! backends.
//!
//! Readings are spread over `N` *partition* queues by a stable hash of the
//! device id ([`partition_for`]), so one device's readings stay in order in
//! one queue and each partition has one active consumer at a time
//! (single-active-consumer). `N` must be the same for every ingest and
//! analyzer replica; see [`partition_for`] for how to change it.
//!
//! | backend | for |
//! |---|---|
//! | [`MemoryQueue`] | the embedded demo and fast tests; same semantics |
//! | `AmqpQueue` (feature `rabbitmq`) | RabbitMQ quorum queues with publisher confirms |

mod error;
mod memory;
mod partition;

#[cfg(feature = "rabbitmq")]
pub mod amqp;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::{BoxError, QueueError, QueueErrorKind};
pub use memory::{DeadLetter, MemoryQueue, MemoryQueueConfig};
pub use partition::partition_for;

/// A message to publish to one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The partition queue, `0 .. Queue::partitions()`.
    pub partition: u32,
    /// The bytes, e.g. an [`Envelope`](crate::wire::Envelope).
    pub payload: Bytes,
}

/// A durable, partitioned queue with publisher confirms and manual acks.
///
/// Delivery is at-least-once: consumers must be idempotent (the store is,
/// on `(device_id, seq, metric)`).
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// How many partition queues there are.
    fn partitions(&self) -> u32;

    /// Publishes `messages` durably.
    ///
    /// Resolves `Ok` only after the broker has confirmed every message
    /// (for RabbitMQ: a publisher confirm from a quorum queue, i.e. the
    /// message is on a majority of nodes). Messages are published
    /// concurrently, not one confirm round trip at a time.
    ///
    /// On `Err`, any subset of the messages may have been enqueued (possibly
    /// more than once); the caller retries the whole batch, which is safe
    /// because consumers deduplicate.
    ///
    /// Errors: [`QueueError::Unavailable`] when no broker could be reached
    /// or confirms did not arrive in time, [`QueueError::Rejected`] when the
    /// broker refused the messages (queue full, `reject-publish`),
    /// [`QueueError::InvalidPartition`] for a partition out of range. The
    /// first two are transient.
    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Result<(), QueueError>;

    /// Registers a consumer on one partition with at most `prefetch`
    /// unacknowledged deliveries.
    ///
    /// Partitions are single-active-consumer: the subscription receives
    /// deliveries only while it is the partition's active consumer; it
    /// becomes active when the consumers registered before it are gone.
    /// Deliveries not acknowledged when a subscription is dropped (or its
    /// connection dies) are redelivered to the next active consumer, flagged
    /// [`Delivery::redelivered`].
    async fn subscribe(
        &self,
        partition: u32,
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, QueueError>;

    /// Messages waiting in `partition` (ready, not counting unacknowledged
    /// ones). May lag the truth by a few seconds on RabbitMQ.
    async fn depth(&self, partition: u32) -> Result<u64, QueueError>;
}

/// A consumer on one partition: see [`Queue::subscribe`].
#[async_trait]
pub trait Subscription: Send {
    /// The partition this subscription consumes.
    fn partition(&self) -> u32;

    /// Waits for the next delivery.
    ///
    /// Errors: [`QueueError::Closed`] when the subscription was lost
    /// (connection or channel closed, consumer cancelled by the broker).
    /// Its unacknowledged deliveries will be redelivered; subscribe again.
    async fn next(&mut self) -> Result<Delivery, QueueError>;
}

/// How a backend settles a delivery. Implemented by each backend; users
/// call the methods on [`Delivery`].
#[async_trait]
pub trait Acknowledger: Send + Sync {
    /// Acknowledges `tag`, or with `multiple` every unacknowledged delivery
    /// of the subscription up to and including `tag`.
    async fn ack(&self, tag: u64, multiple: bool) -> Result<(), QueueError>;
    /// Returns `tag` to the queue (`requeue`) or dead-letters it.
    async fn nack(&self, tag: u64, requeue: bool) -> Result<(), QueueError>;
}

/// One message handed to a consumer; settle it with [`ack`](Delivery::ack)
/// once its effects are durable, or [`nack`](Delivery::nack).
pub struct Delivery {
    /// The message bytes.
    pub payload: Bytes,
    /// Whether this message was delivered before (to this or another
    /// consumer) and not acknowledged.
    pub redelivered: bool,
    /// The partition it came from.
    pub partition: u32,
    tag: u64,
    acker: Arc<dyn Acknowledger>,
}

impl Delivery {
    /// Builds a delivery; for backends.
    pub fn new(
        payload: Bytes,
        redelivered: bool,
        partition: u32,
        tag: u64,
        acker: Arc<dyn Acknowledger>,
    ) -> Self {
        Delivery {
            payload,
            redelivered,
            partition,
            tag,
            acker,
        }
    }

    /// The backend's delivery tag: increasing within one subscription.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// Acknowledges this delivery: the broker forgets the message.
    ///
    /// Errors with [`QueueError::Closed`] when the subscription is gone; the
    /// message will then be redelivered.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.acker.ack(self.tag, false).await
    }

    /// Acknowledges this delivery and every earlier unacknowledged delivery
    /// of the same subscription, in one round trip.
    pub async fn ack_up_to(self) -> Result<(), QueueError> {
        self.acker.ack(self.tag, true).await
    }

    /// Returns the message to the queue (`requeue = true`, counted towards
    /// the delivery limit) or dead-letters it (`false`).
    pub async fn nack(self, requeue: bool) -> Result<(), QueueError> {
        self.acker.nack(self.tag, requeue).await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("partition", &self.partition)
            .field("tag", &self.tag)
            .field("redelivered", &self.redelivered)
            .field("bytes", &self.payload.len())
            .finish()
    }
}
