//! How a client is set up: [`ClientConfig`] and its `with_*` builder.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ha_core::wire::{MAX_BODY_BYTES, MAX_READINGS, is_valid_device_id};

use crate::error::Error;
use crate::event::Event;
use crate::retry::RetryPolicy;
use crate::transport::{ConnectOptions, ConnectionPool, Endpoint};

/// A callback receiving every [`Event`].
pub type EventCallback = Box<dyn FnMut(&Event) + Send>;

/// Everything a [`Client`](crate::Client) needs: where to send, as whom,
/// and how to behave when things fail.
///
/// ```
/// use std::time::Duration;
/// use ha_device_client::{ClientConfig, RetryPolicy};
///
/// let config = ClientConfig::new("https://ingest.example:8443", "dev-00001", "9f86d081884c7d65")
///     .with_ca_pem(b"-----BEGIN CERTIFICATE-----\n...".to_vec())
///     .with_retry_policy(RetryPolicy::default().with_jitter(0.2).unwrap())
///     .with_request_timeout(Duration::from_secs(5));
/// ```
///
/// | option | default |
/// |---|---|
/// | retry policy | [`RetryPolicy::default`]: 1, 2, …, 10 s, then give up |
/// | connect timeout (TCP + TLS) | 2 s |
/// | request timeout (write + answer) | 5 s |
/// | CA bundle | none: required for `https` |
/// | client certificate (mTLS) | none |
/// | local address | chosen by the OS |
/// | plain `http://` | refused unless [`with_plain_http`](Self::with_plain_http) |
/// | batch | up to 100 readings and 1 MiB per request |
/// | pacing | 200 ms between the requests of one flush |
/// | clock retry | readings refused with `ts_in_future` are sent again after 60 s |
/// | jitter seed | derived from the device id and the clock |
/// | MQTT keep-alive (`mqtts://` only) | 60 s |
///
/// # Transport
///
/// The URL's scheme chooses how readings travel; everything else (buffer,
/// batching, retries, events, counters) is the same:
///
/// | URL | transport |
/// |---|---|
/// | `https://host[:port][/prefix]` | `POST <prefix>/v1/readings` over HTTP/1.1 + TLS (port 443 by default) |
/// | `mqtts://host[:port]` | MQTT 5 over TLS (port 8883 by default, cargo feature `mqtt`): CONNECT with user name = device id and password = token, one QoS 1 PUBLISH per batch to `readings/<device id>` with the same JSON body, removed from the buffer on a success PUBACK |
/// | `http://`, `mqtt://` | the same in the clear, only with [`with_plain_http`](Self::with_plain_http) |
///
/// Over MQTT a PUBACK's reason code is acted on like the equivalent HTTP
/// status: 0x99 payload format invalid like 422 (refused readings moved
/// to the rejected sink, or held for a clock rule named in the reason
/// string), 0x95 packet too large like 413, 0x87 not authorized like 403;
/// 0x97 quota exceeded and the transient codes (and a server DISCONNECT
/// such as 0x88 or 0x89) are retried on the policy's schedule
/// ([`Error::Mqtt`](crate::Error::Mqtt), [`RetryCause::Mqtt`](crate::RetryCause::Mqtt)).
/// A connection pool speaks HTTPS only.
pub struct ClientConfig {
    pub(crate) url: String,
    pub(crate) device_id: String,
    pub(crate) token: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) connection: ConnectOptions,
    pub(crate) request_timeout: Duration,
    pub(crate) max_batch: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) pacing: Duration,
    pub(crate) clock_retry: Duration,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) on_event: Option<EventCallback>,
    pub(crate) pool: Option<ConnectionPool>,
    pub(crate) mqtt_keep_alive: Duration,
    pub(crate) mqtt_max_in_flight: u16,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("device_id", &self.device_id)
            .field("token", &"<redacted>")
            .field("retry", &self.retry)
            .field("connection", &self.connection)
            .field("request_timeout", &self.request_timeout)
            .field("max_batch", &self.max_batch)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("pacing", &self.pacing)
            .field("clock_retry", &self.clock_retry)
            .field("pool", &self.pool)
            .field("mqtt_keep_alive", &self.mqtt_keep_alive)
            .field("mqtt_max_in_flight", &self.mqtt_max_in_flight)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Sends to the ingest API at `base_url` (`https://host[:port][/prefix]`;
    /// readings go to `<base_url>/v1/readings`) as `device_id`, which
    /// authenticates with `token` (HTTP Basic; the token is never logged).
    /// With `mqtts://host[:port]`, readings go over MQTT instead (see
    /// [Transport](#transport)).
    pub fn new(
        base_url: impl Into<String>,
        device_id: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        ClientConfig {
            url: base_url.into(),
            device_id: device_id.into(),
            token: token.into(),
            retry: RetryPolicy::default(),
            connection: ConnectOptions::default(),
            request_timeout: Duration::from_secs(5),
            max_batch: 100,
            max_batch_bytes: MAX_BODY_BYTES,
            pacing: Duration::from_millis(200),
            clock_retry: Duration::from_secs(60),
            jitter_seed: None,
            on_event: None,
            pool: None,
            mqtt_keep_alive: Duration::from_secs(60),
            mqtt_max_in_flight: 1,
        }
    }

    /// The retry policy.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Longest time for the TCP connect plus the TLS handshake.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection = self.connection.with_connect_timeout(timeout);
        self
    }

    /// Longest time from writing a request to reading the whole answer.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Trusts the CA certificates in this PEM bundle (may be repeated).
    pub fn with_ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.connection = self.connection.with_ca_pem(pem);
        self
    }

    /// Trusts the CA certificates in this PEM file, read when the client
    /// is created (may be repeated).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.connection = self.connection.with_ca_file(path);
        self
    }

    /// Presents this client certificate chain and private key (PEM) for
    /// mutual TLS.
    pub fn with_client_cert_pem(mut self, chain: Vec<u8>, key: Vec<u8>) -> Self {
        self.connection = self.connection.with_client_cert_pem(chain, key);
        self
    }

    /// Like [`with_client_cert_pem`](Self::with_client_cert_pem), from files
    /// read when the client is created.
    pub fn with_client_cert_files(
        mut self,
        chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.connection = self.connection.with_client_cert_files(chain, key);
        self
    }

    /// Binds connections to this local (source) address before connecting
    /// (replacing any set before).
    pub fn with_local_addr(mut self, addr: IpAddr) -> Self {
        self.connection.local_addrs = vec![addr];
        self
    }

    /// Allows an `http://` URL: readings and the token then travel in the
    /// clear. Meant for tests and for a TLS-terminating sidecar on the
    /// device itself.
    pub fn with_plain_http(mut self) -> Self {
        self.connection = self.connection.with_plain_http();
        self
    }

    /// Replaces every connection option at once (connect timeout, CA,
    /// client certificate, local addresses, plain HTTP), e.g. with the
    /// same [`ConnectOptions`] a [`PoolConfig`](crate::PoolConfig) uses.
    pub fn with_connect_options(mut self, options: ConnectOptions) -> Self {
        self.connection = options;
        self
    }

    /// At most `max_readings` (1..=1000) readings and `max_bytes` body bytes
    /// (up to 1 MiB) per request.
    pub fn with_batch(mut self, max_readings: usize, max_bytes: usize) -> Self {
        self.max_batch = max_readings;
        self.max_batch_bytes = max_bytes;
        self
    }

    /// Pause between consecutive requests of one flush, so that a fleet
    /// coming back online does not stampede the server.
    pub fn with_pacing(mut self, pause: Duration) -> Self {
        self.pacing = pause;
        self
    }

    /// How long readings refused with `ts_in_future` stay held before a
    /// flush sends them again (default 60 s): the server's clock catches up
    /// with a device clock running a little ahead. See
    /// [`buffer`](crate::buffer#clock-refusals).
    pub fn with_clock_retry(mut self, after: Duration) -> Self {
        self.clock_retry = after;
        self
    }

    /// Seeds the jitter generator (for reproducible tests).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Calls `callback` with every [`Event`]. It runs inline on the
    /// client's task: keep it short (forward into a channel if need be).
    pub fn with_event_callback(mut self, callback: impl FnMut(&Event) + Send + 'static) -> Self {
        self.on_event = Some(Box::new(callback));
        self
    }

    /// Sends over connections borrowed from `pool`, one exchange at a
    /// time, instead of a connection of the client's own: for a gateway or
    /// an emulator driving many devices. The connection settings (CA,
    /// client certificate, local addresses, connect timeout, plain HTTP)
    /// are then the pool's: set them on its [`PoolConfig`](crate::PoolConfig),
    /// not here. The URL must name the pool's endpoint. Credentials,
    /// request timeout, retries, batching and events stay this client's.
    pub fn with_connection_pool(mut self, pool: ConnectionPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// MQTT only: the keep-alive announced in CONNECT (whole seconds, at
    /// most 65,535; zero turns it off). The client spawns no task, so it
    /// pings only when a flush finds the session idle for more than half
    /// of it; flush at least once per keep-alive to keep one session up
    /// (otherwise the next flush reconnects, which loses nothing).
    pub fn with_mqtt_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.mqtt_keep_alive = keep_alive;
        self
    }

    /// MQTT only: how many batches may be published before the first is
    /// acknowledged (default 1). More keeps a high-latency link busy; the
    /// server's Receive Maximum (from its CONNACK) bounds it further. The
    /// batches are published in `seq` order, leave the buffer only on their
    /// own success PUBACK, and are acknowledged in order: after the first
    /// one that is not, the later ones stay buffered and are sent again, in
    /// order (the store de-duplicates any that had arrived).
    pub fn with_mqtt_max_in_flight(mut self, publishes: u16) -> Self {
        self.mqtt_max_in_flight = publishes;
        self
    }

    /// Checks the values that need no I/O. [`Client::new`](crate::Client::new)
    /// calls it.
    pub fn validate(&self) -> Result<(), Error> {
        if !is_valid_device_id(&self.device_id) {
            return Err(Error::Config(format!(
                "device id `{}` is not 1-64 characters of [A-Za-z0-9._:-]",
                self.device_id
            )));
        }
        if self.token.is_empty() {
            return Err(Error::Config("the token is empty".into()));
        }
        let endpoint = Endpoint::parse(&self.url)?;
        if let Some(pool) = &self.pool {
            if endpoint != *pool.endpoint() {
                return Err(Error::Config(format!(
                    "URL `{}` is not the connection pool's `{}`",
                    self.url,
                    pool.url()
                )));
            }
            if self.connection.has_tls_or_source() {
                return Err(Error::Config(
                    "with a connection pool, set the CA, client certificate and local address on the PoolConfig".into(),
                ));
            }
        } else {
            self.connection.validate(&endpoint, &self.url)?;
        }
        if self.connection.connect_timeout.is_zero()
            || self.request_timeout.is_zero()
            || self.clock_retry.is_zero()
        {
            return Err(Error::Config(
                "timeouts and the clock retry must be positive".into(),
            ));
        }
        if self.mqtt_keep_alive > Duration::from_secs(u16::MAX.into()) {
            return Err(Error::Config(format!(
                "MQTT keep-alive {:?} is over 65,535 s",
                self.mqtt_keep_alive
            )));
        }
        if self.mqtt_max_in_flight == 0 {
            return Err(Error::Config(
                "MQTT max in flight must be at least 1".into(),
            ));
        }
        if !(1..=MAX_READINGS).contains(&self.max_batch) {
            return Err(Error::Config(format!(
                "batch of {} readings is outside 1..={MAX_READINGS}",
                self.max_batch
            )));
        }
        if !(1024..=MAX_BODY_BYTES).contains(&self.max_batch_bytes) {
            return Err(Error::Config(format!(
                "batch of {} bytes is outside 1024..={MAX_BODY_BYTES}",
                self.max_batch_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = ClientConfig::new("https://h", "dev-1", "t").with_ca_pem(vec![]);
        ok.validate().unwrap();
        assert!(
            ClientConfig::new("https://h", "dev-1", "t")
                .validate()
                .is_err(),
            "no CA"
        );
        assert!(
            ClientConfig::new("http://h", "dev-1", "t")
                .validate()
                .is_err(),
            "plain"
        );
        ClientConfig::new("http://h", "dev-1", "t")
            .with_plain_http()
            .validate()
            .unwrap();
        assert!(
            ClientConfig::new("http://h", "dev 1", "t")
                .with_plain_http()
                .validate()
                .is_err()
        );
        assert!(
            ClientConfig::new("http://h", "d", "")
                .with_plain_http()
                .validate()
                .is_err()
        );
        let c = ClientConfig::new("http://h", "d", "t").with_plain_http();
        assert!(c.with_batch(1001, 1 << 20).validate().is_err());
        let shared = ConnectOptions::default()
            .with_ca_pem(b"ca".to_vec())
            .with_connect_timeout(Duration::from_secs(7));
        let c = ClientConfig::new("https://h", "dev-1", "t").with_connect_options(shared.clone());
        c.validate().unwrap();
        assert_eq!(c.connection, shared);
        assert!(
            ClientConfig::new("https://h", "dev-1", "t")
                .with_connect_options(shared.with_connect_timeout(Duration::ZERO))
                .validate()
                .is_err(),
            "zero connect timeout"
        );
        ClientConfig::new("mqtts://h", "dev-1", "t")
            .with_ca_pem(vec![])
            .validate()
            .unwrap();
        assert!(
            ClientConfig::new("mqtt://h", "dev-1", "t")
                .validate()
                .is_err(),
            "plain MQTT"
        );
        assert!(
            ClientConfig::new("mqtts://h", "dev-1", "t")
                .with_ca_pem(vec![])
                .with_mqtt_keep_alive(Duration::from_secs(70_000))
                .validate()
                .is_err()
        );
        let dbg = format!("{:?}", ClientConfig::new("https://h", "d", "s3cr3t"));
        assert!(!dbg.contains("s3cr3t"));
    }
}
