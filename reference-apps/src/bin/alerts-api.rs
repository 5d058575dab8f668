//! `alerts-api`: the read-only JSON API over anomalies and readings, with
//! the web UI.
//!
//! `cargo run --bin alerts-api -- --help`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use ha_core::alerts::{AlertsConfig, AlertsService};
use ha_core::store::postgres::{PostgresConfig, PostgresStore};
use reference_apps::service::{self, CommonArgs};

/// Alerts API and web UI: anomalies, a device's readings and health, a live
/// stream; every /v1 route requires the operator token.
#[derive(Debug, Parser)]
#[command(name = "alerts-api", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "HA_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// PostgreSQL or CockroachDB URL.
    #[arg(long, env = "HA_POSTGRES_URL")]
    postgres_url: String,
    /// PEM CA of the database's certificate (`sslmode=verify-full` in the URL).
    #[arg(long, env = "HA_POSTGRES_CA_FILE")]
    postgres_ca_file: Option<PathBuf>,
    /// File holding the operator token (`Authorization: Bearer <token>`).
    #[arg(long, env = "HA_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Serve without operator authentication (demos only; logs a warning).
    #[arg(long, env = "HA_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
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
    let api_token = match (&args.api_token_file, args.insecure_no_auth) {
        (Some(f), _) => match service::read_secret(f) {
            Ok(t) => Some(t),
            Err(e) => return service::config_error("alerts-api", e),
        },
        // AlertsService::new warns loudly about running without a token.
        (None, true) => None,
        (None, false) => {
            return service::config_error(
                "alerts-api",
                "no --api-token-file given; pass one, or --insecure-no-auth for a demo",
            );
        }
    };
    let store = match PostgresStore::new(PostgresConfig {
        url: args.postgres_url.clone(),
        ca_file: args.postgres_ca_file.clone(),
        pool_size: args.db_pool,
        ..PostgresConfig::default()
    }) {
        Ok(s) => Arc::new(s),
        Err(e) => return service::config_error("alerts-api", e),
    };
    let alerts = AlertsService::new(
        store,
        AlertsConfig {
            api_token,
            ..AlertsConfig::default()
        },
    );
    service::run_until_signal(
        "alerts-api",
        args.listen,
        &args.common,
        |listener, shutdown, config| async move { alerts.run(listener, None, shutdown, &config).await },
    )
    .await
}
