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

use super::conn::Conn;
use super::connector::Connector;
use super::endpoint::Endpoint;
use super::options::ConnectOptions;
use crate::error::Error;

/// How a [`ConnectionPool`] connects: the endpoint, the number of
/// connections, and the same [`ConnectOptions`] a
/// [`ClientConfig`](crate::ClientConfig) has (defaults there).
pub struct PoolConfig {
    url: String,
    max_connections: usize,
    connection: ConnectOptions,
}

impl fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolConfig")
            .field("url", &self.url)
            .field("max_connections", &self.max_connections)
            .field("connection", &self.connection)
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
            connection: ConnectOptions::default(),
        }
    }

    /// Longest time for the TCP connect plus the TLS handshake.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection = self.connection.with_connect_timeout(timeout);
        self
    }

    /// Trusts the CA certificates in this PEM bundle (may be repeated).
    pub fn with_ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.connection = self.connection.with_ca_pem(pem);
        self
    }

    /// Trusts the CA certificates in this PEM file, read when the pool is
    /// created (may be repeated).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.connection = self.connection.with_ca_file(path);
        self
    }

    /// Presents this client certificate chain and private key (PEM) for
    /// mutual TLS: the gateway's identity, shared by every client.
    pub fn with_client_cert_pem(mut self, chain: Vec<u8>, key: Vec<u8>) -> Self {
        self.connection = self.connection.with_client_cert_pem(chain, key);
        self
    }

    /// Binds new connections to these local (source) addresses in turn.
    /// On loopback each source address gives about 28k ports.
    pub fn with_local_addrs(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.connection = self.connection.with_local_addrs(addrs);
        self
    }

    /// Allows an `http://` URL (readings and tokens in the clear).
    pub fn with_plain_http(mut self) -> Self {
        self.connection = self.connection.with_plain_http();
        self
    }

    /// Replaces every connection option at once.
    pub fn with_connect_options(mut self, options: ConnectOptions) -> Self {
        self.connection = options;
        self
    }

    /// Checks the values that need no I/O. [`ConnectionPool::new`] calls it.
    pub fn validate(&self) -> Result<(), Error> {
        let endpoint = Endpoint::parse(&self.url)?;
        if endpoint.mqtt {
            // An MQTT connection is one device's session (CONNECT carries
            // its credentials): it cannot be lent to another device.
            return Err(Error::Config(format!(
                "{}: a connection pool speaks HTTPS only",
                self.url
            )));
        }
        self.connection.validate(&endpoint, &self.url)?;
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
        let connector = Connector::new(Endpoint::parse(&config.url)?, &config.connection)?;
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
