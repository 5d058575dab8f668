//! `data-generator`: emulates a fleet of devices sending readings to the
//! ingest API through `ha-device-client`.
//!
//! `cargo run --bin data-generator -- --help`

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::routing::get;
use clap::Parser;
use ha_core::ingest::DeviceKeys;
use ha_device_client::RetryPolicy;
use reference_apps::generator::{self, Anchor, FleetStats, GeneratorConfig, ReportFile};
use reference_apps::service::{self, CommonArgs, parse_duration};

/// Data generator: N devices, one reading per interval each, with the
/// seed's retry behaviour; logs every retry with its attempt number.
#[derive(Debug, Parser)]
#[command(name = "data-generator", version)]
struct Args {
    /// Address for /healthz and fleet /metrics; none when absent.
    #[arg(long, env = "HA_LISTEN")]
    listen: Option<SocketAddr>,
    /// The ingest API, e.g. https://ingest.example:8443; with
    /// `--transport mqtt`, its MQTT listener, e.g. mqtts://ingest.example:8883.
    #[arg(long, env = "HA_URL")]
    url: String,
    /// How devices send: `https` (POST /v1/readings) or `mqtt` (MQTT 5,
    /// one QoS 1 PUBLISH per batch to readings/<device id>).
    #[arg(long, env = "HA_TRANSPORT", default_value = "https")]
    transport: reference_apps::generator::Transport,
    /// Number of simulated devices.
    #[arg(long, env = "HA_DEVICES", default_value_t = 100)]
    devices: usize,
    /// Device ids are <prefix><5-digit index>.
    #[arg(long, env = "HA_DEVICE_PREFIX", default_value = "dev-")]
    device_prefix: String,
    /// Time between two readings of one device.
    #[arg(long, env = "HA_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// Stop after this long.
    #[arg(long, env = "HA_DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many readings per device.
    #[arg(long, env = "HA_READINGS_PER_DEVICE")]
    readings_per_device: Option<u64>,
    /// Probability that a reading is a spike (20σ), after the first 34 of a device.
    #[arg(long, env = "HA_ANOMALY_RATE", default_value_t = 0.0)]
    anomaly_rate: f64,
    /// Most spikes per device.
    #[arg(long, env = "HA_MAX_SPIKES", default_value_t = u32::MAX)]
    max_spikes: u32,
    /// CA certificate (PEM) that signed the ingest API's certificate.
    #[arg(long, env = "HA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Device key file: each device's token is derived from it.
    #[arg(long, env = "HA_DEVICE_KEY_FILE")]
    device_key_file: Option<PathBuf>,
    /// First seq of every device; `auto` = milliseconds since the epoch at
    /// start, so a restarted generator never reuses a seq.
    #[arg(long, env = "HA_START_SEQ", default_value = "auto")]
    start_seq: String,
    /// Retry delay step (delay before retry n is min(n × step, cap)).
    #[arg(long, env = "HA_RETRY_STEP", default_value = "1s", value_parser = parse_duration)]
    retry_step: Duration,
    /// Retry delay cap.
    #[arg(long, env = "HA_RETRY_CAP", default_value = "10s", value_parser = parse_duration)]
    retry_cap: Duration,
    /// Retries per send before giving up (readings stay buffered).
    #[arg(long, env = "HA_MAX_RETRIES", default_value_t = 10)]
    max_retries: u32,
    /// Jitter fraction in [0, 1): each delay is spread over ±jitter of itself.
    #[arg(long, env = "HA_JITTER", default_value_t = 0.0)]
    jitter: f64,
    /// Source addresses to spread connections over (comma-separated).
    #[arg(long, env = "HA_SOURCE_ADDRS", value_delimiter = ',')]
    source_addrs: Vec<IpAddr>,
    /// Connections shared by all devices, each request still with its own
    /// device's credentials (an emulator's multiplexing: 100k devices need
    /// no 100k sockets); 0 = one connection per device, like real devices.
    #[arg(long, env = "HA_CONNECTIONS", default_value_t = 0)]
    connections: usize,
    /// Seed of the value generator.
    #[arg(long, env = "HA_SEED", default_value_t = 1)]
    seed: u64,
    /// At the end, write what every device generated, which seqs were
    /// acknowledged and every send (wall-clock times) to this JSON file,
    /// for an audit against the store (scripts/containers does one).
    #[arg(long, env = "HA_REPORT_FILE")]
    report_file: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = service::parse_args();
    service::init_tracing(&args.common);
    match build(&args) {
        Ok(config) => run(args, config).await,
        Err(e) => service::config_error("data-generator", e),
    }
}

fn build(args: &Args) -> Result<GeneratorConfig, String> {
    let retry = RetryPolicy::linear(args.retry_step, args.retry_cap, args.max_retries)
        .map_err(|e| e.to_string())?;
    let retry = if args.jitter > 0.0 {
        retry.with_jitter(args.jitter).map_err(|e| e.to_string())?
    } else {
        retry
    };
    let keys = match &args.device_key_file {
        Some(f) => Some(DeviceKeys::from_files(&[f]).map_err(|e| e.to_string())?),
        None => None,
    };
    let ca_pem = match &args.ca_cert {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?),
        None => None,
    };
    let start_seq = match args.start_seq.as_str() {
        "auto" => ha_core::wire::Timestamp::now().unix_micros().max(0) as u64 / 1000,
        n => n
            .parse()
            .map_err(|_| format!("--start-seq must be a number or `auto`, not `{n}`"))?,
    };
    let config = GeneratorConfig {
        url: args.url.clone(),
        transport: args.transport,
        devices: args.devices,
        device_prefix: args.device_prefix.clone(),
        interval: args.interval,
        readings_per_device: args.readings_per_device,
        duration: args.duration,
        anomaly_rate: args.anomaly_rate,
        max_spikes_per_device: args.max_spikes,
        ca_pem,
        keys,
        retry,
        start_seq,
        seed: args.seed,
        local_addrs: args.source_addrs.clone(),
        connections: args.connections,
        record_sends: args.report_file.is_some(),
        ..GeneratorConfig::default()
    };
    config.validate()?;
    Ok(config)
}

async fn run(args: Args, config: GeneratorConfig) -> ExitCode {
    let stats = Arc::new(FleetStats::default());
    if let Some(addr) = args.listen {
        let listener = match service::listen("data-generator", addr).await {
            Ok(l) => l,
            Err(e) => {
                return service::config_error(
                    "data-generator",
                    format!("cannot listen on {addr}: {e}"),
                );
            }
        };
        let s = stats.clone();
        let app = axum::Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/metrics",
                get(move || {
                    let (generated, acked, retried, gave_up) = s.snapshot();
                    async move {
                        format!(
                            "# TYPE ha_generator_readings_generated counter\nha_generator_readings_generated_total {generated}\n\
                             # TYPE ha_generator_readings_acknowledged counter\nha_generator_readings_acknowledged_total {acked}\n\
                             # TYPE ha_generator_retries counter\nha_generator_retries_total {retried}\n\
                             # TYPE ha_generator_gave_up counter\nha_generator_gave_up_total {gave_up}\n"
                        )
                    }
                }),
            );
        tokio::spawn(ha_core::http::serve(
            listener,
            app,
            None,
            std::future::pending(),
            Duration::ZERO,
        ));
    }
    let progress = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let (g, a, r, x) = stats.snapshot();
                tracing::info!(
                    generated = g,
                    acknowledged = a,
                    retried = r,
                    gave_up = x,
                    "Progress."
                );
            }
        })
    };
    tracing::info!(devices = config.devices, transport = ?config.transport, connections = config.connections, interval = ?config.interval, url = %config.url, "Starting the fleet.");
    let anchor = Anchor::now();
    let report = generator::run(config, stats.clone(), service::shutdown_signal()).await;
    progress.abort();
    println!("{}", report.summary());
    if let Some(path) = &args.report_file {
        if let Err(e) = ReportFile::from_report(&report, &anchor).write(path) {
            tracing::error!(error = %e, "Cannot write the report.");
            return ExitCode::FAILURE;
        }
        tracing::info!(file = %path.display(), "Report written.");
    }
    let failed = report.devices.iter().filter(|d| d.error.is_some()).count();
    if failed > 0 || stats.generated.load(Ordering::Relaxed) == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
