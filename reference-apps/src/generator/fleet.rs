//! Fleet-wide counters, per-device reports and the retry log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ha_device_client::{Counters, Event};

/// Live totals over all devices (for progress lines and `/metrics`).
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Readings generated.
    pub generated: AtomicU64,
    /// Readings acknowledged by the server.
    pub acknowledged: AtomicU64,
    /// Retries made.
    pub retried: AtomicU64,
    /// Sends that gave up after their retries.
    pub gave_up: AtomicU64,
    /// Sends under way now (one per device at most).
    pub in_flight: AtomicU64,
}

impl FleetStats {
    pub(super) fn generated(&self) {
        self.generated.fetch_add(1, Ordering::Relaxed);
    }

    /// `(generated, acknowledged, retried, gave_up)` now.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.generated.load(Ordering::Relaxed),
            self.acknowledged.load(Ordering::Relaxed),
            self.retried.load(Ordering::Relaxed),
            self.gave_up.load(Ordering::Relaxed),
        )
    }
}

/// What one device did.
#[derive(Clone, Debug, Default)]
pub struct DeviceReport {
    /// The device.
    pub device_id: String,
    /// Readings generated.
    pub generated: u64,
    /// Acknowledged `seq` ranges, inclusive, in order.
    pub acknowledged: Vec<(u64, u64)>,
    /// `seq`s of injected spikes.
    pub spikes: Vec<u64>,
    /// The client's counters at the end.
    pub counters: Counters,
    /// Why the device could not run, if it could not.
    pub error: Option<String>,
    /// Every send, when [`GeneratorConfig::record_sends`](super::GeneratorConfig) is set.
    pub sends: Vec<SendRecord>,
}

/// One send of a device: a flush of its buffer, with its retries.
#[derive(Clone, Copy, Debug)]
pub struct SendRecord {
    /// When the send began.
    pub started: tokio::time::Instant,
    /// When it ended: acknowledged, or given up.
    pub finished: tokio::time::Instant,
    /// Retries it needed.
    pub retries: u64,
    /// Whether everything it carried was acknowledged.
    pub ok: bool,
}

impl DeviceReport {
    pub(super) fn new(device_id: &str) -> Self {
        DeviceReport {
            device_id: device_id.to_owned(),
            ..DeviceReport::default()
        }
    }

    pub(super) fn finish(&mut self, counters: Counters, acked: &Mutex<Vec<(u64, u64)>>) {
        self.counters = counters;
        let mut ranges = acked.lock().map(|a| a.clone()).unwrap_or_default();
        ranges.sort_unstable();
        self.acknowledged = ranges;
    }

    /// Every acknowledged `seq`.
    pub fn acknowledged_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.acknowledged.iter().flat_map(|&(a, b)| a..=b)
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, Default)]
pub struct GeneratorReport {
    /// Per device, sorted by id.
    pub devices: Vec<DeviceReport>,
}

impl GeneratorReport {
    pub(super) fn new(devices: Vec<DeviceReport>) -> Self {
        GeneratorReport { devices }
    }

    /// Sum of a counter over all devices.
    pub fn total(&self, f: impl Fn(&Counters) -> u64) -> u64 {
        self.devices.iter().map(|d| f(&d.counters)).sum()
    }

    /// The one-paragraph summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let generated: u64 = self.devices.iter().map(|d| d.generated).sum();
        let spikes: usize = self.devices.iter().map(|d| d.spikes.len()).sum();
        format!(
            "devices {}, generated {generated}, sent {}, acknowledged {}, retried {}, still buffered {}, gave up {}, rejected {}, dropped {}, spikes injected {spikes}",
            self.devices.len(),
            self.total(|c| c.sent),
            self.total(|c| c.acknowledged),
            self.total(|c| c.retried),
            self.total(|c| c.buffered),
            self.total(|c| c.gave_up),
            self.total(|c| c.rejected),
            self.total(|c| c.dropped),
        )
    }
}

/// The event callback of one device: logs each retry with its attempt
/// number (as the seed's generator did), counts, and records acknowledged
/// ranges.
pub(super) fn event_logger(
    device: String,
    stats: Arc<FleetStats>,
    acked: Arc<Mutex<Vec<(u64, u64)>>>,
) -> impl FnMut(&Event) + Send + 'static {
    move |e| match e {
        Event::Retry {
            attempt,
            delay,
            cause,
        } => {
            stats.retried.fetch_add(1, Ordering::Relaxed);
            tracing::info!(device = %device, attempt, ?delay, %cause, "Retrying send.");
        }
        Event::GaveUp { retries, cause } => {
            stats.gave_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %device, retries, %cause, "Gave up; readings stay buffered.");
        }
        Event::Acknowledged {
            count,
            first_seq,
            last_seq,
        } => {
            stats
                .acknowledged
                .fetch_add(*count as u64, Ordering::Relaxed);
            if let Ok(mut a) = acked.lock() {
                a.push((*first_seq, *last_seq));
            }
        }
        other if super::is_notable(other) => {
            tracing::info!(device = %device, event = ?other, "Device event.");
        }
        _ => {}
    }
}
