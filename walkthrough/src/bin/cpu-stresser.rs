//! `cpu-stresser`: burns CPU for the HorizontalPodAutoscaler demo.
//!
//! `cargo run --bin cpu-stresser -- --threads 2 --load 0.5 --duration 5m`

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use reference_apps::service::{self, CommonArgs};
use walkthrough::cpu_stresser::{self, CpuStress, CpuStressConfig, MAX_THREADS};

/// Burns CPU on --threads threads at --load (fraction of each 100 ms) for
/// --duration, then idles; serves /healthz and /metrics until SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "cpu-stresser", version)]
struct Args {
    /// Address for /healthz and /metrics (`127.0.0.1:0` picks a free port and logs it).
    #[arg(long, env = "HA_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Burning threads (1 to 1024).
    #[arg(long, env = "HA_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=MAX_THREADS as i64))]
    threads: u16,
    /// Fraction of each 100 ms a thread spins, 0 to 1 (`0.5`: half a core per thread).
    #[arg(long, env = "HA_LOAD", default_value = "1", value_parser = parse_fraction)]
    load: f64,
    /// How long to burn (`90s`, `10m`), then idle until SIGTERM; default: until SIGTERM.
    #[arg(long, env = "HA_DURATION", value_parser = service::parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    common: CommonArgs,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("`{s}` is not a fraction from 0 to 1")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Args = service::parse_args();
    service::init_tracing(&args.common);
    let config = CpuStressConfig {
        threads: usize::from(args.threads),
        load: args.load,
        duration: args.duration,
        ..CpuStressConfig::default()
    };
    if let Err(e) = config.validate() {
        return service::config_error("cpu-stresser", e);
    }
    let listener = match service::listen("cpu-stresser", args.listen).await {
        Ok(l) => l,
        Err(e) => {
            return service::config_error(
                "cpu-stresser",
                format!("cannot listen on {}: {e}", args.listen),
            );
        }
    };
    let stress = match CpuStress::start(&config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the burner threads.");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        threads = config.threads,
        load = config.load,
        duration = ?config.duration,
        "Burning CPU."
    );
    if config.duration.is_some() {
        let stats = stress.stats();
        tokio::spawn(async move {
            while stats.running() > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tracing::info!("Burn finished; idling until SIGTERM.");
        });
    }
    let app = cpu_stresser::router(stress.stats());
    let shutdown = async {
        service::shutdown_signal().await;
        // Stop burning at once, not after the HTTP drain.
        stress.halt();
    };
    let served =
        ha_core::http::serve(listener, app, None, shutdown, args.common.drain_timeout).await;
    let busy = stress.stats().busy_seconds();
    stress.stop();
    match served {
        Ok(()) => {
            tracing::info!(busy_seconds = busy, "Stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "Serving failed.");
            ExitCode::FAILURE
        }
    }
}
