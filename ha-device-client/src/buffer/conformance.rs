//! The test suite every [`Buffer`] must pass (feature `test-util`): the
//! crate runs it against [`MemoryBuffer`](super::MemoryBuffer) and
//! [`FileBuffer`](super::FileBuffer); run it against your own buffer (on
//! flash, in a database) from a test:
//!
//! ```
//! use ha_device_client::MemoryBuffer;
//! use ha_device_client::buffer::conformance;
//!
//! // `make` builds a fresh, empty buffer with the given bounds.
//! conformance::run_all(MemoryBuffer::new);
//! ```
//!
//! Each case panics (fails the test) with a message naming what broke.
#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a failed step fails the test"
)]

use ha_core::wire::{Metric, Reading, Timestamp};

use super::{Buffer, BufferLimits, ClockRefusal, EncodedReading, OverflowPolicy};
use crate::error::{Error, ServerError};

/// The reading with this `seq` the suite pushes: device `dev-1`, one
/// metric, a fixed time stamp (the same bytes for the same `seq`).
pub fn reading(seq: u64) -> EncodedReading {
    EncodedReading::encode(&Reading {
        device_id: "dev-1".into(),
        seq,
        ts: Timestamp::from_unix_micros(1_795_694_400_000_000 + (seq % 1000) as i64 * 1_000_000),
        metrics: vec![Metric::new("pulse", 60.0 + (seq % 40) as f64)],
    })
}

fn seqs<B: Buffer>(b: &B) -> Vec<u64> {
    b.peek(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(EncodedReading::seq)
        .collect()
}

fn limits(max_readings: usize, max_bytes: usize, overflow: OverflowPolicy) -> BufferLimits {
    BufferLimits {
        max_readings,
        max_bytes,
        overflow,
    }
}

/// Runs every case against buffers made by `make`, each case on a fresh
/// buffer (`make` is called once per case with the bounds it needs).
pub fn run_all<B: Buffer>(mut make: impl FnMut(BufferLimits) -> B) {
    peeks_in_seq_order_within_bounds(make(BufferLimits::default()));
    acknowledge_removes_only_named(make(BufferLimits::default()));
    duplicates_are_refused(make(BufferLimits::default()));
    drop_oldest_by_count(make(limits(3, 1 << 20, OverflowPolicy::DropOldest)));
    let one = reading(0).len();
    drop_oldest_by_bytes(make(limits(100, 3 * one, OverflowPolicy::DropOldest)));
    reject_new(make(limits(3, 1 << 20, OverflowPolicy::RejectNew)));
    oversized_reading_never_fits(make(limits(10, one - 1, OverflowPolicy::DropOldest)));
    reject_removes(make(BufferLimits::default()));
    clock_refusals_are_held_apart(make(BufferLimits::default()));
    release_respects_the_main_bound(make(limits(3, 1 << 20, OverflowPolicy::DropOldest)));
}

fn peeks_in_seq_order_within_bounds<B: Buffer>(mut b: B) {
    assert!(b.is_empty());
    assert!(b.peek(10, 1000).unwrap().is_empty());
    for s in [5, 1, 3, 2, 4] {
        assert!(b.push(reading(s)).unwrap().dropped.is_empty());
    }
    assert_eq!(seqs(&b), [1, 2, 3, 4, 5]);
    assert_eq!(b.len(), 5);
    let size = reading(1).len();
    assert_eq!(b.bytes(), 5 * size);
    let got: Vec<u64> = b
        .peek(2, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq())
        .collect();
    assert_eq!(got, [1, 2]);
    let got = b.peek(10, 3 * (size + 1)).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], reading(1));
    // Always at least one.
    assert_eq!(b.peek(10, 1).unwrap().len(), 1);
    assert_eq!(b.peek(0, 1).unwrap().len(), 1);
}

fn acknowledge_removes_only_named<B: Buffer>(mut b: B) {
    for s in 0..6 {
        b.push(reading(s)).unwrap();
    }
    b.acknowledge(&[0, 2, 99]).unwrap();
    assert_eq!(seqs(&b), [1, 3, 4, 5]);
    assert_eq!(b.bytes(), 4 * reading(0).len());
    b.acknowledge(&[1, 3, 4, 5]).unwrap();
    assert!(b.is_empty());
    assert_eq!(b.bytes(), 0);
}

fn duplicates_are_refused<B: Buffer>(mut b: B) {
    b.push(reading(7)).unwrap();
    assert!(matches!(b.push(reading(7)), Err(Error::DuplicateSeq(7))));
    assert_eq!(seqs(&b), [7]);
}

fn drop_oldest_by_count<B: Buffer>(mut b: B) {
    for s in 10..13 {
        assert!(b.push(reading(s)).unwrap().dropped.is_empty());
    }
    assert_eq!(b.push(reading(13)).unwrap().dropped, [10]);
    assert_eq!(seqs(&b), [11, 12, 13]);
}

fn drop_oldest_by_bytes<B: Buffer>(mut b: B) {
    for s in 0..3 {
        b.push(reading(s)).unwrap();
    }
    assert_eq!(b.push(reading(3)).unwrap().dropped, [0]);
    assert_eq!(seqs(&b), [1, 2, 3]);
}

fn reject_new<B: Buffer>(mut b: B) {
    for s in 0..3 {
        b.push(reading(s)).unwrap();
    }
    let e = b.push(reading(3)).unwrap_err();
    assert!(e.is_buffer_full(), "{e}");
    assert_eq!(seqs(&b), [0, 1, 2]);
    b.acknowledge(&[0]).unwrap();
    b.push(reading(3)).unwrap();
    assert_eq!(seqs(&b), [1, 2, 3]);
}

fn oversized_reading_never_fits<B: Buffer>(mut b: B) {
    assert!(b.push(reading(1)).unwrap_err().is_buffer_full());
    assert!(b.is_empty());
}

fn reject_removes<B: Buffer>(mut b: B) {
    for s in 0..3 {
        b.push(reading(s)).unwrap();
    }
    let reason = ServerError {
        status: 422,
        code: "ts_in_future".into(),
        ..ServerError::default()
    };
    b.reject(&[reading(1)], &reason).unwrap();
    assert_eq!(seqs(&b), [0, 2]);
}

/// For buffers with a holding area (`hold` returns `Some`); a buffer
/// without one must change nothing.
fn clock_refusals_are_held_apart<B: Buffer>(mut b: B) {
    for s in 0..5 {
        b.push(reading(s)).unwrap();
    }
    let Some(pushed) = b
        .hold(&[reading(1), reading(3)], ClockRefusal::InFuture)
        .unwrap()
    else {
        assert_eq!(seqs(&b), [0, 1, 2, 3, 4], "no holding area: nothing moves");
        assert_eq!(b.held_len(ClockRefusal::InFuture), 0);
        return;
    };
    assert!(pushed.dropped.is_empty());
    b.hold(&[reading(4)], ClockRefusal::TooOld).unwrap();
    assert_eq!(seqs(&b), [0, 2], "held readings leave the flush order");
    assert_eq!(b.len(), 2);
    assert_eq!(b.bytes(), 2 * reading(0).len());
    let held = |b: &B, r| {
        b.held(r)
            .unwrap()
            .iter()
            .map(EncodedReading::seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(held(&b, ClockRefusal::InFuture), [1, 3]);
    assert_eq!(held(&b, ClockRefusal::TooOld), [4]);
    assert_eq!(
        b.held(ClockRefusal::InFuture).unwrap()[0],
        reading(1),
        "bytes unchanged"
    );
    // Holding again what is held already changes nothing.
    b.hold(&[reading(1)], ClockRefusal::InFuture).unwrap();
    assert_eq!(b.held_len(ClockRefusal::InFuture), 2);
    // Acknowledging does not touch held readings.
    b.acknowledge(&[1, 3, 4]).unwrap();
    assert_eq!(b.held_len(ClockRefusal::InFuture), 2);
    assert!(
        b.release(ClockRefusal::InFuture)
            .unwrap()
            .dropped
            .is_empty()
    );
    assert_eq!(seqs(&b), [0, 1, 2, 3]);
    assert_eq!(b.held_len(ClockRefusal::InFuture), 0);
    assert_eq!(b.held_len(ClockRefusal::TooOld), 1);
    b.forget_held(&[4, 99]).unwrap();
    assert_eq!(b.held_len(ClockRefusal::TooOld), 0);
    assert_eq!(seqs(&b), [0, 1, 2, 3]);
}

/// Released readings obey the main bound: under `DropOldest` the oldest
/// of all (here the released ones) are the ones dropped, reported.
fn release_respects_the_main_bound<B: Buffer>(mut b: B) {
    for s in 0..3 {
        b.push(reading(s)).unwrap();
    }
    if b.hold(&[reading(0)], ClockRefusal::InFuture)
        .unwrap()
        .is_none()
    {
        return;
    }
    b.push(reading(10)).unwrap();
    assert_eq!(seqs(&b), [1, 2, 10]);
    let pushed = b.release(ClockRefusal::InFuture).unwrap();
    assert_eq!(pushed.dropped, [0], "the released reading is the oldest");
    assert_eq!(seqs(&b), [1, 2, 10]);
    assert_eq!(b.held_len(ClockRefusal::InFuture), 0);
}
