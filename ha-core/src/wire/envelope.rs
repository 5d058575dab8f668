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

/// Readings serialised once, to be joined with other requests' readings
/// into one envelope by an [`EnvelopeWriter`] without encoding them again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedReadings {
    /// The readings as JSON objects separated by commas, no brackets.
    json: Vec<u8>,
    count: usize,
}

impl EncodedReadings {
    /// Encodes `readings` in the current format.
    pub fn encode(readings: &[Reading]) -> Self {
        let mut json = Vec::with_capacity(readings.len() * 96);
        for (i, r) in readings.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            // Serialising plain structs of strings and finite numbers cannot fail.
            if let Err(e) = serde_json::to_writer(&mut json, r) {
                unreachable!("serialising a reading failed: {e}");
            }
        }
        EncodedReadings {
            json,
            count: readings.len(),
        }
    }

    /// How many readings.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the encoded readings in bytes.
    pub fn byte_len(&self) -> usize {
        self.json.len()
    }
}

/// Builds one envelope out of separately encoded parts: the bytes equal
/// [`Envelope::encode`] of all their readings in the order pushed.
#[derive(Debug)]
pub struct EnvelopeWriter {
    buf: Vec<u8>,
    readings: usize,
}

impl EnvelopeWriter {
    /// An envelope with no readings yet.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(format!(r#"{{"v":{FORMAT_VERSION},"readings":["#).as_bytes());
        EnvelopeWriter { buf, readings: 0 }
    }

    /// Appends `part`'s readings.
    pub fn push(&mut self, part: &EncodedReadings) {
        if part.is_empty() {
            return;
        }
        if self.readings > 0 {
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(&part.json);
        self.readings += part.count;
    }

    /// Readings pushed so far.
    pub fn readings(&self) -> usize {
        self.readings
    }

    /// Size of the finished envelope in bytes, were it finished now.
    pub fn bytes(&self) -> usize {
        self.buf.len() + 2
    }

    /// The envelope.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"]}");
        self.buf
    }
}

impl Default for EnvelopeWriter {
    fn default() -> Self {
        Self::new()
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
    fn a_written_envelope_equals_the_encoding_of_all_its_readings() {
        let reading = |device: &str, seq: u64| Reading {
            device_id: device.into(),
            seq,
            ts: Timestamp::from_unix_micros(1_795_694_400_000_000 + seq as i64),
            metrics: vec![
                Metric::new("pulse", 60.0 + seq as f64),
                Metric::new("t", -0.5),
            ],
        };
        let a = vec![reading("dev-1", 1), reading("dev-1", 2)];
        let b = vec![reading("dev-2", 7)];
        let c = vec![
            reading("dev-3", 9),
            reading("dev-3", 10),
            reading("dev-3", 11),
        ];
        let mut writer = EnvelopeWriter::new();
        for part in [&a, &Vec::new(), &b, &c] {
            writer.push(&EncodedReadings::encode(part));
        }
        assert_eq!(writer.readings(), 6);
        let expected_len = writer.bytes();
        let bytes = writer.finish();
        assert_eq!(bytes.len(), expected_len);
        let all: Vec<Reading> = a.into_iter().chain(b).chain(c).collect();
        assert_eq!(bytes, Envelope::encode(&all));
        assert_eq!(Envelope::decode(&bytes).unwrap().readings, all);
        assert_eq!(EnvelopeWriter::new().finish(), Envelope::encode(&[]));
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
