//! The one error type of the crate, with predicates so that callers never
//! match on strings.

use std::io;
use std::time::Duration;

use ha_core::wire::ValidationError;

use crate::retry::RetryCause;

/// The server's reason for refusing a request, parsed from its JSON error
/// body `{"error":"<code>","message":"...","field":"...","index":n}`.
///
/// Fields the server did not send (or a body that is not JSON) are left
/// empty; `code` is then the HTTP reason phrase class such as `http_500`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerError {
    /// The HTTP status; over MQTT, the status the reason code is treated
    /// as (0x99 → 422, 0x95 → 413, 0x86 → 401, 0x87 → 403, other refusals → 404).
    pub status: u16,
    /// The machine-readable error code, e.g. `ts_in_future`.
    pub code: String,
    /// The human-readable message.
    pub message: String,
    /// The offending field, when the server named one.
    pub field: Option<String>,
    /// Position of the offending reading in the request's `readings`.
    pub index: Option<usize>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(field) = &self.field {
            write!(f, " (field `{field}`")?;
            if let Some(i) = self.index {
                write!(f, ", reading {i}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in `ha-device-client`.
///
/// Use the predicates ([`is_transient`](Error::is_transient),
/// [`is_auth`](Error::is_auth), ...) rather than matching on messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A CA bundle, certificate or key could not be read or used.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The reading breaks a wire-model rule; it was not buffered.
    #[error("invalid reading: {0}")]
    InvalidReading(#[from] ValidationError),
    /// The reading names another device than the client's.
    #[error("reading belongs to device `{found}`, this client sends for `{expected}`")]
    WrongDevice {
        /// The client's device id.
        expected: String,
        /// The reading's device id.
        found: String,
    },
    /// The buffer is full and its policy is `RejectNew`: the reading was not
    /// stored (counted as dropped).
    #[error("buffer full ({count} readings, {bytes} bytes): reading seq {seq} not stored")]
    BufferFull {
        /// The refused reading's `seq`.
        seq: u64,
        /// Readings in the buffer.
        count: usize,
        /// Bytes in the buffer.
        bytes: usize,
    },
    /// A reading with this `seq` is already buffered; the new one was not stored.
    #[error("a reading with seq {0} is already buffered")]
    DuplicateSeq(u64),
    /// The buffer's storage failed (disk full, flash error). Nothing was
    /// removed from the buffer.
    #[error("buffer storage: {0}")]
    Storage(#[source] io::Error),
    /// Could not open a TCP connection (refused, unreachable, DNS).
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// `host:port` of the server.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (unknown CA, name mismatch, refused client
    /// certificate).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// `host:port` of the server.
        addr: String,
        /// The TLS error.
        #[source]
        source: io::Error,
    },
    /// Connect or request did not finish in time.
    #[error("{phase} timed out after {after:?}")]
    Timeout {
        /// `connect` or `request`.
        phase: &'static str,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection failed while sending or receiving.
    #[error("connection lost: {0}")]
    Io(#[source] io::Error),
    /// The server's answer is not valid HTTP/1.1 (or MQTT 5).
    #[error("invalid response: {0}")]
    Protocol(String),
    /// MQTT: the server answered a CONNECT or PUBLISH with a transient
    /// reason code, or ended the session with a DISCONNECT. Retried; the
    /// readings stay buffered and are published again after reconnecting.
    #[error("MQTT {packet} reason code {code:#04x}{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    Mqtt {
        /// The packet that carried the code: `CONNACK`, `PUBACK` or `DISCONNECT`.
        packet: &'static str,
        /// The MQTT 5 reason code.
        code: u8,
        /// The server's reason string, if it sent one.
        reason: String,
        /// A wait the reason string asked for (`retry after N s`, as the
        /// ingest sends with 0x97 quota exceeded): honoured like
        /// `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The server answered with an error status.
    #[error("{0}")]
    Status(ServerError),
    /// The server refused the device's credentials (401) or the readings'
    /// device (403). The readings stay buffered: this usually means a token
    /// being rotated or a provisioning mistake, which an operator must fix.
    #[error("credentials refused: {0}")]
    Unauthorized(ServerError),
    /// The send failed `retries` times after its first attempt and gave up.
    /// The readings stay buffered for the next flush.
    #[error("gave up after {retries} retries (last: {cause}): {last}")]
    GaveUp {
        /// Retries made (the policy's `max_retries`).
        retries: u32,
        /// What the last attempt ran into.
        cause: RetryCause,
        /// The last attempt's error.
        #[source]
        last: Box<Error>,
    },
}

impl Error {
    /// Whether retrying the same request later may succeed: connection
    /// errors, timeouts, HTTP 408, 429 and 5xx, and MQTT's transient
    /// reason codes.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Tls { .. }
            | Error::Timeout { .. }
            | Error::Io(_)
            | Error::Protocol(_)
            | Error::Mqtt { .. } => true,
            Error::Status(s) => is_transient_status(s.status),
            _ => false,
        }
    }

    /// Whether the server refused the credentials (401/403).
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Unauthorized(_))
    }

    /// Whether the retries of a send were exhausted (readings still buffered).
    pub fn is_gave_up(&self) -> bool {
        matches!(self, Error::GaveUp { .. })
    }

    /// Whether a reading was not stored because the buffer is full.
    pub fn is_buffer_full(&self) -> bool {
        matches!(self, Error::BufferFull { .. })
    }

    /// Whether the reading itself is at fault (invalid, wrong device,
    /// duplicate `seq`): sending it again will not help.
    pub fn is_bad_reading(&self) -> bool {
        matches!(
            self,
            Error::InvalidReading(_) | Error::WrongDevice { .. } | Error::DuplicateSeq(_)
        )
    }

    /// The server's error body, for errors that carry one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Status(s) | Error::Unauthorized(s) => Some(s),
            Error::GaveUp { last, .. } => last.server_error(),
            _ => None,
        }
    }

    /// The server's requested wait before a retry, for errors that carry one.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Mqtt { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The cause to report in a retry event, for transient errors.
    pub(crate) fn retry_cause(&self) -> RetryCause {
        match self {
            Error::Connect { .. } => RetryCause::Connect,
            Error::Tls { .. } => RetryCause::Tls,
            Error::Timeout { phase, .. } if *phase == "connect" => RetryCause::ConnectTimeout,
            Error::Timeout { .. } => RetryCause::RequestTimeout,
            Error::Protocol(_) => RetryCause::Protocol,
            Error::Status(s) => RetryCause::Status(s.status),
            Error::Mqtt { code, .. } => RetryCause::Mqtt(*code),
            _ => RetryCause::ConnectionLost,
        }
    }
}

/// Statuses worth retrying: 408, 429 and every 5xx.
pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> Error {
        Error::Status(ServerError {
            status: s,
            ..ServerError::default()
        })
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(status(s).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 415, 422] {
            assert!(!status(s).is_transient(), "{s}");
        }
        assert!(Error::Io(io::Error::other("x")).is_transient());
        assert!(!Error::DuplicateSeq(1).is_transient());
        assert!(Error::DuplicateSeq(1).is_bad_reading());
    }
}
