//! [`FileOptions`]: how a [`FileBuffer`](super::FileBuffer) treats its
//! side files and the disk.

use crate::buffer::BufferLimits;
use crate::buffer::held::default_hold_limits;
use crate::error::Error;

/// The smallest rejected-file limit accepted.
const MIN_REJECTED_BYTES: u64 = 4096;

/// Options of a [`FileBuffer`](super::FileBuffer) beyond its bounds.
///
/// | option | default |
/// |---|---|
/// | holding areas (`<path>.held-future`, `<path>.held-old`) | [`default_hold_limits`] each: 1,000 readings, 256 KiB, oldest dropped |
/// | rejected-readings file (`<path>.rejected`) | 1 MiB, then rotated to `<path>.rejected.1` (the previous `.1` is deleted, its lines counted as dropped) |
/// | sync every write (`fdatasync`) | on |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOptions {
    pub(super) hold: BufferLimits,
    pub(super) rejected_max_bytes: u64,
    pub(super) sync: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            hold: default_hold_limits(),
            rejected_max_bytes: 1 << 20,
            sync: true,
        }
    }
}

impl FileOptions {
    /// Bounds each holding area (readings refused with `ts_in_future`, and
    /// with `ts_too_old`).
    pub fn with_hold_limits(mut self, limits: BufferLimits) -> Self {
        self.hold = limits;
        self
    }

    /// Rotates the rejected-readings file when an append would take it past
    /// `max_bytes` (at least 4 KiB): `<path>.rejected` becomes
    /// `<path>.rejected.1`, replacing (dropping) the previous one. The
    /// rejected readings on disk thus stay within about twice the limit
    /// (plus one batch), the newest kept; the dropped lines are counted
    /// ([`FileBuffer::rejected_dropped`](super::FileBuffer::rejected_dropped)).
    pub fn with_rejected_limit(mut self, max_bytes: u64) -> Self {
        self.rejected_max_bytes = max_bytes;
        self
    }

    /// Whether each write is synced to the device before returning.
    pub fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Checks the values.
    ///
    /// Errors: [`Error::Config`] for an empty holding area or a rejected
    /// limit below 4 KiB.
    pub fn validate(&self) -> Result<(), Error> {
        if self.hold.max_readings == 0 || self.hold.max_bytes == 0 {
            return Err(Error::Config(
                "the holding areas need room for at least one reading".into(),
            ));
        }
        if self.rejected_max_bytes < MIN_REJECTED_BYTES {
            return Err(Error::Config(format!(
                "rejected-file limit {} is below {MIN_REJECTED_BYTES} bytes",
                self.rejected_max_bytes
            )));
        }
        Ok(())
    }
}
