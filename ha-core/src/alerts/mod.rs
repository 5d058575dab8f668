//! The alerts service (feature `server`): a read-only JSON API over the
//! anomalies and readings in a [`Store`], a live stream of new anomalies, and
//! a self-contained web UI for operators.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ha_core::alerts::{AlertsConfig, AlertsService};
//! use ha_core::store::MemoryStore;
//!
//! let service = AlertsService::new(
//!     Arc::new(MemoryStore::new()),
//!     AlertsConfig { api_token: Some("s3cret".into()), ..AlertsConfig::default() },
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! ha_core::http::serve(listener, service.router(), None, std::future::pending(), std::time::Duration::from_secs(20)).await?;
//! # Ok(()) }
//! ```
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/anomalies?device=&metric=&from=&to=&limit=&cursor=` | `{"items": [...], "next_cursor": "..."\|null}`, newest first |
//! | `GET /v1/devices/{id}/readings?from=&to=&metric=&limit=` | the device's values in `[from, to)`, oldest first |
//! | `GET /v1/devices/{id}/health` | last seen, last seq and the `seq` gaps near the newest reading; `404` for an unknown device |
//! | `GET /v1/stream?device=&metric=` | `text/event-stream` of new anomalies |
//! | `GET /`, `GET /ui/*` | the web UI (static; its data comes from `/v1`) |
//! | `GET /healthz` | `200` while the process runs |
//! | `GET /readyz` | `200` when the store answers and the service is not draining |
//! | `GET /metrics` | Prometheus text (`ha_alerts_*`) |
//! | `GET /openapi.json` | the OpenAPI 3 document |
//!
//! **Authentication.** Every `/v1` route requires
//! `Authorization: Bearer <operator token>` (compared in constant time)
//! unless [`AlertsConfig::api_token`] is `None`. The token is accepted in
//! that header only, never in the URL — including on `/v1/stream`: the UI
//! reads the stream with `fetch` (which can send headers) instead of
//! `EventSource` (which cannot), so the token never lands in access logs,
//! proxy logs or the browser history. The UI's static files carry no data
//! and are served without a token; the page asks for the token once and
//! keeps it in `sessionStorage` (this tab only).
//!
//! ## The live stream
//!
//! CockroachDB has no `LISTEN/NOTIFY`, so each `/v1/stream` client polls the
//! store every [`stream_poll`](AlertsConfig::stream_poll) for the newest
//! [`stream_window`](AlertsConfig::stream_window) anomalies matching its
//! filters: one indexed query per client and interval, clients capped by
//! [`max_stream_clients`](AlertsConfig::max_stream_clients).
//!
//! **Exactly once per client.** Anomalies can be inserted with a timestamp
//! older than ones already seen (a device flushing its buffer after being
//! offline), so "everything newer than the last one sent" would miss them.
//! Instead the stream remembers the keys `(device, seq, metric)` of the
//! previous window and sends each anomaly of the current window that was
//! not in it. An anomaly that has left the window never re-enters it (the
//! set only grows, in a fixed order), so none is sent twice, and memory per
//! client is bounded by the window.
//!
//! **What it can miss, by design:** an anomaly inserted with a timestamp
//! older than the whole current window (a long-offline device's backlog), or
//! more new anomalies within one poll than the window holds. The second is
//! detected (a full window of nothing but new ones) and announced as a
//! `resync` event; the first is not. The stream is a notification channel:
//! `/v1/anomalies` stays the source of truth, and the UI reloads its first
//! page on every `ready` and `resync` (so a reconnect loses nothing that is
//! on the first page either).
//!
//! | event | when | `data` (JSON) |
//! |---|---|---|
//! | `ready` | after the first poll; from here on new anomalies are sent | `{"window": N, "poll_ms": ms}` |
//! | `anomaly` | a new anomaly; its `id` is the anomaly's pagination cursor | an anomaly as in `/v1/anomalies` |
//! | `resync` | more anomalies arrived within one poll than the window holds | `{}` |
//! | `store_error` | a poll failed (once per run of failures; polling goes on) | `{"error": "store_unavailable"}` |
//!
//! plus a `: keep-alive` comment every
//! [`stream_keep_alive`](AlertsConfig::stream_keep_alive). Streams end when
//! the service [drains](AlertsService::drain), so they never hold up a
//! graceful shutdown; clients reconnect to another replica.

mod auth;
mod config;
mod handler;
mod lifecycle;
mod metrics;
mod params;
mod stream;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, watch};

pub use config::AlertsConfig;
pub use metrics::AlertsMetrics;

use crate::http::{ConnectionMetrics, Linger};
use crate::store::Store;

/// The alerts service: build it, take its [`router`](Self::router), serve
/// it with [`crate::http::serve`], and call [`drain`](Self::drain) when
/// shutting down.
#[derive(Clone)]
pub struct AlertsService {
    state: Arc<State>,
}

struct State {
    store: Arc<dyn Store>,
    config: AlertsConfig,
    token: Option<auth::OperatorToken>,
    /// `true` once draining: readiness fails and open streams end, so a
    /// graceful shutdown is not held up by clients that never hang up.
    draining: watch::Sender<bool>,
    /// One permit per open stream.
    stream_slots: Arc<Semaphore>,
    metrics: AlertsMetrics,
    connections: ConnectionMetrics,
    registry: Registry,
}

impl AlertsService {
    /// A service reading from `store`. Check `config` with
    /// [`AlertsConfig::validate`] first; here out-of-range values are
    /// clamped and the token is trimmed of surrounding whitespace.
    pub fn new(store: Arc<dyn Store>, config: AlertsConfig) -> Self {
        if config.api_token.is_none() {
            tracing::warn!(
                "Alerts API serving without authentication: anyone who can reach it reads \
                 medical data."
            );
        }
        let mut registry = Registry::default();
        let metrics = AlertsMetrics::register(&mut registry);
        let connections = ConnectionMetrics::register(&mut registry, "alerts");
        let mut config = config;
        config.stream_window = config.stream_window.clamp(1, 1000);
        config.stream_poll = config.stream_poll.max(Duration::from_millis(10));
        AlertsService {
            state: Arc::new(State {
                token: config
                    .api_token
                    .as_deref()
                    .map(|t| auth::OperatorToken::new(t.trim())),
                stream_slots: Arc::new(Semaphore::new(config.max_stream_clients.max(1))),
                store,
                config,
                draining: watch::Sender::new(false),
                metrics,
                connections,
                registry,
            }),
        }
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/v1/anomalies", get(handler::anomalies))
            .route("/v1/devices/{id}/readings", get(handler::readings))
            .route("/v1/devices/{id}/health", get(handler::health))
            .route("/v1/stream", get(stream::stream))
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                auth::require_token,
            ));
        let router = Router::new()
            .merge(api)
            .merge(ui::routes())
            .route("/healthz", get(handler::healthz))
            .route("/readyz", get(handler::readyz))
            .route("/metrics", get(handler::metrics))
            .route("/openapi.json", get(handler::openapi))
            .fallback(handler::not_found)
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                metrics::record,
            ))
            .with_state(self.state.clone());
        crate::http::request_id::apply(Linger::default().apply(router))
    }

    /// The connection metrics to pass to [`crate::http::serve_with`], so
    /// that they appear in this service's `/metrics`.
    pub fn connection_metrics(&self) -> ConnectionMetrics {
        self.state.connections.clone()
    }

    /// Starts draining: `/readyz` turns `503`, open streams end (clients
    /// reconnect to another replica), new streams get `503`; other requests
    /// are still answered until the server stops.
    pub fn drain(&self) {
        self.state.draining.send_replace(true);
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &AlertsMetrics {
        &self.state.metrics
    }
}

impl State {
    fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }
}
