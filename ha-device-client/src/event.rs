//! What the client reports while it works: events for a callback, and
//! counters. Every event is also logged with `tracing`.

use std::net::SocketAddr;
use std::time::Duration;

use ha_core::wire::Reading;

use crate::buffer::{ClockRefusal, OverflowPolicy};
use crate::error::ServerError;
use crate::retry::RetryCause;

/// Something the client did or ran into. Passed by reference to the
/// callback set with [`ClientConfig::with_event_callback`](crate::ClientConfig::with_event_callback).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A connection (TCP, then TLS unless plain HTTP) was established.
    Connected {
        /// The server's address.
        peer: SocketAddr,
    },
    /// The connection was closed or broke.
    Disconnected {
        /// Why, in words.
        reason: String,
    },
    /// A send failed and will be retried after `delay`.
    Retry {
        /// 1-based retry number within this send.
        attempt: u32,
        /// How long the client waits before the retry.
        delay: Duration,
        /// What the failed attempt ran into.
        cause: RetryCause,
    },
    /// A send exhausted its retries; its readings stay buffered.
    GaveUp {
        /// Retries made.
        retries: u32,
        /// What the last attempt ran into.
        cause: RetryCause,
    },
    /// The server covered these readings with a 2xx: they left the buffer.
    Acknowledged {
        /// Readings acknowledged.
        count: usize,
        /// Lowest `seq` acknowledged.
        first_seq: u64,
        /// Highest `seq` acknowledged.
        last_seq: u64,
    },
    /// The server answered 413: the batch is split and resent.
    Split {
        /// The new largest batch, in readings.
        batch_limit: usize,
    },
    /// The buffer was full.
    Overflow {
        /// The policy applied.
        policy: OverflowPolicy,
        /// `seq`s of the readings lost: the oldest ones (`DropOldest`) or the
        /// new one (`RejectNew`).
        dropped: Vec<u64>,
    },
    /// The server refused these readings for good (400/422, or 413 for a
    /// single reading): they were moved to the rejected-readings sink.
    Rejected {
        /// The rejected readings.
        readings: Vec<Reading>,
        /// The server's reason.
        reason: ServerError,
    },
    /// The server refused these readings for a clock rule (`ts_in_future`,
    /// `ts_too_old`): they were moved to the buffer's holding area for
    /// `refusal` instead of the rejected sink (see
    /// [`buffer`](crate::buffer#clock-refusals)).
    Held {
        /// Which clock rule.
        refusal: ClockRefusal,
        /// The held readings.
        readings: Vec<Reading>,
        /// The server's reason.
        reason: ServerError,
        /// `seq`s the holding area's bound dropped to make room (lost).
        dropped: Vec<u64>,
    },
    /// Readings held for `ts_in_future` went back into the flush order
    /// after the clock-retry interval.
    Released {
        /// Which holding area.
        refusal: ClockRefusal,
        /// Readings moved back.
        count: usize,
        /// `seq`s dropped by the main buffer's overflow policy (lost).
        dropped: Vec<u64>,
    },
    /// The server refused the credentials (401/403); readings stay buffered.
    Unauthorized {
        /// The server's reason.
        reason: ServerError,
    },
}

/// Running totals since the client was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Readings put on the wire (a resent reading counts again).
    pub sent: u64,
    /// Readings covered by a 2xx.
    pub acknowledged: u64,
    /// Retries made.
    pub retried: u64,
    /// Readings in the buffer now.
    pub buffered: u64,
    /// Readings lost to buffer overflow (either policy).
    pub dropped: u64,
    /// Readings moved to the rejected-readings sink.
    pub rejected: u64,
    /// Readings moved to a holding area (clock refusals; counted again if
    /// released and refused again).
    pub held: u64,
    /// Held readings dropped by a holding area's bound.
    pub held_dropped: u64,
    /// Held readings moved back into the flush order.
    pub released: u64,
    /// Sends that gave up after exhausting their retries.
    pub gave_up: u64,
}
