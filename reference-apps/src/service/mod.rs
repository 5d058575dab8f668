//! What every reference service shares: logging, shutdown signals,
//! listeners, durations in flags, and the exit code for bad configuration.

mod detector_args;
mod duration;
mod ecs;

use std::net::SocketAddr;
use std::process::ExitCode;

pub use detector_args::{DEPRECATED_ENV, DetectorArgs};
pub use duration::{format_duration, parse_duration};
pub use ecs::{ECS_VERSION, EcsLayer};

/// Exit code for invalid configuration (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
    /// One JSON object per line in Elastic Common Schema fields, with the
    /// request id (`http.request.id`); see docs/logging.md.
    Ecs,
}

/// Flags every service has.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// Log format.
    #[arg(long, env = "HA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `ha_core=debug,info`.
    #[arg(long, env = "HA_LOG", default_value = "info")]
    pub log: String,
    /// On SIGTERM: how long in-flight work may take to finish.
    #[arg(long, env = "HA_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// What the HTTP server grants each connection.
    #[command(flatten)]
    pub http: HttpArgs,
}

/// What the HTTP server grants each connection (every service has an HTTP
/// listener, the analyzer for its probes).
#[derive(Clone, Debug, clap::Args)]
pub struct HttpArgs {
    /// A connection must send a complete request head within this after it
    /// connects or starts a request (slow-header clients are closed).
    #[arg(long, env = "HA_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: std::time::Duration,
    /// A connection carrying no request is closed after this; keep it
    /// above the devices' interval between sends so they are not churned.
    #[arg(long, env = "HA_IDLE_TIMEOUT", default_value = "180s", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Bound on a TLS handshake.
    #[arg(long, env = "HA_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: std::time::Duration,
    /// Open connections at most; past it new ones get 503
    /// `too_many_connections` and are closed (counted in
    /// `ha_<service>_connections_refused_total`).
    #[arg(long, env = "HA_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,
    /// HTTP/1.1: release the per-connection buffers while a keep-alive
    /// connection waits for its next request (about half an idle
    /// connection's memory; docs/connection-memory.md).
    #[arg(long, env = "HA_PARK_IDLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub park_idle: bool,
}

impl CommonArgs {
    /// The server settings these flags describe.
    pub fn serve_config(&self) -> ha_core::http::ServeConfig {
        ha_core::http::ServeConfig {
            drain: self.drain_timeout,
            deregister_delay: std::time::Duration::from_secs(1),
            handshake_timeout: self.http.handshake_timeout,
            header_read_timeout: self.http.header_read_timeout,
            idle_timeout: self.http.idle_timeout,
            max_connections: self.http.max_connections,
            park_idle: self.http.park_idle,
        }
    }
}

/// Where the partition queues are: flags shared by every service that
/// talks to RabbitMQ (ingest and analyzer must agree on all three).
#[derive(Clone, Debug, clap::Args)]
pub struct QueueArgs {
    /// RabbitMQ URL; repeat (or comma-separate in the variable) for the
    /// nodes of a cluster, tried in order.
    #[arg(
        long = "amqp-url",
        env = "HA_AMQP_URL",
        value_delimiter = ',',
        required = true
    )]
    pub amqp_urls: Vec<String>,
    /// PEM CA of the brokers' certificates, for `amqps://` URLs.
    #[arg(long, env = "HA_AMQP_CA_FILE")]
    pub amqp_ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for brokers that verify clients.
    #[arg(
        long,
        env = "HA_AMQP_CLIENT_CERT_FILE",
        requires = "amqp_client_key_file"
    )]
    pub amqp_client_cert_file: Option<std::path::PathBuf>,
    /// PEM PKCS#8 key of `--amqp-client-cert-file`.
    #[arg(
        long,
        env = "HA_AMQP_CLIENT_KEY_FILE",
        requires = "amqp_client_cert_file"
    )]
    pub amqp_client_key_file: Option<std::path::PathBuf>,
    /// Number of partition queues; the same on every ingest and analyzer.
    #[arg(long, env = "HA_PARTITIONS", default_value_t = 8)]
    pub partitions: u32,
    /// Partition `p` is the queue `<prefix>.<p>`.
    #[arg(long, env = "HA_QUEUE_PREFIX", default_value = "ha.readings")]
    pub queue_prefix: String,
}

impl QueueArgs {
    /// The queue settings, naming the connection `connection_name` in the
    /// broker's connection list.
    pub fn amqp_config(&self, connection_name: &str) -> ha_core::queue::amqp::AmqpConfig {
        ha_core::queue::amqp::AmqpConfig {
            urls: self.amqp_urls.clone(),
            ca_file: self.amqp_ca_file.clone(),
            client_cert_file: self.amqp_client_cert_file.clone(),
            client_key_file: self.amqp_client_key_file.clone(),
            partitions: self.partitions,
            queue_prefix: self.queue_prefix.clone(),
            connection_name: connection_name.to_owned(),
            ..ha_core::queue::amqp::AmqpConfig::default()
        }
    }
}

/// Installs the log subscriber. Secrets are never logged: configuration
/// structs holding them print redacted.
pub fn init_tracing(common: &CommonArgs) {
    let filter = || {
        tracing_subscriber::EnvFilter::try_new(&common.log)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let builder = || {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
    };
    match common.log_format {
        LogFormat::Json => builder().json().init(),
        LogFormat::Text => builder().with_ansi(false).init(),
        LogFormat::Ecs => {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            PLAIN_STDERR.store(false, std::sync::atomic::Ordering::Relaxed);
            tracing_subscriber::registry()
                .with(filter())
                .with(EcsLayer::new(
                    &service_name(),
                    env!("CARGO_PKG_VERSION"),
                    std::io::stderr,
                ))
                .init();
        }
    }
}

/// The service's name in logs: the program's file name (`ingest-api`).
fn service_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ha-pipeline".to_owned())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("Shutdown signal received.");
}

/// Whether stderr may carry lines that are not log records: false under
/// `--log-format ecs`, whose consumers expect one ECS document per line.
static PLAIN_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Binds `addr` and logs `listening on <addr>` with the real port (so
/// `--listen 127.0.0.1:0` can be used by tests and scripts); under
/// `--log-format ecs` only as the log record's `labels.local`.
pub async fn listen(what: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "{what} listening on {local}");
    if PLAIN_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("listening on {local}");
    }
    Ok(listener)
}

/// Binds `addr` and runs a service's `run` with a shutdown future for
/// SIGTERM/Ctrl-C and the server settings of `common`; returns the exit
/// code (64 for a bad setting or an address that cannot be bound).
pub async fn run_until_signal<F, Fut>(
    program: &str,
    addr: SocketAddr,
    common: &CommonArgs,
    run: F,
) -> ExitCode
where
    F: FnOnce(tokio::net::TcpListener, BoxedShutdown, ha_core::http::ServeConfig) -> Fut,
    Fut: std::future::Future<Output = Result<(), ha_core::http::ServeError>>,
{
    let config = common.serve_config();
    if let Err(e) = config.validate() {
        return config_error(program, e);
    }
    let listener = match listen(program, addr).await {
        Ok(l) => l,
        Err(e) => return config_error(program, format!("cannot listen on {addr}: {e}")),
    };
    match run(listener, Box::pin(shutdown_signal()), config).await {
        Ok(()) => {
            tracing::info!("Drained; bye.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "Serving failed.");
            ExitCode::FAILURE
        }
    }
}

/// The shutdown future [`run_until_signal`] passes to a service.
pub type BoxedShutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Prints a configuration error and returns exit code 64.
pub fn config_error(program: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{program}: invalid configuration: {message}");
    ExitCode::from(EXIT_CONFIG)
}

/// Reads a secret from a file: its content with surrounding whitespace
/// trimmed.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

/// Parses the command line like `clap::Parser::parse`, except that a usage
/// error (unknown flag, bad value) exits with [`EXIT_CONFIG`] instead of
/// clap's 2, as invalid configuration does everywhere else; `--help` and
/// `--version` print and exit 0.
///
/// Values taken from `HA_*` variables are never shown in `--help` (they
/// hold broker and database URLs with passwords).
pub fn parse_args<T: clap::Parser>() -> T {
    parse_args_from(std::env::args_os())
}

/// [`parse_args`] over `args` (the first is the program name).
pub fn parse_args_from<T: clap::Parser>(args: impl IntoIterator<Item = std::ffi::OsString>) -> T {
    let parsed = redacted(T::command())
        .try_get_matches_from(args)
        .and_then(|m| T::from_arg_matches(&m));
    match parsed {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() {
                i32::from(EXIT_CONFIG)
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

/// `command` with every argument's environment value hidden from help
/// output, subcommands included.
pub fn redacted(command: clap::Command) -> clap::Command {
    command
        .mut_args(|a| a.hide_env_values(true))
        .mut_subcommands(redacted)
}
