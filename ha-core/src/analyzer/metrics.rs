//! Prometheus metrics of the analyzer (`ha_analyzer_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The analyzer's metrics. No per-device labels.
#[derive(Clone)]
pub struct AnalyzerMetrics {
    /// Readings stored for the first time.
    pub readings_stored: Counter,
    /// Metric rows that were already stored identically (redeliveries, resends).
    pub duplicates: Counter,
    /// Metric rows already stored with other values: the first write was kept.
    pub conflicts: Counter,
    /// Anomalies stored for the first time.
    pub anomalies: Counter,
    /// Deliveries that had been delivered before.
    pub redeliveries: Counter,
    /// Messages rejected to the dead-letter queue (they can never be processed).
    pub dead_lettered: Counter,
    /// Store writes retried after a transient error.
    pub store_retries: Counter,
    /// Series rebuilt from the store (first sight after start or takeover).
    pub warm_starts: Counter,
    /// Deliveries per processed batch.
    pub batch_size: Histogram,
    /// Time to process a batch, from its first delivery to its ack.
    pub batch_latency: Histogram,
    /// Seconds between a reading's timestamp and its commit, last batch.
    pub lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Partitions assigned to this replica by the membership (it consumes
    /// them when the broker makes its subscription the active one).
    pub owned_partitions: Gauge,
    /// Partitions this replica holds a claim on and consumes now (assigned,
    /// or taken over from a replica that died).
    pub active_partitions: Gauge,
    /// Partitions claimed (epochs started) by this replica.
    pub claims: Counter,
    /// Batches refused because a newer owner claimed the partition; their
    /// deliveries went back to the queue.
    pub fenced_batches: Counter,
    /// Subscriptions given up so a partition's assigned owner can take it.
    pub handovers: Counter,
    /// Live analyzer replicas, as seen by this one.
    pub members: Gauge,
    /// Readings deleted by retention.
    pub retention_deleted: Counter,
    /// Jumps in a device's `seq` (readings missing in between).
    pub seq_gaps: Counter,
    /// Readings missing in those jumps.
    pub missing_readings: Counter,
    /// Readings at or below their device's newest `seq` (resent or late:
    /// stored if new, not fed to the detector).
    pub late_readings: Counter,
    /// Devices this replica has heard from whose newest reading is more than
    /// five minutes old.
    pub stale_devices: Gauge,
    /// Devices this replica tracks (heard from since it took their partition).
    pub devices: Gauge,
    /// Deliveries taken from the queue and not yet settled (in the batch
    /// being gathered or processed): what a crash now would hand back.
    pub unacked: Gauge,
    /// Payload bytes of those deliveries (bounded by `max_unacked_bytes`).
    pub unacked_bytes: Gauge,
    /// Series (device, metric) held by the detector.
    pub series: Gauge,
    /// Series dropped (least recently used) to make room for new ones.
    pub series_evicted: Counter,
    /// Metric values stored but not analysed: their device was at its
    /// metric-name cap, or the series cap was reached within a batch.
    pub unanalysed: Counter,
    /// Store writes refused with a permanent error (each try).
    pub store_permanent_errors: Counter,
    /// Messages dead-lettered because the store refused them every time
    /// (also counted in `dead_lettered`).
    pub dead_lettered_store: Counter,
}

impl AnalyzerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = AnalyzerMetrics {
            readings_stored: Counter::default(),
            duplicates: Counter::default(),
            conflicts: Counter::default(),
            anomalies: Counter::default(),
            redeliveries: Counter::default(),
            dead_lettered: Counter::default(),
            store_retries: Counter::default(),
            warm_starts: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            batch_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            lag: Gauge::default(),
            owned_partitions: Gauge::default(),
            active_partitions: Gauge::default(),
            claims: Counter::default(),
            fenced_batches: Counter::default(),
            handovers: Counter::default(),
            members: Gauge::default(),
            retention_deleted: Counter::default(),
            seq_gaps: Counter::default(),
            missing_readings: Counter::default(),
            late_readings: Counter::default(),
            stale_devices: Gauge::default(),
            devices: Gauge::default(),
            unacked: Gauge::default(),
            unacked_bytes: Gauge::default(),
            series: Gauge::default(),
            series_evicted: Counter::default(),
            unanalysed: Counter::default(),
            store_permanent_errors: Counter::default(),
            dead_lettered_store: Counter::default(),
        };
        let r = registry;
        r.register(
            "ha_analyzer_readings_stored",
            "Metric rows stored for the first time",
            m.readings_stored.clone(),
        );
        r.register(
            "ha_analyzer_duplicates",
            "Metric rows already stored identically",
            m.duplicates.clone(),
        );
        r.register(
            "ha_analyzer_conflicts",
            "Metric rows already stored with other values (first write kept)",
            m.conflicts.clone(),
        );
        r.register(
            "ha_analyzer_anomalies",
            "Anomalies stored for the first time",
            m.anomalies.clone(),
        );
        r.register(
            "ha_analyzer_redeliveries",
            "Deliveries that had been delivered before",
            m.redeliveries.clone(),
        );
        r.register(
            "ha_analyzer_dead_lettered",
            "Messages rejected to the dead-letter queue",
            m.dead_lettered.clone(),
        );
        r.register(
            "ha_analyzer_store_retries",
            "Store writes retried after a transient error",
            m.store_retries.clone(),
        );
        r.register(
            "ha_analyzer_warm_starts",
            "Series rebuilt from the store",
            m.warm_starts.clone(),
        );
        r.register(
            "ha_analyzer_batch_deliveries",
            "Deliveries per batch",
            m.batch_size.clone(),
        );
        r.register(
            "ha_analyzer_batch_latency_seconds",
            "Batch processing time, first delivery to ack",
            m.batch_latency.clone(),
        );
        r.register(
            "ha_analyzer_lag_seconds",
            "Reading timestamp to commit, last batch",
            m.lag.clone(),
        );
        r.register(
            "ha_analyzer_owned_partitions",
            "Partitions assigned to this replica by the membership",
            m.owned_partitions.clone(),
        );
        r.register(
            "ha_analyzer_active_partitions",
            "Partitions this replica holds a claim on and consumes",
            m.active_partitions.clone(),
        );
        r.register(
            "ha_analyzer_claims",
            "Partitions claimed (ownership epochs started)",
            m.claims.clone(),
        );
        r.register(
            "ha_analyzer_fenced_batches",
            "Batches refused because a newer owner claimed the partition",
            m.fenced_batches.clone(),
        );
        r.register(
            "ha_analyzer_handovers",
            "Subscriptions given up for the partition's assigned owner",
            m.handovers.clone(),
        );
        r.register(
            "ha_analyzer_members",
            "Live analyzer replicas seen by this one",
            m.members.clone(),
        );
        r.register(
            "ha_analyzer_retention_deleted",
            "Readings deleted by retention",
            m.retention_deleted.clone(),
        );
        r.register(
            "ha_analyzer_seq_gaps",
            "Jumps in a device's seq",
            m.seq_gaps.clone(),
        );
        r.register(
            "ha_analyzer_missing_readings",
            "Readings missing in seq jumps",
            m.missing_readings.clone(),
        );
        r.register(
            "ha_analyzer_late_readings",
            "Readings at or below their device's newest seq",
            m.late_readings.clone(),
        );
        r.register(
            "ha_analyzer_stale_devices",
            "Tracked devices silent for more than 5 minutes",
            m.stale_devices.clone(),
        );
        r.register(
            "ha_analyzer_devices",
            "Devices tracked by this replica",
            m.devices.clone(),
        );
        r.register(
            "ha_analyzer_unacked_deliveries",
            "Deliveries taken from the queue and not yet acknowledged",
            m.unacked.clone(),
        );
        r.register(
            "ha_analyzer_unacked_bytes",
            "Payload bytes of deliveries taken and not yet acknowledged",
            m.unacked_bytes.clone(),
        );
        r.register(
            "ha_analyzer_series",
            "Series held by the detector",
            m.series.clone(),
        );
        r.register(
            "ha_analyzer_series_evicted",
            "Series dropped to make room for new ones",
            m.series_evicted.clone(),
        );
        r.register(
            "ha_analyzer_unanalysed_values",
            "Metric values stored but not analysed (series caps)",
            m.unanalysed.clone(),
        );
        r.register(
            "ha_analyzer_store_permanent_errors",
            "Store writes refused with a permanent error",
            m.store_permanent_errors.clone(),
        );
        r.register(
            "ha_analyzer_dead_lettered_store",
            "Messages dead-lettered after the store refused them every time",
            m.dead_lettered_store.clone(),
        );
        m
    }
}
