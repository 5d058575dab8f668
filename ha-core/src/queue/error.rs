//! Errors of the [`Queue`](super::Queue) contract.

/// What went wrong talking to the queue.
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
}

impl QueueError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            QueueError::Unavailable(_) | QueueError::Rejected(_) | QueueError::Closed(_)
        )
    }
}
