//! The analyzer service (feature `server`): consumes its share of the
//! partitions, stores readings, runs the anomaly detector per
//! `(device, metric)` series, stores anomalies, and acknowledges only after
//! the commit.
//!
//! ## How replicas share the partitions
//!
//! RabbitMQ 3.10's single-active-consumer gives each partition one active
//! consumer, but never moves it back, so load would pile onto the oldest
//! replica. Replicas therefore agree on an assignment themselves: every
//! second each renews a lease in the store ([`Store::heartbeat`], judged by
//! the store's clock) and gets the sorted list of live replicas; partition
//! `p` belongs to `members[p % members.len()]`
//! ([`owned_partitions`]). A replica subscribes to the partitions it owns
//! and releases the others after finishing the batch in hand.
//!
//! Failure behaviour:
//! - a replica that stops gracefully leaves the group at once; one killed
//!   loses its lease after [`AnalyzerConfig::lease_ttl`] (default 5 s), and
//!   the broker redelivers its unacknowledged messages as soon as its
//!   connection drops. The new owner rebuilds each series' window from the
//!   store on first sight, so verdicts continue where they stopped;
//! - while views of the membership differ (for about a second),
//!   single-active-consumer still lets only one consumer receive per
//!   partition, so per-device order holds;
//! - a replica that cannot renew its lease for a whole TTL releases all its
//!   partitions, so a replica cut off from the database does not hold them.
//!
//! ## Per batch
//!
//! Deliveries are batched (at most [`AnalyzerConfig::batch_deliveries`],
//! waiting at most [`AnalyzerConfig::batch_linger`]); readings and their
//! anomalies are written in one transaction; transient store errors are
//! retried while the deliveries are held (so valid readings are never
//! dead-lettered); then one `ack_up_to` settles the batch. A message that
//! does not decode can never succeed and is rejected to the dead-letter
//! queue. When the store refuses a batch with a permanent error
//! ([`StoreError::is_permanent`](crate::store::StoreError::is_permanent):
//! SQLSTATE classes 22, 23, 42), its messages are written one by one and a
//! message refused [`AnalyzerConfig::permanent_error_tries`] times is
//! dead-lettered with the reason logged, so the partition moves on.
//!
//! ## Bounds against hostile input
//!
//! - Series: at most [`AnalyzerConfig::max_series`] per replica (least
//!   recently used evicted in O(1)) and
//!   [`AnalyzerConfig::max_metrics_per_device`] per device; readings of
//!   series left out are stored, only not analysed. New series of a batch
//!   are warm-started with one store query per 256
//!   ([`Store::recent_values_many`]).
//! - Bytes: workers stop pulling deliveries while the replica holds
//!   [`AnalyzerConfig::max_unacked_bytes`]. RabbitMQ's prefetch counts
//!   messages, so the client library may buffer up to `prefetch` further
//!   messages per partition before they are pulled; keep
//!   `prefetch × partitions × typical message size` within the budget.

mod assignment;
mod budget;
mod lifecycle;
mod metrics;
mod series;
mod worker;

use crate::ConfigError;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ha_analysis::DetectorConfig;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use assignment::owned_partitions;
pub use metrics::AnalyzerMetrics;

use crate::queue::Queue;
use crate::store::Store;
use crate::wire::Timestamp;

/// Settings of an analyzer replica.
#[derive(Clone, Debug)]
pub struct AnalyzerConfig {
    /// This replica's name in the group; unique among live replicas (the
    /// pod name in Kubernetes).
    pub member_id: String,
    /// The group's name in the store's membership table.
    pub group: String,
    /// The detector.
    pub detector: DetectorConfig,
    /// Unacknowledged deliveries per partition.
    pub prefetch: u16,
    /// Most deliveries per batch.
    pub batch_deliveries: usize,
    /// Longest wait for a batch to fill after its first delivery.
    pub batch_linger: Duration,
    /// How often the lease is renewed and the assignment recomputed.
    pub heartbeat: Duration,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Delete readings older than this (run by the first member, hourly);
    /// `None` keeps everything.
    pub retention: Option<Duration>,
    /// Series untouched for this many batches of a partition are evicted.
    pub evict_after_batches: u64,
    /// Most series held by the replica, split evenly among the queue's
    /// partitions (so it holds even when one replica owns them all); the
    /// least recently used series makes room for a new one. About 2 KB
    /// each with the default detector (see docs/queue-and-store.md).
    pub max_series: usize,
    /// Most series held per device (distinct metric names analysed at
    /// once). Values of a device's further metrics are stored but not
    /// analysed (`ha_analyzer_unanalysed_values`).
    pub max_metrics_per_device: usize,
    /// Bytes of deliveries the replica holds unacknowledged, all partitions
    /// together; workers stop pulling at the bound (exceeded by at most one
    /// delivery per partition).
    pub max_unacked_bytes: usize,
    /// Writes of one message refused with a permanent store error
    /// ([`StoreError::is_permanent`](crate::store::StoreError::is_permanent))
    /// before it is dead-lettered.
    pub permanent_error_tries: u32,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            member_id: format!("analyzer-{}", std::process::id()),
            group: "analyzers".into(),
            detector: DetectorConfig::default(),
            prefetch: 2000,
            batch_deliveries: 500,
            batch_linger: Duration::from_millis(20),
            heartbeat: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(5),
            retention: Some(Duration::from_secs(30 * 86_400)),
            evict_after_batches: 100_000,
            max_series: 200_000,
            max_metrics_per_device: 64,
            max_unacked_bytes: 128 << 20,
            permanent_error_tries: 3,
        }
    }
}

impl AnalyzerConfig {
    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.detector
            .validate()
            .map_err(|e| ConfigError::new("detector", e.to_string()).with_source(e))?;
        if self.member_id.is_empty() {
            return Err(ConfigError::new("member_id", "must not be empty"));
        }
        let at_least_one = [
            ("batch_deliveries", self.batch_deliveries),
            ("prefetch", usize::from(self.prefetch)),
            ("max_series", self.max_series),
            ("max_metrics_per_device", self.max_metrics_per_device),
            ("max_unacked_bytes", self.max_unacked_bytes),
            ("permanent_error_tries", self.permanent_error_tries as usize),
        ];
        for (name, n) in at_least_one {
            if n == 0 {
                return Err(ConfigError::new(name, "must be at least 1"));
            }
        }
        if self.lease_ttl <= self.heartbeat * 2 {
            return Err(ConfigError::new(
                "lease_ttl",
                "must be more than twice the heartbeat",
            ));
        }
        Ok(())
    }
}

/// An analyzer replica: [`run`](Self::run) it with a shutdown future, and
/// serve its [`router`](Self::router) for probes and metrics.
#[derive(Clone)]
pub struct Analyzer {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    config: AnalyzerConfig,
    metrics: AnalyzerMetrics,
    registry: Registry,
    ready: AtomicBool,
    owned: std::sync::Mutex<Vec<u32>>,
    budget: Arc<budget::ByteBudget>,
}

impl Analyzer {
    /// A replica consuming `queue` into `store`.
    pub fn new(
        queue: Arc<dyn Queue>,
        store: Arc<dyn Store>,
        config: AnalyzerConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut registry = Registry::default();
        let metrics = AnalyzerMetrics::register(&mut registry);
        let budget = Arc::new(budget::ByteBudget::new(
            config.max_unacked_bytes,
            metrics.unacked_bytes.clone(),
        ));
        Ok(Analyzer {
            shared: Arc::new(Shared {
                budget,
                queue,
                store,
                config,
                metrics,
                registry,
                ready: AtomicBool::new(false),
                owned: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// The partitions this replica consumes right now.
    pub fn owned_partitions(&self) -> Vec<u32> {
        self.shared
            .owned
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default()
    }

    /// The metrics.
    pub fn metrics(&self) -> &AnalyzerMetrics {
        &self.shared.metrics
    }

    /// `/healthz`, `/readyz` (lease renewed: the store answers) and `/metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(self.shared.clone())
    }

    /// Runs until `shutdown` resolves, then finishes the batches in hand
    /// (at most `drain`), releases every partition and leaves the group.
    /// Nothing uncommitted is acknowledged.
    pub async fn run(self, shutdown: impl Future<Output = ()>, drain: Duration) {
        let shared = self.shared;
        let cfg = &shared.config;
        let partitions = shared.queue.partitions();
        let mut workers: HashMap<u32, (watch::Sender<bool>, JoinHandle<()>)> = HashMap::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tick = tokio::time::interval(cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_lease = tokio::time::Instant::now();
        let mut last_retention: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut shutdown => break,
            }
            let members = match shared
                .store
                .heartbeat(&cfg.group, &cfg.member_id, cfg.lease_ttl)
                .await
            {
                Ok(m) => {
                    last_lease = tokio::time::Instant::now();
                    shared.ready.store(true, Ordering::SeqCst);
                    m
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Renewing the lease failed.");
                    if last_lease.elapsed() < cfg.lease_ttl {
                        continue;
                    }
                    // Our lease has lapsed: others may own our partitions now.
                    shared.ready.store(false, Ordering::SeqCst);
                    Vec::new()
                }
            };
            shared.metrics.members.set(members.len() as i64);
            let owned = owned_partitions(&members, &cfg.member_id, partitions);
            workers.retain(|p, (stop, handle)| {
                if owned.contains(p) && !handle.is_finished() {
                    return true;
                }
                let _ = stop.send(true);
                false
            });
            for &p in &owned {
                workers.entry(p).or_insert_with(|| {
                    let (stop, rx) = watch::channel(false);
                    (
                        stop,
                        tokio::spawn(worker::run_partition(shared.clone(), p, rx)),
                    )
                });
            }
            let mut now_owned: Vec<u32> = workers.keys().copied().collect();
            now_owned.sort_unstable();
            shared.metrics.owned_partitions.set(now_owned.len() as i64);
            if let Ok(mut o) = shared.owned.lock() {
                if *o != now_owned {
                    tracing::info!(partitions = ?now_owned, members = members.len(), "Partition assignment changed.");
                }
                *o = now_owned;
            }
            let first = members.first().is_some_and(|m| *m == cfg.member_id);
            if let (true, Some(keep)) = (first, cfg.retention)
                && last_retention.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
            {
                last_retention = Some(tokio::time::Instant::now());
                run_retention(&shared, keep).await;
            }
        }
        tracing::info!("Shutting down: finishing the batches in hand.");
        shared.ready.store(false, Ordering::SeqCst);
        let handles: Vec<JoinHandle<()>> = workers
            .into_values()
            .map(|(stop, handle)| {
                let _ = stop.send(true);
                handle
            })
            .collect();
        let all = futures_util::future::join_all(handles);
        if tokio::time::timeout(drain, all).await.is_err() {
            tracing::warn!("Drain timed out; unacknowledged deliveries will be redelivered.");
        }
        if let Err(e) = shared.store.leave(&cfg.group, &cfg.member_id).await {
            tracing::warn!(error = %e, "Leaving the group failed; the lease will lapse.");
        }
    }
}

/// Deletes readings older than `keep`, in bounded batches.
async fn run_retention(shared: &Shared, keep: Duration) {
    let cutoff = Timestamp::now().saturating_sub(keep);
    let mut total = 0u64;
    loop {
        match shared.store.delete_readings_before(cutoff, 10_000).await {
            Ok(n) => {
                total += n;
                shared.metrics.retention_deleted.inc_by(n);
                if n < 10_000 {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Retention pass failed; next one in an hour.");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, %cutoff, "Retention pass done.");
    }
}

async fn readyz(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no lease: store unreachable or shutting down\n",
        )
            .into_response()
    }
}

async fn metrics_text(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    crate::http::metrics_response(&shared.registry)
}
