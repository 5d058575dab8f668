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

use super::Linger;
use super::per_request::PerRequestLayer;

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
