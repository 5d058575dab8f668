//! Errors of the [`Queue`](super::Queue) contract.

use crate::ConfigError;

/// An error behind another, as a backend reports it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong talking to the queue.
///
/// Match on the predicates ([`is_transient`](Self::is_transient),
/// [`kind`](Self::kind)) rather than on variants: a broker backend reports
/// its client library's errors as [`QueueError::Broker`], which keeps that
/// error as its [`source`](std::error::Error::source) and amounts to one of
/// the other kinds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// No broker could be reached, or confirms did not arrive in time.
    /// Transient: retry later (ingest answers 503).
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the messages, e.g. the queue is at its length
    /// limit with `overflow: reject-publish`. Transient: back off.
    #[error("queue refused the messages: {0}")]
    Rejected(String),
    /// The subscription or the channel it was on is gone. Unacknowledged
    /// deliveries will be redelivered; subscribe again.
    #[error("subscription closed: {0}")]
    Closed(String),
    /// A partition outside `0 .. partitions()`.
    #[error("partition {partition} does not exist (there are {partitions})")]
    InvalidPartition {
        /// The partition asked for.
        partition: u32,
        /// How many there are.
        partitions: u32,
    },
    /// The broker and the application disagree, e.g. a queue declared with
    /// other arguments (406 PRECONDITION_FAILED). Needs an operator.
    #[error("queue misconfigured: {0}")]
    Misconfigured(String),
    /// The broker or the client library failed; `kind` says what it
    /// amounts to, `source` is the library's (or the I/O) error.
    #[error("{kind}: {context}: {source}")]
    Broker {
        /// What the error amounts to for the caller.
        kind: QueueErrorKind,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The queue's settings are invalid; nothing was connected.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What a [`QueueError`] amounts to for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueErrorKind {
    /// See [`QueueError::Unavailable`]; transient.
    #[error("queue unavailable")]
    Unavailable,
    /// See [`QueueError::Rejected`]; transient.
    #[error("queue refused the messages")]
    Rejected,
    /// See [`QueueError::Closed`]; subscribe again.
    #[error("subscription closed")]
    Closed,
    /// See [`QueueError::InvalidPartition`].
    #[error("no such partition")]
    InvalidPartition,
    /// See [`QueueError::Misconfigured`] and [`QueueError::Config`]; needs
    /// an operator.
    #[error("queue misconfigured")]
    Misconfigured,
}

impl QueueError {
    /// A [`QueueError::Broker`]: `source` failed while doing `context`,
    /// which amounts to `kind`.
    pub fn broker(
        kind: QueueErrorKind,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        QueueError::Broker {
            kind,
            context: context.into(),
            source: source.into(),
        }
    }

    /// What the error amounts to, whichever variant carries it.
    pub fn kind(&self) -> QueueErrorKind {
        match self {
            QueueError::Unavailable(_) => QueueErrorKind::Unavailable,
            QueueError::Rejected(_) => QueueErrorKind::Rejected,
            QueueError::Closed(_) => QueueErrorKind::Closed,
            QueueError::InvalidPartition { .. } => QueueErrorKind::InvalidPartition,
            QueueError::Misconfigured(_) | QueueError::Config(_) => QueueErrorKind::Misconfigured,
            QueueError::Broker { kind, .. } => *kind,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            QueueErrorKind::Unavailable | QueueErrorKind::Rejected | QueueErrorKind::Closed
        )
    }

    /// Whether the subscription (or the delivery's channel) is gone:
    /// subscribe again; unacknowledged deliveries come back.
    pub fn is_closed(&self) -> bool {
        self.kind() == QueueErrorKind::Closed
    }

    /// Whether an operator must act (settings, or a queue declared with
    /// other arguments); retrying cannot help.
    pub fn is_misconfigured(&self) -> bool {
        self.kind() == QueueErrorKind::Misconfigured
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn kinds_and_predicates_agree_whichever_variant() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = QueueError::broker(QueueErrorKind::Closed, "consuming", io);
        assert!(e.is_closed() && e.is_transient() && !e.is_misconfigured());
        assert_eq!(e.to_string(), "subscription closed: consuming: reset");
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("reset"));
        let e = QueueError::from(ConfigError::new("partitions", "must be at least 1"));
        assert!(e.is_misconfigured() && !e.is_transient());
        assert!(QueueError::Rejected("full".into()).is_transient());
        let e = QueueError::InvalidPartition {
            partition: 9,
            partitions: 8,
        };
        assert_eq!(e.kind(), QueueErrorKind::InvalidPartition);
        assert!(!e.is_transient());
    }
}
