//! The JSON error body every service answers with.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer: `{"error": "<code>", "message": "...", "field": "...",
/// "index": n}` with its status, and `Retry-After` when the client should
/// come back later.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `seq_out_of_range`.
    pub error: String,
    /// What went wrong, for a human. Precise for the client's own mistakes,
    /// generic for ours (which are logged instead).
    pub message: String,
    /// The offending field, e.g. `readings[2].ts`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The offending reading's position in the body, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Seconds after which to retry (`Retry-After`), for 429 and 503.
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error: code.to_owned(),
            message: message.into(),
            field: None,
            index: None,
            retry_after: None,
        }
    }

    /// Names the offending field and reading.
    pub fn at(mut self, field: Option<String>, index: Option<usize>) -> Self {
        self.field = field;
        self.index = index;
        self
    }

    /// Asks the client to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
