//! The per-request wrapper of the services' routers: request ids
//! ([`super::request_id`]) and lingering close ([`super::Linger`]) as one
//! hand-written layer.
//!
//! `axum::middleware::from_fn` costs, per request and per layer, a clone
//! of the inner route, a boxed service for its `Next` and two boxed
//! futures; with both concerns stacked that was most of the routing cost
//! of a one-reading request (docs/ingest-hot-path.md). Here the inner route
//! is called directly and the wrapper's future is a plain struct: only the
//! rare lingering discard is boxed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::header::HeaderName;
use axum::http::{HeaderValue, StatusCode, Version};
use axum::response::Response;
use tokio::sync::oneshot;
use tower::{Layer, Service};
use tracing::Span;

use super::linger::{Linger, Returning};
use super::request_id::{HEADER, RequestId};

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
        let span = super::request_id::span(&id, request.method(), request.uri().path());
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
            .in_scope(|| super::request_id::log_outcome(response.status(), took_ns));
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
        let echoed = response.headers()[request_id::HEADER]
            .to_str()
            .expect("ascii")
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(echoed.len(), 32);
        assert_eq!(body, echoed.as_bytes(), "the handler saw the echoed id");
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
