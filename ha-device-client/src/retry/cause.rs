//! Why a send is retried: [`RetryCause`], reported in retry events and in
//! [`Error::GaveUp`](crate::Error::GaveUp). Depends on nothing else in the
//! crate, so that errors, events and the state machine can all name it.

use std::fmt;

/// Why a send is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryCause {
    /// The TCP connection could not be opened.
    Connect,
    /// The TCP connect or TLS handshake took longer than the connect timeout.
    ConnectTimeout,
    /// The TLS handshake failed.
    Tls,
    /// The connection broke while sending or waiting for the answer.
    ConnectionLost,
    /// No complete answer within the request timeout.
    RequestTimeout,
    /// The answer was not valid HTTP (or MQTT).
    Protocol,
    /// The server answered 408, 429 or 5xx.
    Status(u16),
    /// MQTT: the server answered with this transient reason code (a
    /// CONNACK or PUBACK 0x97 quota exceeded, 0x80 unspecified error, ...)
    /// or closed the session with it (DISCONNECT 0x88 server unavailable,
    /// 0x89 server busy, ...).
    Mqtt(u8),
}

impl fmt::Display for RetryCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryCause::Connect => f.write_str("connect failed"),
            RetryCause::ConnectTimeout => f.write_str("connect timed out"),
            RetryCause::Tls => f.write_str("TLS handshake failed"),
            RetryCause::ConnectionLost => f.write_str("connection lost"),
            RetryCause::RequestTimeout => f.write_str("request timed out"),
            RetryCause::Protocol => f.write_str("invalid response"),
            RetryCause::Status(s) => write!(f, "HTTP {s}"),
            RetryCause::Mqtt(code) => write!(f, "MQTT reason code {code:#04x}"),
        }
    }
}
