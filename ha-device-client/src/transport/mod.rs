//! HTTP/1.1 over rustls (or plain TCP when asked), on one kept-alive
//! connection.
//!
//! The client speaks exactly one exchange: `POST <path>` with a JSON body
//! and `Content-Length`, answered by a status, a few headers and a small
//! body (fixed length, chunked, or up to EOF). That is a few hundred lines
//! over [`httparse`], which is why this crate does not pull `hyper`:
//! hyper's client needs its connection future driven by a spawned task (or
//! `hyper-util`'s pool, which spawns), plus `http`, `http-body` and tower
//! layers, for features a device never uses.

mod response;
mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use response::read_response;
use tls::{Stream, tls_config};

use crate::config::{ClientConfig, Endpoint};
use crate::error::Error;
use crate::event::Event;

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

/// One connection at a time to the ingest API.
pub(crate) struct Transport {
    endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    authorization: String,
    local_addr: Option<std::net::IpAddr>,
    connect_timeout: Duration,
    request_timeout: Duration,
    conn: Option<Conn>,
}

struct Conn {
    stream: Stream,
    /// Set while an exchange runs: if the caller drops the future halfway,
    /// the connection holds half a request and must not be reused.
    busy: bool,
}

/// Why an exchange failed, and whether it failed before the server sent a
/// single byte (a kept-alive connection the server had already closed).
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) stale: bool,
}

impl Transport {
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let endpoint = Endpoint::parse(&config.url)?;
        let tls = if endpoint.tls {
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| Error::Config(format!("TLS server name `{}`: {e}", endpoint.host)))?;
            Some((TlsConnector::from(Arc::new(tls_config(config)?)), name))
        } else {
            None
        };
        let credentials = format!("{}:{}", config.device_id, config.token);
        Ok(Transport {
            endpoint,
            tls,
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            local_addr: config.local_addr,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            conn: None,
        })
    }

    /// Whether a connection is open.
    pub(crate) fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Closes the connection, if any.
    pub(crate) fn disconnect(&mut self, reason: &str, events: &mut (dyn FnMut(Event) + Send)) {
        if self.conn.take().is_some() {
            events(Event::Disconnected {
                reason: reason.to_owned(),
            });
        }
    }

    /// Posts `body`, connecting first if need be. A kept-alive connection
    /// that turns out to be closed is replaced once at once; every other
    /// failure closes the connection and is returned.
    pub(crate) async fn post(
        &mut self,
        body: &[u8],
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Response, Error> {
        if self.conn.as_ref().is_some_and(|c| c.busy) {
            self.disconnect("an earlier request was abandoned", events);
        }
        let reused = self.conn.is_some();
        if !reused {
            self.connect(events).await?;
        }
        match self.exchange(body).await {
            Ok(r) => {
                if r.1 {
                    self.disconnect("the server closed the connection", events);
                }
                Ok(r.0)
            }
            Err(f) if reused && f.stale => {
                tracing::debug!(error = %f.error, "Kept-alive connection was closed; reconnecting.");
                self.disconnect(&f.error.to_string(), events);
                self.connect(events).await?;
                self.finish(body, events).await
            }
            Err(f) => {
                self.disconnect(&f.error.to_string(), events);
                Err(f.error)
            }
        }
    }

    async fn finish(
        &mut self,
        body: &[u8],
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Response, Error> {
        match self.exchange(body).await {
            Ok((r, close)) => {
                if close {
                    self.disconnect("the server closed the connection", events);
                }
                Ok(r)
            }
            Err(f) => {
                self.disconnect(&f.error.to_string(), events);
                Err(f.error)
            }
        }
    }

    async fn connect(&mut self, events: &mut (dyn FnMut(Event) + Send)) -> Result<(), Error> {
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
        let (stream, peer) =
            timeout(self.connect_timeout, attempt)
                .await
                .map_err(|_| Error::Timeout {
                    phase: "connect",
                    after: self.connect_timeout,
                })??;
        self.conn = Some(Conn {
            stream,
            busy: false,
        });
        events(Event::Connected { peer });
        Ok(())
    }

    async fn connect_tcp(&self, addr: &str) -> Result<(TcpStream, SocketAddr), Error> {
        let connect_err = |source| Error::Connect {
            addr: addr.to_owned(),
            source,
        };
        let peers = lookup_host((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(connect_err)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for peer in peers {
            let socket = if peer.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            };
            let result = async {
                let socket = socket?;
                if let Some(local) = self.local_addr {
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

    /// One request and its answer, within the request timeout. Returns the
    /// answer and whether the connection must be closed after it.
    async fn exchange(&mut self, body: &[u8]) -> Result<(Response, bool), Failure> {
        let mut request = Vec::with_capacity(256 + body.len());
        request.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nUser-Agent: ha-device-client/{}\r\nContent-Length: {}\r\n\r\n",
                self.endpoint.path,
                self.endpoint.authority,
                self.authorization,
                env!("CARGO_PKG_VERSION"),
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body);
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure {
                error: Error::Io(io::Error::new(io::ErrorKind::NotConnected, "not connected")),
                stale: false,
            });
        };
        conn.busy = true;
        let stream = &mut conn.stream;
        let exchange = async {
            if let Err(e) = stream.write_all(&request).await.and(stream.flush().await) {
                return Err(Failure {
                    error: Error::Io(e),
                    stale: true,
                });
            }
            read_response(stream).await
        };
        let result = match timeout(self.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                error: Error::Timeout {
                    phase: "request",
                    after: self.request_timeout,
                },
                stale: false,
            }),
        };
        conn.busy = false;
        result
    }
}
