//! Group commit: the readings of concurrent requests bound for the same
//! partition travel in one queue message.
//!
//! Each partition has one batcher task fed by a bounded channel of
//! [`Submission`]s (a request's readings for that partition, already
//! encoded, and a reply slot). The batcher keeps up to
//! [`Limits::publishes_in_flight`] messages awaiting their confirm; while
//! they are out, new submissions queue in the channel, and the next message
//! takes all of them (up to the size limits). Under light load every
//! request is its own message and waits for nothing but its confirm; under
//! heavy load messages grow by themselves, without a fixed linger.
//!
//! Every waiter of a message gets the message's outcome: `Ok` only after the
//! broker confirmed it, the error otherwise. A submission is never split,
//! so a request's readings for one partition stay together and in order.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::metrics::IngestMetrics;
use crate::queue::{OutgoingMessage, Queue, QueueError};
use crate::wire::{EncodedReadings, EnvelopeWriter};

/// How messages are cut; from [`IngestConfig`](super::IngestConfig).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Readings per message; a single submission may exceed it.
    pub max_readings: usize,
    /// Bytes of encoded readings per message; a single submission may exceed it.
    pub max_bytes: usize,
    /// Messages of one partition awaiting their confirm at once (at least 1).
    pub publishes_in_flight: usize,
    /// How long to wait for more submissions before publishing a message
    /// that is not full; zero publishes what is queued at once.
    pub linger: Duration,
    /// Submissions queued per partition; the ingest service bounds requests
    /// in flight, so this is never reached when it is at least that bound.
    pub channel_capacity: usize,
}

/// What a waiter learns: confirmed, or the publish error (shared by every
/// waiter of the message).
pub(super) type Outcome = Result<(), Arc<QueueError>>;

/// One request's readings for one partition.
struct Submission {
    readings: EncodedReadings,
    reply: oneshot::Sender<Outcome>,
}

/// The batcher refuses new work: the service is shutting down.
#[derive(Debug)]
pub(super) struct Closed;

/// The batchers of every partition, started on first use.
pub(super) struct Batchers {
    queue: Arc<dyn Queue>,
    limits: Limits,
    metrics: IngestMetrics,
    senders: OnceLock<Vec<mpsc::Sender<Submission>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The list of task handles stays consistent whatever panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Batchers {
    pub(super) fn new(queue: Arc<dyn Queue>, limits: Limits, metrics: IngestMetrics) -> Self {
        Batchers {
            queue,
            limits: Limits {
                publishes_in_flight: limits.publishes_in_flight.max(1),
                channel_capacity: limits.channel_capacity.max(1),
                ..limits
            },
            metrics,
            senders: OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
            stop: watch::Sender::new(false),
        }
    }

    /// Spawns one batcher per partition on the current runtime.
    fn start(&self) -> Vec<mpsc::Sender<Submission>> {
        let mut tasks = lock(&self.tasks);
        (0..self.queue.partitions().max(1))
            .map(|partition| {
                let (tx, rx) = mpsc::channel(self.limits.channel_capacity);
                let batcher = Batcher {
                    partition,
                    rx,
                    stop: self.stop.subscribe(),
                    closing: false,
                    carry: None,
                    slots: Arc::new(Semaphore::new(self.limits.publishes_in_flight)),
                    queue: self.queue.clone(),
                    limits: self.limits,
                    metrics: self.metrics.clone(),
                };
                tasks.push(tokio::spawn(batcher.run()));
                tx
            })
            .collect()
    }

    fn senders(&self) -> &[mpsc::Sender<Submission>] {
        self.senders.get_or_init(|| self.start())
    }

    /// Hands `readings`, all of devices of `partition`, to that partition's
    /// batcher. The receiver resolves with the outcome of the message that
    /// carried them; it errors if the batcher died without answering.
    ///
    /// Errors with [`Closed`] once [`shutdown`](Self::shutdown) began (or
    /// for a partition the queue does not have).
    pub(super) async fn submit(
        &self,
        partition: u32,
        readings: EncodedReadings,
    ) -> Result<oneshot::Receiver<Outcome>, Closed> {
        let sender = self.senders().get(partition as usize).ok_or(Closed)?;
        let (reply, outcome) = oneshot::channel();
        sender
            .send(Submission { readings, reply })
            .await
            .map_err(|_| Closed)?;
        Ok(outcome)
    }

    /// Refuses new submissions, publishes everything already submitted and
    /// resolves once every message was confirmed or failed (and its waiters
    /// answered).
    pub(super) async fn shutdown(&self) {
        // Start the batchers if no request did, so that none can start
        // after the handles were taken below.
        self.senders();
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "An ingest batcher task failed; its waiters got 503.");
            }
        }
    }
}

/// The task of one partition.
struct Batcher {
    partition: u32,
    rx: mpsc::Receiver<Submission>,
    stop: watch::Receiver<bool>,
    closing: bool,
    /// A submission that did not fit the previous message: it opens the next.
    carry: Option<Submission>,
    /// One permit per message awaiting its confirm.
    slots: Arc<Semaphore>,
    queue: Arc<dyn Queue>,
    limits: Limits,
    metrics: IngestMetrics,
}

impl Batcher {
    async fn run(mut self) {
        loop {
            // Wait for a free slot first: while all are taken, submissions
            // pile up in the channel and the next message takes them all.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                break;
            };
            let Some(first) = self.next().await else {
                break;
            };
            let message = self.fill(first).await;
            if self.limits.publishes_in_flight == 1 {
                // One message out at a time (the default): nothing else for
                // this task to do until it is settled, so publish here
                // rather than in a task of its own (one spawn and one
                // wake-up less per message).
                // A panic must not end the batcher (it did not when the
                // publish was a task): the message's waiters, dropped while
                // unwinding, answer 503, and the next message goes out.
                let publishing = publish(&*self.queue, &self.metrics, self.partition, message);
                if std::panic::AssertUnwindSafe(publishing)
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    tracing::error!(
                        partition = self.partition,
                        "A publish panicked; its requests got 503."
                    );
                }
                drop(slot);
            } else {
                let (queue, metrics, partition) =
                    (self.queue.clone(), self.metrics.clone(), self.partition);
                tokio::spawn(async move {
                    publish(&*queue, &metrics, partition, message).await;
                    drop(slot);
                });
            }
        }
        // Closed and empty: wait until every message out is settled.
        let all = u32::try_from(self.limits.publishes_in_flight).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }

    /// The next submission; `None` once closed and empty.
    async fn next(&mut self) -> Option<Submission> {
        if let Some(s) = self.carry.take() {
            return Some(s);
        }
        if !self.closing {
            tokio::select! {
                s = self.rx.recv() => return s,
                _ = self.stop.wait_for(|stop| *stop) => {
                    // Refuse new submissions, keep those already queued.
                    self.rx.close();
                    self.closing = true;
                }
            }
        }
        self.rx.recv().await
    }

    /// A message opened by `first`, with every queued submission that fits.
    async fn fill(&mut self, first: Submission) -> Message {
        let mut message = Message::new(first);
        let deadline = (!self.limits.linger.is_zero())
            .then(|| tokio::time::Instant::now() + self.limits.linger);
        while !message.is_full(&self.limits) {
            let next = match self.rx.try_recv() {
                Ok(s) => s,
                Err(TryRecvError::Empty) => match deadline {
                    Some(deadline) => match tokio::time::timeout_at(deadline, self.rx.recv()).await
                    {
                        Ok(Some(s)) => s,
                        Ok(None) | Err(_) => break,
                    },
                    None => break,
                },
                Err(TryRecvError::Disconnected) => break,
            };
            if message.fits(&next, &self.limits) {
                message.push(next);
            } else {
                self.carry = Some(next);
                break;
            }
        }
        message
    }
}

/// The submissions of one queue message.
struct Message {
    writer: EnvelopeWriter,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

impl Message {
    fn new(first: Submission) -> Self {
        let mut m = Message {
            writer: EnvelopeWriter::new(),
            waiters: Vec::new(),
        };
        m.push(first);
        m
    }

    fn push(&mut self, s: Submission) {
        self.writer.push(&s.readings);
        self.waiters.push(s.reply);
    }

    fn is_full(&self, limits: &Limits) -> bool {
        self.writer.readings() >= limits.max_readings || self.writer.bytes() >= limits.max_bytes
    }

    fn fits(&self, s: &Submission, limits: &Limits) -> bool {
        self.writer.readings() + s.readings.len() <= limits.max_readings
            && self.writer.bytes() + s.readings.byte_len() < limits.max_bytes
    }
}

/// Publishes one message and answers its waiters.
async fn publish(queue: &dyn Queue, metrics: &IngestMetrics, partition: u32, message: Message) {
    let readings = message.writer.readings();
    let waiters = message.waiters;
    metrics.readings_per_message.observe(readings as f64);
    metrics.requests_per_message.observe(waiters.len() as f64);
    let payload = Bytes::from(message.writer.finish());
    metrics.messages_in_flight.inc();
    let started = tokio::time::Instant::now();
    let result = queue
        .publish(vec![OutgoingMessage { partition, payload }])
        .await;
    metrics.messages_in_flight.dec();
    let outcome = match result {
        Ok(()) => {
            metrics
                .confirm_latency
                .observe(started.elapsed().as_secs_f64());
            Ok(())
        }
        Err(e) => {
            tracing::warn!(
                partition,
                readings,
                requests = waiters.len(),
                error = %e,
                "Publish failed; answering 503 to every request in the message."
            );
            Err(Arc::new(e))
        }
    };
    for waiter in waiters {
        // A waiter gone is a request whose client hung up: nothing to tell.
        let _ = waiter.send(outcome.clone());
    }
}
