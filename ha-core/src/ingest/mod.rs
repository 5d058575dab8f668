//! The ingest service (feature `server`): `POST /v1/readings` authenticates
//! the device, validates the body, publishes the readings to the queue and
//! answers `202` only after the broker confirmed them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ha_core::ingest::{DeviceKeys, IngestConfig, IngestService};
//! use ha_core::queue::MemoryQueue;
//!
//! let keys = DeviceKeys::from_files(&["/etc/ha/device.key"])?;
//! let service = IngestService::new(
//!     Arc::new(MemoryQueue::with_partitions(8)),
//!     IngestConfig { keys: Some(keys), ..IngestConfig::default() },
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! ha_core::http::serve(listener, service.router(), None, std::future::pending(), std::time::Duration::from_secs(20)).await?;
//! # Ok(()) }
//! ```
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/readings` | `202 {"accepted": n}` after the broker confirmed; errors as documented in `openapi.json` |
//! | `GET /healthz` | `200` while the process runs |
//! | `GET /readyz` | `200` when the broker answers and the service is not draining, else `503` |
//! | `GET /metrics` | Prometheus text |
//! | `GET /openapi.json` | the OpenAPI 3 document |
//! | `POST /kill` | exits the process at once; only with [`IngestConfig::enable_kill`] |
//!
//! Checks run in this order, each with its own status: 401 (credentials)
//! → 415 (content type) → 413 (over 1 MiB) → 400 (shape) → 403 (a reading of
//! another device) → 422 (a rule) → 429 (device rate limit) → 503 (too many
//! publishes in flight, broker unavailable, draining).

mod auth;
mod handler;
mod metrics;
mod ratelimit;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

pub use auth::{AuthError, DeviceKeys, KeyError, token_for};
pub use metrics::IngestMetrics;
pub use ratelimit::RateLimit;

use crate::queue::Queue;

/// Settings of the ingest service.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Device keys; `None` accepts every request without authentication
    /// (only for demos and tests: the binaries require an explicit flag).
    pub keys: Option<DeviceKeys>,
    /// Requests publishing at once; past it, `503` with `Retry-After`
    /// instead of queueing in memory.
    pub max_in_flight: usize,
    /// Per-device limit; `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// `Retry-After` seconds on `503`.
    pub retry_after_secs: u32,
    /// Serve `POST /kill` (failover drills).
    pub enable_kill: bool,
    /// How long `/readyz` trusts the last successful broker contact
    /// without checking again.
    pub ready_cache: Duration,
    /// After `ready_cache`, how long `/readyz` still answers from the last
    /// success (checking the broker in the background) as long as no
    /// publish failed since: a broker slow for a moment (a leader
    /// election, a disk stall) must not take every replica out of the
    /// balancer at once. Past it, or after a failure, `/readyz` waits for
    /// a fresh check.
    pub ready_grace: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            keys: None,
            max_in_flight: 4096,
            rate_limit: None,
            retry_after_secs: 1,
            enable_kill: false,
            ready_cache: Duration::from_secs(1),
            ready_grace: Duration::from_secs(5),
        }
    }
}

/// The ingest service: build it, take its [`router`](Self::router), serve
/// it with [`crate::http::serve`], and call [`drain`](Self::drain) when
/// shutting down.
#[derive(Clone)]
pub struct IngestService {
    state: Arc<State>,
}

struct State {
    queue: Arc<dyn Queue>,
    config: IngestConfig,
    in_flight: Semaphore,
    draining: AtomicBool,
    limiter: Option<ratelimit::Limiter>,
    metrics: IngestMetrics,
    registry: Registry,
    /// Milliseconds (tokio clock, since `started`) of the last broker success.
    last_broker_ok: AtomicI64,
    /// ... and of the last broker failure.
    last_broker_err: AtomicI64,
    /// A background broker check is under way.
    probing: AtomicBool,
    started: tokio::time::Instant,
}

impl IngestService {
    /// A service publishing to `queue`.
    pub fn new(queue: Arc<dyn Queue>, config: IngestConfig) -> Self {
        let mut registry = Registry::default();
        let metrics = IngestMetrics::register(&mut registry);
        IngestService {
            state: Arc::new(State {
                in_flight: Semaphore::new(config.max_in_flight.max(1)),
                limiter: config.rate_limit.map(ratelimit::Limiter::new),
                queue,
                config,
                draining: AtomicBool::new(false),
                metrics,
                registry,
                last_broker_ok: AtomicI64::new(i64::MIN),
                last_broker_err: AtomicI64::new(i64::MIN),
                probing: AtomicBool::new(false),
                started: tokio::time::Instant::now(),
            }),
        }
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let mut r = Router::new()
            .route("/v1/readings", post(handler::post_readings))
            .route("/healthz", get(handler::healthz))
            .route("/readyz", get(handler::readyz))
            .route("/metrics", get(handler::metrics))
            .route("/openapi.json", get(handler::openapi));
        if self.state.config.enable_kill {
            r = r.route("/kill", post(handler::kill));
        }
        r.with_state(self.state.clone())
    }

    /// Starts draining: `/readyz` turns `503` so load balancers stop sending,
    /// and new readings get `503` with `Retry-After`; requests already
    /// publishing complete.
    pub fn drain(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.state.metrics
    }
}

impl State {
    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    fn broker_ok(&self) {
        self.last_broker_ok.store(self.now_ms(), Ordering::Relaxed);
    }

    fn broker_failed(&self) {
        self.last_broker_err.store(self.now_ms(), Ordering::Relaxed);
    }
}
