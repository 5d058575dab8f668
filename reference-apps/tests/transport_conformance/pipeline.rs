//! The real pipeline a scenario runs against: `ingest-api` serving HTTPS
//! and MQTT over TLS on real RabbitMQ, the `analyzer` storing into a fresh
//! PostgreSQL database, a [`Relay`] in front of each listener, and device
//! clients configured for either transport.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_core::conformance::{server_url, unique_name};
use ha_core::ingest::token_for;
use ha_core::wire::{Metric, Reading, Timestamp};
use ha_device_client::{BufferLimits, Client, ClientConfig, Event, MemoryBuffer, RetryPolicy};
use ha_test_support::{Proc, create_database, wait_until, wait_until_async};
use reference_apps::demo_tls::DemoTls;

use crate::Transport;
use crate::proxy::Relay;

const KEY: &str = "transport-conformance-key-0123456789abcdef";
/// Ingest refuses readings older than this (`ts_too_old`).
pub const MAX_AGE: Duration = Duration::from_secs(3600);

pub struct Pipeline {
    pub transport: Transport,
    dir: PathBuf,
    ca: Vec<u8>,
    tls: Arc<rustls::ClientConfig>,
    db: String,
    ingest: Proc,
    _analyzer: Proc,
    /// In front of the listener of `transport`.
    pub relay: Relay,
}

/// What a client reported through its event callback.
pub type Events = Arc<Mutex<Vec<Event>>>;

impl Pipeline {
    /// Starts the pipeline, or `None` when the servers are not configured
    /// (outside CI; under CI `server_url` fails the test).
    pub async fn start(transport: Transport) -> Option<Pipeline> {
        let amqp = server_url("HA_TEST_AMQP_URL")?;
        let pg = server_url("HA_TEST_POSTGRES_URL")?;
        let dir = std::env::temp_dir().join(unique_name("ha-conformance-"));
        std::fs::create_dir_all(&dir).unwrap();
        eprintln!("{transport:?}: logs in {}", dir.display());
        let demo = DemoTls::generate().unwrap();
        let write = |name: &str, content: &str| {
            let p = dir.join(name);
            std::fs::write(&p, content).unwrap();
            p.to_str().unwrap().to_owned()
        };
        let (cert, key) = (
            write("cert.pem", &demo.cert_pem),
            write("key.pem", &demo.key_pem),
        );
        let device_key = write("device.key", KEY);
        let db = create_database(&pg, "conformance").await;
        migrate(&db);
        let prefix = format!("{}.readings", unique_name("conf"));
        let age = format!("{}s", MAX_AGE.as_secs());
        let ingest = Proc::start_logged(
            &dir,
            "ingest",
            env!("CARGO_BIN_EXE_ingest-api"),
            &[
                "--listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
                "--amqp-url",
                &amqp,
                "--partitions",
                "4",
                "--queue-prefix",
                &prefix,
                "--device-key-file",
                &device_key,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--max-reading-age",
                &age,
            ],
        );
        let mqtt = mqtt_addr(&ingest);
        let analyzer = Proc::start_logged(
            &dir,
            "analyzer",
            env!("CARGO_BIN_EXE_analyzer"),
            &[
                "--listen",
                "127.0.0.1:0",
                "--amqp-url",
                &amqp,
                "--postgres-url",
                &db,
                "--partitions",
                "4",
                "--queue-prefix",
                &prefix,
                "--member-id",
                "an",
            ],
        );
        let upstream = match transport {
            Transport::Https => ingest.addr,
            Transport::Mqtt | Transport::MqttWindow => mqtt,
        };
        let pipeline = Pipeline {
            transport,
            relay: Relay::start(upstream).await,
            tls: Arc::new(client_tls(&demo.ca_pem)),
            ca: demo.ca_pem.into_bytes(),
            db,
            dir,
            ingest,
            _analyzer: analyzer,
        };
        wait_until("ingest ready", Duration::from_secs(30), || {
            pipeline.get("/readyz").0 == 200
        });
        Some(pipeline)
    }

    /// A client for `device` over this pipeline's transport, through the
    /// relay; `token` defaults to the device's own.
    pub fn client(&self, device: &str, token: Option<&str>) -> (Client<MemoryBuffer>, Events) {
        let token = token.map_or_else(|| token_for(KEY.as_bytes(), device), str::to_owned);
        let (scheme, in_flight) = match self.transport {
            Transport::Https => ("https", 1),
            Transport::Mqtt => ("mqtts", 1),
            Transport::MqttWindow => ("mqtts", 4),
        };
        let events: Events = Arc::default();
        let sink = events.clone();
        let config = ClientConfig::new(
            format!("{scheme}://localhost:{}", self.relay.port),
            device,
            token,
        )
        .with_ca_pem(self.ca.clone())
        // Generous: they only bound a hang on a busy machine; the
        // scenarios cut connections rather than wait for timeouts.
        .with_connect_timeout(Duration::from_secs(10))
        .with_request_timeout(Duration::from_secs(30))
        .with_retry_policy(
            RetryPolicy::linear(Duration::from_millis(100), Duration::from_millis(500), 100)
                .unwrap(),
        )
        .with_batch(5, 1 << 20)
        .with_pacing(Duration::from_millis(5))
        .with_mqtt_max_in_flight(in_flight)
        .with_event_callback(move |e| sink.lock().unwrap().push(e.clone()));
        let buffer = MemoryBuffer::new(BufferLimits::default());
        (Client::new(config, buffer).unwrap(), events)
    }

    /// Rows of `device` in the store: `(seq, value)` by `seq`.
    pub async fn rows(&self, device: &str) -> Vec<(i64, f64)> {
        let (client, conn) = tokio_postgres::connect(&self.db, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query(
                "SELECT seq, value FROM readings WHERE device_id = $1 ORDER BY seq",
                &[&device],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Waits until `device` has at least `n` rows, then a little longer
    /// (for late duplicates), and returns its rows.
    pub async fn stored(&self, device: &str, n: usize) -> Vec<(i64, f64)> {
        let what = format!("{n} rows of {device} stored");
        wait_until_async(&what, Duration::from_secs(60), || async {
            self.rows(device).await.len() >= n
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.rows(device).await
    }

    /// Readings ingest acknowledged (202 or PUBACK), resends included.
    pub fn accepted(&self) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .filter(|l| l.starts_with("ha_ingest_readings_accepted_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// `GET path` straight to ingest over TLS (not through the relay).
    fn get(&self, path: &str) -> (u16, String) {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).unwrap();
        let Ok(tcp) = TcpStream::connect(self.ingest.addr) else {
            return (0, String::new());
        };
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        if tls.write_all(req.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
        (status, body.unwrap_or_default())
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The value a scenario's reading carries: distinct per device and `seq`,
/// so a row holding another reading's value shows.
pub fn value(device: &str, seq: u64) -> f64 {
    let tag: u64 = device.bytes().map(u64::from).sum();
    (tag * 10_000 + seq) as f64 + 0.25
}

pub fn reading(device: &str, seq: u64) -> Reading {
    reading_at(device, seq, Timestamp::now())
}

pub fn reading_at(device: &str, seq: u64, ts: Timestamp) -> Reading {
    Reading {
        device_id: device.into(),
        seq,
        ts,
        metrics: vec![Metric::new("temp", value(device, seq))],
    }
}

/// The rows `device` must have: `seqs`, each once, with its own value.
pub fn expected(device: &str, seqs: std::ops::Range<u64>) -> Vec<(i64, f64)> {
    seqs.map(|s| (s as i64, value(device, s))).collect()
}

fn migrate(db: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ha-admin"))
        .args(["migrate", "--postgres-url", db])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ha-admin migrate: {err}");
}

/// The MQTT listener's address, from ingest's log.
fn mqtt_addr(ingest: &Proc) -> SocketAddr {
    let log: &Path = ingest.log.as_deref().unwrap();
    let mut addr = None;
    wait_until(
        "the MQTT address in the log",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            addr = text
                .split("MQTT listening on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok());
            addr.is_some()
        },
    );
    addr.unwrap()
}

fn client_tls(ca_pem: &str) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}
