//! Prometheus metrics of the ingest service (`ha_ingest_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of a request counter: the HTTP status class and the error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// HTTP status, e.g. `202`.
    pub status: u16,
    /// Error code (`accepted` on success); a small fixed set.
    pub code: String,
}

/// The ingest service's metrics. Bounded label sets only: never a device id.
#[derive(Clone)]
pub struct IngestMetrics {
    /// Requests by outcome.
    pub requests: Family<Outcome, Counter>,
    /// Readings acknowledged (confirmed by the broker).
    pub readings_accepted: Counter,
    /// Time from the start of a publish to the broker's confirm.
    pub confirm_latency: Histogram,
    /// Readings per accepted request.
    pub batch_readings: Histogram,
    /// Publishes waiting for the broker right now.
    pub in_flight: Gauge,
}

impl IngestMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = IngestMetrics {
            requests: Family::default(),
            readings_accepted: Counter::default(),
            confirm_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            batch_readings: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            in_flight: Gauge::default(),
        };
        registry.register(
            "ha_ingest_requests",
            "Ingest requests by status and error code",
            m.requests.clone(),
        );
        registry.register(
            "ha_ingest_readings_accepted",
            "Readings confirmed by the broker and acknowledged",
            m.readings_accepted.clone(),
        );
        registry.register(
            "ha_ingest_confirm_latency_seconds",
            "Publish-to-confirm latency",
            m.confirm_latency.clone(),
        );
        registry.register(
            "ha_ingest_batch_readings",
            "Readings per accepted request",
            m.batch_readings.clone(),
        );
        registry.register(
            "ha_ingest_in_flight_publishes",
            "Publishes awaiting a broker confirm",
            m.in_flight.clone(),
        );
        m
    }
}
