//! HTTP/1.1 without hyper's per-connection state while a keep-alive
//! connection waits for its next request ("parking").
//!
//! hyper's HTTP/1.1 connection holds an 8 KiB read buffer, an 8 KiB write
//! buffer and its dispatcher for as long as the connection lives, idle or
//! not. A device sending one reading every 10 s keeps its connection idle
//! more than 99 % of the time, so at a request boundary the hyper
//! connection is ended without touching the socket, and the next bytes are
//! awaited with a buffer that only exists while a read is being polled.
//! When they come, a fresh hyper connection serves them (and whatever it
//! had read ahead, which is carried over).
//!
//! A connection is parked only when hyper is idle: at least one request
//! finished on this hyper connection, no request is in flight (a streamed
//! response such as server-sent events keeps its request in flight until
//! its body ends), the last request's body was read to its end (one
//! dropped early leaves hyper draining or closing), hyper's last read found
//! nothing and everything it wrote is flushed. hyper's `graceful_shutdown` then closes an idle connection
//! without sending anything; should hyper not be idle after all, it would
//! instead finish the request it has and close the connection (keep-alive
//! off), which is safe, and the loop ends with it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::conn::{Activity, TrackedService};
use super::drain::DrainWatch;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The stack buffer a parked connection reads into; what arrives is then
/// copied into an allocation of its exact size. A reading's request fits.
const PARK_READ: usize = 2048;

/// What hyper last did with the connection's IO.
#[derive(Default)]
struct Probe {
    /// Its last read found nothing (it waits for the peer).
    read_waiting: AtomicBool,
    /// Something it wrote is not flushed yet.
    unflushed: AtomicBool,
}

/// The connection's byte stream as hyper sees it: bytes carried over from
/// the previous hyper connection come first; reads and writes are noted.
pub(super) struct ParkIo<IO> {
    io: IO,
    carried: Bytes,
    probe: Arc<Probe>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ParkIo<IO> {
    /// `carried`: bytes already read from `io` (e.g. while sniffing).
    pub(super) fn new(io: IO, carried: Bytes) -> Self {
        ParkIo {
            io,
            carried,
            probe: Arc::new(Probe::default()),
        }
    }

    /// The next bytes of the stream: any carried over, else one read into
    /// a buffer that lives only while the read is polled. Empty at the end
    /// of the stream.
    pub(super) async fn next_bytes(&mut self) -> io::Result<Bytes> {
        if !self.carried.is_empty() {
            return Ok(std::mem::take(&mut self.carried));
        }
        std::future::poll_fn(|cx| {
            let mut buf = [0u8; PARK_READ];
            let mut read = ReadBuf::new(&mut buf);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            Poll::Ready(Ok(Bytes::copy_from_slice(read.filled())))
        })
        .await
    }

    /// Puts `front` back before anything still carried. Copied: `front`
    /// may be a view into hyper's whole read buffer, which it would keep
    /// allocated for as long as it is carried.
    pub(super) fn unread(&mut self, front: Bytes) {
        if front.is_empty() {
            return;
        }
        let mut both = BytesMut::with_capacity(front.len() + self.carried.len());
        both.extend_from_slice(&front);
        both.extend_from_slice(&self.carried);
        self.carried = both.freeze();
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ParkIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.carried.is_empty() {
            self.probe.read_waiting.store(false, Ordering::Relaxed);
            let n = self.carried.len().min(buf.remaining());
            buf.put_slice(&self.carried[..n]);
            self.carried.advance(n);
            if self.carried.is_empty() {
                self.carried = Bytes::new(); // frees it
            }
            return Poll::Ready(Ok(()));
        }
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        self.probe
            .read_waiting
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl<IO: AsyncWrite + Unpin> ParkIo<IO> {
    fn note_write(&self, result: &Poll<io::Result<usize>>) {
        if !matches!(result, Poll::Ready(Ok(0))) {
            self.probe.unflushed.store(true, Ordering::Relaxed);
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ParkIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.probe
            .unflushed
            .store(!matches!(result, Poll::Ready(Ok(()))), Ordering::Relaxed);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The parking metrics of a server (`ha_<service>_connections_parked`,
/// `ha_<service>_connection_parks_total`).
#[derive(Clone, Debug, Default)]
pub(super) struct Parking {
    /// Connections waiting for a request without hyper's state, now.
    pub(super) parked: Gauge,
    /// Times a connection let go of hyper's state at a request boundary.
    pub(super) parks: Counter,
}

impl Parking {
    /// Counts a connection as parked until the guard is dropped.
    pub(super) fn parked_now(&self) -> ParkedNow {
        ParkedNow::new(&self.parked)
    }
}

/// Counts a connection as parked while it lives.
pub(super) struct ParkedNow(Gauge);

impl ParkedNow {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        ParkedNow(gauge.clone())
    }
}

impl Drop for ParkedNow {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How one hyper connection over the stream ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Idle at a request boundary and let go of: serve the stream again.
    Parked,
    /// Closed for good (by the peer, by HTTP, or by the drain).
    Closed,
}

/// One hyper connection's run, as [`drive`] sees it.
struct Run {
    /// Park when idle (off once draining, or once parking found hyper busy).
    may_park: bool,
    /// `requests_begun` when this hyper connection started: hyper counts
    /// as idle only after a request of its own.
    begun_at_start: u64,
    probe: Arc<Probe>,
}

/// Serves HTTP/1.1 on `io` until the peer or HTTP closes the connection,
/// or the drain starts while it waits for a request; with `parking`,
/// parks it whenever it is idle at a request boundary.
pub(super) async fn serve_http1<IO>(
    mut io: ParkIo<IO>,
    service: TrackedService,
    activity: Arc<Activity>,
    mut drain: DrainWatch,
    parking: Option<Parking>,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut draining = false;
    loop {
        if io.carried.is_empty() {
            let _parked = parking.as_ref().map(Parking::parked_now);
            let next = tokio::select! {
                biased;
                next = io.next_bytes() => next?,
                () = drain.started() => Bytes::new(),
            };
            if next.is_empty() {
                let _ = io.shutdown().await;
                return Ok(());
            }
            io.carried = next;
        }
        let mut run = Run {
            may_park: parking.is_some() && !draining,
            begun_at_start: activity.requests_begun(),
            probe: io.probe.clone(),
        };
        // Boxed: hyper's connection is what is released while parked; the
        // task itself keeps only the stream.
        let mut conn =
            Box::new(http1::Builder::new().serve_connection(TokioIo::new(io), service.clone()));
        let ended = loop {
            tokio::select! {
                biased;
                ended = std::future::poll_fn(|cx| drive(&mut conn, cx, &mut run, &activity)) => {
                    break ended?;
                }
                () = drain.started(), if !draining => {
                    // Finish the request in hand (if any), then close.
                    draining = true;
                    run.may_park = false;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
            }
        };
        let parts = conn.into_parts();
        io = parts.io.into_inner();
        if ended == Ended::Closed {
            let _ = io.shutdown().await;
            return Ok(());
        }
        io.unread(parts.read_buf);
        if let Some(p) = &parking {
            p.parks.inc();
        }
    }
}

/// Polls the hyper connection; when it is idle at a request boundary and
/// may park, ends it without closing the stream.
fn drive<IO>(
    conn: &mut http1::Connection<TokioIo<ParkIo<IO>>, TrackedService>,
    cx: &mut Context<'_>,
    run: &mut Run,
    activity: &Activity,
) -> Poll<Result<Ended, hyper::Error>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Poll::Ready(result) = conn.poll_without_shutdown(cx) {
        return Poll::Ready(result.map(|()| Ended::Closed));
    }
    let idle = run.may_park
        && activity.in_flight() == 0
        && activity.requests_begun() > run.begun_at_start
        && activity.body_done()
        && run.probe.read_waiting.load(Ordering::Relaxed)
        && !run.probe.unflushed.load(Ordering::Relaxed);
    if !idle {
        return Poll::Pending;
    }
    Pin::new(&mut *conn).graceful_shutdown();
    match conn.poll_without_shutdown(cx) {
        Poll::Ready(result) => Poll::Ready(result.map(|()| Ended::Parked)),
        Poll::Pending => {
            // Not idle after all: hyper finishes the request in hand and
            // closes (keep-alive is off now). Safe, and not expected.
            tracing::debug!("A connection taken for idle was busy; it closes after this request.");
            run.may_park = false;
            Poll::Pending
        }
    }
}
