//! Many clients over a bounded set of connections: [`ConnectionPool`].
//!
//! A real device has one connection of its own. A gateway forwarding many
//! sensors, or an emulator driving thousands of simulated devices, cannot
//! afford one socket per device: the pool lends a connection to a client
//! for one request/answer exchange and takes it back. Everything else
//! stays per device: credentials (each request carries its own device's
//! HTTP Basic header), buffer, retry state machine, events and counters.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Endpoint, Pem};
use crate::error::Error;
use crate::transport::{Conn, Connector};

/// How a [`ConnectionPool`] connects: the connection half of a
/// [`ClientConfig`](crate::ClientConfig), plus the number of connections.
///
/// | option | default |
/// |---|---|
/// | connect timeout (TCP + TLS) | 2 s |
/// | CA bundle | none: required for `https` |
/// | client certificate (mTLS) | none |
/// | local addresses | chosen by the OS; several are used in turn |
/// | plain `http://` | refused unless [`with_plain_http`](Self::with_plain_http) |
pub struct PoolConfig {
    url: String,
    max_connections: usize,
    connect_timeout: Duration,
    ca: Vec<Pem>,
    client_cert: Option<(Pem, Pem)>,
    local_addrs: Vec<IpAddr>,
    allow_plain_http: bool,
}

impl fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolConfig")
            .field("url", &self.url)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_bundles", &self.ca.len())
            .field("client_cert", &self.client_cert.is_some())
            .field("local_addrs", &self.local_addrs)
            .field("allow_plain_http", &self.allow_plain_http)
            .finish()
    }
}

impl PoolConfig {
    /// At most `max_connections` connections to the ingest API at
    /// `base_url` (as in [`ClientConfig::new`](crate::ClientConfig::new)).
    pub fn new(base_url: impl Into<String>, max_connections: usize) -> Self {
        PoolConfig {
            url: base_url.into(),
            max_connections,
            connect_timeout: Duration::from_secs(2),
            ca: Vec::new(),
            client_cert: None,
            local_addrs: Vec::new(),
            allow_plain_http: false,
        }
    }

    /// Longest time for the TCP connect plus the TLS handshake.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Trusts the CA certificates in this PEM bundle (may be repeated).
    pub fn with_ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.ca.push(Pem::Bytes(pem));
        self
    }

    /// Trusts the CA certificates in this PEM file, read when the pool is
    /// created (may be repeated).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca.push(Pem::File(path.into()));
        self
    }

    /// Presents this client certificate chain and private key (PEM) for
    /// mutual TLS: the gateway's identity, shared by every client.
    pub fn with_client_cert_pem(mut self, chain: Vec<u8>, key: Vec<u8>) -> Self {
        self.client_cert = Some((Pem::Bytes(chain), Pem::Bytes(key)));
        self
    }

    /// Binds new connections to these local (source) addresses in turn.
    /// On loopback each source address gives about 28k ports.
    pub fn with_local_addrs(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.local_addrs.extend(addrs);
        self
    }

    /// Allows an `http://` URL (readings and tokens in the clear).
    pub fn with_plain_http(mut self) -> Self {
        self.allow_plain_http = true;
        self
    }

    /// Checks the values that need no I/O. [`ConnectionPool::new`] calls it.
    pub fn validate(&self) -> Result<(), Error> {
        let endpoint = Endpoint::parse(&self.url)?;
        if !endpoint.tls && !self.allow_plain_http {
            return Err(Error::Config(format!(
                "{} is plain HTTP; use https or call with_plain_http()",
                self.url
            )));
        }
        if endpoint.tls && self.ca.is_empty() {
            return Err(Error::Config(
                "https needs a CA bundle: with_ca_file() or with_ca_pem()".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::Config("timeouts must be positive".into()));
        }
        if !(1..=Semaphore::MAX_PERMITS).contains(&self.max_connections) {
            return Err(Error::Config(
                "a connection pool needs at least 1 connection".into(),
            ));
        }
        Ok(())
    }
}

/// A bounded set of kept-alive connections shared by many
/// [`Client`](crate::Client)s, for gateways and device emulators.
///
/// Give each client a clone ([`ClientConfig::with_connection_pool`](crate::ClientConfig::with_connection_pool)).
/// For each request a client borrows an idle connection (or opens one
/// while fewer than `max_connections` exist, or waits — at most its
/// request timeout — for one to come back), makes one exchange with its
/// own device's credentials, and hands the connection back. A connection
/// that broke, was closed by the server, or was abandoned halfway (the
/// flush future dropped) is not handed back; the next borrower opens a
/// new one. Waiting borrowers are served first come, first served.
///
/// The pool owns no task and spawns nothing: connections are opened by
/// the flush that needs one. They are registered with the tokio runtime
/// that opened them, so share a pool only among clients driven on one
/// runtime (not across [`BlockingClient`](crate::blocking)s).
#[derive(Clone)]
pub struct ConnectionPool {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    connector: Arc<Connector>,
    max_connections: usize,
    /// One permit per connection that may exist (idle or lent).
    permits: Arc<Semaphore>,
    /// Oldest returned first, so that work spreads over the connections.
    idle: Mutex<VecDeque<Conn>>,
}

impl fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("url", &self.shared.url)
            .field("max_connections", &self.shared.max_connections)
            .field("lent", &self.lent())
            .field("idle", &self.idle_connections())
            .finish()
    }
}

impl ConnectionPool {
    /// A pool for `config`; parses the CA bundle and builds the TLS
    /// configuration once, for every connection. Does no network I/O.
    ///
    /// Errors: [`Error::Config`] / [`Error::TlsConfig`].
    pub fn new(config: PoolConfig) -> Result<Self, Error> {
        config.validate()?;
        let connector = Connector::new(
            Endpoint::parse(&config.url)?,
            &config.ca,
            config.client_cert.as_ref(),
            config.local_addrs,
            config.connect_timeout,
        )?;
        Ok(ConnectionPool {
            shared: Arc::new(Shared {
                url: config.url,
                connector: Arc::new(connector),
                max_connections: config.max_connections,
                permits: Arc::new(Semaphore::new(config.max_connections)),
                idle: Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// The base URL; a client's [`ClientConfig`](crate::ClientConfig) must name the same.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The most connections open at once.
    pub fn max_connections(&self) -> usize {
        self.shared.max_connections
    }

    /// Connections lent to a client right now.
    pub fn lent(&self) -> usize {
        self.shared.max_connections - self.shared.permits.available_permits()
    }

    /// Open connections waiting for a borrower.
    pub fn idle_connections(&self) -> usize {
        self.shared.idle().len()
    }

    /// Closes the idle connections (lent ones are closed when handed back
    /// broken, or stay open for reuse).
    pub fn close_idle(&self) {
        self.shared.idle().clear();
    }

    pub(crate) fn connector(&self) -> &Arc<Connector> {
        &self.shared.connector
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.shared.connector.endpoint
    }

    /// Waits for a connection slot; the lease holds an idle connection if
    /// there was one, or none (the borrower connects).
    pub(crate) async fn lend(&self) -> Lease {
        let permit = self
            .shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the pool never closes its semaphore"));
        let conn = self.shared.idle().pop_front();
        Lease {
            shared: self.shared.clone(),
            conn,
            _permit: permit,
        }
    }
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, VecDeque<Conn>> {
        // A panic elsewhere cannot leave the queue half-changed.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection slot lent for one exchange; hands a healthy connection
/// back when dropped, before the slot's permit is released.
pub(crate) struct Lease {
    shared: Arc<Shared>,
    conn: Option<Conn>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub(crate) fn slot(&mut self) -> &mut Option<Conn> {
        &mut self.conn
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.busy
        {
            self.shared.idle().push_back(conn);
        }
    }
}
