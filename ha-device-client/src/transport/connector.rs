//! Opening connections: resolve, bind a local address, TCP connect, TLS
//! handshake, all within the connect timeout. One `Connector` is shared by
//! every connection of a client or of a [`ConnectionPool`](crate::ConnectionPool),
//! so the CA bundle is parsed and the rustls configuration built once.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use super::endpoint::Endpoint;
use super::options::ConnectOptions;
use super::tls::{Stream, tls_config};
use crate::error::Error;

/// Where and how to connect.
pub(crate) struct Connector {
    pub(crate) endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Source addresses, used in turn; empty: chosen by the OS.
    local_addrs: Vec<IpAddr>,
    next_local: AtomicUsize,
    connect_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(endpoint: Endpoint, options: &ConnectOptions) -> Result<Self, Error> {
        let tls = if endpoint.tls {
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| Error::Config(format!("TLS server name `{}`: {e}", endpoint.host)))?;
            let alpn: &[u8] = if endpoint.mqtt { b"mqtt" } else { b"http/1.1" };
            let config = tls_config(&options.ca, options.client_cert.as_ref(), alpn)?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Connector {
            endpoint,
            tls,
            local_addrs: options.local_addrs.clone(),
            next_local: AtomicUsize::new(0),
            connect_timeout: options.connect_timeout,
        })
    }

    /// Opens a connection within the connect timeout; returns it and the
    /// server's address.
    pub(crate) async fn connect(&self) -> Result<(Stream, SocketAddr), Error> {
        let addr = format!("{}:{}", self.endpoint.host, self.endpoint.port);
        let attempt = async {
            let (tcp, peer) = self.connect_tcp(&addr).await?;
            let stream = match &self.tls {
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|source| Error::Tls {
                            addr: addr.clone(),
                            source,
                        })?;
                    Stream::Tls(Box::new(tls))
                }
                None => Stream::Plain(tcp),
            };
            Ok::<_, Error>((stream, peer))
        };
        timeout(self.connect_timeout, attempt)
            .await
            .map_err(|_| Error::Timeout {
                phase: "connect",
                after: self.connect_timeout,
            })?
    }

    #[cfg(feature = "mqtt")]
    /// The connect timeout (TCP + TLS; MQTT's CONNECT/CONNACK gets as long again).
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn local_addr(&self) -> Option<IpAddr> {
        match self.local_addrs.len() {
            0 => None,
            1 => Some(self.local_addrs[0]),
            n => {
                let i = self.next_local.fetch_add(1, Ordering::Relaxed);
                Some(self.local_addrs[i % n])
            }
        }
    }

    async fn connect_tcp(&self, addr: &str) -> Result<(TcpStream, SocketAddr), Error> {
        let connect_err = |source| Error::Connect {
            addr: addr.to_owned(),
            source,
        };
        let peers = lookup_host((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(connect_err)?;
        let local = self.local_addr();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for peer in peers {
            let socket = if peer.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            };
            let result = async {
                let socket = socket?;
                if let Some(local) = local {
                    if local.is_ipv4() != peer.is_ipv4() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrNotAvailable,
                            "local address family differs",
                        ));
                    }
                    socket.bind(SocketAddr::new(local, 0))?;
                }
                let tcp = socket.connect(peer).await?;
                tcp.set_nodelay(true)?;
                Ok(tcp)
            }
            .await;
            match result {
                Ok(tcp) => return Ok((tcp, peer)),
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }
}
