//! The public buffer conformance suite (feature `test-util`) run against a
//! buffer written outside the crate, as a user would, and shown to catch a
//! buffer that breaks the contract.
//!
//! `cargo test -p ha-device-client --test conformance`

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use ha_device_client::buffer::conformance;
use ha_device_client::{Buffer, BufferLimits, EncodedReading, Error, OverflowPolicy, Pushed};

/// A user's buffer: a sorted map with the crate's bounds. `forget_order`
/// breaks the contract (peek in push order instead of `seq` order).
struct MapBuffer {
    limits: BufferLimits,
    readings: BTreeMap<u64, Vec<u8>>,
    pushed: Vec<u64>,
    forget_order: bool,
}

impl MapBuffer {
    fn new(limits: BufferLimits) -> Self {
        MapBuffer {
            limits,
            readings: BTreeMap::new(),
            pushed: Vec::new(),
            forget_order: false,
        }
    }
}

impl Buffer for MapBuffer {
    fn push(&mut self, reading: EncodedReading) -> Result<Pushed, Error> {
        if self.readings.contains_key(&reading.seq()) {
            return Err(Error::DuplicateSeq(reading.seq()));
        }
        let full = Error::BufferFull {
            seq: reading.seq(),
            count: self.len(),
            bytes: self.bytes(),
        };
        if reading.len() > self.limits.max_bytes || self.limits.max_readings == 0 {
            return Err(full);
        }
        let mut dropped = Vec::new();
        let mut oldest = self.readings.iter();
        let (mut count, mut bytes) = (self.len() + 1, self.bytes() + reading.len());
        while count > self.limits.max_readings || bytes > self.limits.max_bytes {
            if self.limits.overflow == OverflowPolicy::RejectNew {
                return Err(full);
            }
            let (seq, json) = oldest.next().expect("something to drop");
            dropped.push(*seq);
            count -= 1;
            bytes -= json.len();
        }
        self.acknowledge(&dropped)?;
        self.pushed.push(reading.seq());
        self.readings.insert(reading.seq(), reading.json().to_vec());
        Ok(Pushed { dropped })
    }

    fn peek(&self, max_count: usize, max_bytes: usize) -> Result<Vec<EncodedReading>, Error> {
        let order: Vec<u64> = if self.forget_order {
            self.pushed.clone()
        } else {
            self.readings.keys().copied().collect()
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for seq in order {
            let json = &self.readings[&seq];
            bytes += json.len() + 1;
            if out.len() >= max_count.max(1) || (bytes > max_bytes && !out.is_empty()) {
                break;
            }
            out.push(EncodedReading::from_parts(seq, json.clone()));
        }
        Ok(out)
    }

    fn acknowledge(&mut self, seqs: &[u64]) -> Result<(), Error> {
        for seq in seqs {
            self.readings.remove(seq);
        }
        self.pushed.retain(|s| !seqs.contains(s));
        Ok(())
    }

    fn len(&self) -> usize {
        self.readings.len()
    }

    fn bytes(&self) -> usize {
        self.readings.values().map(Vec::len).sum()
    }
}

#[test]
fn a_user_buffer_passes_the_suite() {
    conformance::run_all(MapBuffer::new);
}

#[test]
fn the_suite_catches_a_buffer_that_breaks_the_contract() {
    let result = catch_unwind(AssertUnwindSafe(|| {
        conformance::run_all(|limits| MapBuffer {
            forget_order: true,
            ..MapBuffer::new(limits)
        })
    }));
    assert!(result.is_err(), "peeking in push order must fail the suite");
}
