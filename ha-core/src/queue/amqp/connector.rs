//! One lazily (re)established AMQP connection over a list of brokers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::config::AmqpConfig;
use crate::queue::{QueueError, QueueErrorKind};

/// A live connection and the generation it belongs to. A user that sees an
/// error on generation `g` resets the connector only if it is still on `g`,
/// so a burst of failures causes one reconnect, not one per failure.
pub(super) struct Live {
    pub(super) generation: u64,
    pub(super) connection: Connection,
    pub(super) publish_channels: Vec<Channel>,
}

pub(super) struct Connector {
    role: &'static str,
    config: AmqpConfig,
    tls: OwnedTLSConfig,
    live: Mutex<Option<Live>>,
    generations: AtomicU64,
    next_channel: AtomicU64,
    confirm_channels: usize,
}

impl Connector {
    /// `confirm_channels` channels in confirm mode are opened with each
    /// connection (for publishing).
    pub(super) fn new(
        role: &'static str,
        config: AmqpConfig,
        tls: OwnedTLSConfig,
        confirm_channels: usize,
    ) -> Self {
        Connector {
            role,
            config,
            tls,
            live: Mutex::new(None),
            generations: AtomicU64::new(0),
            next_channel: AtomicU64::new(0),
            confirm_channels,
        }
    }

    /// A publish channel (round-robin) of the current connection,
    /// connecting first if needed.
    pub(super) async fn publish_channel(&self) -> Result<(u64, Channel), QueueError> {
        let mut live = self.live.lock().await;
        let l = self.ensure(&mut live).await?;
        let n = self.next_channel.fetch_add(1, Ordering::Relaxed) as usize;
        let ch = l.publish_channels[n % l.publish_channels.len()].clone();
        Ok((l.generation, ch))
    }

    /// A new channel on the current connection, connecting first if needed.
    pub(super) async fn new_channel(&self) -> Result<(u64, Channel), QueueError> {
        let mut live = self.live.lock().await;
        let l = self.ensure(&mut live).await?;
        match l.connection.create_channel().await {
            Ok(ch) => Ok((l.generation, ch)),
            Err(e) => {
                let generation = l.generation;
                drop(live);
                self.reset(generation).await;
                Err(QueueError::broker(
                    QueueErrorKind::Unavailable,
                    "opening a channel",
                    e,
                ))
            }
        }
    }

    /// Replaces one publish channel of generation `generation`, e.g. after
    /// the broker nacked on it (a channel opened during a leader election can
    /// keep nacking while a fresh one works).
    pub(super) async fn replace_channel(&self, generation: u64, old: &Channel) {
        let mut live = self.live.lock().await;
        let Some(l) = live.as_mut().filter(|l| l.generation == generation) else {
            return;
        };
        let Some(slot) = l.publish_channels.iter().position(|c| c.id() == old.id()) else {
            return;
        };
        match open_confirm_channel(&l.connection).await {
            Ok(ch) => {
                let stale = std::mem::replace(&mut l.publish_channels[slot], ch);
                drop(live);
                close_channel(stale).await;
            }
            Err(_) => {
                drop(live);
                self.reset(generation).await;
            }
        }
    }

    /// Drops the connection of `generation` (if still current); the next
    /// user reconnects.
    pub(super) async fn reset(&self, generation: u64) {
        let stale = {
            let mut live = self.live.lock().await;
            match live.as_ref() {
                Some(l) if l.generation == generation => live.take(),
                _ => None,
            }
        };
        if let Some(l) = stale {
            tracing::warn!(
                role = self.role,
                generation,
                "Dropping the broker connection."
            );
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                l.connection.close(200, "reconnecting".into()),
            )
            .await;
        }
    }

    async fn ensure<'a>(&self, live: &'a mut Option<Live>) -> Result<&'a mut Live, QueueError> {
        if live
            .as_ref()
            .is_some_and(|l| !l.connection.status().connected())
        {
            *live = None;
        }
        if live.is_none() {
            *live = Some(self.connect().await?);
        }
        live.as_mut()
            .ok_or_else(|| QueueError::Unavailable("no connection".into()))
    }

    /// Tries each broker address in order; the first that answers wins.
    async fn connect(&self) -> Result<Live, QueueError> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let mut errors = Vec::new();
        let mut untrusted = false;
        for (i, url) in self.config.urls.iter().enumerate() {
            let url = with_heartbeat(url, self.config.heartbeat_secs);
            let props = ConnectionProperties::default().with_connection_name(
                format!("{}-{}", self.config.connection_name, self.role).into(),
            );
            let runtime = lapin::runtime::default_runtime()
                .map_err(unavailable("starting the client runtime"))?;
            let attempt = tokio::time::timeout(
                self.config.connect_timeout,
                Connection::connect_with_config(&url, props, self.tls.clone(), runtime),
            )
            .await;
            let connection = match attempt {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    untrusted |= super::tls::certificate_refused(&e);
                    errors.push(format!("broker #{i}: {e}"));
                    continue;
                }
                Err(_) => {
                    errors.push(format!("broker #{i}: connect timed out"));
                    continue;
                }
            };
            match self.prepare(&connection).await {
                Ok(publish_channels) => {
                    tracing::info!(
                        role = self.role,
                        broker = i,
                        generation,
                        "Connected to the broker."
                    );
                    return Ok(Live {
                        generation,
                        connection,
                        publish_channels,
                    });
                }
                Err(e) if e.is_misconfigured() => return Err(e),
                Err(e) => errors.push(format!("broker #{i}: {e}")),
            }
        }
        let errors = errors.join("; ");
        if untrusted {
            // Retrying will not change the certificate: an operator must.
            return Err(QueueError::Misconfigured(format!(
                "a broker's TLS certificate is not trusted (check ca_file): {errors}"
            )));
        }
        Err(QueueError::Unavailable(format!(
            "no broker answered: {errors}"
        )))
    }

    /// Declares the partition queues and opens the confirm channels.
    async fn prepare(&self, connection: &Connection) -> Result<Vec<Channel>, QueueError> {
        let ch = connection
            .create_channel()
            .await
            .map_err(unavailable("opening a channel"))?;
        for p in 0..self.config.partitions {
            declare_partition(&ch, &self.config.queue_name(p)).await?;
        }
        close_channel(ch).await;
        let mut channels = Vec::with_capacity(self.confirm_channels);
        for _ in 0..self.confirm_channels {
            channels.push(
                open_confirm_channel(connection)
                    .await
                    .map_err(unavailable("opening a confirm channel"))?,
            );
        }
        Ok(channels)
    }
}

/// Declares a partition queue with exactly the arguments the application
/// owns: quorum type and single-active-consumer. Everything else (delivery
/// limit, dead-lettering, overflow) comes from a broker policy, so broker
/// and application never disagree.
pub(super) async fn declare_partition(ch: &Channel, name: &str) -> Result<u32, QueueError> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    let q = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map_err(|e| {
            if is_precondition_failed(&e) {
                QueueError::broker(
                    QueueErrorKind::Misconfigured,
                    format!(
                        "queue {name} exists with other arguments than quorum + single-active-consumer"
                    ),
                    e,
                )
            } else {
                QueueError::broker(QueueErrorKind::Unavailable, format!("declaring {name}"), e)
            }
        })?;
    Ok(q.message_count())
}

async fn open_confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let ch = connection.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

pub(super) async fn close_channel(ch: Channel) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ch.close(200, "done".into())).await;
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    )
}

/// Maps lapin's error, met while doing `context`, to a transient
/// [`QueueError::Broker`].
pub(super) fn unavailable(context: &'static str) -> impl Fn(lapin::Error) -> QueueError {
    move |e| QueueError::broker(QueueErrorKind::Unavailable, context, e)
}

fn with_heartbeat(url: &str, heartbeat_secs: u16) -> String {
    if url.contains("heartbeat=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&heartbeat={heartbeat_secs}")
    } else {
        format!("{url}?heartbeat={heartbeat_secs}")
    }
}
