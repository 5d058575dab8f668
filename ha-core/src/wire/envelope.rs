//! The message format on the queue, versioned so that old and new replicas
//! can run side by side during a rolling update.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::reading::Reading;

/// The format version this build writes.
///
/// Readers accept every version in [`SUPPORTED_FORMATS`]. A rolling update
/// that introduces a new format first rolls out readers that understand it,
/// then switches writers over (see the operations guide).
pub const FORMAT_VERSION: u16 = 1;

/// The format versions this build can read.
pub const SUPPORTED_FORMATS: &[u16] = &[1];

/// Why a queue message could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Written by a newer (or unknown) producer. Not the message's fault:
    /// another replica may understand it.
    #[error("unsupported message format version {0} (this build reads {SUPPORTED_FORMATS:?})")]
    UnsupportedVersion(u16),
    /// Not a message of any known format: it can never be processed.
    #[error("malformed queue message: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl EnvelopeError {
    /// Whether the message can never be processed by any replica (a poison
    /// message), as opposed to one a newer replica may understand.
    pub fn is_poison(&self) -> bool {
        matches!(self, EnvelopeError::Malformed(_))
    }
}

/// A batch of readings as carried by one queue message:
/// `{"v":1,"readings":[...]}`.
///
/// Readings in an envelope were validated at ingest; they all belong to
/// devices of the same partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The readings.
    pub readings: Vec<Reading>,
}

#[derive(Serialize)]
struct Out<'a> {
    v: u16,
    readings: &'a [Reading],
}

#[derive(Deserialize)]
struct In<'a> {
    v: u16,
    #[serde(borrow)]
    readings: &'a RawValue,
}

impl Envelope {
    /// Encodes `readings` in the current format.
    pub fn encode(readings: &[Reading]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64 + readings.len() * 96);
        // Serialising plain structs of strings and finite numbers cannot fail.
        if let Err(e) = serde_json::to_writer(
            &mut buf,
            &Out {
                v: FORMAT_VERSION,
                readings,
            },
        ) {
            unreachable!("serialising readings failed: {e}");
        }
        buf
    }

    /// Decodes a message of any supported format.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let head: In<'_> = serde_json::from_slice(bytes)?;
        match head.v {
            1 => Ok(Envelope {
                readings: serde_json::from_str(head.readings.get())?,
            }),
            v => Err(EnvelopeError::UnsupportedVersion(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Metric, Timestamp};

    #[test]
    fn round_trips_and_carries_its_version() {
        let readings = vec![Reading {
            device_id: "dev-1".into(),
            seq: 9,
            ts: Timestamp::from_unix_micros(1_795_694_400_000_001),
            metrics: vec![Metric::new("pulse", 72.5), Metric::new("spo2", 0.1 + 0.2)],
        }];
        let bytes = Envelope::encode(&readings);
        assert!(bytes.starts_with(br#"{"v":1,"#));
        assert_eq!(Envelope::decode(&bytes).unwrap().readings, readings);
    }

    #[test]
    fn unknown_versions_and_garbage_are_told_apart() {
        let e = Envelope::decode(br#"{"v":2,"readings":{"new":"shape"}}"#).unwrap_err();
        assert!(matches!(e, EnvelopeError::UnsupportedVersion(2)));
        assert!(!e.is_poison());
        for bad in [
            &b"nope"[..],
            br#"{"readings":[]}"#,
            br#"{"v":1,"readings":[{}]}"#,
        ] {
            assert!(Envelope::decode(bad).unwrap_err().is_poison());
        }
    }
}
