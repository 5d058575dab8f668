//! Operator authentication: `Authorization: Bearer <token>` on every `/v1`
//! route, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::State;
use crate::http::ApiError;

/// The configured operator token, kept only as its SHA-256 digest.
///
/// Both sides are hashed before comparing, so the comparison always runs
/// over 32 bytes whatever the presented length, and the byte loop below
/// never exits early: neither the token's length nor its prefix leaks
/// through timing.
pub(super) struct OperatorToken {
    digest: [u8; 32],
}

impl OperatorToken {
    pub(super) fn new(token: &str) -> Self {
        OperatorToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token.
    pub(super) fn matches(&self, presented: &[u8]) -> bool {
        let other: [u8; 32] = Sha256::digest(presented).into();
        let diff = self
            .digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// The bearer credential of an `Authorization` header value, if it is one.
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let v = value.as_bytes();
    let scheme = v.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = v[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Middleware: lets a request through only with the operator token (or
/// when authentication is off).
pub(super) async fn require_token(
    AxumState(state): AxumState<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let presented = request.headers().get(header::AUTHORIZATION);
    let error = match presented.map(bearer) {
        None => "missing `Authorization: Bearer <token>` header",
        Some(None) => "the Authorization header is not `Bearer <token>`",
        Some(Some(t)) if token.matches(t) => return next.run(request).await,
        Some(Some(_)) => "wrong operator token",
    };
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ha-alerts\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_only_itself() {
        let t = OperatorToken::new("s3cret");
        assert!(t.matches(b"s3cret"));
        for other in [
            &b""[..],
            b"s3cre",
            b"s3cret ",
            b"S3CRET",
            b"s3cret-and-more",
        ] {
            assert!(!t.matches(other));
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_trimmed() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(&v("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&v("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&v("Basic abc")), None);
        assert_eq!(bearer(&v("Bearer ")), None);
        assert_eq!(bearer(&v("Bear")), None);
    }
}
