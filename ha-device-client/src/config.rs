//! How a client is set up: [`ClientConfig`] and its `with_*` builder.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ha_core::wire::{MAX_BODY_BYTES, MAX_READINGS, is_valid_device_id};

use crate::error::Error;
use crate::event::Event;
use crate::pool::ConnectionPool;
use crate::retry::RetryPolicy;

/// The path readings are posted to, below the base URL.
pub const READINGS_PATH: &str = "/v1/readings";

/// A callback receiving every [`Event`].
pub type EventCallback = Box<dyn FnMut(&Event) + Send>;

/// Where a certificate or key comes from.
#[derive(Clone)]
pub(crate) enum Pem {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Pem {
    pub(crate) fn load(&self) -> Result<Vec<u8>, Error> {
        match self {
            Pem::Bytes(b) => Ok(b.clone()),
            Pem::File(p) => std::fs::read(p)
                .map_err(|e| Error::TlsConfig(format!("reading {}: {e}", p.display()))),
        }
    }
}

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
/// | jitter seed | derived from the device id and the clock |
pub struct ClientConfig {
    pub(crate) url: String,
    pub(crate) device_id: String,
    pub(crate) token: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) ca: Vec<Pem>,
    pub(crate) client_cert: Option<(Pem, Pem)>,
    pub(crate) local_addr: Option<IpAddr>,
    pub(crate) allow_plain_http: bool,
    pub(crate) max_batch: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) pacing: Duration,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) on_event: Option<EventCallback>,
    pub(crate) pool: Option<ConnectionPool>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("device_id", &self.device_id)
            .field("token", &"<redacted>")
            .field("retry", &self.retry)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("ca_bundles", &self.ca.len())
            .field("client_cert", &self.client_cert.is_some())
            .field("local_addr", &self.local_addr)
            .field("allow_plain_http", &self.allow_plain_http)
            .field("max_batch", &self.max_batch)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("pacing", &self.pacing)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Sends to the ingest API at `base_url` (`https://host[:port][/prefix]`;
    /// readings go to `<base_url>/v1/readings`) as `device_id`, which
    /// authenticates with `token` (HTTP Basic; the token is never logged).
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
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ca: Vec::new(),
            client_cert: None,
            local_addr: None,
            allow_plain_http: false,
            max_batch: 100,
            max_batch_bytes: MAX_BODY_BYTES,
            pacing: Duration::from_millis(200),
            jitter_seed: None,
            on_event: None,
            pool: None,
        }
    }

    /// The retry policy.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Longest time for the TCP connect plus the TLS handshake.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest time from writing a request to reading the whole answer.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Trusts the CA certificates in this PEM bundle (may be repeated).
    pub fn with_ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.ca.push(Pem::Bytes(pem));
        self
    }

    /// Trusts the CA certificates in this PEM file, read when the client
    /// is created (may be repeated).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca.push(Pem::File(path.into()));
        self
    }

    /// Presents this client certificate chain and private key (PEM) for
    /// mutual TLS.
    pub fn with_client_cert_pem(mut self, chain: Vec<u8>, key: Vec<u8>) -> Self {
        self.client_cert = Some((Pem::Bytes(chain), Pem::Bytes(key)));
        self
    }

    /// Like [`with_client_cert_pem`](Self::with_client_cert_pem), from files
    /// read when the client is created.
    pub fn with_client_cert_files(
        mut self,
        chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.client_cert = Some((Pem::File(chain.into()), Pem::File(key.into())));
        self
    }

    /// Binds connections to this local (source) address before connecting.
    pub fn with_local_addr(mut self, addr: IpAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }

    /// Allows an `http://` URL: readings and the token then travel in the
    /// clear. Meant for tests and for a TLS-terminating sidecar on the
    /// device itself.
    pub fn with_plain_http(mut self) -> Self {
        self.allow_plain_http = true;
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
            if !self.ca.is_empty() || self.client_cert.is_some() || self.local_addr.is_some() {
                return Err(Error::Config(
                    "with a connection pool, set the CA, client certificate and local address on the PoolConfig".into(),
                ));
            }
        } else if !endpoint.tls && !self.allow_plain_http {
            return Err(Error::Config(format!(
                "{} is plain HTTP; use https or call with_plain_http()",
                self.url
            )));
        } else if endpoint.tls && self.ca.is_empty() {
            return Err(Error::Config(
                "https needs a CA bundle: with_ca_file() or with_ca_pem()".into(),
            ));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::Config("timeouts must be positive".into()));
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

/// A parsed base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) tls: bool,
    /// Host name or IP literal (without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The request target: prefix + [`READINGS_PATH`].
    pub(crate) path: String,
    /// The `Host` header value.
    pub(crate) authority: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, Error> {
        let bad = |why: &str| Error::Config(format!("URL `{url}`: {why}"));
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("must start with https:// or http://"));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') || prefix.contains(['?', '#']) {
            return Err(bad("user info, query and fragment are not supported"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ]")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            tls,
            host,
            port,
            path: format!("{prefix}{READINGS_PATH}"),
            authority: authority.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("https://ingest.example:8443/api/").unwrap();
        assert_eq!(
            (
                e.tls,
                e.host.as_str(),
                e.port,
                e.path.as_str(),
                e.authority.as_str()
            ),
            (
                true,
                "ingest.example",
                8443,
                "/api/v1/readings",
                "ingest.example:8443"
            )
        );
        let e = Endpoint::parse("http://[::1]:80").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "::1", 80));
        assert_eq!(Endpoint::parse("https://h").unwrap().port, 443);
        for bad in [
            "ftp://h",
            "https://",
            "https://h:x",
            "https://u@h",
            "https://h/?q",
            "https://[::1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

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
        let dbg = format!("{:?}", ClientConfig::new("https://h", "d", "s3cr3t"));
        assert!(!dbg.contains("s3cr3t"));
    }
}
