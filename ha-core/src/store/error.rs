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

    /// Whether the same request can never succeed, however often it is
    /// retried: the data or the query is at fault (PostgreSQL SQLSTATE
    /// classes 22, 23 and 42). The analyzer dead-letters a message that
    /// keeps failing this way instead of stalling its partition.
    /// [`Schema`](StoreError::Schema) is neither transient nor permanent:
    /// an operator fixes it by migrating, so the work is kept.
    pub fn is_permanent(&self) -> bool {
        matches!(self, StoreError::Invalid(_) | StoreError::InvalidQuery(_))
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn every_error_is_at_most_one_of_transient_and_permanent() {
        let all = [
            StoreError::Unavailable(String::new()),
            StoreError::Invalid(String::new()),
            StoreError::InvalidQuery(String::new()),
            StoreError::Schema(String::new()),
        ];
        let kinds: Vec<(bool, bool)> = all
            .iter()
            .map(|e| (e.is_transient(), e.is_permanent()))
            .collect();
        assert_eq!(
            kinds,
            [(true, false), (false, true), (false, true), (false, false)]
        );
    }
}
