//! The whole pipeline in one process, no servers needed:
//!
//! ```text
//! cargo run --example full_pipeline                     # until Ctrl-C
//! cargo run --example full_pipeline -- --duration 30s
//! cargo run --example full_pipeline -- --amqp-url amqp://... --postgres-url postgres://...
//! ```
//!
//! 100 simulated devices post readings over HTTPS (a certificate generated
//! at start) to the ingest API, which publishes them to the queue; two
//! analyzer replicas share the partitions, store readings and anomalies;
//! the alerts API and web UI show them (URL and operator token printed at
//! start); a progress line every second. At the end the store itself is queried:
//! every reading a device saw acknowledged must be stored exactly once.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ha_core::alerts::{AlertsConfig, AlertsService};
use ha_core::analyzer::{Analyzer, AnalyzerConfig};
use ha_core::http::ServeConfig;
use ha_core::ingest::{DeviceKeys, IngestConfig, IngestService};
use ha_core::queue::amqp::{AmqpConfig, AmqpQueue};
use ha_core::queue::{MemoryQueue, Queue};
use ha_core::store::postgres::{PostgresConfig, PostgresStore};
use ha_core::store::{AnomalyQuery, MemoryStore, Store};
use reference_apps::demo_tls::DemoTls;
use reference_apps::generator::{self, FleetStats, GeneratorConfig, GeneratorReport};
use reference_apps::service::parse_duration;

/// Runs ingest, two analyzers and a device fleet in one process.
#[derive(Debug, Parser)]
struct Args {
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Simulated devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Time between two readings of a device (accelerated from the seed's 10 s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Probability that a reading (after a device's first 34) is a spike.
    #[arg(long, default_value_t = 0.01)]
    anomaly_rate: f64,
    /// Partition queues.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Use this RabbitMQ instead of the in-memory queue.
    #[arg(long)]
    amqp_url: Option<String>,
    /// Use this PostgreSQL instead of the in-memory store.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Where the ingest API listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    ingest_listen: SocketAddr,
    /// Where the alerts API and web UI listen (a free port if taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    alerts_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new("warn").unwrap_or_default())
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("full_pipeline: {e}");
            ExitCode::from(64)
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let queue: Arc<dyn Queue> = match &args.amqp_url {
        Some(url) => Arc::new(
            AmqpQueue::connect(AmqpConfig {
                urls: vec![url.clone()],
                partitions: args.partitions,
                connection_name: "full-pipeline".into(),
                ..AmqpConfig::default()
            })
            .await
            .map_err(|e| e.to_string())?,
        ),
        None => Arc::new(MemoryQueue::with_partitions(args.partitions)),
    };
    let memory_store = MemoryStore::new();
    let store: Arc<dyn Store> = match &args.postgres_url {
        Some(url) => {
            let pg = PostgresStore::new(PostgresConfig {
                url: url.clone(),
                ..PostgresConfig::default()
            })
            .map_err(|e| e.to_string())?;
            pg.migrate().await.map_err(|e| e.to_string())?;
            Arc::new(pg)
        }
        None => Arc::new(memory_store.clone()),
    };

    // Ingest over HTTPS with a certificate made now, devices authenticated
    // with tokens derived from a key made now.
    let tls = DemoTls::generate()?;
    let key = format!("demo-key-{:x}", std::process::id() as u64 * 0x9E37_79B9);
    let keys = DeviceKeys::from_keys(vec![key.into_bytes()]).map_err(|e| e.to_string())?;
    let ingest = IngestService::new(
        queue.clone(),
        IngestConfig {
            keys: Some(keys.clone()),
            ..IngestConfig::default()
        },
    );
    let server_tls = ha_core::http::load_tls(tls.cert_pem.as_bytes(), tls.key_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(args.ingest_listen)
        .await
        .map_err(|e| e.to_string())?;
    let ingest_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = ingest.clone();
    let http = tokio::spawn(async move {
        let config = ServeConfig {
            drain: Duration::from_secs(5),
            deregister_delay: Duration::ZERO,
            ..ServeConfig::default()
        };
        let stopped = async {
            let _ = http_stopped.await;
        };
        serving
            .run(listener, Some(server_tls), stopped, &config)
            .await
    });

    // The alerts API and web UI, behind an operator token made now.
    let operator_token = ha_core::ingest::token_for(
        format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
        "operator",
    );
    let alerts = AlertsService::new(
        store.clone(),
        AlertsConfig {
            api_token: Some(operator_token.clone()),
            ..AlertsConfig::default()
        },
    );
    let alerts_listener = match tokio::net::TcpListener::bind(args.alerts_listen).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?,
    };
    let alerts_addr = alerts_listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_alerts, alerts_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = alerts.clone();
    let alerts_http = tokio::spawn(async move {
        let config = ServeConfig {
            drain: Duration::from_secs(1),
            deregister_delay: Duration::ZERO,
            ..ServeConfig::default()
        };
        let stopped = async {
            let _ = alerts_stopped.await;
        };
        serving.run(alerts_listener, None, stopped, &config).await
    });

    // Two analyzer replicas splitting the partitions.
    let mut analyzers = Vec::new();
    for i in 1..=2 {
        let analyzer = Analyzer::new(
            queue.clone(),
            store.clone(),
            AnalyzerConfig {
                member_id: format!("analyzer-{i}"),
                retention: None,
                ..AnalyzerConfig::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let a = analyzer.clone();
        let task = tokio::spawn(async move {
            a.run(
                async {
                    let _ = stopped.await;
                },
                Duration::from_secs(10),
            )
            .await
        });
        analyzers.push((analyzer, stop, task));
    }

    println!("alerts UI:  http://{alerts_addr}/   operator token: {operator_token}");
    println!("ingest API: https://{ingest_addr}/v1/readings (device tokens from an in-memory key)");
    println!(
        "queue: {}, store: {}",
        if args.amqp_url.is_some() {
            "RabbitMQ"
        } else {
            "in-memory"
        },
        if args.postgres_url.is_some() {
            "PostgreSQL"
        } else {
            "in-memory"
        }
    );
    println!(
        "{} devices, one reading every {:?} each; {}",
        args.devices,
        args.interval,
        match args.duration {
            Some(d) => format!("running for {d:?}"),
            None => "Ctrl-C to stop".into(),
        }
    );

    let stats = Arc::new(FleetStats::default());
    let fleet = GeneratorConfig {
        url: format!("https://{ingest_addr}"),
        devices: args.devices,
        interval: args.interval,
        duration: args.duration,
        anomaly_rate: args.anomaly_rate,
        ca_pem: Some(tls.ca_pem.into_bytes()),
        keys: Some(keys),
        start_seq: 0,
        ..GeneratorConfig::default()
    };
    fleet.validate()?;
    let progress = tokio::spawn(progress(
        queue.clone(),
        stats.clone(),
        ingest.clone(),
        analyzers.iter().map(|a| a.0.clone()).collect(),
    ));
    let report = generator::run(fleet, stats.clone(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    println!("\ndevices stopped; letting the analyzers finish the queue ...");
    wait_for_drain(
        &queue,
        &analyzers.iter().map(|a| a.0.clone()).collect::<Vec<_>>(),
    )
    .await;
    progress.abort();
    for (_, stop, task) in analyzers {
        let _ = stop.send(());
        let _ = task.await;
    }
    let _ = stop_http.send(());
    let _ = http.await;
    println!("{}", report.summary());
    let verdict = summarize(&report, store.as_ref()).await;
    println!("(alerts UI still at http://{alerts_addr}/ for a last look; stopping it now)");
    let _ = stop_alerts.send(());
    let _ = alerts_http.await;
    verdict
}

/// One line per second: what flows through the pipeline.
async fn progress(
    queue: Arc<dyn Queue>,
    stats: Arc<FleetStats>,
    ingest: IngestService,
    analyzers: Vec<Analyzer>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_accepted = 0;
    loop {
        tick.tick().await;
        let accepted = ingest.metrics().readings_accepted.get();
        let mut depth = 0;
        for p in 0..queue.partitions() {
            depth += queue.depth(p).await.unwrap_or(0);
        }
        let stored: u64 = analyzers
            .iter()
            .map(|a| a.metrics().readings_stored.get())
            .sum();
        let anomalies: u64 = analyzers.iter().map(|a| a.metrics().anomalies.get()).sum();
        let owned: Vec<usize> = analyzers
            .iter()
            .map(|a| a.owned_partitions().len())
            .collect();
        let (_, _, retried, _) = stats.snapshot();
        println!(
            "accepted {:>6}/s | total {accepted:>8} | stored {stored:>8} | queue depth {depth:>6} | anomalies {anomalies:>5} | retries {retried:>4} | partitions per analyzer {owned:?}",
            accepted - last_accepted
        );
        last_accepted = accepted;
    }
}

/// Waits until the queue is empty and the stored count stops moving.
async fn wait_for_drain(queue: &Arc<dyn Queue>, analyzers: &[Analyzer]) {
    let mut last = u64::MAX;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut depth = 0;
        for p in 0..queue.partitions() {
            depth += queue.depth(p).await.unwrap_or(1);
        }
        let stored: u64 = analyzers
            .iter()
            .map(|a| a.metrics().readings_stored.get() + a.metrics().duplicates.get())
            .sum();
        if depth == 0 && stored == last {
            return;
        }
        last = stored;
    }
}

/// Checks, by querying the store, that every acknowledged reading is there
/// exactly once, and reports the anomalies found.
async fn summarize(report: &GeneratorReport, store: &dyn Store) -> Result<bool, String> {
    let mut acknowledged = 0u64;
    let mut stored_once = 0u64;
    let mut lost = 0u64;
    let mut duplicates = 0u64;
    let mut stored_unacknowledged = 0u64;
    for d in &report.devices {
        let values = store
            .recent_values(&d.device_id, "pulse", u64::MAX, u32::MAX)
            .await
            .map_err(|e| e.to_string())?;
        let seqs: Vec<u64> = values.iter().map(|(s, _)| *s).collect();
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        duplicates += (seqs.len() - unique.len()) as u64;
        let acked: HashSet<u64> = d.acknowledged_seqs().collect();
        acknowledged += acked.len() as u64;
        for s in &acked {
            if unique.contains(s) {
                stored_once += 1;
            } else {
                lost += 1;
            }
        }
        stored_unacknowledged += unique.iter().filter(|s| !acked.contains(s)).count() as u64;
    }
    let mut anomalies = Vec::new();
    let mut query = AnomalyQuery {
        limit: 1000,
        ..AnomalyQuery::default()
    };
    loop {
        let page = store.anomalies(&query).await.map_err(|e| e.to_string())?;
        anomalies.extend(page.items);
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let found: HashSet<(String, u64)> = anomalies
        .iter()
        .map(|a| (a.device_id.clone(), a.seq))
        .collect();
    let spikes: Vec<(String, u64)> = report
        .devices
        .iter()
        .flat_map(|d| d.spikes.iter().map(|s| (d.device_id.clone(), *s)))
        .collect();
    let caught = spikes.iter().filter(|s| found.contains(s)).count();
    println!("\n=== summary (queried from the store) ===");
    println!("readings acknowledged to devices: {acknowledged}");
    println!("  stored exactly once:            {stored_once}");
    println!("  lost (acknowledged, not stored): {lost}");
    println!("  duplicate rows:                  {duplicates}");
    println!(
        "readings stored but never acknowledged (client gave up or stopped mid-request): {stored_unacknowledged}"
    );
    println!(
        "anomalies stored: {} (injected spikes caught: {caught} of {})",
        anomalies.len(),
        spikes.len()
    );
    let exactly_once = lost == 0 && duplicates == 0 && stored_once == acknowledged;
    println!(
        "{}",
        if exactly_once {
            "EXACTLY-ONCE: every acknowledged reading is stored once."
        } else {
            "NOT EXACTLY-ONCE: see the counts above."
        }
    );
    Ok(exactly_once)
}
