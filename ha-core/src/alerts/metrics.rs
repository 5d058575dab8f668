//! Prometheus metrics of the alerts service (`ha_alerts_*`).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State as AxumState};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::State;

/// Label of the request metrics: the route template (e.g.
/// `/v1/devices/{id}/health`, never a concrete device id) and the status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route, or `unmatched`.
    pub route: String,
    /// HTTP status, e.g. `200`.
    pub status: u16,
}

/// Label of the latency histogram: the route template.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The matched route, or `unmatched`.
    pub route: String,
}

/// The alerts service's metrics. Bounded label sets only.
#[derive(Clone)]
pub struct AlertsMetrics {
    /// Requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the response head by route (for `/v1/stream`: until the
    /// stream starts, not its lifetime).
    pub request_duration: Family<RouteLabel, Histogram>,
    /// `/v1/stream` clients connected now.
    pub stream_clients: Gauge,
    /// Anomalies sent to stream clients (one per client it reached).
    pub stream_events: Counter,
    /// Store polls made by stream clients.
    pub stream_polls: Counter,
    /// Polls in which every anomaly of the window was new, so some may have
    /// been missed (the client was told to reload).
    pub stream_resyncs: Counter,
    /// Store calls that failed or timed out.
    pub store_errors: Counter,
}

impl AlertsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = AlertsMetrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            stream_clients: Gauge::default(),
            stream_events: Counter::default(),
            stream_polls: Counter::default(),
            stream_resyncs: Counter::default(),
            store_errors: Counter::default(),
        };
        registry.register(
            "ha_alerts_requests",
            "Alerts API requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            "ha_alerts_request_duration_seconds",
            "Time to the response head by route",
            m.request_duration.clone(),
        );
        registry.register(
            "ha_alerts_stream_clients",
            "Open /v1/stream connections",
            m.stream_clients.clone(),
        );
        registry.register(
            "ha_alerts_stream_events",
            "Anomalies sent to stream clients",
            m.stream_events.clone(),
        );
        registry.register(
            "ha_alerts_stream_polls",
            "Store polls by stream clients",
            m.stream_polls.clone(),
        );
        registry.register(
            "ha_alerts_stream_resyncs",
            "Stream polls whose whole window was new (client told to reload)",
            m.stream_resyncs.clone(),
        );
        registry.register(
            "ha_alerts_store_errors",
            "Store calls that failed or timed out",
            m.store_errors.clone(),
        );
        m
    }
}

/// Middleware: counts every request and times it by route.
pub(super) async fn record(
    AxumState(state): AxumState<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let started = tokio::time::Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .request_duration
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
