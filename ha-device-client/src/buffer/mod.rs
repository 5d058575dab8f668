//! The store-and-forward buffer: readings wait here, in `seq` order, until a
//! 2xx covers them.
//!
//! [`Buffer`] is small so that firmware can back it with its own flash
//! layout; [`MemoryBuffer`] and the crash-safe append-only [`FileBuffer`]
//! ship with the crate. Both are bounded by a reading count and a byte
//! count ([`BufferLimits`]), with an explicit [`OverflowPolicy`].
//!
//! # Clock refusals
//!
//! A reading the server refuses with `ts_in_future` or `ts_too_old` is
//! not malformed: the clock is at fault. Buffers with a holding area (both
//! shipped ones) keep such readings apart from the flush order, bounded on
//! their own, instead of sinking them with the rejected ones:
//!
//! | refusal | held | then |
//! |---|---|---|
//! | `ts_in_future` | up to 1,000 readings / 256 KiB, oldest dropped first (counted, [`Event::Held`](crate::Event::Held)) | back into the flush order after the client's clock-retry interval (default 60 s): the server's clock catches up |
//! | `ts_too_old` | same bound, separately | until the application exports or re-stamps them ([`Buffer::held`], [`Buffer::forget_held`]) or sends them again ([`Buffer::release`]) |
//!
//! [`FileBuffer`] keeps its holding areas in `<path>.held-future` and
//! `<path>.held-old` (same record format, crash-safe), so held readings
//! survive a restart; [`FileOptions`] sets their bounds.

mod file;
mod held;
mod memory;
mod refusal;

pub use file::{FileBuffer, FileOptions, Recovery};
pub use held::default_hold_limits;
pub use memory::MemoryBuffer;
pub use refusal::ClockRefusal;

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

    /// Moves these readings, refused by the server for a clock rule, out
    /// of the flush order into the holding area for `refusal` (see
    /// [`ClockRefusal`] and the [module docs](self#clock-refusals)).
    /// Returns the `seq`s the holding area's bound dropped (lost,
    /// oldest first), or `None` if this buffer has no holding area — the
    /// default, which changes nothing: the client then rejects the
    /// readings as before.
    ///
    /// Errors: [`Error::Storage`]; the readings then stay in the flush order.
    fn hold(
        &mut self,
        readings: &[EncodedReading],
        refusal: ClockRefusal,
    ) -> Result<Option<Pushed>, Error> {
        let _ = (readings, refusal);
        Ok(None)
    }

    /// The readings held for `refusal`, in `seq` order (to export or
    /// re-stamp them).
    ///
    /// Errors: [`Error::Storage`].
    fn held(&self, refusal: ClockRefusal) -> Result<Vec<EncodedReading>, Error> {
        let _ = refusal;
        Ok(Vec::new())
    }

    /// How many readings are held for `refusal`.
    fn held_len(&self, refusal: ClockRefusal) -> usize {
        let _ = refusal;
        0
    }

    /// Moves every reading held for `refusal` back into the flush order;
    /// returns the `seq`s this dropped (the main buffer's overflow policy
    /// applies). With `RejectNew`, what does not fit stays held.
    ///
    /// Errors: [`Error::Storage`]; what was not moved stays held.
    fn release(&mut self, refusal: ClockRefusal) -> Result<Pushed, Error> {
        let _ = refusal;
        Ok(Pushed::default())
    }

    /// Removes these held readings for good (the application exported or
    /// re-stamped them). Unknown `seq`s are ignored.
    ///
    /// Errors: [`Error::Storage`]; the readings then stay held.
    fn forget_held(&mut self, seqs: &[u64]) -> Result<(), Error> {
        let _ = seqs;
        Ok(())
    }

    /// Readings in the flush order (held ones are not counted).
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
    fn hold(
        &mut self,
        readings: &[EncodedReading],
        refusal: ClockRefusal,
    ) -> Result<Option<Pushed>, Error> {
        (**self).hold(readings, refusal)
    }
    fn held(&self, refusal: ClockRefusal) -> Result<Vec<EncodedReading>, Error> {
        (**self).held(refusal)
    }
    fn held_len(&self, refusal: ClockRefusal) -> usize {
        (**self).held_len(refusal)
    }
    fn release(&mut self, refusal: ClockRefusal) -> Result<Pushed, Error> {
        (**self).release(refusal)
    }
    fn forget_held(&mut self, seqs: &[u64]) -> Result<(), Error> {
        (**self).forget_held(seqs)
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
