//! Which database errors are transient, which replace the connection, and
//! what each amounts to for the [`Store`](crate::store::Store) caller.
//!
//! Decided on the [`SqlState`] the server sent (its standard class is the
//! code's first two characters), never on message text; errors without a
//! SQLSTATE are I/O, TLS or protocol failures of the connection.

use tokio_postgres::error::SqlState;

use crate::store::{StoreError, StoreErrorKind};

/// What to do about a failed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Retry on the same connection (serialization failure, deadlock).
    Again,
    /// Retry on a new connection (the old one is lost or shutting down).
    Reconnect,
    /// Do not retry: the answer will not change.
    No,
}

/// Whether an error is worth retrying at once, and how.
pub(super) fn retry(e: &tokio_postgres::Error) -> Retry {
    if e.is_closed() {
        return Retry::Reconnect;
    }
    let Some(code) = e.code() else {
        // No answer from the server: the connection failed.
        return Retry::Reconnect;
    };
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        return Retry::Again;
    }
    let shutting_down = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::DATABASE_DROPPED,
        SqlState::IDLE_SESSION_TIMEOUT,
    ];
    // Class 08 is "connection exception".
    if class(code) == "08" || shutting_down.contains(code) {
        Retry::Reconnect
    } else {
        Retry::No
    }
}

/// The standard SQLSTATE class of `code`.
fn class(code: &SqlState) -> &str {
    code.code().get(..2).unwrap_or("")
}

/// What a database error amounts to for the caller.
pub(super) fn kind(e: &tokio_postgres::Error) -> StoreErrorKind {
    let Some(code) = e.code() else {
        if certificate_refused(e) {
            return StoreErrorKind::Denied;
        }
        return StoreErrorKind::Unavailable;
    };
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        return StoreErrorKind::Denied;
    }
    match class(code) {
        // Data exceptions and integrity violations: this data never fits.
        "22" | "23" => StoreErrorKind::Invalid,
        // An undefined table, column or function: the schema is not
        // migrated yet, which an operator mends (the work is kept).
        "42" if [
            SqlState::UNDEFINED_TABLE,
            SqlState::UNDEFINED_COLUMN,
            SqlState::UNDEFINED_FUNCTION,
            SqlState::INVALID_SCHEMA_NAME,
        ]
        .contains(code) =>
        {
            StoreErrorKind::Schema
        }
        // Any other syntax or access rule error: this statement with this
        // data never succeeds (the analyzer dead-letters it after a few tries).
        "42" => StoreErrorKind::InvalidQuery,
        // Invalid authorization specification: wrong user or password.
        "28" => StoreErrorKind::Denied,
        _ => StoreErrorKind::Unavailable,
    }
}

/// Whether the TLS handshake failed on the certificate (a wrong CA, an
/// expired or misnamed certificate): a configuration fault that retrying
/// will not mend.
fn certificate_refused(e: &tokio_postgres::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = next {
        // tokio-rustls hands rustls' error over inside an io::Error, whose
        // source() skips it.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if let Some(tls) = inner.unwrap_or(err).downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        next = err.source();
    }
    false
}

/// Maps a database error to a [`StoreError`] keeping it as the source.
pub(super) fn classify_after(e: tokio_postgres::Error, attempts: u32) -> StoreError {
    StoreError::Database {
        kind: kind(&e),
        attempts,
        source: e,
    }
}

/// [`classify_after`] a single attempt.
pub(super) fn classify(e: tokio_postgres::Error) -> StoreError {
    classify_after(e, 1)
}
