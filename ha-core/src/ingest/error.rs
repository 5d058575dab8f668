//! Why ingest refused a request, whatever the transport: one type, one
//! mapping to the HTTP answer ([`IngestError::to_api`]).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use super::auth::AuthError;
use crate::http::ApiError;
use crate::queue::QueueError;
use crate::wire::{MAX_BODY_BYTES, ParseError, ValidationError};

/// Why readings were not accepted. Nothing of a refused request is
/// published: a request is accepted whole or not at all.
///
/// The client's own mistakes ([`is_client_error`](Self::is_client_error))
/// never succeed when resent unchanged; the others
/// ([`is_transient`](Self::is_transient)) are ours or the moment's, and the
/// same request may succeed later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The replica is shutting down. Transient (`503 draining`).
    #[error("this replica is shutting down; retry")]
    Draining,
    /// Too many requests are publishing at once. Transient
    /// (`503 overloaded`).
    #[error("too many requests in flight; retry")]
    Overloaded,
    /// The queue did not confirm the readings (broker unavailable, publish
    /// timeout, queue full). Transient (`503 broker_unavailable`).
    #[error("the queue did not confirm the readings; retry")]
    Broker(#[source] Option<Arc<QueueError>>),
    /// Missing or wrong credentials (`401 unauthorized`).
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// The body is not declared as JSON (`415 unsupported_media_type`).
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body exceeds [`MAX_BODY_BYTES`] (`413 body_too_large`).
    #[error("the body may be at most {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The connection failed while the body was read (`400 body_unreadable`).
    #[error("reading the body failed: {0}")]
    BodyUnreadable(#[source] axum::Error),
    /// The body did not arrive in time (`408 body_timeout`).
    #[error("the body did not arrive within {} s", .0.as_secs_f64())]
    BodyTimeout(Duration),
    /// The body is not the documented JSON shape (`400 malformed`).
    #[error(transparent)]
    Malformed(ParseError),
    /// A reading belongs to another device than the authenticated one
    /// (`403 wrong_device`).
    #[error("reading {index} belongs to another device than the authenticated `{device}`")]
    WrongDevice {
        /// The offending reading's position in the body.
        index: usize,
        /// The authenticated device.
        device: String,
    },
    /// A reading breaks a rule of the wire format (`422`, the rule's code).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The device sends faster than its rate limit (`429 rate_limited`).
    #[error("too many readings from this device; slow down")]
    RateLimited {
        /// Seconds until the device's bucket holds this request again.
        retry_after_secs: u32,
    },
}

impl From<ParseError> for IngestError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::TooLarge { .. } => IngestError::TooLarge,
            other => IngestError::Malformed(other),
        }
    }
}

impl IngestError {
    /// Whether the same request may succeed later (the replica, the broker
    /// or the moment is at fault, not the request).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            IngestError::Draining | IngestError::Overloaded | IngestError::Broker(_)
        )
    }

    /// Whether the request itself is at fault: resending it unchanged will
    /// be refused again. A rate-limited request is neither: it succeeds
    /// after [`retry_after_secs`](IngestError::RateLimited::retry_after_secs).
    pub fn is_client_error(&self) -> bool {
        !self.is_transient() && !matches!(self, IngestError::RateLimited { .. })
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::Draining | IngestError::Overloaded | IngestError::Broker(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IngestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BodyUnreadable(_) | IngestError::Malformed(_) => StatusCode::BAD_REQUEST,
            IngestError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            IngestError::WrongDevice { .. } => StatusCode::FORBIDDEN,
            IngestError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The stable machine-readable code of the answer (`error` in the
    /// body; the `code` label of `ha_ingest_requests_total`).
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Draining => "draining",
            IngestError::Overloaded => "overloaded",
            IngestError::Broker(_) => "broker_unavailable",
            IngestError::Unauthorized(_) => "unauthorized",
            IngestError::UnsupportedMediaType => "unsupported_media_type",
            IngestError::TooLarge => "body_too_large",
            IngestError::BodyUnreadable(_) => "body_unreadable",
            IngestError::BodyTimeout(_) => "body_timeout",
            IngestError::Malformed(_) => "malformed",
            IngestError::WrongDevice { .. } => "wrong_device",
            IngestError::Invalid(e) => e.rule.code(),
            IngestError::RateLimited { .. } => "rate_limited",
        }
    }

    /// The answer: status, code, message, the offending field and reading,
    /// and `Retry-After` (`retry_after_secs` for the transient ones, the
    /// bucket's own figure for `429`). The queue's error behind a `503` is
    /// ours and is logged by the batcher, never shown to the client.
    pub fn to_api(&self, retry_after_secs: u32) -> ApiError {
        let api = ApiError::new(self.status(), self.code(), self.message());
        match self {
            _ if self.is_transient() => api.retry_after(retry_after_secs),
            IngestError::RateLimited { retry_after_secs } => api.retry_after(*retry_after_secs),
            IngestError::Malformed(ParseError::Malformed { field, index, .. }) => {
                api.at(field.clone(), *index)
            }
            IngestError::WrongDevice { index, .. } => {
                api.at(Some(format!("readings[{index}].device_id")), Some(*index))
            }
            IngestError::Invalid(e) => {
                let field = match e.index {
                    Some(i) => format!("readings[{i}].{}", e.field),
                    None => e.field.clone(),
                };
                api.at(Some(field), e.index)
            }
            _ => api,
        }
    }

    /// The human message: the error's own text, except where a field is
    /// reported beside it (then the rule or the parser's message alone).
    fn message(&self) -> String {
        match self {
            IngestError::Malformed(ParseError::Malformed { message, .. }) => message.clone(),
            IngestError::Invalid(e) => e.rule.describe().to_owned(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Rule;

    #[test]
    fn every_kind_maps_to_one_answer() {
        let invalid = IngestError::from(ValidationError::new(Some(2), "ts", Rule::TsTooOld));
        let api = invalid.to_api(3);
        assert_eq!(api.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(api.error, "ts_too_old");
        assert_eq!(api.field.as_deref(), Some("readings[2].ts"));
        assert_eq!(api.index, Some(2));
        assert_eq!(api.retry_after, None);
        assert!(invalid.is_client_error() && !invalid.is_transient());

        let broker = IngestError::Broker(Some(Arc::new(QueueError::Unavailable("down".into()))));
        let api = broker.to_api(3);
        assert_eq!(
            (api.status, api.error.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable")
        );
        assert_eq!(api.retry_after, Some(3));
        assert!(
            !api.message.contains("down"),
            "our errors stay in the log: {}",
            api.message
        );
        assert!(std::error::Error::source(&broker).is_some());

        let limited = IngestError::RateLimited {
            retry_after_secs: 7,
        };
        assert_eq!(limited.to_api(3).retry_after, Some(7));
        assert!(!limited.is_client_error() && !limited.is_transient());

        let wrong = IngestError::WrongDevice {
            index: 1,
            device: "d-1".into(),
        };
        let api = wrong.to_api(3);
        assert_eq!(
            (api.status, api.field.as_deref()),
            (StatusCode::FORBIDDEN, Some("readings[1].device_id"))
        );

        let large = IngestError::from(ParseError::TooLarge { size: 2, limit: 1 });
        assert_eq!(large.code(), "body_too_large");
    }
}
