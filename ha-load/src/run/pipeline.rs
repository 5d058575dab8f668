//! Pipeline start-up: certificates, the schema, ingest-api and the
//! analyzer as child processes (or a running pipeline's address and keys).

use std::path::PathBuf;
use std::time::Duration;

use ha_core::ingest::DeviceKeys;
use ha_core::wire::Timestamp;

use super::{LoadConfig, log};
use crate::process::{Spawned, run_to_end};
use crate::procfs::Component;

pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A prefix unique to this run (device ids must not collide with an
/// earlier run's, or the store's idempotency would hide readings).
pub(super) fn run_prefix(kind: &str) -> String {
    let t = Timestamp::now().unix_micros() / 1_000_000 % 1_000_000;
    format!("{kind}{t}-")
}

/// A loopback port free right now, for a listener whose address the
/// service does not print at `--log warn` (ingest's MQTT listener).
pub(super) fn free_port() -> Result<std::net::SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))
}

pub(super) struct Pipeline {
    pub(super) url: String,
    /// Ingest's MQTT listener, `mqtts://127.0.0.1:PORT`.
    pub(super) mqtt_url: String,
    pub(super) ca_pem: Vec<u8>,
    pub(super) keys: DeviceKeys,
    pub(super) key_file: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) ingest: Option<Spawned>,
    pub(super) analyzer: Option<Spawned>,
    pub(super) analyzer_runs: u32,
}

impl Pipeline {
    pub(super) async fn start_analyzer(&mut self, config: &LoadConfig) -> Result<(), String> {
        let mut a = self.spawn_analyzer(config)?;
        a.listening(Duration::from_secs(30)).await?;
        self.analyzer = Some(a);
        Ok(())
    }

    /// A new analyzer process, not yet waited for.
    pub(super) fn spawn_analyzer(&mut self, config: &LoadConfig) -> Result<Spawned, String> {
        self.analyzer_runs += 1;
        Spawned::start(
            "analyzer",
            &config.bin_dir.join("analyzer"),
            &[
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--amqp-url".into(),
                config.amqp_url.clone(),
                "--postgres-url".into(),
                config.postgres_url.clone(),
                "--partitions".into(),
                config.partitions.to_string(),
                "--log".into(),
                "warn".into(),
            ],
            config
                .work_dir
                .join(format!("analyzer-{}.log", self.analyzer_runs)),
        )
    }
}

/// ingest-api's flags: HTTPS on a free port, MQTT over TLS on `mqtt`.
pub(super) fn ingest_args(
    config: &LoadConfig,
    p: &Pipeline,
    mqtt: std::net::SocketAddr,
) -> Vec<String> {
    vec![
        "--mqtt-listen".into(),
        mqtt.to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--amqp-url".into(),
        config.amqp_url.clone(),
        "--partitions".into(),
        config.partitions.to_string(),
        "--device-key-file".into(),
        p.key_file.display().to_string(),
        "--tls-cert".into(),
        p.cert.display().to_string(),
        "--tls-key".into(),
        p.key.display().to_string(),
        "--log".into(),
        "warn".into(),
    ]
}

pub(super) async fn start_pipeline(config: &LoadConfig) -> Result<Pipeline, String> {
    std::fs::create_dir_all(&config.work_dir).map_err(|e| e.to_string())?;
    if let Some(url) = &config.url {
        let read = |p: &Option<PathBuf>, what: &str| {
            let p = p.as_ref().ok_or(format!("--url needs --{what}"))?;
            std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let ca_pem = read(&config.ca_cert, "ca-cert")?;
        read(&config.device_key_file, "device-key-file")?;
        let key_file = config.device_key_file.clone().unwrap_or_default();
        let keys = DeviceKeys::from_files(&[&key_file]).map_err(|e| e.to_string())?;
        return Ok(Pipeline {
            url: url.clone(),
            mqtt_url: String::new(),
            ca_pem,
            keys,
            key_file,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            ingest: None,
            analyzer: None,
            analyzer_runs: 0,
        });
    }
    let tls = reference_apps::demo_tls::DemoTls::generate()?;
    let w = &config.work_dir;
    let write = |name: &str, text: &str| {
        let p = w.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok::<_, String>(p)
    };
    let cert = write("cert.pem", &tls.cert_pem)?;
    let key = write("key.pem", &tls.key_pem)?;
    write("ca.pem", &tls.ca_pem)?;
    let key_file = write("device.key", &random_hex(32))?;
    let keys = DeviceKeys::from_files(&[&key_file]).map_err(|e| e.to_string())?;
    log("Applying the schema (ha-admin migrate).");
    run_to_end(
        &config.bin_dir.join("ha-admin"),
        &[
            "migrate".into(),
            "--postgres-url".into(),
            config.postgres_url.clone(),
        ],
    )?;
    let mut p = Pipeline {
        url: String::new(),
        mqtt_url: String::new(),
        ca_pem: tls.ca_pem.into_bytes(),
        keys,
        key_file,
        cert,
        key,
        ingest: None,
        analyzer: None,
        analyzer_runs: 0,
    };
    let mqtt = free_port()?;
    let mut ingest = Spawned::start(
        "ingest-api",
        &config.bin_dir.join("ingest-api"),
        &ingest_args(config, &p, mqtt),
        w.join("ingest-api.log"),
    )?;
    let addr = ingest.listening(Duration::from_secs(30)).await?;
    p.url = format!("https://{addr}");
    p.mqtt_url = format!("mqtts://{mqtt}");
    p.ingest = Some(ingest);
    p.start_analyzer(config).await?;
    log(format!("Pipeline up: ingest-api at {}.", p.url));
    Ok(p)
}

pub(super) fn components(
    config: &LoadConfig,
    p: &Pipeline,
    naive: Option<&Spawned>,
) -> Vec<Component> {
    let mut c = Vec::new();
    for s in [p.ingest.as_ref(), p.analyzer.as_ref(), naive]
        .into_iter()
        .flatten()
    {
        c.push(Component {
            name: s.name.clone(),
            pid: s.pid(),
            tree: true,
        });
    }
    c.extend(config.components.iter().cloned());
    c.push(Component {
        name: "ha-load".into(),
        pid: std::process::id(),
        // Its children are the other components.
        tree: false,
    });
    c
}
