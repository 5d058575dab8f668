//! The wire model: what a device sends and what travels on the queue.
//!
//! A [`Reading`] is identified by `(device_id, seq)`; each of its metrics is
//! stored under `(device_id, seq, metric)`. The ingest body is
//! `{"readings":[ ... ]}`:
//!
//! ```
//! use ha_core::wire::{IngestBody, Timestamp};
//!
//! let body = br#"{"readings":[{"device_id":"dev-00001","seq":17,"ts":"2026-11-26T12:00:00Z","metrics":{"pulse":72.5}}]}"#;
//! let now = Timestamp::parse("2026-11-26T12:00:00Z").unwrap();
//! let parsed = IngestBody::parse(body, now).unwrap();
//! assert_eq!(parsed.readings[0].metric("pulse"), Some(72.5));
//! ```
//!
//! | limit | value |
//! |---|---|
//! | body | at most [`MAX_BODY_BYTES`] (1 MiB) |
//! | readings per body | 1 ..= [`MAX_READINGS`] (1000) |
//! | `device_id` | 1 ..= 64 characters of `[A-Za-z0-9._:-]` |
//! | `seq` | 0 ..= 2^63 − 1 (databases have no unsigned 64-bit column) |
//! | `ts` | RFC 3339, UTC, at most [`MAX_FUTURE_SKEW`] (5 min) ahead |
//! | metrics per reading | 1 ..= [`MAX_METRICS`] (32), names `[A-Za-z0-9_.-]{1,64}`, finite values |

mod envelope;
mod error;
mod reading;
mod timestamp;

use std::time::Duration;

pub use envelope::{
    EncodedReadings, Envelope, EnvelopeError, EnvelopeWriter, FORMAT_VERSION, SUPPORTED_FORMATS,
};
pub use error::{ParseError, Rule, ValidationError};
pub use reading::{IngestBody, Metric, Reading, UncheckedBody, is_valid_device_id};
pub use timestamp::{Timestamp, TimestampError};

/// Largest accepted ingest body, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most readings in one ingest body.
pub const MAX_READINGS: usize = 1000;
/// Most metrics in one reading.
pub const MAX_METRICS: usize = 32;
/// Longest device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;
/// Longest metric name, in bytes.
pub const MAX_METRIC_NAME_LEN: usize = 64;
/// Largest `seq`: 2^63 − 1, the largest value of a signed 64-bit column.
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// How far ahead of the server clock a reading's `ts` may be.
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(300);
