//! How connections are opened: [`ConnectOptions`], shared by a client's
//! own connection ([`ClientConfig`](crate::ClientConfig)) and a
//! [`ConnectionPool`](crate::ConnectionPool)'s ([`PoolConfig`](crate::PoolConfig)).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::endpoint::Endpoint;
use crate::error::Error;

/// Where a certificate or key comes from.
#[derive(Clone, PartialEq, Eq)]
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

/// The connection options: connect timeout, TLS trust and identity, local
/// addresses, plain HTTP. Set them through the `with_*` methods of
/// [`ClientConfig`](crate::ClientConfig) or [`PoolConfig`](crate::PoolConfig)
/// (which delegate here), or build them once and hand them to both with
/// `with_connect_options`.
///
/// | option | default |
/// |---|---|
/// | connect timeout (TCP + TLS) | 2 s |
/// | CA bundle | none: required for `https` |
/// | client certificate (mTLS) | none |
/// | local addresses | chosen by the OS; several are used in turn |
/// | plain `http://` | refused unless [`with_plain_http`](Self::with_plain_http) |
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) ca: Vec<Pem>,
    pub(crate) client_cert: Option<(Pem, Pem)>,
    pub(crate) local_addrs: Vec<IpAddr>,
    pub(crate) allow_plain_http: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(2),
            ca: Vec::new(),
            client_cert: None,
            local_addrs: Vec::new(),
            allow_plain_http: false,
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material is never printed.
        f.debug_struct("ConnectOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_bundles", &self.ca.len())
            .field("client_cert", &self.client_cert.is_some())
            .field("local_addrs", &self.local_addrs)
            .field("allow_plain_http", &self.allow_plain_http)
            .finish()
    }
}

impl ConnectOptions {
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

    /// Trusts the CA certificates in this PEM file, read when the client
    /// or pool is created (may be repeated).
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
    /// read when the client or pool is created.
    pub fn with_client_cert_files(
        mut self,
        chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.client_cert = Some((Pem::File(chain.into()), Pem::File(key.into())));
        self
    }

    /// Binds new connections to these local (source) addresses in turn.
    /// On loopback each source address gives about 28k ports.
    pub fn with_local_addrs(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.local_addrs.extend(addrs);
        self
    }

    /// Allows an `http://` (or `mqtt://`) URL: readings and tokens then
    /// travel in the clear. Meant for tests and for a TLS-terminating
    /// sidecar on the device itself.
    pub fn with_plain_http(mut self) -> Self {
        self.allow_plain_http = true;
        self
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Whether a CA, client certificate or local address was set: with a
    /// connection pool, these belong on the pool.
    pub(crate) fn has_tls_or_source(&self) -> bool {
        !self.ca.is_empty() || self.client_cert.is_some() || !self.local_addrs.is_empty()
    }

    /// Checks the options against the endpoint they connect to.
    pub(crate) fn validate(&self, endpoint: &Endpoint, url: &str) -> Result<(), Error> {
        if !endpoint.tls && !self.allow_plain_http {
            return Err(Error::Config(format!(
                "{url} is not encrypted; use https:// or mqtts://, or call with_plain_http()"
            )));
        }
        if endpoint.tls && self.ca.is_empty() {
            return Err(Error::Config(
                "https and mqtts need a CA bundle: with_ca_file() or with_ca_pem()".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::Config("timeouts must be positive".into()));
        }
        Ok(())
    }
}
