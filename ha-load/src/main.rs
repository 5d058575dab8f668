//! `ha-load`: the load harness (stepped load to the knee, same-run
//! baselines, docs/performance.md). `scripts/perf` runs it with the servers
//! it starts; see `ha-load run --help`.
//!
//! `cargo run --release --bin ha-load -- --help`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ha_load::plan::{KneeBound, StepPlan};
use ha_load::procfs::Component;
use ha_load::{self as load, LoadConfig, RunResults};
use reference_apps::service::{self, parse_duration};

/// Load harness for ha-pipeline.
#[derive(Debug, Parser)]
#[command(name = "ha-load", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the pipeline (or target a running one), run the stepped load
    /// and the baselines, write performance.{md,svg,json}.
    Run(Box<RunArgs>),
    /// The naive composition: axum, parse, publish on one shared channel,
    /// await the confirm, 202 (the harness starts it).
    NaiveServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// RabbitMQ URL.
        #[arg(long, env = "HA_AMQP_URL")]
        amqp_url: String,
        /// TLS certificate chain (PEM).
        #[arg(long)]
        tls_cert: PathBuf,
        /// TLS private key (PEM).
        #[arg(long)]
        tls_key: PathBuf,
    },
    /// Rewrite performance.{md,svg} from a performance.json.
    Report {
        /// The results of a run.
        json: PathBuf,
        /// Where to write.
        #[arg(long, default_value = "docs")]
        out_dir: PathBuf,
        /// Also write the headline into this README.
        #[arg(long)]
        readme: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// RabbitMQ URL (the pipeline's broker and the raw baselines').
    #[arg(long, env = "HA_AMQP_URL")]
    amqp_url: String,
    /// PostgreSQL URL (the pipeline's store and the raw COPY baseline's).
    #[arg(long, env = "HA_POSTGRES_URL")]
    postgres_url: String,
    /// Where ingest-api, analyzer, data-generator and ha-admin are
    /// (default: next to ha-load).
    #[arg(long, env = "HA_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// A process to account CPU and RSS for, `NAME=PID` (repeat), e.g.
    /// `rabbitmq=123`; with `--url`, the running pipeline's processes.
    #[arg(long = "component")]
    components: Vec<Component>,
    /// Target a running ingest API (`https://IP:PORT`) instead of starting one.
    #[arg(long, requires_all = ["ca_cert", "device_key_file"])]
    url: Option<String>,
    /// CA certificate of `--url`.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Device key file of `--url`.
    #[arg(long)]
    device_key_file: Option<PathBuf>,
    /// Partition queues.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Where performance.{md,svg,json} go.
    #[arg(long, default_value = "docs")]
    out_dir: PathBuf,
    /// Also write the headline into this README, between its
    /// `<!-- perf-headline -->` markers.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// Scratch directory (certificates, logs of the started processes).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Short steps and small fleets (a CI smoke run, < 3 min).
    #[arg(long)]
    quick: bool,
    /// Length of a step (default 10s; 3s with --quick).
    #[arg(long, value_parser = parse_duration)]
    step: Option<Duration>,
    /// First offered rate, requests/s.
    #[arg(long, default_value_t = 1000.0)]
    start_rate: f64,
    /// Each step offers this many times the previous one (default 1.5;
    /// 2 with --quick).
    #[arg(long)]
    factor: Option<f64>,
    /// Highest rate offered.
    #[arg(long, default_value_t = 80_000.0)]
    max_rate: f64,
    /// The knee: p99 ack latency above this.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    p99_bound: Duration,
    /// Keep-alive connections of the driver (ours and naive alike).
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Devices the one-reading steps cycle through.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Readings per request in the batched step.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Requests/s in the batched step.
    #[arg(long, default_value_t = 600.0)]
    batch_rate: f64,
    /// Devices of the batched step, whose analyzer windows are measured
    /// (default 2000; 500 with --quick).
    #[arg(long)]
    window_devices: Option<usize>,
    /// Generator processes for the connection measurement (0 skips it).
    #[arg(long, default_value_t = 2)]
    generators: usize,
    /// Devices, each with its own TLS connection, per generator (default
    /// 8000, what fits under an open-file limit of 20,000; 1000 with --quick).
    #[arg(long)]
    devices_per_generator: Option<usize>,
    /// Skip the naive composition and the raw baselines.
    #[arg(long)]
    skip_baselines: bool,
    /// Only the latency target (after the warm-up): its three placements,
    /// `--repeats` steps each, nothing else — for comparing settings.
    #[arg(long)]
    latency_only: bool,
    /// Steps per placement of the latency target (default 3; 1 with --quick).
    #[arg(long)]
    repeats: Option<usize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = service::parse_args();
    match args.command {
        Command::Run(a) => run(*a).await,
        Command::NaiveServer {
            listen,
            amqp_url,
            tls_cert,
            tls_key,
        } => naive_server(listen, &amqp_url, &tls_cert, &tls_key).await,
        Command::Report {
            json,
            out_dir,
            readme,
        } => {
            let results: RunResults = match std::fs::read(&json)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    return service::config_error("ha-load", format!("{}: {e}", json.display()));
                }
            };
            write(&results, &out_dir, readme.as_deref())
        }
    }
}

fn write(
    results: &RunResults,
    out_dir: &std::path::Path,
    readme: Option<&std::path::Path>,
) -> ExitCode {
    match load::write_docs(results, out_dir, readme) {
        Ok(()) => {
            eprintln!(
                "[ha-load] Wrote {}/performance.{{md,svg,json}}.",
                out_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("[ha-load] Cannot write {}: {e}", out_dir.display());
            ExitCode::FAILURE
        }
    }
}

async fn run(a: RunArgs) -> ExitCode {
    let bin_dir = match a.bin_dir.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
    }) {
        Some(d) => d,
        None => {
            return service::config_error(
                "ha-load",
                "cannot tell where the binaries are; pass --bin-dir",
            );
        }
    };
    let plan = StepPlan {
        start: a.start_rate,
        factor: a.factor.unwrap_or(if a.quick { 2.0 } else { 1.5 }),
        max: a.max_rate,
    };
    if plan.rates().is_empty() {
        return service::config_error(
            "ha-load",
            "--start-rate must be > 0, --factor > 1 and --max-rate >= --start-rate",
        );
    }
    let command = if a.quick {
        "scripts/perf --quick"
    } else {
        "scripts/perf"
    };
    let config = LoadConfig {
        bin_dir,
        amqp_url: a.amqp_url,
        postgres_url: a.postgres_url,
        components: a.components,
        url: a.url,
        ca_cert: a.ca_cert,
        device_key_file: a.device_key_file,
        partitions: a.partitions,
        work_dir: a.work_dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("ha-load-{}", std::process::id()))
        }),
        step: a
            .step
            .unwrap_or(Duration::from_secs(if a.quick { 3 } else { 10 })),
        plan,
        bound: KneeBound {
            p99: a.p99_bound,
            ..KneeBound::default()
        },
        connections: a.connections.max(1),
        devices: a.devices.max(1),
        batch: a.batch.clamp(1, 1000),
        batch_rate: a.batch_rate.max(1.0),
        window_devices: a
            .window_devices
            .unwrap_or(if a.quick { 500 } else { 2000 })
            .max(1),
        generators: a.generators,
        devices_per_generator: a
            .devices_per_generator
            .unwrap_or(if a.quick { 1000 } else { 8000 }),
        skip_baselines: a.skip_baselines,
        latency_only: a.latency_only,
        repeats: a.repeats.unwrap_or(if a.quick { 1 } else { 3 }).max(1),
        quick: a.quick,
        command: command.into(),
    };
    eprintln!("[ha-load] Scratch files in {}.", config.work_dir.display());
    match load::run(config).await {
        Ok(results) => write(&results, &a.out_dir, a.readme.as_deref()),
        Err(e) => {
            eprintln!("[ha-load] Run failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn naive_server(
    listen: SocketAddr,
    amqp_url: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> ExitCode {
    let tls = match std::fs::read(cert)
        .and_then(|c| std::fs::read(key).map(|k| (c, k)))
        .map_err(|e| e.to_string())
        .and_then(|(c, k)| ha_core::http::load_tls(&c, &k).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => return service::config_error("ha-load naive-server", e),
    };
    let router = match load::naive::router(amqp_url).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("naive-server: RabbitMQ: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match service::listen("naive-server", listen).await {
        Ok(l) => l,
        Err(e) => return service::config_error("ha-load naive-server", e),
    };
    match ha_core::http::serve(
        listener,
        router,
        Some(tls),
        service::shutdown_signal(),
        Duration::from_secs(1),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("naive-server: {e}");
            ExitCode::FAILURE
        }
    }
}
