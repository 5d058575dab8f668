//! Serving an axum router over TLS (rustls) or plain TCP, with graceful drain.

use crate::ConfigError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::conn::{Activity, Expiry, Tracked, TrackedService};
use super::drain::{Drain, DrainWatch, graceful};
use super::park::{BoxError, ParkIo, Parking, serve_http1};

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A certificate or key file could not be read or parsed.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// A [`ServeConfig`] value is out of range.
    #[error("invalid server configuration: {0}")]
    Config(#[from] ConfigError),
}

/// A rustls server configuration from a PEM certificate chain and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1). Offers HTTP/2 and HTTP/1.1 by ALPN.
pub fn load_tls(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, ServeError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ServeError::Tls("no certificate in the PEM file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| ServeError::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// After the last accept, how long freshly accepted connections get to
/// send their request before idle connections are closed.
const ACCEPTED_GRACE: Duration = Duration::from_millis(100);

/// Connections over the cap being answered `503` at once; past it they are
/// closed without an answer (refusing must stay cheaper than serving).
const REFUSING_AT_ONCE: usize = 64;

/// What a server grants each connection. Every bound is on by default.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    /// After the shutdown signal: how long open requests may take.
    pub drain: Duration,
    /// For the services' `run`: after the shutdown signal, how long the
    /// listener keeps accepting while readiness already answers `503`, so
    /// load balancers stop routing here before connections are refused.
    pub deregister_delay: Duration,
    /// Bound on a TLS handshake (`HA_HANDSHAKE_TIMEOUT`).
    pub handshake_timeout: Duration,
    /// A connection that sent bytes (or just connected) must complete a
    /// request's headers within this (`HA_HEADER_READ_TIMEOUT`, 30 s).
    pub header_read_timeout: Duration,
    /// A connection carrying no request is closed after this
    /// (`HA_IDLE_TIMEOUT`, 180 s: longer than devices' usual 10–60 s
    /// between readings, so idle devices keep their connection).
    pub idle_timeout: Duration,
    /// Open connections at most (`HA_MAX_CONNECTIONS`, 20,000); past it new
    /// ones get `503 too_many_connections` with `Connection: close`.
    pub max_connections: usize,
    /// HTTP/1.1: let go of hyper's per-connection state (its 8 KiB read
    /// and write buffers) while a keep-alive connection waits for its next
    /// request, and build it again when bytes arrive (`HA_PARK_IDLE`,
    /// true). Devices sending every few seconds keep tens of thousands of
    /// mostly idle connections; this halves their memory for a few
    /// percent of throughput on back-to-back requests
    /// (docs/connection-memory.md).
    pub park_idle: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            drain: Duration::from_secs(20),
            deregister_delay: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(180),
            max_connections: 20_000,
            park_idle: true,
        }
    }
}

impl ServeConfig {
    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("handshake_timeout", self.handshake_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return Err(ConfigError::new(name, "must be more than 0"));
            }
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("max_connections", "must be at least 1"));
        }
        Ok(())
    }
}

/// Connection metrics of a server: `ha_<service>_connections_open`,
/// `ha_<service>_connections_refused_total` (over the cap) and
/// `ha_<service>_connections_closed_total{reason}` (closed by the server:
/// `header_timeout`, `idle`, `handshake`); with [`ServeConfig::park_idle`],
/// `ha_<service>_connections_parked` (HTTP/1.1 connections waiting for a
/// request without the HTTP state, now) and
/// `ha_<service>_connection_parks_total`.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    refused: Counter,
    closed: Family<CloseReason, Counter>,
    parking: Parking,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseReason {
    reason: &'static str,
}

impl ConnectionMetrics {
    /// Creates the metrics and registers them as `ha_<service>_connections_*`.
    pub fn register(registry: &mut Registry, service: &str) -> Self {
        let m = ConnectionMetrics::default();
        registry.register(
            format!("ha_{service}_connections_open"),
            "Connections open",
            m.open.clone(),
        );
        registry.register(
            format!("ha_{service}_connections_refused"),
            "Connections refused because the connection cap was reached",
            m.refused.clone(),
        );
        registry.register(
            format!("ha_{service}_connections_closed"),
            "Connections closed by the server: header_timeout, idle, handshake",
            m.closed.clone(),
        );
        registry.register(
            format!("ha_{service}_connections_parked"),
            "HTTP/1.1 connections waiting for a request with their HTTP state released",
            m.parking.parked.clone(),
        );
        registry.register(
            format!("ha_{service}_connection_parks"),
            "Times an idle HTTP/1.1 connection released its HTTP state",
            m.parking.parks.clone(),
        );
        m
    }

    fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&CloseReason { reason }).inc();
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and lets open connections finish their requests for at most
/// `drain`. With `tls`, connections are TLS (HTTP/2 or HTTP/1.1 by ALPN);
/// without, plain HTTP (TLS terminated in front, e.g. at an ingress).
///
/// The connection bounds are [`ServeConfig::default`]'s; see
/// [`serve_with`] to choose them and count connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Result<(), ServeError> {
    let config = ServeConfig {
        drain,
        ..ServeConfig::default()
    };
    serve_with(
        listener,
        app,
        tls,
        shutdown,
        &config,
        ConnectionMetrics::default(),
    )
    .await
}

/// [`serve`] with explicit connection bounds and metrics.
///
/// Each connection is a task of the current runtime, watched for the
/// header-read and idle timeouts; past `max_connections` new connections
/// get a `503` and are closed. The returned future completes when the
/// drain is over.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    config: &ServeConfig,
    metrics: ConnectionMetrics,
) -> Result<(), ServeError> {
    config.validate()?;
    let acceptor = tls.map(TlsAcceptor::from);
    let drain = Drain::new();
    let open = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, keep serving.
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        if open.load(Ordering::SeqCst) >= config.max_connections {
            metrics.refused.inc();
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                let acceptor = acceptor.clone();
                let timeout = config.handshake_timeout;
                tokio::spawn(async move {
                    refuse(stream, acceptor, timeout).await;
                    drop(permit);
                });
            }
            continue;
        }
        let slot = OpenSlot::new(&open, &metrics);
        let watcher = drain.watcher();
        let acceptor = acceptor.clone();
        let app = app.clone();
        let config = config.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let activity = Activity::new();
            let service = TrackedService::new(app, activity.clone(), peer);
            let parking = config.park_idle.then(|| metrics.parking.clone());
            let conn = match acceptor {
                Some(acceptor) => {
                    // Boxed: the handshake's state (a whole rustls
                    // connection) would otherwise size this task for as
                    // long as the connection lives.
                    let handshake =
                        Box::pin(acceptor.accept(Tracked::new(stream, activity.clone())));
                    let tls = match tokio::time::timeout(config.handshake_timeout, handshake).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed.");
                            return;
                        }
                        Err(_) => {
                            metrics.closed("handshake");
                            return;
                        }
                    };
                    serve_tls(tls, service, activity.clone(), watcher, parking)
                }
                None => serve_plain(
                    Tracked::new(stream, activity.clone()),
                    service,
                    activity.clone(),
                    watcher,
                    parking,
                )
                .boxed(),
            };
            match watch(conn, &activity, &config).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "Connection ended with an error."),
                Err(expiry) => {
                    let reason = match expiry {
                        Expiry::HeaderTimeout => "header_timeout",
                        Expiry::Idle => "idle",
                    };
                    tracing::debug!(%peer, reason, "Closing a stalled connection.");
                    metrics.closed(reason);
                }
            }
        });
    }
    drop(listener);
    // A connection accepted a moment ago whose request is not parsed yet
    // counts as idle, and idle connections are closed at once by the
    // graceful shutdown: give those requests a moment to be read, so they
    // are served instead of dropped.
    tokio::time::sleep(ACCEPTED_GRACE.min(config.drain)).await;
    if tokio::time::timeout(config.drain, drain.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain = ?config.drain,
            "Drain timed out; closing the remaining connections."
        );
    }
    Ok(())
}

/// The services' hand-over on `shutdown`: call `on_shutdown` (readiness
/// turns `503`, streams end), keep accepting for
/// [`ServeConfig::deregister_delay`] so load balancers move away first,
/// then serve as [`serve_with`] does until the drain is over.
pub async fn serve_handing_over(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    on_shutdown: impl FnOnce(),
    config: &ServeConfig,
    metrics: ConnectionMetrics,
) -> Result<(), ServeError> {
    let handover = async {
        shutdown.await;
        on_shutdown();
        tokio::time::sleep(config.deregister_delay).await;
    };
    serve_with(listener, app, tls, handover, config, metrics).await
}

/// Serves a TLS connection with the protocol its handshake chose by ALPN
/// (HTTP/1.1 when the client offered none; HTTP/2 requires ALPN over TLS).
///
/// Unlike the plain path, nothing is sniffed: hyper-util's version sniffing
/// hands HTTP/1.1 its first bytes separately, which doubles the connection's
/// read buffer to 16 KiB for its whole life, and its connection type is
/// sized for HTTP/2 even when it serves HTTP/1.1 (docs/connection-memory.md).
/// HTTP/1.1 upgrades are not offered: nothing served here uses them.
fn serve_tls(
    tls: TlsStream<Tracked<TcpStream>>,
    service: TrackedService,
    activity: Arc<Activity>,
    drain: DrainWatch,
    parking: Option<Parking>,
) -> ConnFuture {
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_http2(ParkIo::new(tls, Bytes::new()), service, drain).boxed()
    } else {
        serve_http1(
            ParkIo::new(tls, Bytes::new()),
            service,
            activity,
            drain,
            parking,
        )
        .boxed()
    }
}

/// What an HTTP/2 client sends first ("prior knowledge", RFC 9113 §3.3).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves a plain-TCP connection (TLS terminated in front): HTTP/2 if it
/// opens with the HTTP/2 preface, else HTTP/1.1. The sniffed bytes are
/// handed to hyper as the start of the stream, in its own read buffer
/// (hyper-util's auto builder hands them over separately, which doubles
/// hyper's read buffer for the connection's life).
async fn serve_plain(
    io: Tracked<TcpStream>,
    service: TrackedService,
    activity: Arc<Activity>,
    mut drain: DrainWatch,
    parking: Option<Parking>,
) -> Result<(), BoxError> {
    let mut io = ParkIo::new(io, Bytes::new());
    let mut seen = BytesMut::new();
    let parked = parking.as_ref().map(|p| p.parked_now());
    let h2 = loop {
        let next = tokio::select! {
            biased;
            next = io.next_bytes() => next?,
            () = drain.started() => Bytes::new(),
        };
        if next.is_empty() {
            return Ok(());
        }
        seen.extend_from_slice(&next);
        let n = seen.len().min(H2_PREFACE.len());
        if seen[..n] != H2_PREFACE[..n] {
            break false;
        }
        if n == H2_PREFACE.len() {
            break true;
        }
    };
    drop(parked);
    io.unread(seen.freeze());
    if h2 {
        serve_http2(io, service, drain).await
    } else {
        serve_http1(io, service, activity, drain, parking).await
    }
}

async fn serve_http2<IO>(
    io: ParkIo<IO>,
    service: TrackedService,
    drain: DrainWatch,
) -> Result<(), BoxError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn =
        http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(io), service);
    graceful(conn, drain, |c| c.graceful_shutdown())
        .await
        .map_err(BoxError::from)
}

type ConnFuture = futures_util::future::BoxFuture<'static, Result<(), BoxError>>;

/// Runs the connection until it ends, or until its clocks say the peer
/// stalled: then drops it, which closes the socket (no request is in
/// flight at that point, so nothing is cut short).
async fn watch(
    conn: ConnFuture,
    activity: &Activity,
    config: &ServeConfig,
) -> Result<Result<(), BoxError>, Expiry> {
    let mut conn = conn;
    loop {
        let due = activity.check(config.header_read_timeout, config.idle_timeout)?;
        tokio::select! {
            result = &mut conn => return Ok(result),
            () = tokio::time::sleep_until(due) => {}
            () = activity.changed() => {}
        }
    }
}

/// One open connection, counted while it lives.
struct OpenSlot {
    open: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl OpenSlot {
    fn new(open: &Arc<AtomicUsize>, metrics: &ConnectionMetrics) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        metrics.open.inc();
        OpenSlot {
            open: open.clone(),
            gauge: metrics.open.clone(),
        }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.gauge.dec();
    }
}

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 88\r\n\r\n\
{\"error\":\"too_many_connections\",\"message\":\"this server is at its connection cap; retry\"}";

/// Answers a connection over the cap with a `503` and closes it. Over TLS
/// the handshake comes first (bounded); an HTTP/2 client gets the HTTP/1.1
/// answer it cannot parse and a closed connection, which it retries too.
async fn refuse(stream: TcpStream, acceptor: Option<TlsAcceptor>, timeout: Duration) {
    let answer = async {
        match acceptor {
            Some(acceptor) => {
                let mut tls = acceptor.accept(stream).await?;
                tls.write_all(REFUSAL).await?;
                tls.shutdown().await
            }
            None => {
                let mut stream = stream;
                stream.write_all(REFUSAL).await?;
                stream.shutdown().await
            }
        }
    };
    let _ = tokio::time::timeout(timeout, answer).await;
}
