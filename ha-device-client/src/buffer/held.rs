//! Readings the server refused for their time stamp, held apart from the
//! flush order instead of being sunk with malformed ones.
//!
//! A reading refused with `ts_in_future` or `ts_too_old` is well formed:
//! only the device's clock (or the server's maximum reading age) is at
//! fault. Such readings move to a *holding area* of the buffer, bounded
//! separately from the main one (default [`default_hold_limits`]: 1,000
//! readings and 256 KiB for each refusal, the oldest dropped first and
//! counted), and:
//!
//! - **`ts_in_future`** readings go back into the flush order after the
//!   client's clock-retry interval (60 s by default,
//!   [`ClientConfig::with_clock_retry`](crate::ClientConfig::with_clock_retry)):
//!   the server's clock catches up with a device clock that runs a little
//!   ahead. Refused again, they are held again.
//! - **`ts_too_old`** readings stay until the application exports or
//!   re-stamps them ([`Buffer::held`](super::Buffer::held), then
//!   [`Buffer::forget_held`](super::Buffer::forget_held)), or sends them
//!   again after the server's maximum age was raised
//!   ([`Buffer::release`](super::Buffer::release)).

use super::{BufferLimits, OverflowPolicy};
use crate::error::Error;

/// The bounds of each holding area unless set otherwise: 1,000 readings
/// and 256 KiB, dropping the oldest.
pub fn default_hold_limits() -> BufferLimits {
    BufferLimits {
        max_readings: 1_000,
        max_bytes: 256 << 10,
        overflow: OverflowPolicy::DropOldest,
    }
}

/// What releasing one held reading into the flush order does, given what
/// pushing it there would do (`plan`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// Push it, dropping these (newer readings are never dropped for an
    /// older released one: see `Lost`).
    Push(Vec<u64>),
    /// It is in the flush order already (a crash between the two writes
    /// of an earlier move): only forget it in the holding area.
    AlreadyThere,
    /// The flush order is full (`DropOldest`) and the released reading is
    /// the oldest of all: it is the one dropped.
    Lost,
    /// The flush order is full (`RejectNew`): it and the rest stay held.
    Stop,
}

impl Release {
    pub(crate) fn decide(seq: u64, plan: Result<Vec<u64>, Error>) -> Result<Release, Error> {
        match plan {
            Ok(dropped) if dropped.first().is_some_and(|&d| d > seq) => Ok(Release::Lost),
            Ok(dropped) => Ok(Release::Push(dropped)),
            Err(Error::DuplicateSeq(_)) => Ok(Release::AlreadyThere),
            Err(e) if e.is_buffer_full() => Ok(Release::Stop),
            Err(e) => Err(e),
        }
    }
}
