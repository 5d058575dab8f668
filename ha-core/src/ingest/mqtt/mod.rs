//! The ingest service's MQTT listener (feature `mqtt`): devices connect
//! with MQTT 3.1.1 or 5.0 over TLS and publish the same JSON body as
//! `POST /v1/readings` to `readings/{device_id}` with QoS 1; the PUBACK is
//! sent only after the broker confirmed the readings (the same group-commit
//! path as a `202`). docs/mqtt.md is the reference; in short:
//!
//! | what | how |
//! |---|---|
//! | CONNECT | username = device id, password = its token (the HTTP Basic pair); 0x86 otherwise |
//! | PUBLISH QoS 1 | PUBACK 0x00 after the broker's confirm; error PUBACK (5.0) only for permanent refusals: 0x87 another device, 0x90 another topic, 0x99 invalid body, 0x97 rate limit |
//! | transient failure | no PUBACK; DISCONNECT 0x89 (broker, overload) or 0x8B (shutdown) in 5.0, a close in 3.1.1: the client resends |
//! | PUBLISH QoS 0 | best effort: validated and published the same way, never answered, counted |
//! | PUBLISH QoS 2 | DISCONNECT 0x9B (CONNACK advertises maximum QoS 1) |
//! | sessions | clean only: nothing is kept past a connection; the client resends what was not acknowledged, and the store's `(device_id, seq)` key keeps a resent reading once |
//!
//! ```no_run
//! # async fn demo(service: ha_core::ingest::IngestService, tls: std::sync::Arc<rustls::ServerConfig>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use ha_core::http::ServeConfig;
//! use ha_core::ingest::{MqttConfig, MqttListener};
//!
//! let http = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! let mqtt = tokio::net::TcpListener::bind("0.0.0.0:8883").await?;
//! let mqtt = MqttListener::new(mqtt, Some(tls.clone()), MqttConfig::default())?;
//! service
//!     .run_with_mqtt(http, Some(tls), Some(mqtt), std::future::pending(), &ServeConfig::default())
//!     .await?;
//! # Ok(()) }
//! ```

mod codec;
mod metrics;
mod publish;
mod reason;
mod server;
mod session;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpListener;

pub(crate) use metrics::MqttMetrics;
pub use publish::topic_of;
pub(crate) use server::serve;

use super::State;
use crate::ConfigError;
use crate::http::{ServeConfig, ServeError};
use crate::wire::MAX_BODY_BYTES;

/// Settings of the MQTT listener; the connection bounds (cap, handshake
/// and CONNECT timeouts) are the [`ServeConfig`]'s, the payload limits the
/// ingest body's.
#[derive(Clone, Debug, PartialEq)]
pub struct MqttConfig {
    /// QoS 1 publishes a connection may have unacknowledged (CONNACK
    /// Receive Maximum in 5.0; a 3.1.1 client past it waits in its socket).
    pub receive_maximum: u16,
    /// Largest packet accepted (CONNACK Maximum Packet Size): the ingest
    /// body limit plus room for the topic and properties.
    pub max_packet_bytes: usize,
    /// Longest keep-alive granted; a client asking for more, or for none
    /// (0), gets this one (CONNACK Server Keep Alive in 5.0). The
    /// connection is closed after 1.5 × the keep-alive without a packet.
    pub max_keep_alive: Duration,
    /// Serve without TLS. Only for tests and a TLS-terminating proxy in
    /// front: a device's token would cross the network in clear.
    pub insecure_plaintext: bool,
}

/// Default [`MqttConfig::max_packet_bytes`]: the body limit plus 4 KiB.
pub const DEFAULT_MAX_PACKET_BYTES: usize = MAX_BODY_BYTES + 4096;

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            receive_maximum: 32,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_keep_alive: Duration::from_secs(300),
            insecure_plaintext: false,
        }
    }
}

impl MqttConfig {
    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.receive_maximum == 0 {
            return Err(ConfigError::new("receive_maximum", "must be at least 1"));
        }
        if !(1024..=DEFAULT_MAX_PACKET_BYTES).contains(&self.max_packet_bytes) {
            return Err(ConfigError::new(
                "max_packet_bytes",
                format!("must be 1024 to {DEFAULT_MAX_PACKET_BYTES}"),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(65_535)).contains(&self.max_keep_alive) {
            return Err(ConfigError::new("max_keep_alive", "must be 1 s to 65535 s"));
        }
        Ok(())
    }
}

/// A bound MQTT listener with its TLS configuration, for
/// [`IngestService::run_with_mqtt`](super::IngestService::run_with_mqtt).
pub struct MqttListener {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<Arc<ServerConfig>>,
    pub(crate) config: MqttConfig,
}

impl MqttListener {
    /// The listener; TLS with `tls` (the ingest's certificate; ALPN is set
    /// to `mqtt`). Without TLS only when
    /// [`MqttConfig::insecure_plaintext`] says so.
    pub fn new(
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        config: MqttConfig,
    ) -> Result<Self, ServeError> {
        config.validate().map_err(ServeError::Config)?;
        let tls = match tls {
            Some(tls) => {
                let mut tls = (*tls).clone();
                tls.alpn_protocols = vec![b"mqtt".to_vec()];
                Some(Arc::new(tls))
            }
            None if config.insecure_plaintext => None,
            None => {
                return Err(ServeError::Config(ConfigError::new(
                    "insecure_plaintext",
                    "must be set to serve MQTT without TLS (no certificate was given)",
                )));
            }
        };
        Ok(MqttListener {
            listener,
            tls,
            config,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// Where the service's lifecycle is, as the MQTT connections see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving.
    Running,
    /// Shutting down: no new publish is taken; those in flight are
    /// answered, then DISCONNECT 0x8B.
    Draining,
    /// The drain is over: close now.
    Closing,
}

/// What every connection shares.
pub(crate) struct Ctx {
    state: Arc<State>,
    config: MqttConfig,
    serve: ServeConfig,
    metrics: MqttMetrics,
    sessions: sessions::Sessions,
    /// Slots for packets over 16 KiB being received (see session.rs).
    large_packets: Arc<tokio::sync::Semaphore>,
}

impl Ctx {
    fn write_timeout(&self) -> Duration {
        self.state.config.body_timeout
    }
}
