//! `ram-hogger`: allocates and touches memory, for the memory-limit and
//! OOM-kill demos.
//!
//! `cargo run --bin ram-hogger -- --megabytes 512 --step-megabytes 64 --step-interval 2s`

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use reference_apps::service::{self, CommonArgs};
use walkthrough::ram_hogger::{self, RamHogConfig, RamStats};

/// Allocates --megabytes MiB (--step-megabytes every --step-interval),
/// writes to every page so the resident set really grows, and holds it
/// until SIGTERM; serves /healthz and /metrics.
#[derive(Debug, Parser)]
#[command(name = "ram-hogger", version)]
struct Args {
    /// Address for /healthz and /metrics (`127.0.0.1:0` picks a free port and logs it).
    #[arg(long, env = "HA_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Memory to hold in the end, in MiB.
    #[arg(long, env = "HA_MEGABYTES", default_value_t = 256)]
    megabytes: u64,
    /// Growth per step, in MiB; default: all at once.
    #[arg(long, env = "HA_STEP_MEGABYTES")]
    step_megabytes: Option<u64>,
    /// Pause between steps (`500ms`, `5s`).
    #[arg(long, env = "HA_STEP_INTERVAL", default_value = "1s", value_parser = service::parse_duration)]
    step_interval: Duration,
    /// Allow more than this machine's memory (/proc/meminfo MemTotal).
    #[arg(long, env = "HA_I_KNOW")]
    i_know: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Args = service::parse_args();
    service::init_tracing(&args.common);
    let config = RamHogConfig {
        total_mib: args.megabytes,
        step_mib: args.step_megabytes.unwrap_or(args.megabytes),
        step_interval: args.step_interval,
        allow_absurd: args.i_know,
    };
    if let Err(e) = config.validate(ram_hogger::mem_total()) {
        return service::config_error("ram-hogger", e);
    }
    let listener = match service::listen("ram-hogger", args.listen).await {
        Ok(l) => l,
        Err(e) => {
            return service::config_error(
                "ram-hogger",
                format!("cannot listen on {}: {e}", args.listen),
            );
        }
    };
    let stats = Arc::new(RamStats::default());
    tracing::info!(
        megabytes = config.total_mib,
        step_megabytes = config.step_mib,
        step_interval = ?config.step_interval,
        "Allocating."
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hog = tokio::spawn(ram_hogger::run(config, stats.clone(), async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    let shutdown = async move {
        service::shutdown_signal().await;
        // Free the memory at once, not after the HTTP drain.
        let _ = stop_tx.send(true);
    };
    let served = ha_core::http::serve(
        listener,
        ram_hogger::router(stats),
        None,
        shutdown,
        args.common.drain_timeout,
    )
    .await;
    let _ = hog.await;
    match served {
        Ok(()) => {
            tracing::info!("Stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "Serving failed.");
            ExitCode::FAILURE
        }
    }
}
