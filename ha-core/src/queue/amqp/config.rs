//! Settings of an [`AmqpQueue`](super::AmqpQueue) and their checks.

use crate::ConfigError;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of an [`AmqpQueue`](super::AmqpQueue). `Debug` hides the
/// URLs' passwords.
#[derive(Clone)]
pub struct AmqpConfig {
    /// Broker URLs (`amqp://user:pass@host:5672/%2f`, or `amqps://...:5671`
    /// for TLS), tried in order; on connection loss the list is tried again
    /// from the start. A `heartbeat` query parameter is added when absent.
    pub urls: Vec<String>,
    /// PEM file of the CA(s) that sign the brokers' certificates; needed
    /// for `amqps://` URLs and the only trust anchor (no system roots).
    /// The certificate must name the URL's host.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that verify clients
    /// (with [`client_key_file`](Self::client_key_file)).
    pub client_cert_file: Option<PathBuf>,
    /// PEM PKCS#8 key of [`client_cert_file`](Self::client_cert_file).
    pub client_key_file: Option<PathBuf>,
    /// Number of partition queues; must match every other replica.
    pub partitions: u32,
    /// Partition `p` is the queue `{queue_prefix}.{p}`.
    pub queue_prefix: String,
    /// AMQP heartbeat in seconds: how fast a silently vanished broker is noticed.
    pub heartbeat_secs: u16,
    /// Bound on connecting to one broker address.
    pub connect_timeout: Duration,
    /// Bound on one [`Queue::publish`](crate::queue::Queue::publish) call, reconnects and republishing
    /// included; past it the call fails with
    /// [`QueueError::Unavailable`](crate::queue::QueueError::Unavailable).
    pub publish_timeout: Duration,
    /// Confirm-mode channels used for publishing, round-robin.
    pub publish_channels: usize,
    /// Shown in the broker's connection list (`-publish`/`-consume` appended).
    pub connection_name: String,
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| crate::redact::url(u)).collect();
        f.debug_struct("AmqpConfig")
            .field("urls", &urls)
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field("partitions", &self.partitions)
            .field("queue_prefix", &self.queue_prefix)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("connect_timeout", &self.connect_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("publish_channels", &self.publish_channels)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            urls: vec!["amqp://guest:guest@127.0.0.1:5672/%2f".into()],
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            partitions: 4,
            queue_prefix: "ha.readings".into(),
            heartbeat_secs: 5,
            connect_timeout: Duration::from_secs(3),
            publish_timeout: Duration::from_secs(10),
            publish_channels: 2,
            connection_name: "ha-pipeline".into(),
        }
    }
}

impl AmqpConfig {
    /// The queue name of partition `p`.
    pub fn queue_name(&self, p: u32) -> String {
        format!("{}.{p}", self.queue_prefix)
    }

    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError::new(
                "urls",
                "must hold at least one broker URL",
            ));
        }
        if self.partitions == 0 {
            return Err(ConfigError::new("partitions", "must be at least 1"));
        }
        if self.queue_prefix.is_empty() || self.queue_prefix.len() > 200 {
            return Err(ConfigError::new(
                "queue_prefix",
                "must be 1 to 200 characters",
            ));
        }
        if self.publish_channels == 0 {
            return Err(ConfigError::new("publish_channels", "must be at least 1"));
        }
        if self.heartbeat_secs == 0 {
            return Err(ConfigError::new("heartbeat_secs", "must be at least 1"));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(ConfigError::new(
                "client_cert_file and client_key_file",
                "go together",
            ));
        }
        if self.ca_file.is_none() && self.urls.iter().any(|u| u.starts_with("amqps://")) {
            return Err(ConfigError::new(
                "ca_file",
                "is needed for amqps:// URLs (the CA of the brokers' certificates)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::AmqpConfig;

    #[test]
    fn debug_hides_the_passwords() {
        let c = AmqpConfig {
            urls: vec!["amqps://ingest:Pa55word@rabbit:5671/%2f".into()],
            ..AmqpConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("Pa55word"), "{shown}");
        assert!(
            shown.contains("amqps://ingest:***@rabbit:5671/%2f"),
            "{shown}"
        );
    }
}
