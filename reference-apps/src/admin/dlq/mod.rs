//! `ha-admin dlq list|replay`: inspect and re-publish what RabbitMQ
//! dead-lettered from the partition queues.
//!
//! The operator's dead-letter queue (e.g. `ha.dead`, bound to the `ha.dlx`
//! topic exchange with `#`; see `docs/queue-and-store.md`) is read with
//! `basic.get` and manual acks, so messages being looked at stay in the
//! queue (unacknowledged) until settled:
//!
//! - [`list`] prints one line per message (original queue, reason and
//!   count from `x-death`, readings, first device/seq, size) and then
//!   returns every one of them to the queue, in their order.
//! - [`replay`] checks each message ([`Envelope::decode`] and the reading
//!   rules), publishes the good ones to the partition of their device
//!   ([`partition_for`]) through [`AmqpQueue::publish`], and acknowledges
//!   them in the DLQ only after the broker confirmed the publish. The
//!   others stay in the DLQ and are reported. A crash in between can at
//!   worst publish a message twice, which the store absorbs (it keeps the
//!   first write of each `(device_id, seq, metric)`).
//!
//! [`Envelope::decode`]: ha_core::wire::Envelope::decode
//! [`partition_for`]: ha_core::queue::partition_for

mod message;

use std::io::{self, Write};
use std::time::Duration;

use ha_core::ConfigError;
use ha_core::queue::amqp::{AmqpConfig, AmqpQueue};
use ha_core::queue::{OutgoingMessage, Queue, QueueError};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

pub use message::DeadMessage;

/// Messages fetched before each confirmed publish in [`replay`].
const REPLAY_BATCH: usize = 64;

/// Where the dead-letter queue is and where replayed messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DlqConfig {
    /// Broker URLs, tried in order.
    pub urls: Vec<String>,
    /// PEM CA of the brokers' certificates, for `amqps://` URLs.
    pub ca_file: Option<std::path::PathBuf>,
    /// The dead-letter queue.
    pub dlq: String,
    /// Number of partition queues (as on ingest and the analyzers).
    pub partitions: u32,
    /// Partition `p` is the queue `{queue_prefix}.{p}`.
    pub queue_prefix: String,
    /// Look at no more than this many messages; `None`: all that are in
    /// the queue when the command starts (never ones that arrive later).
    pub limit: Option<u64>,
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig {
            urls: vec!["amqp://guest:guest@127.0.0.1:5672/%2f".into()],
            ca_file: None,
            dlq: "ha.dead".into(),
            partitions: 8,
            queue_prefix: "ha.readings".into(),
            limit: None,
        }
    }
}

impl DlqConfig {
    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError::new(
                "urls",
                "must hold at least one broker URL",
            ));
        }
        if self.dlq.is_empty() || self.dlq.len() > 255 {
            return Err(ConfigError::new(
                "dlq",
                "must be a queue name of 1 to 255 bytes",
            ));
        }
        if self.limit == Some(0) {
            return Err(ConfigError::new("limit", "must be at least 1"));
        }
        self.queue_config().validate()
    }

    fn queue_config(&self) -> AmqpConfig {
        AmqpConfig {
            urls: self.urls.clone(),
            ca_file: self.ca_file.clone(),
            partitions: self.partitions,
            queue_prefix: self.queue_prefix.clone(),
            connection_name: "ha-admin-dlq".into(),
            ..AmqpConfig::default()
        }
    }
}

/// Why a DLQ command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// The settings are invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The broker's queues disagree with the settings (or its certificate
    /// is not trusted): an operator must act.
    #[error("the broker disagrees with the settings: {0}")]
    Misconfigured(#[source] QueueError),
    /// No broker answered.
    #[error("cannot reach the broker: {0}")]
    Unavailable(String),
    /// The dead-letter queue does not exist.
    #[error("the dead-letter queue {0} does not exist")]
    NoSuchQueue(String),
    /// The broker failed an operation on the DLQ; unsettled messages
    /// return to it.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// Re-publishing failed; the messages of the failed batch stay in the
    /// DLQ (some may have been published too: replay again, the store
    /// deduplicates).
    #[error("re-publishing failed: {0}")]
    Publish(#[from] QueueError),
    /// Writing the report failed.
    #[error("cannot write the report: {0}")]
    Output(#[from] io::Error),
}

impl DlqError {
    /// The process exit code: 64 for configuration errors, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            DlqError::Config(_) | DlqError::Misconfigured(_) => crate::service::EXIT_CONFIG,
            _ => 1,
        }
    }
}

/// What a command did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DlqSummary {
    /// Messages looked at.
    pub examined: u64,
    /// Messages re-published and removed from the DLQ (or that would be,
    /// in a dry run).
    pub replayed: u64,
    /// Messages that cannot be replayed; they stay in the DLQ.
    pub malformed: u64,
}

/// A channel on the DLQ, with the delivery tags it has not settled.
struct DlqReader {
    connection: Connection,
    channel: Channel,
    dlq: String,
    /// The highest tag fetched and not acknowledged: every unsettled
    /// delivery is at or below it.
    held: Option<u64>,
    /// Messages to look at: the limit, and no more than the queue held
    /// when opened, so that messages dead-lettered again while a replay
    /// runs (or a steady inflow) cannot keep it going for ever.
    budget: u64,
}

/// A message fetched from the DLQ, not yet settled.
struct Fetched {
    tag: u64,
    payload: Vec<u8>,
    message: DeadMessage,
}

impl DlqReader {
    async fn open(config: &DlqConfig) -> Result<DlqReader, DlqError> {
        let mut tls = lapin::tcp::OwnedTLSConfig::default();
        if let Some(ca) = &config.ca_file {
            tls.cert_chain = Some(std::fs::read_to_string(ca).map_err(|e| {
                let problem = format!("cannot be read ({}): {e}", ca.display());
                DlqError::Config(ConfigError::new("ca_file", problem).with_source(e))
            })?);
        }
        let mut errors = Vec::new();
        for (i, url) in config.urls.iter().enumerate() {
            let props = ConnectionProperties::default().with_connection_name("ha-admin-dlq".into());
            let runtime = lapin::runtime::default_runtime()?;
            let connecting = Connection::connect_with_config(url, props, tls.clone(), runtime);
            match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                Ok(Ok(connection)) => {
                    let channel = connection.create_channel().await?;
                    let declared = channel
                        .queue_declare(
                            config.dlq.as_str().into(),
                            QueueDeclareOptions {
                                passive: true,
                                ..QueueDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await;
                    let ready = match declared {
                        Ok(q) => u64::from(q.message_count()),
                        Err(e) => {
                            let _ = connection.close(200, "done".into()).await;
                            return Err(if is_not_found(&e) {
                                DlqError::NoSuchQueue(config.dlq.clone())
                            } else {
                                DlqError::Broker(e)
                            });
                        }
                    };
                    return Ok(DlqReader {
                        connection,
                        channel,
                        dlq: config.dlq.clone(),
                        held: None,
                        budget: config.limit.map_or(ready, |l| l.min(ready)),
                    });
                }
                Ok(Err(e)) => errors.push(format!("broker #{i}: {e}")),
                Err(_) => errors.push(format!("broker #{i}: connect timed out")),
            }
        }
        Err(DlqError::Unavailable(errors.join("; ")))
    }

    /// The next message, or `None` when the queue has nothing ready (the
    /// ones fetched before are unacknowledged, so not ready).
    async fn next(&mut self) -> Result<Option<Fetched>, DlqError> {
        let got = self
            .channel
            .basic_get(self.dlq.as_str().into(), BasicGetOptions { no_ack: false })
            .await?;
        Ok(got.map(|m| {
            let d = m.delivery;
            self.held = Some(d.delivery_tag);
            let message = DeadMessage::parse(
                &self.dlq,
                d.routing_key.as_str(),
                d.properties.headers().as_ref(),
                &d.data,
            );
            Fetched {
                tag: d.delivery_tag,
                payload: d.data,
                message,
            }
        }))
    }

    /// Whether to look at another message after `seen`.
    fn wants_more(&self, seen: u64) -> bool {
        seen < self.budget
    }

    async fn ack(&self, tag: u64) -> Result<(), DlqError> {
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: false })
            .await?;
        Ok(())
    }

    /// Returns every unsettled message to the queue, in their order, and
    /// closes the connection.
    async fn finish(self, held: Option<u64>) -> Result<(), DlqError> {
        if let Some(tag) = held {
            self.channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await?;
        }
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
        Ok(())
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// Prints one line per message of the DLQ (up to `config.limit`), then a
/// summary line, and leaves every message in the queue.
pub async fn list(config: &DlqConfig, out: &mut dyn Write) -> Result<DlqSummary, DlqError> {
    config.validate()?;
    let mut reader = DlqReader::open(config).await?;
    let mut summary = DlqSummary::default();
    let listed = async {
        while reader.wants_more(summary.examined) {
            let Some(f) = reader.next().await? else { break };
            summary.examined += 1;
            if f.message.content.is_err() {
                summary.malformed += 1;
            }
            writeln!(out, "{} {}", summary.examined, f.message)?;
        }
        Ok::<(), DlqError>(())
    }
    .await;
    let held = reader.held;
    let finished = reader.finish(held).await;
    listed?;
    finished?;
    writeln!(
        out,
        "listed {} messages in {} ({} malformed); none removed",
        summary.examined, config.dlq, summary.malformed
    )?;
    Ok(summary)
}

/// Re-publishes the DLQ's messages (up to `config.limit`) to their
/// partitions and removes each from the DLQ once the broker confirmed it;
/// malformed ones stay. Prints one line per message and a summary line.
/// `dry_run`: prints what it would do and changes nothing.
pub async fn replay(
    config: &DlqConfig,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<DlqSummary, DlqError> {
    config.validate()?;
    let queue = if dry_run {
        None
    } else {
        Some(
            AmqpQueue::connect(config.queue_config())
                .await
                .map_err(|e| {
                    if e.is_misconfigured() {
                        DlqError::Misconfigured(e)
                    } else {
                        DlqError::Publish(e)
                    }
                })?,
        )
    };
    let mut reader = DlqReader::open(config).await?;
    let mut summary = DlqSummary::default();
    // The highest tag left unsettled on purpose (malformed, dry run).
    let mut kept: Option<u64> = None;
    let replayed = async {
        loop {
            // Fetched in order; `Err` when the message cannot be replayed.
            type Planned = (u64, Fetched, Result<Vec<OutgoingMessage>, String>);
            let mut batch: Vec<Planned> = Vec::new();
            let mut exhausted = false;
            while batch.len() < REPLAY_BATCH && reader.wants_more(summary.examined) {
                let Some(f) = reader.next().await? else {
                    exhausted = true;
                    break;
                };
                summary.examined += 1;
                let plan = f.message.replay_messages(&f.payload, config.partitions);
                batch.push((summary.examined, f, plan));
            }
            if let Some(queue) = &queue {
                let all: Vec<OutgoingMessage> = batch
                    .iter()
                    .filter_map(|(_, _, plan)| plan.as_ref().ok())
                    .flatten()
                    .cloned()
                    .collect();
                if !all.is_empty() {
                    queue.publish(all).await?;
                }
            }
            for (n, f, plan) in &batch {
                let Ok(messages) = plan else {
                    summary.malformed += 1;
                    kept = Some(f.tag);
                    writeln!(out, "{n} left {}", f.message)?;
                    continue;
                };
                let targets = messages
                    .iter()
                    .map(|m| format!("{}.{}", config.queue_prefix, m.partition))
                    .collect::<Vec<_>>()
                    .join("+");
                if queue.is_some() {
                    reader.ack(f.tag).await?;
                    writeln!(out, "{n} replayed -> {targets} {}", f.message)?;
                } else {
                    kept = Some(f.tag);
                    writeln!(out, "{n} would replay -> {targets} {}", f.message)?;
                }
                summary.replayed += 1;
            }
            if exhausted || !reader.wants_more(summary.examined) {
                return Ok::<(), DlqError>(());
            }
        }
    }
    .await;
    // On an error, return everything not yet acknowledged.
    let held = if replayed.is_ok() { kept } else { reader.held };
    let finished = reader.finish(held).await;
    replayed?;
    finished?;
    if dry_run {
        writeln!(
            out,
            "dry run: would replay {} messages from {} and leave {} (malformed); nothing changed",
            summary.replayed, config.dlq, summary.malformed
        )?;
    } else {
        writeln!(
            out,
            "replayed {} messages from {}; left {} (malformed) in it",
            summary.replayed, config.dlq, summary.malformed
        )?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_the_settings() {
        DlqConfig::default().validate().unwrap();
        let bad = [
            DlqConfig {
                urls: vec![],
                ..DlqConfig::default()
            },
            DlqConfig {
                dlq: String::new(),
                ..DlqConfig::default()
            },
            DlqConfig {
                partitions: 0,
                ..DlqConfig::default()
            },
            DlqConfig {
                limit: Some(0),
                ..DlqConfig::default()
            },
            DlqConfig {
                queue_prefix: String::new(),
                ..DlqConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
