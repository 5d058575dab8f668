//! `hello`: the Kubernetes walkthrough's greeting app (host, user, a log
//! file on a volume).
//!
//! `cargo run --bin hello -- --listen 127.0.0.1:8080 --log-file /tmp/hello.log`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use reference_apps::service::{self, CommonArgs};
use walkthrough::hello::{self, HelloConfig, Identity};

/// Greets on /hello/{name}, shows its host and user on /, and serves the
/// last lines of its log file on /logs.
#[derive(Debug, Parser)]
#[command(name = "hello", version)]
struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port and logs it).
    #[arg(long, env = "HA_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The greeting log, one line per /hello request (mount a volume on its
    /// directory); /logs reads it back.
    #[arg(long, env = "HA_LOG_FILE", default_value = "/var/log/hello/hello.log")]
    log_file: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Args = service::parse_args();
    service::init_tracing(&args.common);
    let identity = Identity::current();
    if let Some(dir) = args.log_file.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        tracing::warn!(
            dir = %dir.display(),
            "The log file's directory does not exist; /hello will not be recorded."
        );
    }
    tracing::info!(
        host = %identity.hostname,
        user = %identity.describe_user(),
        log_file = %args.log_file.display(),
        "Starting."
    );
    let app = hello::router(
        HelloConfig {
            log_file: args.log_file,
        },
        identity,
    );
    let listener = match service::listen("hello", args.listen).await {
        Ok(l) => l,
        Err(e) => {
            return service::config_error(
                "hello",
                format!("cannot listen on {}: {e}", args.listen),
            );
        }
    };
    match ha_core::http::serve(
        listener,
        app,
        None,
        service::shutdown_signal(),
        args.common.drain_timeout,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Serving failed.");
            ExitCode::FAILURE
        }
    }
}
