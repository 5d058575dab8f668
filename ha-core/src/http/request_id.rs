//! Request ids: every request gets one, echoed in the `x-request-id`
//! response header and recorded on a `request` span as `http.request.id`,
//! so each log line written while serving it carries the id (the ECS log
//! format prints span fields) and an operator can find a client's request
//! in the logs from the header the client saw. The request's last line
//! (status, duration) is logged at `warn` for 5xx, `info` for 4xx other
//! than 429, and `debug` otherwise.
//!
//! A client (or a proxy in front) may send its own `x-request-id`; it is
//! kept when it is 1 to [`MAX_LEN`] characters of `A-Z a-z 0-9 - _ . :`,
//! and otherwise replaced by a generated one. The id is client input that
//! lands in logs, so anything longer or with other bytes (spaces, quotes,
//! control characters, non-ASCII) is never echoed or logged.
//!
//! The ids and lingering close ([`Linger`]) are applied by one
//! hand-written layer: `axum::middleware::from_fn` costs, per request and
//! per layer, a clone of the inner route, a boxed service for its `Next`
//! and two boxed futures; with both concerns stacked that was most of the
//! routing cost of a one-reading request (docs/ingest-hot-path.md). Here
//! the inner route is called directly and the layer's future is a plain
//! struct: only the rare lingering discard is boxed.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::header::HeaderName;
use axum::http::{HeaderValue, StatusCode, Version};
use axum::response::Response;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::sync::oneshot;
use tower::{Layer, Service};
use tracing::Span;

use super::linger::{Linger, Returning};

/// The request and response header carrying the id.
pub const HEADER: &str = "x-request-id";

/// Longest incoming id kept (a UUID is 36, a W3C trace id 32).
pub const MAX_LEN: usize = 64;

/// A request's id, also put in the request's extensions for handlers.
///
/// Held inline (no heap allocation per request): ids are short ASCII.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl RequestId {
    /// `candidate` if it is an acceptable incoming id (see the module docs).
    pub fn parse(candidate: &[u8]) -> Option<RequestId> {
        let ok = !candidate.is_empty()
            && candidate.len() <= MAX_LEN
            && candidate
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        ok.then(|| RequestId::inline(candidate))
    }

    /// `text`, already checked to be 1 to [`MAX_LEN`] bytes of ASCII.
    fn inline(text: &[u8]) -> RequestId {
        let mut bytes = [0; MAX_LEN];
        bytes[..text.len()].copy_from_slice(text);
        RequestId {
            len: text.len() as u8,
            bytes,
        }
    }

    /// A fresh id: 32 lowercase hex digits, a per-process random half and
    /// a scrambled counter, so ids from replicas do not collide and do not
    /// reveal request counts.
    pub fn generate() -> RequestId {
        static STATE: OnceLock<(u64, std::collections::hash_map::RandomState)> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (process, keyed) = STATE.get_or_init(|| {
            // RandomState is seeded from the OS's random source.
            let keyed = std::collections::hash_map::RandomState::new();
            let mut h = keyed.build_hasher();
            h.write_u32(std::process::id());
            (h.finish(), keyed)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut h = keyed.build_hasher();
        h.write_u64(n);
        // The counter in the low bits keeps ids unique within the process
        // even if two scrambled values collide.
        let low = (h.finish() & 0xFFFF_FFFF_0000_0000) | (n & 0xFFFF_FFFF);
        let mut text = [0; 32];
        hex16(*process, &mut text[..16]);
        hex16(low, &mut text[16..]);
        RequestId::inline(&text)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (parse and generate), so this never
        // falls back.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// `v` as 16 lowercase hex digits into `out`.
fn hex16(v: u64, out: &mut [u8]) {
    for (i, digit) in out.iter_mut().enumerate() {
        let nibble = (v >> (60 - 4 * i)) & 0xF;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The span of a request. Created here (and its last line logged by
/// [`log_outcome`]) so that both carry this module's target, which operators
/// filter on (`HA_LOG=info,ha_core::http::request_id=debug`, docs/logging.md).
pub(super) fn span(id: &RequestId, method: &axum::http::Method, path: &str) -> tracing::Span {
    tracing::info_span!(
        "request",
        http.request.id = %id,
        http.request.method = %method,
        url.path = %path,
    )
}

/// A request's last line, in its span: status and duration, at `warn` for
/// 5xx, `info` for 4xx other than 429, `debug` otherwise.
pub(super) fn log_outcome(s: axum::http::StatusCode, took_ns: u64) {
    let status = s.as_u16();
    // Ingest serves thousands of requests a second: successes (and
    // rate-limit refusals, which a misbehaving device repeats) only at
    // debug; a client's error at info so its id can be looked up.
    if s.is_server_error() {
        tracing::warn!(
            http.response.status_code = status,
            event.duration = took_ns,
            "Request failed."
        );
    } else if s.is_client_error() && s != axum::http::StatusCode::TOO_MANY_REQUESTS {
        tracing::info!(
            http.response.status_code = status,
            event.duration = took_ns,
            "Request refused."
        );
    } else {
        tracing::debug!(
            http.response.status_code = status,
            event.duration = took_ns,
            "Request served."
        );
    }
}

/// `router` with request ids: see the module docs.
pub fn apply(router: axum::Router) -> axum::Router {
    router.layer(PerRequestLayer::new(true, None))
}

/// `router` with request ids and `linger`, in one layer: the same as
/// `apply(linger.apply(router))` at less cost per request.
pub fn apply_with_linger(router: axum::Router, linger: Linger) -> axum::Router {
    router.layer(PerRequestLayer::new(true, Some(linger)))
}

impl Linger {
    /// `router` with lingering around every route.
    pub fn apply(self, router: axum::Router) -> axum::Router {
        router.layer(PerRequestLayer::new(false, Some(self)))
    }
}

/// What the wrapper does: request ids, lingering, or both.
#[derive(Clone, Debug)]
pub(super) struct PerRequestLayer {
    ids: bool,
    linger: Option<Linger>,
}

impl PerRequestLayer {
    pub(super) fn new(ids: bool, linger: Option<Linger>) -> Self {
        PerRequestLayer { ids, linger }
    }
}

impl<S> Layer<S> for PerRequestLayer {
    type Service = PerRequest<S>;

    fn layer(&self, inner: S) -> PerRequest<S> {
        PerRequest {
            inner,
            ids: self.ids,
            linger: self.linger.clone(),
        }
    }
}

/// The service of [`PerRequestLayer`].
#[derive(Clone, Debug)]
pub(super) struct PerRequest<S> {
    inner: S,
    ids: bool,
    linger: Option<Linger>,
}

impl<S> Service<Request> for PerRequest<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = PerRequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let ids = self.ids.then(|| Ids::begin(&mut request));
        // HTTP/2 resets streams on its own; a request without a body (GETs,
        // probes) has nothing to discard: neither pays for the wrapper.
        let linger = match &self.linger {
            Some(linger)
                if request.version() <= Version::HTTP_11 && !request.body().is_end_stream() =>
            {
                let (back, rest) = oneshot::channel();
                let (parts, body) = request.into_parts();
                request = Request::from_parts(parts, Body::new(Returning::new(body, back)));
                Some((linger.clone(), rest))
            }
            _ => None,
        };
        let inner = match &ids {
            Some(ids) => ids.span.in_scope(|| self.inner.call(request)),
            None => self.inner.call(request),
        };
        PerRequestFuture {
            inner,
            ids,
            linger,
            discarding: None,
        }
    }
}

/// The request-id half of a request in flight.
struct Ids {
    /// Echoed in the response: the incoming header when it was kept (no
    /// copy), else the generated id.
    header: Option<HeaderValue>,
    span: Span,
    started: Instant,
}

impl Ids {
    fn begin(request: &mut Request) -> Ids {
        let incoming = request.headers().get(HEADER);
        let kept = incoming.and_then(|v| RequestId::parse(v.as_bytes()));
        let (id, header) = match kept {
            Some(id) => (id, incoming.cloned()),
            None => {
                let id = RequestId::generate();
                let header = HeaderValue::from_str(id.as_str()).ok();
                (id, header)
            }
        };
        let span = span(&id, request.method(), request.uri().path());
        request.extensions_mut().insert(id);
        Ids {
            header,
            span,
            started: Instant::now(),
        }
    }

    /// The request's last log line and the `x-request-id` header.
    fn finish(self, response: &mut Response) {
        let took_ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.span
            .in_scope(|| log_outcome(response.status(), took_ns));
        if let Some(value) = self.header {
            response
                .headers_mut()
                .insert(HeaderName::from_static(HEADER), value);
        }
    }
}

type Discard = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The future of [`PerRequest`]: the route's answer, then (after an early
/// `4xx` on HTTP/1.1) the discarding of the rest of the body, then the
/// request's log line and id header.
pub(super) struct PerRequestFuture<F> {
    inner: F,
    ids: Option<Ids>,
    linger: Option<(Linger, oneshot::Receiver<Body>)>,
    discarding: Option<(Discard, Response)>,
}

impl<F> Future for PerRequestFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _entered = this.ids.as_ref().map(|ids| ids.span.enter());
        let mut response = match this.discarding.take() {
            Some((mut discard, response)) => {
                if discard.as_mut().poll(cx).is_pending() {
                    this.discarding = Some((discard, response));
                    return Poll::Pending;
                }
                response
            }
            None => {
                let Ok(response) = ready!(Pin::new(&mut this.inner).poll(cx));
                // Not after a 408: that client is too slow to wait for.
                let s = response.status();
                if s.is_client_error()
                    && s != StatusCode::REQUEST_TIMEOUT
                    && let Some((linger, rest)) = this.linger.take()
                {
                    let mut discard: Discard = Box::pin(async move {
                        if let Ok(rest) = rest.await {
                            linger.discard(rest).await;
                        }
                    });
                    if discard.as_mut().poll(cx).is_pending() {
                        this.discarding = Some((discard, response));
                        return Poll::Pending;
                    }
                }
                response
            }
        };
        drop(_entered);
        if let Some(ids) = this.ids.take() {
            ids.finish(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn incoming_ids_are_bounded_in_length_and_charset() {
        assert_eq!(
            RequestId::parse(b"3f2c-ab_12.x:9").map(|r| r.as_str().to_owned()),
            Some("3f2c-ab_12.x:9".to_owned())
        );
        assert!(RequestId::parse(&[b'a'; MAX_LEN]).is_some());
        assert!(RequestId::parse(&[b'a'; MAX_LEN + 1]).is_none());
        for bad in [
            &b""[..],
            b"a b",
            b"a\"b",
            b"a\nb",
            b"caf\xc3\xa9",
            b"{}",
            b"a/b",
        ] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn generated_ids_are_distinct_hex_and_acceptable() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| RequestId::generate().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(RequestId::parse(id.as_bytes()).is_some());
        }
    }

    async fn answer(header: Option<&str>) -> (String, String) {
        let router =
            apply(axum::Router::new().route(
                "/",
                get(
                    |axum::Extension(id): axum::Extension<RequestId>| async move {
                        id.as_str().to_owned()
                    },
                ),
            ));
        let mut request = Request::builder().uri("/");
        if let Some(h) = header {
            request = request.header(HEADER, h);
        }
        let response = router
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        echoed_and_body(response).await
    }

    /// The response's `x-request-id` and its body.
    pub(super) async fn echoed_and_body(response: Response) -> (String, String) {
        let echoed = response.headers()[HEADER]
            .to_str()
            .expect("ascii")
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        (echoed, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn a_sane_incoming_id_is_kept_and_echoed() {
        let (echoed, seen) = answer(Some("client-42")).await;
        assert_eq!(echoed, "client-42");
        assert_eq!(seen, "client-42");
    }

    #[tokio::test]
    async fn a_missing_or_hostile_id_is_replaced() {
        for header in [None, Some("x".repeat(MAX_LEN + 1).as_str()), Some("a b")] {
            let (echoed, seen) = answer(header).await;
            assert_eq!(echoed, seen);
            assert_eq!(echoed.len(), 32, "{header:?} -> {echoed}");
            assert_ne!(Some(echoed.as_str()), header);
        }
    }
}

#[cfg(test)]
mod layer_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Bytes;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;
    use crate::http::request_id;

    /// A 4-chunk body counting the chunks read from it.
    fn counted_body(read: Arc<AtomicUsize>) -> Body {
        let chunks = (0..4).map(move |_| {
            read.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 1024]))
        });
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    async fn post_to(router: axum::Router, version: Version) -> (Response, usize) {
        let read = Arc::new(AtomicUsize::new(0));
        let request = Request::post("/")
            .version(version)
            .body(counted_body(read.clone()))
            .expect("request");
        let response = router.oneshot(request).await.expect("response");
        (response, read.load(Ordering::SeqCst))
    }

    fn refusing() -> axum::Router {
        // Answers before reading the body, as an early 413 does.
        axum::Router::new().route(
            "/",
            post(
                |axum::Extension(id): axum::Extension<RequestId>| async move {
                    (StatusCode::PAYLOAD_TOO_LARGE, id.as_str().to_owned())
                },
            ),
        )
    }

    #[tokio::test]
    async fn one_layer_gives_ids_and_lingers_after_an_early_4xx() {
        let router = request_id::apply_with_linger(refusing(), Linger::default());
        let (response, read) = post_to(router, Version::HTTP_11).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(read, 4, "the rest of the body was discarded");
        let (echoed, body) = super::tests::echoed_and_body(response).await;
        assert_eq!(echoed.len(), 32);
        assert_eq!(body, echoed, "the handler saw the echoed id");
    }

    #[tokio::test]
    async fn http2_and_id_only_routers_do_not_linger() {
        let lingering = request_id::apply_with_linger(refusing(), Linger::default());
        let (_, read) = post_to(lingering, Version::HTTP_2).await;
        assert_eq!(read, 0);
        let (response, read) = post_to(request_id::apply(refusing()), Version::HTTP_11).await;
        assert_eq!(read, 0);
        assert!(response.headers().contains_key(request_id::HEADER));
    }
}
