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

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::http::header::HeaderName;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The request and response header carrying the id.
pub const HEADER: &str = "x-request-id";

/// Longest incoming id kept (a UUID is 36, a W3C trace id 32).
pub const MAX_LEN: usize = 64;

/// A request's id, also put in the request's extensions for handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// `candidate` if it is an acceptable incoming id (see the module docs).
    pub fn parse(candidate: &[u8]) -> Option<RequestId> {
        let ok = !candidate.is_empty()
            && candidate.len() <= MAX_LEN
            && candidate
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        // Only ASCII got through, so this never fails.
        ok.then(|| std::str::from_utf8(candidate).ok())
            .flatten()
            .map(|s| RequestId(s.to_owned()))
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
        RequestId(format!("{process:016x}{low:016x}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `router` with request ids: see the module docs.
pub fn apply(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(middleware))
}

async fn middleware(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| RequestId::parse(v.as_bytes()))
        .unwrap_or_else(RequestId::generate);
    request.extensions_mut().insert(id.clone());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        http.request.id = %id,
        http.request.method = %method,
        url.path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let took_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        // Ingest serves thousands of requests a second: successes (and
        // rate-limit refusals, which a misbehaving device repeats) only at
        // debug; a client's error at info so its id can be looked up.
        let s = response.status();
        if s.is_server_error() {
            tracing::warn!(
                http.response.status_code = status,
                event.duration = took_ns,
                "Request failed."
            );
        } else if s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS {
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
    });
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(HEADER), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn incoming_ids_are_bounded_in_length_and_charset() {
        assert_eq!(
            RequestId::parse(b"3f2c-ab_12.x:9").map(|r| r.0),
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
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| RequestId::generate().0).collect();
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
        let router = apply(axum::Router::new().route(
            "/",
            get(|axum::Extension(id): axum::Extension<RequestId>| async move { id.0 }),
        ));
        let mut request = Request::builder().uri("/");
        if let Some(h) = header {
            request = request.header(HEADER, h);
        }
        let response = router
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("response");
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
