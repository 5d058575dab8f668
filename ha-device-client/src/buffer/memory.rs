//! The in-memory buffer: bounded, ordered by `seq`, lost on restart.

use std::collections::BTreeMap;

use super::held::{Release, default_hold_limits};
use super::refusal::ClockRefusal;
use super::{Buffer, BufferLimits, EncodedReading, OverflowPolicy, Pushed};
use crate::error::Error;

/// A [`Buffer`] in RAM, with a holding area for clock refusals (see the
/// [module docs](super#clock-refusals)). Also the index the `FileBuffer`
/// keeps of its file.
#[derive(Clone, Debug)]
pub struct MemoryBuffer {
    limits: BufferLimits,
    readings: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
    hold_limits: BufferLimits,
    /// Created with the first held reading.
    holding: Option<Box<Holding>>,
}

impl Default for MemoryBuffer {
    fn default() -> Self {
        MemoryBuffer::new(BufferLimits::default())
    }
}

impl MemoryBuffer {
    /// An empty buffer with these bounds (and the default bounds,
    /// [`default_hold_limits`], for each holding area).
    pub fn new(limits: BufferLimits) -> Self {
        MemoryBuffer {
            limits,
            readings: BTreeMap::new(),
            bytes: 0,
            hold_limits: default_hold_limits(),
            holding: None,
        }
    }

    /// Bounds each holding area (readings refused with `ts_in_future`,
    /// and with `ts_too_old`) by `limits` instead of the default.
    pub fn with_hold_limits(mut self, limits: BufferLimits) -> Self {
        self.hold_limits = limits;
        self.holding = None;
        self
    }

    /// The bounds.
    pub fn limits(&self) -> BufferLimits {
        self.limits
    }

    /// Which buffered readings pushing `reading` would drop, or why it
    /// cannot be stored. Changes nothing.
    pub(crate) fn plan_push(&self, reading: &EncodedReading) -> Result<Vec<u64>, Error> {
        if self.readings.contains_key(&reading.seq()) {
            return Err(Error::DuplicateSeq(reading.seq()));
        }
        let full = || Error::BufferFull {
            seq: reading.seq(),
            count: self.readings.len(),
            bytes: self.bytes,
        };
        let limits = self.limits;
        if limits.max_readings == 0 || reading.len() > limits.max_bytes {
            return Err(full());
        }
        let mut count = self.readings.len() + 1;
        let mut bytes = self.bytes + reading.len();
        let mut dropped = Vec::new();
        let mut oldest = self.readings.iter();
        while count > limits.max_readings || bytes > limits.max_bytes {
            if limits.overflow == OverflowPolicy::RejectNew {
                return Err(full());
            }
            match oldest.next() {
                Some((seq, json)) => {
                    dropped.push(*seq);
                    count -= 1;
                    bytes -= json.len();
                }
                None => return Err(full()),
            }
        }
        Ok(dropped)
    }

    /// Stores `reading` after dropping `dropped`, as planned by `plan_push`.
    pub(crate) fn apply_push(&mut self, reading: EncodedReading, dropped: &[u64]) {
        self.remove(dropped);
        self.bytes += reading.json.len();
        self.readings.insert(reading.seq, reading.json);
    }

    pub(crate) fn remove(&mut self, seqs: &[u64]) {
        for seq in seqs {
            if let Some(json) = self.readings.remove(seq) {
                self.bytes -= json.len();
            }
        }
    }

    /// Size of the buffered reading `seq`, if it is buffered.
    pub(crate) fn size_of(&self, seq: u64) -> Option<usize> {
        self.readings.get(&seq).map(Vec::len)
    }

    /// Every reading, in `seq` order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.readings.iter().map(|(s, j)| (*s, j.as_slice()))
    }
}

impl Buffer for MemoryBuffer {
    fn push(&mut self, reading: EncodedReading) -> Result<Pushed, Error> {
        let dropped = self.plan_push(&reading)?;
        self.apply_push(reading, &dropped);
        Ok(Pushed { dropped })
    }

    fn peek(&self, max_count: usize, max_bytes: usize) -> Result<Vec<EncodedReading>, Error> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (seq, json) in &self.readings {
            if out.len() >= max_count.max(1) {
                break;
            }
            bytes += json.len() + 1;
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(EncodedReading::from_parts(*seq, json.clone()));
        }
        Ok(out)
    }

    fn acknowledge(&mut self, seqs: &[u64]) -> Result<(), Error> {
        self.remove(seqs);
        Ok(())
    }

    fn hold(
        &mut self,
        readings: &[EncodedReading],
        refusal: ClockRefusal,
    ) -> Result<Option<Pushed>, Error> {
        let limits = self.hold_limits;
        let holding = self
            .holding
            .get_or_insert_with(|| Box::new(Holding::new(limits)));
        let pushed = holding.hold(readings, refusal)?;
        let seqs: Vec<u64> = readings.iter().map(EncodedReading::seq).collect();
        self.remove(&seqs);
        Ok(Some(pushed))
    }

    fn held(&self, refusal: ClockRefusal) -> Result<Vec<EncodedReading>, Error> {
        match &self.holding {
            Some(h) => h.area(refusal).peek(usize::MAX, usize::MAX),
            None => Ok(Vec::new()),
        }
    }

    fn held_len(&self, refusal: ClockRefusal) -> usize {
        self.holding.as_ref().map_or(0, |h| h.area(refusal).len())
    }

    fn release(&mut self, refusal: ClockRefusal) -> Result<Pushed, Error> {
        let Some(mut holding) = self.holding.take() else {
            return Ok(Pushed::default());
        };
        let mut out = Pushed::default();
        let mut moved = Vec::new();
        for r in holding.area(refusal).peek(usize::MAX, usize::MAX)? {
            let seq = r.seq();
            match Release::decide(seq, self.plan_push(&r)) {
                Ok(Release::Push(dropped)) => {
                    self.apply_push(r, &dropped);
                    out.dropped.extend(dropped);
                }
                Ok(Release::AlreadyThere) => {}
                Ok(Release::Lost) => out.dropped.push(seq),
                Ok(Release::Stop) => break,
                Err(e) => {
                    holding.area_mut(refusal).remove(&moved);
                    self.holding = Some(holding);
                    return Err(e);
                }
            }
            moved.push(seq);
        }
        holding.area_mut(refusal).remove(&moved);
        self.holding = Some(holding);
        Ok(out)
    }

    fn forget_held(&mut self, seqs: &[u64]) -> Result<(), Error> {
        if let Some(h) = &mut self.holding {
            h.forget(seqs);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.readings.len()
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The two holding areas of a [`MemoryBuffer`].
#[derive(Clone, Debug)]
pub(crate) struct Holding {
    in_future: MemoryBuffer,
    too_old: MemoryBuffer,
}

impl Holding {
    pub(crate) fn new(limits: BufferLimits) -> Self {
        Holding {
            in_future: MemoryBuffer::new(limits),
            too_old: MemoryBuffer::new(limits),
        }
    }

    pub(crate) fn area(&self, refusal: ClockRefusal) -> &MemoryBuffer {
        match refusal {
            ClockRefusal::InFuture => &self.in_future,
            ClockRefusal::TooOld => &self.too_old,
        }
    }

    pub(crate) fn area_mut(&mut self, refusal: ClockRefusal) -> &mut MemoryBuffer {
        match refusal {
            ClockRefusal::InFuture => &mut self.in_future,
            ClockRefusal::TooOld => &mut self.too_old,
        }
    }

    /// Holds `readings`; a reading held already stays (idempotent). A
    /// reading larger than the whole area is dropped (reported).
    pub(crate) fn hold(
        &mut self,
        readings: &[EncodedReading],
        refusal: ClockRefusal,
    ) -> Result<Pushed, Error> {
        let area = self.area_mut(refusal);
        let mut pushed = Pushed::default();
        for r in readings {
            match area.plan_push(r) {
                Ok(dropped) => {
                    area.apply_push(r.clone(), &dropped);
                    pushed.dropped.extend(dropped);
                }
                Err(Error::DuplicateSeq(_)) => {}
                Err(e) if e.is_buffer_full() => pushed.dropped.push(r.seq()),
                Err(e) => return Err(e),
            }
        }
        Ok(pushed)
    }

    /// Removes `seqs` from both areas.
    pub(crate) fn forget(&mut self, seqs: &[u64]) {
        self.in_future.remove(seqs);
        self.too_old.remove(seqs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::conformance;

    #[test]
    fn conformance() {
        conformance::run_all(MemoryBuffer::new);
    }
}
