//! Errors of the [`Store`](super::Store) contract.

/// What went wrong talking to the store.
///
/// Match on the predicates ([`is_transient`](Self::is_transient),
/// [`kind`](Self::kind)) rather than on variants: a database backend
/// reports its driver's errors as [`StoreError::Database`], which keeps the
/// driver error as its [`source`](std::error::Error::source) and amounts to
/// one of the other kinds.
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
    /// A fenced write was refused because another replica claimed the
    /// partition since (see [`Store::write_fenced`](super::Store::write_fenced)):
    /// nothing was written. Give the deliveries back and claim again.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The database refused an operation or could not be reached; `kind`
    /// says what it amounts to, `source` is the driver's error (its
    /// SQLSTATE, message, or the I/O or TLS failure).
    #[cfg(feature = "postgres")]
    #[error("{kind} (after {attempts} attempt(s)): {source}")]
    Database {
        /// What the error amounts to for the caller.
        kind: StoreErrorKind,
        /// How many times the operation was tried.
        attempts: u32,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The store's settings are invalid; nothing was connected.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Config(#[from] super::postgres::PostgresConfigError),
}

/// What a [`StoreError`] amounts to for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// See [`StoreError::Unavailable`]; transient.
    #[error("store unavailable")]
    Unavailable,
    /// See [`StoreError::Invalid`].
    #[error("data cannot be stored")]
    Invalid,
    /// See [`StoreError::InvalidQuery`].
    #[error("invalid query")]
    InvalidQuery,
    /// See [`StoreError::Schema`].
    #[error("schema not ready")]
    Schema,
    /// See [`StoreError::Fenced`].
    #[error("fenced by a newer owner")]
    Fenced,
    /// The credentials are wrong or the role lacks the privilege (e.g. a
    /// write with the read-only role). Not transient: a configuration fault.
    #[error("permission denied")]
    Denied,
    /// The store's settings are invalid.
    #[error("invalid store configuration")]
    Config,
}

impl StoreError {
    /// What the error amounts to, whichever variant carries it.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Unavailable(_) => StoreErrorKind::Unavailable,
            StoreError::Invalid(_) => StoreErrorKind::Invalid,
            StoreError::InvalidQuery(_) => StoreErrorKind::InvalidQuery,
            StoreError::Schema(_) => StoreErrorKind::Schema,
            StoreError::Fenced(_) => StoreErrorKind::Fenced,
            #[cfg(feature = "postgres")]
            StoreError::Database { kind, .. } => *kind,
            #[cfg(feature = "postgres")]
            StoreError::Config(_) => StoreErrorKind::Config,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind() == StoreErrorKind::Unavailable
    }

    /// Whether the query arguments were malformed (the caller's mistake).
    pub fn is_invalid_query(&self) -> bool {
        self.kind() == StoreErrorKind::InvalidQuery
    }

    /// Whether the schema is missing or too old.
    pub fn is_schema(&self) -> bool {
        self.kind() == StoreErrorKind::Schema
    }

    /// Whether a newer owner of the partition fenced this write off.
    pub fn is_fenced(&self) -> bool {
        self.kind() == StoreErrorKind::Fenced
    }

    /// Whether the database refused the credentials or the privilege.
    pub fn is_denied(&self) -> bool {
        self.kind() == StoreErrorKind::Denied
    }

    /// Whether the same request can never succeed, however often it is
    /// retried: the data or the query is at fault (PostgreSQL SQLSTATE
    /// classes 22, 23 and 42). The analyzer dead-letters a message that
    /// keeps failing this way instead of stalling its partition.
    /// [`Schema`](StoreError::Schema) is neither transient nor permanent:
    /// an operator fixes it by migrating, so the work is kept.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.kind(),
            StoreErrorKind::Invalid | StoreErrorKind::InvalidQuery
        )
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
            StoreError::Fenced(String::new()),
        ];
        let kinds: Vec<(bool, bool)> = all
            .iter()
            .map(|e| (e.is_transient(), e.is_permanent()))
            .collect();
        assert_eq!(
            kinds,
            [
                (true, false),
                (false, true),
                (false, true),
                (false, false),
                (false, false)
            ]
        );
    }
}
