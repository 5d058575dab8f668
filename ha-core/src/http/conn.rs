//! What one connection is doing, so that it can be closed when a peer
//! stalls: bytes that never become a request (a header-read timeout), or a
//! connection that carries no request for long (an idle timeout).
//!
//! hyper's own `header_read_timeout` also runs while an HTTP/1.1
//! connection waits for its next request, so it cannot tell a slow header
//! (close within seconds) from an idle keep-alive device (keep for
//! minutes). The clocks here can: the IO wrapper notes the first byte that
//! arrives while no request is in flight, the service wrapper notes when
//! requests start and when their responses end.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response, Version};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// `first_byte_ms` when no byte is waiting to become a request.
const NONE: u64 = u64::MAX;

/// Why the server closed a connection on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    /// Bytes (or the connection itself) but no complete request in time.
    HeaderTimeout,
    /// No request for the idle timeout.
    Idle,
}

/// The clocks of one connection, shared by its IO, its service and its
/// watchdog. Times are milliseconds since `start` (tokio clock).
pub(super) struct Activity {
    start: Instant,
    /// Requests in flight, counted until their response body ends.
    active: AtomicUsize,
    /// Requests begun on this connection so far.
    begun: AtomicU64,
    /// The last request's body was read to its end (HTTP/1.1 reads one
    /// request body at a time); until then hyper may still be reading it.
    body_done: AtomicBool,
    /// When the connection last became idle (no request in flight).
    idle_since_ms: AtomicU64,
    /// When a byte first arrived while idle; [`NONE`] if none did. A new
    /// connection starts as if its first byte had arrived: the client owes
    /// a request within the header-read timeout.
    first_byte_ms: AtomicU64,
    /// HTTP/2: frames (pings, window updates, settings) arrive without any
    /// request, so only the idle clock applies once a request was seen.
    h2: AtomicBool,
    changed: Notify,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            active: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            body_done: AtomicBool::new(true),
            idle_since_ms: AtomicU64::new(0),
            first_byte_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn bytes_read(&self) {
        if self.active.load(Ordering::Relaxed) == 0
            && self.first_byte_ms.load(Ordering::Relaxed) == NONE
        {
            self.first_byte_ms.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn begin(self: &Arc<Self>, version: Version, body_done: bool) -> ActiveGuard {
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.body_done.store(body_done, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::SeqCst);
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.first_byte_ms.store(NONE, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// Requests in flight (until their response body ends).
    pub(super) fn in_flight(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Requests begun on this connection so far.
    pub(super) fn requests_begun(&self) -> u64 {
        self.begun.load(Ordering::Relaxed)
    }

    /// Whether the last request's body was read to its end (a body dropped
    /// unread leaves hyper draining or closing the connection).
    pub(super) fn body_done(&self) -> bool {
        self.body_done.load(Ordering::Relaxed)
    }

    /// Whether the connection should be closed now, and else when to look
    /// again (state changes before then wake [`Activity::changed`]).
    pub(super) fn check(&self, header: Duration, idle: Duration) -> Result<Instant, Expiry> {
        let now = self.now_ms();
        if self.active.load(Ordering::SeqCst) > 0 {
            return Ok(self.at(now) + idle);
        }
        let header = header.as_millis() as u64;
        let idle = idle.as_millis() as u64;
        let first = self.first_byte_ms.load(Ordering::Relaxed);
        if first != NONE && !self.h2.load(Ordering::Relaxed) {
            let due = first.saturating_add(header);
            return if now >= due {
                Err(Expiry::HeaderTimeout)
            } else {
                Ok(self.at(due))
            };
        }
        let due = self
            .idle_since_ms
            .load(Ordering::Relaxed)
            .saturating_add(idle);
        if now >= due {
            Err(Expiry::Idle)
        } else {
            Ok(self.at(due))
        }
    }

    /// Resolves when a request ends or a byte arrives on an idle connection.
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Counts a request as in flight until its response body is dropped.
struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.store(a.now_ms(), Ordering::Relaxed);
        if a.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.changed.notify_one();
        }
    }
}

/// The connection's byte stream, noting when bytes arrive.
pub(super) struct Tracked<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Tracked<IO> {
    pub(super) fn new(io: IO, activity: Arc<Activity>) -> Self {
        Tracked { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The router as a hyper service, counting each request in flight until
/// its response body ends (a server-sent event stream keeps its
/// connection busy, not idle). Each request carries the client's address
/// as axum's [`ConnectInfo`](axum::extract::ConnectInfo) extension.
#[derive(Clone)]
pub(super) struct TrackedService {
    router: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl TrackedService {
    pub(super) fn new(router: Router, activity: Arc<Activity>, peer: SocketAddr) -> Self {
        TrackedService {
            router: TowerToHyperService::new(router),
            activity,
            peer,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for TrackedService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let guard = self
            .activity
            .begin(req.version(), req.body().is_end_stream());
        let activity = self.activity.clone();
        // axum boxes the body either way; boxing it here costs nothing more.
        let req = req.map(|body| Body::new(WatchedBody { body, activity }));
        let response = self.router.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(GuardedBody {
                    body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A request body noting when it has been read to its end.
struct WatchedBody {
    body: Incoming,
    activity: Arc<Activity>,
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.body.is_end_stream() {
            self.activity.body_done.store(true, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

struct GuardedBody {
    body: Body,
    _guard: ActiveGuard,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(180);

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_a_request_within_the_header_timeout() {
        let a = Activity::new();
        assert!(a.check(HEADER, IDLE).is_ok());
        tokio::time::advance(HEADER).await;
        assert_eq!(a.check(HEADER, IDLE), Err(Expiry::HeaderTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keep_alive_lasts_the_idle_timeout_and_a_slow_header_does_not() {
        let a = Activity::new();
        drop(a.begin(Version::HTTP_11, true));
        // Idle after a request: only the idle clock runs.
        tokio::time::advance(Duration::from_secs(170)).await;
        assert!(
            a.check(HEADER, IDLE).is_ok(),
            "idle devices are not churned"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(a.check(HEADER, IDLE), Err(Expiry::Idle));

        let b = Activity::new();
        drop(b.begin(Version::HTTP_11, true));
        tokio::time::advance(Duration::from_secs(5)).await;
        b.bytes_read(); // "POST /v1/readings HTTP/1.1\r\nX-Slow: " and nothing more
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(b.check(HEADER, IDLE).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.check(HEADER, IDLE), Err(Expiry::HeaderTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_expired() {
        let a = Activity::new();
        let guard = a.begin(Version::HTTP_11, true);
        tokio::time::advance(Duration::from_secs(1_000)).await;
        assert!(a.check(HEADER, IDLE).is_ok());
        drop(guard);
        assert!(
            a.check(HEADER, IDLE).is_ok(),
            "idle clock restarts at the end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_requests_do_not_count_as_a_header() {
        let a = Activity::new();
        drop(a.begin(Version::HTTP_2, true));
        a.bytes_read(); // a PING or WINDOW_UPDATE
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(a.check(HEADER, IDLE).is_ok());
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(a.check(HEADER, IDLE), Err(Expiry::Idle));
    }
}
