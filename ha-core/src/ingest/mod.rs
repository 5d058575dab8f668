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
//! | `POST /kill` | calls the binary's [`KillHook`] (drills: exit at once); only with [`IngestConfig::kill`] |
//!
//! Checks run in this order, each with its own status: 401 (credentials)
//! → 415 (content type) → 413 (declared over 1 MiB) → 503 (too many
//! requests in flight: the slot is taken before the body is read, so the
//! bodies buffered at once are bounded) → 408 (body not received within
//! [`IngestConfig::body_timeout`]) → 413 (over 1 MiB while reading) → 400
//! (shape) → 403 (a reading of another device) → 422 (a rule, including
//! `ts_in_future` and `ts_too_old`) → 429 (device rate limit) → 503 (broker
//! unavailable, draining). After an early `4xx` on HTTP/1.1 the rest of the
//! body is read and discarded (up to 32 MiB or 10 s) so that the client sees
//! the answer ([`crate::http::Linger`]).
//!
//! **Group commit.** Concurrent requests' readings bound for the same
//! partition are coalesced into one queue message (one batcher task per
//! partition, started on first use on the current Tokio runtime). A batcher
//! keeps up to [`IngestConfig::publishes_per_partition`] messages awaiting
//! their confirm; requests arriving meanwhile join the next message, so
//! messages grow with the load without a fixed delay. Each request still
//! gets its `202` only after the message holding its readings was
//! confirmed, and every request of a failed message gets `503`. On shutdown,
//! call [`IngestService::shutdown`] after the HTTP server stopped: it
//! publishes what was already handed to the batchers.

mod auth;
mod batcher;
mod error;
mod handler;
mod lifecycle;
mod metrics;
#[cfg(feature = "mqtt")]
mod mqtt;
mod ratelimit;

use crate::ConfigError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

pub use auth::{AuthError, DeviceKeys, KeyError, MIN_KEY_BYTES, token_for};
pub use error::IngestError;
pub use metrics::IngestMetrics;
#[cfg(feature = "mqtt")]
pub use mqtt::{DEFAULT_MAX_PACKET_BYTES, MqttConfig, MqttListener, topic_of};
pub use ratelimit::RateLimit;

use crate::http::{ConnectionMetrics, Linger};
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
    /// Serve `POST /kill`, which calls this hook (failover drills: the
    /// binary passes one that ends the process at once). `None`: no route.
    pub kill: Option<KillHook>,
    /// Replaced by [`IngestConfig::kill`]: the library no longer ends the
    /// process itself. Setting it alone serves no route (logged at start).
    #[deprecated(
        since = "0.2.0",
        note = "pass IngestConfig::kill = Some(KillHook::new(...))"
    )]
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
    /// Group commit: queue messages of one partition awaiting their confirm
    /// at once. Requests arriving while all are out join the next message;
    /// fewer means larger messages (less broker work per reading), more
    /// means less queueing at light load.
    pub publishes_per_partition: usize,
    /// Group commit: most readings coalesced into one queue message. One
    /// request's readings for a partition are never split, so a single
    /// large request can exceed it.
    pub max_message_readings: usize,
    /// Group commit: most bytes in one queue message (same exception).
    pub max_message_bytes: usize,
    /// Group commit: how long a batcher waits for more requests before
    /// publishing a message that is not full. Zero (the default) publishes
    /// at once; batching then comes only from messages already in flight.
    pub linger: Duration,
    /// Readings whose `ts` is older than this are refused with `422
    /// ts_too_old` (30 days by default): the analyzer's retention would
    /// delete them, so accepting them would be a broken promise. Keep the
    /// analyzer's `--retention` at least this long.
    pub max_reading_age: Duration,
    /// The whole request body must arrive within this (30 s), or the
    /// request gets `408 body_timeout`: a client trickling a body cannot
    /// hold an in-flight slot for ever.
    pub body_timeout: Duration,
}

/// What `POST /kill` does, chosen by the binary (a library must not end the
/// process it runs in).
#[derive(Clone)]
pub struct KillHook(Arc<dyn Fn() + Send + Sync>);

impl KillHook {
    /// A hook calling `f`.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        KillHook(Arc::new(f))
    }

    fn call(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for KillHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KillHook")
    }
}

/// Default of [`IngestConfig::max_reading_age`]: 30 days.
pub const DEFAULT_MAX_READING_AGE: Duration = Duration::from_secs(30 * 86_400);

#[allow(deprecated)] // enable_kill, kept one release for old callers
impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            keys: None,
            max_in_flight: 4096,
            rate_limit: None,
            retry_after_secs: 1,
            kill: None,
            enable_kill: false,
            ready_cache: Duration::from_secs(1),
            ready_grace: Duration::from_secs(5),
            publishes_per_partition: 1,
            max_message_readings: crate::wire::MAX_READINGS,
            max_message_bytes: crate::wire::MAX_BODY_BYTES,
            linger: Duration::ZERO,
            max_reading_age: DEFAULT_MAX_READING_AGE,
            body_timeout: Duration::from_secs(30),
        }
    }
}

impl IngestConfig {
    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one = [
            ("max_in_flight", self.max_in_flight),
            ("publishes_per_partition", self.publishes_per_partition),
            ("max_message_readings", self.max_message_readings),
        ];
        for (name, n) in at_least_one {
            if n == 0 {
                return Err(ConfigError::new(name, "must be at least 1"));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::new(
                "max_message_bytes",
                "must be at least 1024",
            ));
        }
        if self.linger > Duration::from_secs(1) {
            return Err(ConfigError::new("linger", "must be at most 1 s"));
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        if self.max_reading_age < Duration::from_secs(3600) {
            return Err(ConfigError::new("max_reading_age", "must be at least 1 h"));
        }
        if self.body_timeout.is_zero() {
            return Err(ConfigError::new("body_timeout", "must be more than 0"));
        }
        Ok(())
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
    batchers: batcher::Batchers,
    limiter: Option<ratelimit::Limiter>,
    metrics: IngestMetrics,
    /// `metrics.requests{202, accepted}`, looked up once (on the first
    /// success, so the series appears only then, as the others do).
    accepted: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
    connections: ConnectionMetrics,
    #[cfg(feature = "mqtt")]
    mqtt_metrics: mqtt::MqttMetrics,
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
    /// A service publishing to `queue`. Settings out of range are clamped
    /// to the nearest valid value; see [`IngestConfig::validate`].
    pub fn new(queue: Arc<dyn Queue>, config: IngestConfig) -> Self {
        #[allow(deprecated)]
        if config.enable_kill && config.kill.is_none() {
            tracing::warn!(
                "IngestConfig::enable_kill is deprecated and no longer serves POST /kill: \
                 pass IngestConfig::kill with a hook that ends the process."
            );
        }
        let mut registry = Registry::default();
        let metrics = IngestMetrics::register(&mut registry);
        let connections = ConnectionMetrics::register(&mut registry, "ingest");
        #[cfg(feature = "mqtt")]
        let mqtt_metrics = mqtt::MqttMetrics::register(&mut registry);
        let batchers = batcher::Batchers::new(
            queue.clone(),
            batcher::Limits {
                max_readings: config.max_message_readings.max(1),
                max_bytes: config.max_message_bytes,
                publishes_in_flight: config.publishes_per_partition.max(1),
                linger: config.linger.min(Duration::from_secs(1)),
                // Each request in flight queues at most one submission per
                // partition, so the channels never fill.
                channel_capacity: config.max_in_flight.max(1),
            },
            metrics.clone(),
        );
        IngestService {
            state: Arc::new(State {
                in_flight: Semaphore::new(config.max_in_flight.max(1)),
                limiter: config.rate_limit.map(ratelimit::Limiter::new),
                batchers,
                queue,
                config,
                draining: AtomicBool::new(false),
                metrics,
                accepted: std::sync::OnceLock::new(),
                connections,
                #[cfg(feature = "mqtt")]
                mqtt_metrics,
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
        if self.state.config.kill.is_some() {
            r = r.route("/kill", post(handler::kill));
        }
        crate::http::request_id::apply_with_linger(
            r.with_state(self.state.clone()),
            Linger::default(),
        )
    }

    /// The connection metrics to pass to [`crate::http::serve_with`], so
    /// that they appear in this service's `/metrics`.
    pub fn connection_metrics(&self) -> ConnectionMetrics {
        self.state.connections.clone()
    }

    /// Starts draining: `/readyz` turns `503` so load balancers stop sending,
    /// and new readings get `503` with `Retry-After`; requests already
    /// publishing complete.
    pub fn drain(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
    }

    /// Drains, then stops the group-commit batchers: readings already handed
    /// to them are published (requests still waiting get their answer) and
    /// this resolves once every message was confirmed or failed. Requests
    /// arriving later get `503`. Call it after the HTTP server stopped; each
    /// publish is bounded by the queue's own timeout.
    pub async fn shutdown(&self) {
        self.drain();
        self.state.batchers.shutdown().await;
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
