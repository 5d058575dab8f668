//! HTTP/1.1 over rustls (or plain TCP when asked), on one kept-alive
//! connection of the client's own, or on a connection lent by a
//! [`ConnectionPool`] for one exchange.
//!
//! The client speaks exactly one exchange: `POST <path>` with a JSON body
//! and `Content-Length`, answered by a status, a few headers and a small
//! body (fixed length, chunked, or up to EOF). That is a few hundred lines
//! over [`httparse`], which is why this crate does not pull `hyper`:
//! hyper's client needs its connection future driven by a spawned task (or
//! `hyper-util`'s pool, which spawns), plus `http`, `http-body` and tower
//! layers, for features a device never uses.

mod connector;
mod response;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

pub(crate) use connector::Connector;
use response::read_response;
use tls::Stream;

use crate::config::{ClientConfig, Endpoint};
use crate::error::Error;
use crate::event::Event;
use crate::pool::ConnectionPool;

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

/// One client's way to the ingest API: its credentials, and either its
/// own kept-alive connection or a pool to borrow one from.
pub(crate) struct Transport {
    connector: Arc<Connector>,
    source: Source,
    authorization: String,
    request_timeout: Duration,
}

enum Source {
    /// The client's own connection, kept alive between flushes.
    Own(Option<Conn>),
    /// A connection borrowed for each exchange.
    Pool(ConnectionPool),
}

/// An open connection.
pub(crate) struct Conn {
    stream: Stream,
    /// Set while an exchange runs: if the caller drops the future halfway,
    /// the connection holds half a request and must not be reused.
    pub(crate) busy: bool,
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
        let (connector, source) = match &config.pool {
            Some(pool) => (pool.connector().clone(), Source::Pool(pool.clone())),
            None => {
                let connector = Connector::new(
                    Endpoint::parse(&config.url)?,
                    &config.ca,
                    config.client_cert.as_ref(),
                    config.local_addr.into_iter().collect(),
                    config.connect_timeout,
                )?;
                (Arc::new(connector), Source::Own(None))
            }
        };
        let credentials = format!("{}:{}", config.device_id, config.token);
        Ok(Transport {
            connector,
            source,
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            request_timeout: config.request_timeout,
        })
    }

    /// Whether the client holds a connection of its own (never with a
    /// pool: it holds one only during an exchange).
    pub(crate) fn is_connected(&self) -> bool {
        matches!(self.source, Source::Own(Some(_)))
    }

    /// Closes the client's own connection, if any.
    pub(crate) fn disconnect(&mut self, reason: &str, events: &mut (dyn FnMut(Event) + Send)) {
        if let Source::Own(slot) = &mut self.source {
            close(slot, reason, events);
        }
    }

    /// Posts `body`, connecting first if need be (borrowing a connection
    /// from the pool first, waiting at most the request timeout for one).
    /// A kept-alive connection that turns out to be closed is replaced
    /// once at once; every other failure closes the connection and is
    /// returned.
    pub(crate) async fn post(
        &mut self,
        body: &[u8],
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Response, Error> {
        let request = self.request(body);
        let limit = self.request_timeout;
        match &mut self.source {
            Source::Own(slot) => post_on(&self.connector, slot, &request, limit, events).await,
            Source::Pool(pool) => {
                let mut lease = timeout(limit, pool.lend())
                    .await
                    .map_err(|_| Error::Timeout {
                        phase: "waiting for a pooled connection",
                        after: limit,
                    })?;
                // The lease hands a healthy connection back when dropped.
                post_on(&self.connector, lease.slot(), &request, limit, events).await
            }
        }
    }

    fn request(&self, body: &[u8]) -> Vec<u8> {
        let endpoint = &self.connector.endpoint;
        let mut request = Vec::with_capacity(256 + body.len());
        request.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nUser-Agent: ha-device-client/{}\r\nContent-Length: {}\r\n\r\n",
                endpoint.path,
                endpoint.authority,
                self.authorization,
                env!("CARGO_PKG_VERSION"),
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body);
        request
    }
}

fn close(slot: &mut Option<Conn>, reason: &str, events: &mut (dyn FnMut(Event) + Send)) {
    if slot.take().is_some() {
        events(Event::Disconnected {
            reason: reason.to_owned(),
        });
    }
}

/// One request on the connection in `slot` (opened first if empty).
async fn post_on(
    connector: &Connector,
    slot: &mut Option<Conn>,
    request: &[u8],
    limit: Duration,
    events: &mut (dyn FnMut(Event) + Send),
) -> Result<Response, Error> {
    if slot.as_ref().is_some_and(|c| c.busy) {
        close(slot, "an earlier request was abandoned", events);
    }
    let mut reused = slot.is_some();
    loop {
        let conn = match slot {
            Some(conn) => conn,
            None => {
                let (stream, peer) = connector.connect().await?;
                events(Event::Connected { peer });
                slot.insert(Conn {
                    stream,
                    busy: false,
                })
            }
        };
        match exchange(conn, request, limit).await {
            Ok((response, must_close)) => {
                if must_close {
                    close(slot, "the server closed the connection", events);
                }
                return Ok(response);
            }
            Err(f) if reused && f.stale => {
                tracing::debug!(error = %f.error, "Kept-alive connection was closed; reconnecting.");
                close(slot, &f.error.to_string(), events);
                reused = false;
            }
            Err(f) => {
                close(slot, &f.error.to_string(), events);
                return Err(f.error);
            }
        }
    }
}

/// One request and its answer, within `limit`. Returns the answer and
/// whether the connection must be closed after it.
async fn exchange(
    conn: &mut Conn,
    request: &[u8],
    limit: Duration,
) -> Result<(Response, bool), Failure> {
    conn.busy = true;
    let stream = &mut conn.stream;
    let exchange = async {
        if let Err(e) = stream.write_all(request).await.and(stream.flush().await) {
            return Err(Failure {
                error: Error::Io(e),
                stale: true,
            });
        }
        read_response(stream).await
    };
    let result = match timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Err(Failure {
            error: Error::Timeout {
                phase: "request",
                after: limit,
            },
            stale: false,
        }),
    };
    conn.busy = false;
    result
}
