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
    /// Time from the start of a message's publish to the broker's confirm.
    pub confirm_latency: Histogram,
    /// Time a request waited for the confirm of the message(s) carrying its
    /// readings, queueing behind earlier messages included.
    pub ack_wait: Histogram,
    /// Readings per accepted request.
    pub batch_readings: Histogram,
    /// Readings per queue message (group commit coalesces requests).
    pub readings_per_message: Histogram,
    /// Requests (per partition) whose readings share one queue message.
    pub requests_per_message: Histogram,
    /// Requests waiting for the broker's confirm of their readings right now.
    pub in_flight: Gauge,
    /// Queue messages awaiting the broker's confirm right now.
    pub messages_in_flight: Gauge,
}

impl IngestMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = IngestMetrics {
            requests: Family::default(),
            readings_accepted: Counter::default(),
            confirm_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            ack_wait: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            batch_readings: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            readings_per_message: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            requests_per_message: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            in_flight: Gauge::default(),
            messages_in_flight: Gauge::default(),
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
            "Publish-to-confirm latency of one queue message",
            m.confirm_latency.clone(),
        );
        registry.register(
            "ha_ingest_ack_wait_seconds",
            "Time a request waited for the confirm of its readings",
            m.ack_wait.clone(),
        );
        registry.register(
            "ha_ingest_batch_readings",
            "Readings per accepted request",
            m.batch_readings.clone(),
        );
        registry.register(
            "ha_ingest_readings_per_message",
            "Readings per queue message (requests coalesced by group commit)",
            m.readings_per_message.clone(),
        );
        registry.register(
            "ha_ingest_requests_per_message",
            "Requests whose readings share one queue message",
            m.requests_per_message.clone(),
        );
        registry.register(
            "ha_ingest_in_flight_publishes",
            "Requests awaiting the broker confirm of their readings",
            m.in_flight.clone(),
        );
        registry.register(
            "ha_ingest_messages_in_flight",
            "Queue messages awaiting a broker confirm",
            m.messages_in_flight.clone(),
        );
        m
    }
}
