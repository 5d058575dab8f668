//! `analyzer`: consumes its share of the partitions, stores readings,
//! detects anomalies, acknowledges after the commit.
//!
//! `cargo run --bin analyzer -- --help`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ha_core::analyzer::{Analyzer, AnalyzerConfig};
use ha_core::queue::amqp::AmqpQueue;
use ha_core::store::postgres::{PostgresConfig, PostgresStore};
use reference_apps::service::{self, CommonArgs, DetectorArgs, QueueArgs, parse_duration};

/// Analyzer: stores readings and anomalies idempotently, runs the
/// anomaly-window detector, shares the partitions with the other replicas.
#[derive(Debug, Parser)]
#[command(name = "analyzer", version)]
struct Args {
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "HA_LISTEN", default_value = "0.0.0.0:9090")]
    listen: SocketAddr,
    #[command(flatten)]
    queue: QueueArgs,
    /// PostgreSQL or CockroachDB URL.
    #[arg(long, env = "HA_POSTGRES_URL")]
    postgres_url: String,
    /// PEM CA of the database's certificate (`sslmode=verify-full` in the URL).
    #[arg(long, env = "HA_POSTGRES_CA_FILE")]
    postgres_ca_file: Option<PathBuf>,
    /// This replica's unique name (the pod name); defaults to $HOSTNAME-$PID.
    #[arg(long, env = "HA_MEMBER_ID")]
    member_id: Option<String>,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Delete readings older than this (`30d`); `0` keeps everything.
    #[arg(long, env = "HA_RETENTION", default_value = "30d", value_parser = parse_duration)]
    retention: Duration,
    /// The ingest replicas' `--max-reading-age` (same variable): the
    /// retention may not be shorter, or readings ingest accepted would be
    /// deleted by the next retention run.
    #[arg(long, env = "HA_MAX_READING_AGE", default_value = "30d", value_parser = parse_duration)]
    max_reading_age: Duration,
    /// Most deliveries per batch.
    #[arg(long, env = "HA_BATCH_SIZE", default_value_t = 500)]
    batch_size: usize,
    /// Unacknowledged deliveries per partition.
    #[arg(long, env = "HA_PREFETCH", default_value_t = 2000)]
    prefetch: u16,
    /// Bytes of deliveries held unacknowledged by this replica, all
    /// partitions together: pulling stops at the bound. The client library
    /// may buffer `prefetch` more messages per partition on top.
    #[arg(long, env = "HA_MAX_UNACKED_BYTES", default_value_t = 128 << 20)]
    max_unacked_bytes: usize,
    /// Most (device, metric) series held by this replica (about 2 KB each
    /// with the default window); the least recently used makes room.
    #[arg(long, env = "HA_MAX_SERIES", default_value_t = 200_000)]
    max_series: usize,
    /// Most metric names analysed per device at a time; values of further
    /// names are stored but not analysed.
    #[arg(long, env = "HA_MAX_METRICS_PER_DEVICE", default_value_t = 64)]
    max_metrics_per_device: usize,
    /// Writes of a message the database refuses with a permanent error
    /// (SQLSTATE class 22, 23 or 42) before it is dead-lettered.
    #[arg(long, env = "HA_PERMANENT_ERROR_TRIES", default_value_t = 3)]
    permanent_error_tries: u32,
    /// Database connections.
    #[arg(long, env = "HA_DB_POOL", default_value_t = 4)]
    db_pool: usize,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = service::parse_args();
    service::init_tracing(&args.common);
    if !args.retention.is_zero() && args.retention < args.max_reading_age {
        return service::config_error(
            "analyzer",
            format!(
                "--retention ({}) is shorter than --max-reading-age ({}): readings ingest \
                 accepts would be deleted; raise --retention or lower both",
                service::format_duration(args.retention),
                service::format_duration(args.max_reading_age)
            ),
        );
    }
    let member_id = args.member_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "analyzer".into());
        format!("{host}-{}", std::process::id())
    });
    let config = AnalyzerConfig {
        member_id,
        detector: args.detector.config(),
        prefetch: args.prefetch,
        max_unacked_bytes: args.max_unacked_bytes,
        max_series: args.max_series,
        max_metrics_per_device: args.max_metrics_per_device,
        permanent_error_tries: args.permanent_error_tries,
        batch_deliveries: args.batch_size,
        retention: (!args.retention.is_zero()).then_some(args.retention),
        ..AnalyzerConfig::default()
    };
    let queue = match AmqpQueue::new(args.queue.amqp_config(&config.member_id)) {
        Ok(q) => Arc::new(q),
        Err(e) => return service::config_error("analyzer", e),
    };
    let store = match PostgresStore::new(PostgresConfig {
        url: args.postgres_url.clone(),
        ca_file: args.postgres_ca_file.clone(),
        pool_size: args.db_pool,
        ..PostgresConfig::default()
    }) {
        Ok(s) => Arc::new(s),
        Err(e) => return service::config_error("analyzer", e),
    };
    let analyzer = match Analyzer::new(queue, store.clone(), config) {
        Ok(a) => a,
        Err(e) => return service::config_error("analyzer", e),
    };
    // Wait for the schema (a Job or `ha-admin migrate` applies it).
    loop {
        match store.check_schema().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "Database not ready; waiting.");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = service::shutdown_signal() => return ExitCode::SUCCESS,
                }
            }
        }
    }
    service::run_until_signal(
        "analyzer",
        args.listen,
        &args.common,
        |probes, shutdown, config| async move { analyzer.serve(probes, shutdown, &config).await },
    )
    .await
}
