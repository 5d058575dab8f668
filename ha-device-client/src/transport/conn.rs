//! One open connection and one request/answer exchange on it, shared by a
//! client's own connection and the connections of a pool.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::connector::Connector;
use super::response::{Failure, Response, read_response};
use super::tls::Stream;
use crate::error::Error;
use crate::event::Event;

/// An open connection.
pub(crate) struct Conn {
    stream: Stream,
    /// Set while an exchange runs: if the caller drops the future halfway,
    /// the connection holds half a request and must not be reused.
    pub(crate) busy: bool,
}

pub(super) fn close(slot: &mut Option<Conn>, reason: &str, events: &mut (dyn FnMut(Event) + Send)) {
    if slot.take().is_some() {
        events(Event::Disconnected {
            reason: reason.to_owned(),
        });
    }
}

/// One request on the connection in `slot` (opened first if empty).
pub(super) async fn post_on(
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
