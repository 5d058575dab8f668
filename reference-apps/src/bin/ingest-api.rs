//! `ingest-api`: devices post readings; the answer is 202 only after the
//! broker confirmed them.
//!
//! `cargo run --bin ingest-api -- --help`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ha_core::ingest::{
    DeviceKeys, IngestConfig, IngestService, MqttConfig, MqttListener, RateLimit,
};
use ha_core::queue::amqp::{AmqpConfig, AmqpQueue};
use reference_apps::service::{self, CommonArgs, QueueArgs, parse_duration};

/// Ingest API: authenticates devices, validates readings, publishes them to
/// RabbitMQ quorum queues and answers 202 after the broker confirmed.
#[derive(Debug, Parser)]
#[command(name = "ingest-api", version)]
struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port and logs it).
    #[arg(long, env = "HA_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    #[command(flatten)]
    queue: QueueArgs,
    /// TLS certificate chain (PEM). Without it the API speaks plain HTTP
    /// (TLS terminated in front, e.g. at the ingress).
    #[arg(long, env = "HA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "HA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File with a device key (HMAC secret); repeat for key rotation.
    #[arg(
        long = "device-key-file",
        env = "HA_DEVICE_KEY_FILE",
        value_delimiter = ','
    )]
    device_key_files: Vec<PathBuf>,
    /// Accept readings without device authentication (demos only).
    #[arg(long, env = "HA_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Serve `POST /kill`, which exits at once (failover drills).
    #[arg(long, env = "HA_ENABLE_KILL")]
    enable_kill: bool,
    /// Requests publishing at once; past it, 503 with Retry-After.
    #[arg(long, env = "HA_MAX_IN_FLIGHT", default_value_t = 4096)]
    max_in_flight: usize,
    /// Per-device limit in readings per second (burst: 10 s worth, at
    /// least 1 reading); off when absent. A request of more readings than
    /// the burst is admitted once the device's bucket is full, which then
    /// goes into debt: no request size is refused for ever.
    #[arg(long, env = "HA_RATE_LIMIT")]
    rate_limit: Option<f64>,
    /// Refuse readings whose `ts` is older than this (422 `ts_too_old`);
    /// keep the analyzer's `--retention` at least this long.
    #[arg(long, env = "HA_MAX_READING_AGE", default_value = "30d", value_parser = parse_duration)]
    max_reading_age: Duration,
    /// A request body must arrive within this, or 408 `body_timeout`.
    #[arg(long, env = "HA_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Bound on one publish, reconnects included; then 503.
    #[arg(long, env = "HA_PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    publish_timeout: Duration,
    /// Group commit: queue messages per partition awaiting their confirm at
    /// once; requests arriving meanwhile share the next message.
    #[arg(long, env = "HA_BATCH_IN_FLIGHT", default_value_t = IngestConfig::default().publishes_per_partition)]
    batch_in_flight: usize,
    /// Group commit: most readings in one queue message.
    #[arg(long, env = "HA_BATCH_MAX_READINGS", default_value_t = IngestConfig::default().max_message_readings)]
    batch_max_readings: usize,
    /// Group commit: most bytes in one queue message.
    #[arg(long, env = "HA_BATCH_MAX_BYTES", default_value_t = IngestConfig::default().max_message_bytes)]
    batch_max_bytes: usize,
    /// Group commit: wait this long for more requests before publishing a
    /// message that is not full (`0s`: never wait).
    #[arg(long, env = "HA_BATCH_LINGER", default_value = "0s", value_parser = parse_duration)]
    batch_linger: Duration,
    #[command(flatten)]
    mqtt: MqttArgs,
    #[command(flatten)]
    common: CommonArgs,
}

/// The MQTT listener (docs/mqtt.md).
#[derive(Debug, clap::Args)]
struct MqttArgs {
    /// Also accept devices over MQTT 3.1.1/5.0 on this address (e.g.
    /// `0.0.0.0:8883`); off when absent. TLS with --tls-cert/--tls-key.
    #[arg(long, env = "HA_MQTT_LISTEN")]
    mqtt_listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM) for MQTT only; default: --tls-cert. Lets
    /// HTTP stay plain behind an ingress while MQTT, passed through as TCP,
    /// ends TLS here.
    #[arg(long, env = "HA_MQTT_TLS_CERT", requires = "mqtt_tls_key")]
    mqtt_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for MQTT only; default: --tls-key.
    #[arg(long, env = "HA_MQTT_TLS_KEY", requires = "mqtt_tls_cert")]
    mqtt_tls_key: Option<PathBuf>,
    /// Serve MQTT without TLS (device tokens cross the network in clear):
    /// only behind a TLS-terminating proxy or in tests.
    #[arg(long, env = "HA_MQTT_INSECURE_PLAINTEXT")]
    mqtt_insecure_plaintext: bool,
    /// QoS 1 publishes a connection may have unacknowledged (CONNACK
    /// Receive Maximum).
    #[arg(long, env = "HA_MQTT_RECEIVE_MAXIMUM", default_value_t = MqttConfig::default().receive_maximum)]
    mqtt_receive_maximum: u16,
    /// Longest keep-alive granted (a client asking for 0 or more gets this);
    /// silent connections close after 1.5 × the keep-alive.
    #[arg(long, env = "HA_MQTT_MAX_KEEP_ALIVE", default_value = "300s", value_parser = parse_duration)]
    mqtt_max_keep_alive: Duration,
}

/// jemalloc instead of the system allocator: see
/// docs/connection-memory.md (fewer resident bytes per idle connection).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = service::parse_args();
    service::init_tracing(&args.common);
    let keys = match (&args.device_key_files[..], args.insecure_no_auth) {
        ([], false) => {
            return service::config_error(
                "ingest-api",
                "no --device-key-file given; pass one, or --insecure-no-auth for a demo",
            );
        }
        ([], true) => {
            tracing::warn!(
                "Device authentication is OFF (--insecure-no-auth): anyone can post readings."
            );
            None
        }
        (files, _) => match DeviceKeys::from_files(files) {
            Ok(k) => Some(k),
            Err(e) => return service::config_error("ingest-api", e),
        },
    };
    let tls = match load_tls(&args.tls_cert, &args.tls_key) {
        Ok(t) => t,
        Err(e) => return service::config_error("ingest-api", e),
    };
    let mqtt_tls = match load_tls(&args.mqtt.mqtt_tls_cert, &args.mqtt.mqtt_tls_key) {
        Ok(Some(t)) => Some(t),
        Ok(None) => tls.clone(),
        Err(e) => return service::config_error("ingest-api", e),
    };
    let queue = match AmqpQueue::new(AmqpConfig {
        publish_timeout: args.publish_timeout,
        ..args.queue.amqp_config("ingest-api")
    }) {
        Ok(q) => Arc::new(q),
        Err(e) => return service::config_error("ingest-api", e),
    };
    let config = IngestConfig {
        keys,
        max_in_flight: args.max_in_flight,
        rate_limit: args.rate_limit.map(|r| RateLimit {
            per_second: r,
            burst: (r * 10.0).max(1.0),
        }),
        max_reading_age: args.max_reading_age,
        body_timeout: args.body_timeout,
        kill: args.enable_kill.then(|| {
            ha_core::ingest::KillHook::new(|| {
                tracing::warn!("POST /kill: exiting at once.");
                std::process::exit(137)
            })
        }),
        publishes_per_partition: args.batch_in_flight,
        max_message_readings: args.batch_max_readings,
        max_message_bytes: args.batch_max_bytes,
        linger: args.batch_linger,
        ..IngestConfig::default()
    };
    if let Err(e) = config.validate() {
        return service::config_error("ingest-api", e);
    }
    let mqtt = match &args.mqtt.mqtt_listen {
        Some(addr) => {
            let config = MqttConfig {
                receive_maximum: args.mqtt.mqtt_receive_maximum,
                max_keep_alive: args.mqtt.mqtt_max_keep_alive,
                insecure_plaintext: args.mqtt.mqtt_insecure_plaintext,
                ..MqttConfig::default()
            };
            if mqtt_tls.is_none() && config.insecure_plaintext {
                tracing::warn!(
                    "MQTT without TLS (--mqtt-insecure-plaintext): device tokens cross the network in clear."
                );
            }
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    return service::config_error(
                        "ingest-api",
                        format!("cannot listen on {addr}: {e}"),
                    );
                }
            };
            match MqttListener::new(listener, mqtt_tls, config) {
                Ok(m) => {
                    if let Ok(local) = m.local_addr() {
                        tracing::info!(%local, "ingest-api MQTT listening on {local}");
                    }
                    Some(m)
                }
                Err(e) => return service::config_error("ingest-api", e),
            }
        }
        None => None,
    };
    let ingest = IngestService::new(queue, config);
    service::run_until_signal(
        "ingest-api",
        args.listen,
        &args.common,
        |listener, shutdown, config| async move {
            ingest
                .run_with_mqtt(listener, tls, mqtt, shutdown, &config)
                .await
        },
    )
    .await
}

/// The TLS configuration from a certificate and key file, when both are given.
fn load_tls(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let (c, k) = (read(cert)?, read(key)?);
    ha_core::http::load_tls(&c, &k)
        .map(Some)
        .map_err(|e| e.to_string())
}
