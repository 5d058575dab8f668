//! The store-and-forward buffer: readings wait here, in `seq` order, until a
//! 2xx covers them.
//!
//! [`Buffer`] is small so that firmware can back it with its own flash
//! layout; [`MemoryBuffer`] and the crash-safe append-only [`FileBuffer`]
//! ship with the crate. Both are bounded by a reading count and a byte
//! count ([`BufferLimits`]), with an explicit [`OverflowPolicy`].

mod file;
mod memory;

pub use file::{FileBuffer, Recovery};
pub use memory::MemoryBuffer;

use ha_core::wire::Reading;

use crate::error::{Error, ServerError};

/// A validated reading in its wire form (the JSON object that goes into
/// `readings`), as the buffer keeps it: batches are built by joining these
/// bytes, never re-serialising.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedReading {
    seq: u64,
    json: Vec<u8>,
}

impl EncodedReading {
    /// Encodes `reading` (which should have passed `Reading::validate`).
    pub fn encode(reading: &Reading) -> Self {
        // A reading is plain strings, integers and floats: serialising it
        // into memory cannot fail.
        let json = serde_json::to_vec(reading).unwrap_or_default();
        EncodedReading {
            seq: reading.seq,
            json,
        }
    }

    /// Rebuilds an encoded reading from what [`seq`](Self::seq) and
    /// [`json`](Self::json) returned, e.g. when a buffer implementation
    /// reads it back from storage. `json` must be a reading's wire form
    /// with this `seq`, or the server will reject it.
    pub fn from_parts(seq: u64, json: Vec<u8>) -> Self {
        EncodedReading { seq, json }
    }

    /// The reading's `seq`.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The reading's wire form.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// Size of the wire form in bytes: what the byte bound counts.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Whether the wire form is empty (never, for an encoded reading).
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// Decodes the reading back.
    pub fn decode(&self) -> Result<Reading, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }
}

/// What a full buffer does with one more reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Drop the oldest buffered readings to make room (the default: on a
    /// medical device, what happens now matters more than last week).
    #[default]
    DropOldest,
    /// Refuse the new reading ([`Error::BufferFull`]).
    RejectNew,
}

/// The bounds of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferLimits {
    /// Most readings held.
    pub max_readings: usize,
    /// Most bytes held, counted as the readings' wire-form sizes.
    pub max_bytes: usize,
    /// What to do when one more reading would break a bound.
    pub overflow: OverflowPolicy,
}

impl Default for BufferLimits {
    /// 10 000 readings, 4 MiB, drop oldest.
    fn default() -> Self {
        BufferLimits {
            max_readings: 10_000,
            max_bytes: 4 << 20,
            overflow: OverflowPolicy::DropOldest,
        }
    }
}

/// What storing a reading did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// `seq`s of older readings dropped to make room (`DropOldest`).
    pub dropped: Vec<u64>,
}

/// Where readings wait until the server has acknowledged them.
///
/// Contract, for every implementation:
///
/// - Readings are returned by [`peek`](Buffer::peek) in ascending `seq`
///   order, whatever the order they were pushed in.
/// - A reading stays until [`acknowledge`](Buffer::acknowledge) or
///   [`reject`](Buffer::reject) names it, or an overflow drops it (which
///   `push` reports). Nothing else removes readings.
/// - On error, the buffer is unchanged: a failed `push` stored nothing and
///   dropped nothing, a failed `acknowledge` removed nothing (the readings
///   will be sent again, which the server deduplicates by `(device_id, seq)`).
/// - Methods are synchronous and should be quick: the client calls them
///   between network operations.
pub trait Buffer {
    /// Stores a reading.
    ///
    /// Errors: [`Error::DuplicateSeq`] if its `seq` is buffered already;
    /// [`Error::BufferFull`] if it does not fit and the policy is
    /// `RejectNew` (or it is larger than the whole byte bound);
    /// [`Error::Storage`] if the backing store failed.
    fn push(&mut self, reading: EncodedReading) -> Result<Pushed, Error>;

    /// The oldest readings, in `seq` order: at most `max_count` of them and,
    /// counting each as its size plus one (the comma), at most `max_bytes`
    /// — but always at least one if the buffer is not empty.
    ///
    /// Errors: [`Error::Storage`] if the backing store failed.
    fn peek(&self, max_count: usize, max_bytes: usize) -> Result<Vec<EncodedReading>, Error>;

    /// Removes the readings with these `seq`s: a 2xx covered them. Unknown
    /// `seq`s are ignored.
    ///
    /// Errors: [`Error::Storage`]; the readings then stay.
    fn acknowledge(&mut self, seqs: &[u64]) -> Result<(), Error>;

    /// Moves these readings out of the buffer because the server refused
    /// them for good (`reason`). Implementations with storage keep them in
    /// a rejected-readings file; the default just acknowledges them (the
    /// client reports them in an event either way).
    ///
    /// Errors: [`Error::Storage`]; the readings then stay.
    fn reject(&mut self, readings: &[EncodedReading], reason: &ServerError) -> Result<(), Error> {
        let _ = reason;
        let seqs: Vec<u64> = readings.iter().map(EncodedReading::seq).collect();
        self.acknowledge(&seqs)
    }

    /// Readings held.
    fn len(&self) -> usize;

    /// Whether no reading is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (wire-form sizes).
    fn bytes(&self) -> usize;
}

impl<B: Buffer + ?Sized> Buffer for Box<B> {
    fn push(&mut self, reading: EncodedReading) -> Result<Pushed, Error> {
        (**self).push(reading)
    }
    fn peek(&self, max_count: usize, max_bytes: usize) -> Result<Vec<EncodedReading>, Error> {
        (**self).peek(max_count, max_bytes)
    }
    fn acknowledge(&mut self, seqs: &[u64]) -> Result<(), Error> {
        (**self).acknowledge(seqs)
    }
    fn reject(&mut self, readings: &[EncodedReading], reason: &ServerError) -> Result<(), Error> {
        (**self).reject(readings, reason)
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn bytes(&self) -> usize {
        (**self).bytes()
    }
}

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
