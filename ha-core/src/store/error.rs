//! Errors of the [`Store`](super::Store) contract.

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or is restarting, or a transaction
    /// kept failing with a serialization conflict. Transient: retry while
    /// holding the work (the analyzer keeps its deliveries unacknowledged).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The data can never be stored (e.g. a value out of the column's
    /// range). Not transient.
    #[error("data cannot be stored: {0}")]
    Invalid(String),
    /// A query argument is malformed, e.g. an unknown pagination cursor.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The schema is missing or older than this build needs.
    #[error("schema not ready: {0}")]
    Schema(String),
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
