//! The in-memory buffer: bounded, ordered by `seq`, lost on restart.

use std::collections::BTreeMap;

use super::{Buffer, BufferLimits, EncodedReading, OverflowPolicy, Pushed};
use crate::error::Error;

/// A [`Buffer`] in RAM. Also the index the `FileBuffer`
/// keeps of its file.
#[derive(Clone, Debug, Default)]
pub struct MemoryBuffer {
    limits: BufferLimits,
    readings: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl MemoryBuffer {
    /// An empty buffer with these bounds.
    pub fn new(limits: BufferLimits) -> Self {
        MemoryBuffer {
            limits,
            readings: BTreeMap::new(),
            bytes: 0,
        }
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

    fn len(&self) -> usize {
        self.readings.len()
    }

    fn bytes(&self) -> usize {
        self.bytes
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
