//! Lingering close: after an early `4xx` on HTTP/1.1, read and discard the
//! rest of the request body before answering.
//!
//! A client that sends a 16 MiB body whole and only then reads the answer
//! (Python's `http.client`, most embedded stacks) never sees a `413` sent
//! after the first megabyte: the server closes with unread bytes in its
//! socket, the kernel answers them with a reset, and the client reports a
//! broken connection instead of the error. Discarding up to
//! [`Linger::max_bytes`] or [`Linger::max_time`] lets the answer arrive.
//! HTTP/2 needs none of this (a stream is reset on its own).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::sync::{Semaphore, oneshot};

/// How much a server reads to let an early error reach the client.
#[derive(Clone, Debug)]
pub struct Linger {
    /// Most bytes discarded per request (32 MiB).
    pub max_bytes: usize,
    /// Longest time spent discarding per request (10 s).
    pub max_time: Duration,
    /// Requests discarding at once (256); past it the connection is closed
    /// without lingering, so slow senders cannot pin the server.
    slots: Arc<Semaphore>,
}

impl Default for Linger {
    fn default() -> Self {
        Linger::new(32 << 20, Duration::from_secs(10), 256)
    }
}

impl Linger {
    /// Discards up to `max_bytes` for at most `max_time`, for at most
    /// `concurrent` requests at once.
    pub fn new(max_bytes: usize, max_time: Duration, concurrent: usize) -> Self {
        Linger {
            max_bytes,
            max_time,
            slots: Arc::new(Semaphore::new(concurrent.max(1))),
        }
    }

    pub(super) async fn discard(&self, mut body: Body) {
        let Ok(_slot) = self.slots.try_acquire() else {
            return;
        };
        let mut left = self.max_bytes;
        let drain = async {
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                let Ok(frame) = frame else { return };
                if let Some(data) = frame.data_ref() {
                    if data.len() >= left {
                        return;
                    }
                    left -= data.len();
                }
            }
        };
        let _ = tokio::time::timeout(self.max_time, drain).await;
    }
}

/// A request body that, when the handler drops it unfinished, hands the
/// rest back to the wrapper.
pub(super) struct Returning {
    body: Option<Body>,
    back: Option<oneshot::Sender<Body>>,
}

impl Returning {
    pub(super) fn new(body: Body, back: oneshot::Sender<Body>) -> Self {
        Returning {
            body: Some(body),
            back: Some(back),
        }
    }
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.take())
            && !body.is_end_stream()
        {
            let _ = back.send(body);
        }
    }
}
