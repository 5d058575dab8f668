//! In-memory [`Queue`] with the semantics of a RabbitMQ quorum queue under
//! the project's policy: confirms, manual acks, prefetch,
//! single-active-consumer, redelivery of unacknowledged messages, a
//! delivery limit and dead-lettering. Nothing survives the process.

use std::collections::{BTreeMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::{Acknowledger, Delivery, OutgoingMessage, Queue, QueueError, Subscription};

/// Settings of a [`MemoryQueue`].
#[derive(Clone, Debug)]
pub struct MemoryQueueConfig {
    /// Number of partitions.
    pub partitions: u32,
    /// Returns (nack with requeue, consumer gone) a message may take before
    /// it is dead-lettered; like the broker policy's `delivery-limit`.
    pub delivery_limit: u32,
    /// Most messages (ready + unacknowledged) per partition; publishes past
    /// it fail with [`QueueError::Rejected`], like `overflow: reject-publish`.
    pub max_length: usize,
}

impl Default for MemoryQueueConfig {
    fn default() -> Self {
        MemoryQueueConfig {
            partitions: 4,
            delivery_limit: 20,
            max_length: 1_000_000,
        }
    }
}

/// A message that exceeded the delivery limit or was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The partition it was in.
    pub partition: u32,
    /// The message.
    pub payload: Bytes,
    /// How often it had been returned to the queue.
    pub returns: u32,
    /// `delivery_limit` or `rejected`, as in RabbitMQ's `x-death` reason.
    pub reason: &'static str,
}

/// In-memory queue: see the [module docs](self). Cheap to clone; clones share
/// the queue.
#[derive(Clone)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

struct Inner {
    config: MemoryQueueConfig,
    partitions: Vec<Arc<Partition>>,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
    available: AtomicBool,
}

struct Partition {
    id: u32,
    delivery_limit: u32,
    state: Mutex<PartitionState>,
    changed: Notify,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
}

#[derive(Default)]
struct PartitionState {
    ready: VecDeque<Message>,
    /// Registered consumers in registration order; the first is active.
    consumers: VecDeque<u64>,
    next_consumer: u64,
    next_tag: u64,
    /// Unacknowledged deliveries by tag (tags grow, so order is kept).
    unacked: BTreeMap<u64, (u64, Message)>,
}

#[derive(Clone)]
struct Message {
    payload: Bytes,
    returns: u32,
    delivered: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the queue half-updated in
    // a way that matters more than losing the process would; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryQueue {
    /// A queue with `config`.
    pub fn new(config: MemoryQueueConfig) -> Self {
        let dead = Arc::new(Mutex::new(Vec::new()));
        let partitions = (0..config.partitions.max(1))
            .map(|id| {
                Arc::new(Partition {
                    id,
                    delivery_limit: config.delivery_limit,
                    state: Mutex::new(PartitionState::default()),
                    changed: Notify::new(),
                    dead: dead.clone(),
                })
            })
            .collect();
        MemoryQueue {
            inner: Arc::new(Inner {
                config,
                partitions,
                dead,
                available: AtomicBool::new(true),
            }),
        }
    }

    /// A queue with `partitions` partitions and default settings.
    pub fn with_partitions(partitions: u32) -> Self {
        Self::new(MemoryQueueConfig {
            partitions,
            ..MemoryQueueConfig::default()
        })
    }

    /// Simulates losing (`false`) or regaining the broker: while
    /// unavailable, publishes and depth queries fail with
    /// [`QueueError::Unavailable`] (deliveries already subscribed continue).
    pub fn set_available(&self, available: bool) {
        self.inner.available.store(available, Ordering::SeqCst);
    }

    /// The messages dead-lettered so far.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.inner.dead).clone()
    }

    /// Messages in `partition` that are delivered but not yet acknowledged.
    pub fn unacked(&self, partition: u32) -> usize {
        self.inner
            .partitions
            .get(partition as usize)
            .map_or(0, |p| lock(&p.state).unacked.len())
    }

    fn partition(&self, partition: u32) -> Result<&Arc<Partition>, QueueError> {
        self.inner
            .partitions
            .get(partition as usize)
            .ok_or(QueueError::InvalidPartition {
                partition,
                partitions: self.partitions(),
            })
    }
}

impl Partition {
    /// Puts returned messages back at the head of the queue, in their
    /// original order, or dead-letters those past the limit.
    fn requeue(&self, state: &mut PartitionState, returned: Vec<Message>) {
        for mut msg in returned.into_iter().rev() {
            msg.returns += 1;
            if msg.returns > self.delivery_limit {
                self.dead_letter(msg, "delivery_limit");
            } else {
                state.ready.push_front(msg);
            }
        }
    }

    fn dead_letter(&self, msg: Message, reason: &'static str) {
        lock(&self.dead).push(DeadLetter {
            partition: self.id,
            payload: msg.payload,
            returns: msg.returns,
            reason,
        });
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn partitions(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        if !self.inner.available.load(Ordering::SeqCst) {
            return Err(QueueError::Unavailable("in-memory broker is down".into()));
        }
        for m in &messages {
            let p = self.partition(m.partition)?;
            let s = lock(&p.state);
            if s.ready.len() + s.unacked.len() >= self.inner.config.max_length {
                return Err(QueueError::Rejected(format!(
                    "partition {} is at its length limit of {}",
                    m.partition, self.inner.config.max_length
                )));
            }
        }
        for m in messages {
            let p = self.partition(m.partition)?;
            lock(&p.state).ready.push_back(Message {
                payload: m.payload,
                returns: 0,
                delivered: false,
            });
            p.changed.notify_waiters();
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        partition: u32,
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        let p = self.partition(partition)?.clone();
        let consumer = {
            let mut s = lock(&p.state);
            let id = s.next_consumer;
            s.next_consumer += 1;
            s.consumers.push_back(id);
            id
        };
        let acker = Arc::new(MemoryAcker {
            partition: p.clone(),
            consumer,
        });
        Ok(Box::new(MemorySubscription {
            partition: p,
            consumer,
            prefetch: usize::from(prefetch.max(1)),
            acker,
        }))
    }

    async fn depth(&self, partition: u32) -> Result<u64, QueueError> {
        if !self.inner.available.load(Ordering::SeqCst) {
            return Err(QueueError::Unavailable("in-memory broker is down".into()));
        }
        Ok(lock(&self.partition(partition)?.state).ready.len() as u64)
    }
}

struct MemorySubscription {
    partition: Arc<Partition>,
    consumer: u64,
    prefetch: usize,
    acker: Arc<MemoryAcker>,
}

impl MemorySubscription {
    fn try_take(&self) -> Option<Delivery> {
        let mut s = lock(&self.partition.state);
        if s.consumers.front() != Some(&self.consumer) {
            return None;
        }
        let mine = s
            .unacked
            .values()
            .filter(|(c, _)| *c == self.consumer)
            .count();
        if mine >= self.prefetch {
            return None;
        }
        let mut msg = s.ready.pop_front()?;
        let redelivered = msg.delivered || msg.returns > 0;
        msg.delivered = true;
        s.next_tag += 1;
        let tag = s.next_tag;
        let payload = msg.payload.clone();
        s.unacked.insert(tag, (self.consumer, msg));
        Some(Delivery::new(
            payload,
            redelivered,
            self.partition.id,
            tag,
            self.acker.clone(),
        ))
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    fn partition(&self) -> u32 {
        self.partition.id
    }

    async fn next(&mut self) -> Result<Delivery, QueueError> {
        loop {
            let mut changed = pin!(self.partition.changed.notified());
            changed.as_mut().enable();
            if let Some(d) = self.try_take() {
                return Ok(d);
            }
            changed.await;
        }
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        let mut s = lock(&self.partition.state);
        s.consumers.retain(|c| *c != self.consumer);
        let tags: Vec<u64> = s
            .unacked
            .iter()
            .filter(|(_, (c, _))| *c == self.consumer)
            .map(|(t, _)| *t)
            .collect();
        let returned = tags
            .into_iter()
            .filter_map(|t| s.unacked.remove(&t).map(|(_, m)| m))
            .collect();
        self.partition.requeue(&mut s, returned);
        drop(s);
        self.partition.changed.notify_waiters();
    }
}

struct MemoryAcker {
    partition: Arc<Partition>,
    consumer: u64,
}

impl MemoryAcker {
    fn take(&self, s: &mut PartitionState, tag: u64) -> Result<Message, QueueError> {
        match s.unacked.get(&tag) {
            Some((c, _)) if *c == self.consumer => Ok(s
                .unacked
                .remove(&tag)
                .map(|(_, m)| m)
                .ok_or_else(|| QueueError::Closed(format!("delivery tag {tag} vanished")))?),
            _ => Err(QueueError::Closed(format!(
                "unknown delivery tag {tag}: already settled, or its subscription is gone"
            ))),
        }
    }
}

#[async_trait]
impl Acknowledger for MemoryAcker {
    async fn ack(&self, tag: u64, multiple: bool) -> Result<(), QueueError> {
        let mut s = lock(&self.partition.state);
        self.take(&mut s, tag)?;
        if multiple {
            let earlier: Vec<u64> = s
                .unacked
                .range(..tag)
                .filter(|(_, (c, _))| *c == self.consumer)
                .map(|(t, _)| *t)
                .collect();
            for t in earlier {
                s.unacked.remove(&t);
            }
        }
        drop(s);
        self.partition.changed.notify_waiters();
        Ok(())
    }

    async fn nack(&self, tag: u64, requeue: bool) -> Result<(), QueueError> {
        let mut s = lock(&self.partition.state);
        let msg = self.take(&mut s, tag)?;
        if requeue {
            self.partition.requeue(&mut s, vec![msg]);
        } else {
            self.partition.dead_letter(msg, "rejected");
        }
        drop(s);
        self.partition.changed.notify_waiters();
        Ok(())
    }
}
