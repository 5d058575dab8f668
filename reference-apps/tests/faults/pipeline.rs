//! One drill's pipeline (ingest replicas behind haproxy, analyzers, a
//! fresh database and queue prefix on the shared servers), its device
//! fleet, and the audit of what was acknowledged against what was stored.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ha_core::conformance::unique_name;
use ha_core::ingest::DeviceKeys;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use reference_apps::demo_tls::DemoTls;
use reference_apps::generator::{self, FleetStats, GeneratorConfig, GeneratorReport};
use tokio::time::Instant;

use crate::procs::{Haproxy, Proc, free_addr};

/// The drills' device key: the file ingest loads and the tokens devices
/// send come from this one value (ingest refuses keys under 32 bytes).
const DRILL_KEY: &str = "fault-drill-key-0123456789abcdef0123456789";

pub const PARTITIONS: u32 = 4;

/// Where the servers of `scripts/faults` are.
pub struct Env {
    /// Every node of the RabbitMQ cluster, comma-separated.
    pub amqp_urls: String,
    /// Each node's directory (`pid`, `start`, `rabbitmqctl`, `env`).
    pub rabbit_nodes: Vec<PathBuf>,
    pub postgres_url: String,
    /// `pgctl stop -m fast`, `pgctl start`.
    pub pgctl: PathBuf,
    /// The results file each drill appends its line to.
    pub results: PathBuf,
}

/// The servers of `scripts/faults`; `None` (SKIPPED) outside it, a failure
/// in CI.
pub fn env() -> Option<Env> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let vars = (
        get("HA_FAULT_AMQP_URLS"),
        get("HA_FAULT_RABBIT_NODES"),
        get("HA_TEST_POSTGRES_URL"),
        get("HA_FAULT_PGCTL"),
    );
    let (Some(amqp_urls), Some(nodes), Some(postgres_url), Some(pgctl)) = vars else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the fault drills need the servers of scripts/faults (a 3-node RabbitMQ cluster, PostgreSQL, haproxy); run scripts/faults"
        );
        eprintln!("SKIPPED: run the fault drills with scripts/faults");
        return None;
    };
    let results = get("HA_FAULT_RESULTS").map_or_else(
        || std::env::temp_dir().join("ha-fault-results.txt"),
        PathBuf::from,
    );
    Some(Env {
        amqp_urls,
        rabbit_nodes: nodes.split(',').map(PathBuf::from).collect(),
        postgres_url,
        pgctl: PathBuf::from(pgctl),
        results,
    })
}

/// Shape of a drill's pipeline.
pub struct Options {
    pub ingest: usize,
    pub analyzers: usize,
    /// Backend slots in haproxy with nothing listening yet (a replica that
    /// may start later, as a pod of a rolling update would).
    pub spare: usize,
    /// haproxy re-sends a request that met a dead, hung or draining
    /// replica; without it the device sees the error and retries itself.
    pub resend: bool,
    /// Extra flags for every ingest replica.
    pub ingest_args: Vec<String>,
    /// The replicas also listen for MQTT (TLS), behind haproxy's TCP
    /// frontend.
    pub mqtt: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ingest: 2,
            analyzers: 1,
            spare: 0,
            resend: true,
            ingest_args: Vec::new(),
            mqtt: false,
        }
    }
}

pub struct Pipeline {
    pub dir: PathBuf,
    pub db: String,
    pub prefix: String,
    pub amqp: String,
    key_file: PathBuf,
    ingest_args: Vec<String>,
    /// Each replica's MQTT listener, when `Options::mqtt`.
    pub mqtt_addrs: Vec<SocketAddr>,
    pub tls: DemoTls,
    pub keys: DeviceKeys,
    /// Ingest replicas (`ingest-a`, `ingest-b`, ...), in haproxy's order.
    pub ingest: Vec<Proc>,
    /// Their listen addresses (fixed: haproxy knows them).
    pub ingest_addrs: Vec<SocketAddr>,
    /// Spare haproxy slots (`spare-a`, ...).
    pub spare: Vec<SocketAddr>,
    pub analyzers: Vec<Proc>,
    pub lb: Haproxy,
}

impl Pipeline {
    pub async fn start(env: &Env, name: &str, options: Options) -> Pipeline {
        let dir = std::env::temp_dir().join(unique_name(&format!("ha-fault-{name}-")));
        std::fs::create_dir_all(&dir).expect("temp dir");
        eprintln!("[{name}] logs in {}", dir.display());
        let db = ha_test_support::create_database(&env.postgres_url, "fault").await;
        let migrate = Command::new(env!("CARGO_BIN_EXE_ha-admin"))
            .args(["migrate", "--postgres-url", &db])
            .output()
            .expect("ha-admin migrate");
        assert!(
            migrate.status.success(),
            "{}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let prefix = format!("{}.readings", unique_name("fault"));
        declare_dead_letter_queue(&env.amqp_urls, &prefix).await;
        let key_file = dir.join("device.key");
        std::fs::write(&key_file, format!("{}\n", DRILL_KEY)).expect("key file");
        let keys = DeviceKeys::from_keys(vec![DRILL_KEY.as_bytes().to_vec()]).expect("keys");
        let tls = DemoTls::generate().expect("certificate");
        let ingest_addrs: Vec<SocketAddr> = (0..options.ingest).map(|_| free_addr()).collect();
        let spare: Vec<SocketAddr> = (0..options.spare).map(|_| free_addr()).collect();
        let mqtt_addrs: Vec<SocketAddr> = if options.mqtt {
            (0..options.ingest).map(|_| free_addr()).collect()
        } else {
            Vec::new()
        };
        std::fs::write(dir.join("ingest-cert.pem"), &tls.cert_pem).expect("cert file");
        std::fs::write(dir.join("ingest-key.pem"), &tls.key_pem).expect("key file");
        let mut p = Pipeline {
            dir: dir.clone(),
            db,
            prefix,
            amqp: env.amqp_urls.clone(),
            key_file,
            ingest_args: options.ingest_args,
            mqtt_addrs: mqtt_addrs.clone(),
            keys,
            ingest: Vec::new(),
            ingest_addrs: ingest_addrs.clone(),
            spare: spare.clone(),
            analyzers: Vec::new(),
            lb: {
                let mut servers: Vec<(String, SocketAddr)> = ingest_addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (replica_name("ingest", i), *a))
                    .collect();
                servers.extend(
                    spare
                        .iter()
                        .enumerate()
                        .map(|(i, a)| (replica_name("spare", i), *a)),
                );
                let servers: Vec<(&str, SocketAddr)> =
                    servers.iter().map(|(n, a)| (n.as_str(), *a)).collect();
                let mqtt: Vec<(&str, SocketAddr, SocketAddr)> = mqtt_addrs
                    .iter()
                    .zip(&servers)
                    .map(|(m, (n, http))| (*n, *m, *http))
                    .collect();
                Haproxy::start(
                    &dir,
                    &servers,
                    &format!("{}{}", tls.cert_pem, tls.key_pem),
                    options.resend,
                    &mqtt,
                )
            },
            tls,
        };
        for i in 0..options.ingest {
            let proc = p.start_ingest(i);
            p.ingest.push(proc);
        }
        for i in 0..options.analyzers {
            let proc = p.start_analyzer(&replica_name("analyzer", i));
            p.analyzers.push(proc);
        }
        let up: Vec<String> = (0..options.ingest)
            .map(|i| replica_name("ingest", i))
            .collect();
        let up: Vec<&str> = up.iter().map(String::as_str).collect();
        p.lb.wait_up(&up, Duration::from_secs(20));
        p.wait_partitions_owned(Duration::from_secs(20)).await;
        p
    }

    /// Starts ingest replica `i` on its fixed address.
    pub fn start_ingest(&self, i: usize) -> Proc {
        let mqtt = match self.mqtt_addrs.get(i) {
            Some(m) => vec![
                "--mqtt-listen".to_owned(),
                m.to_string(),
                "--mqtt-tls-cert".to_owned(),
                self.dir.join("ingest-cert.pem").display().to_string(),
                "--mqtt-tls-key".to_owned(),
                self.dir.join("ingest-key.pem").display().to_string(),
            ],
            None => Vec::new(),
        };
        self.start_ingest_args(
            &replica_name("ingest", i),
            self.ingest_addrs[i],
            &self.amqp,
            &mqtt,
        )
    }

    /// Starts an ingest replica named `name` on `addr` with broker `amqp`.
    pub fn start_ingest_with(&self, name: &str, addr: SocketAddr, amqp: &str) -> Proc {
        self.start_ingest_args(name, addr, amqp, &[])
    }

    fn start_ingest_args(
        &self,
        name: &str,
        addr: SocketAddr,
        amqp: &str,
        extra: &[String],
    ) -> Proc {
        Proc::start_logged(
            &self.dir,
            name,
            env!("CARGO_BIN_EXE_ingest-api"),
            &[
                "--listen",
                &addr.to_string(),
                "--amqp-url",
                amqp,
                "--partitions",
                &PARTITIONS.to_string(),
                "--queue-prefix",
                &self.prefix,
                "--device-key-file",
                path(&self.key_file),
                "--enable-kill",
                "--drain-timeout",
                "10s",
            ]
            .into_iter()
            .chain(self.ingest_args.iter().map(String::as_str))
            .chain(extra.iter().map(String::as_str))
            .collect::<Vec<_>>(),
        )
    }

    pub fn start_analyzer(&self, name: &str) -> Proc {
        Proc::start_logged(
            &self.dir,
            name,
            env!("CARGO_BIN_EXE_analyzer"),
            &[
                "--listen",
                "127.0.0.1:0",
                "--amqp-url",
                &self.amqp,
                "--postgres-url",
                &self.db,
                "--partitions",
                &PARTITIONS.to_string(),
                "--queue-prefix",
                &self.prefix,
                "--member-id",
                name,
                "--drain-timeout",
                "10s",
            ],
        )
    }

    /// Starts `alerts-api` on this drill's database; its operator token
    /// is `operator-secret`.
    pub fn start_alerts(&self) -> Proc {
        let token = self.dir.join("operator.token");
        std::fs::write(&token, "operator-secret\n").expect("token file");
        Proc::start_logged(
            &self.dir,
            "alerts",
            env!("CARGO_BIN_EXE_alerts-api"),
            &[
                "--listen",
                "127.0.0.1:0",
                "--postgres-url",
                &self.db,
                "--api-token-file",
                path(&token),
                "--drain-timeout",
                "10s",
            ],
        )
    }

    /// Waits until the live analyzers own every partition between them.
    pub async fn wait_partitions_owned(&self, limit: Duration) {
        if self.analyzers.is_empty() {
            return;
        }
        let deadline = Instant::now() + limit;
        loop {
            let owned: f64 = self
                .analyzers
                .iter()
                .filter_map(|a| a.metric("ha_analyzer_owned_partitions"))
                .sum();
            if owned as u32 == PARTITIONS {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "analyzers own {owned} of {PARTITIONS} partitions after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The seed's fleet: 100 devices, one reading every 200 ms each, the
    /// seed's retry defaults, some spikes; every send recorded.
    pub fn fleet(&self) -> GeneratorConfig {
        GeneratorConfig {
            url: format!("https://{}", self.lb.addr),
            devices: 100,
            interval: Duration::from_millis(200),
            anomaly_rate: 0.02,
            max_spikes_per_device: 3,
            ca_pem: Some(self.tls.ca_pem.clone().into_bytes()),
            keys: Some(self.keys.clone()),
            start_seq: 0,
            record_sends: true,
            ..GeneratorConfig::default()
        }
    }

    /// The same fleet over MQTT: each device its own MQTT 5 session
    /// through haproxy's TCP frontend to the replicas' listeners.
    pub fn mqtt_fleet(&self) -> GeneratorConfig {
        let lb = self
            .lb
            .mqtt_addr
            .expect("a pipeline started with Options::mqtt");
        GeneratorConfig {
            url: format!("mqtts://{lb}"),
            transport: generator::Transport::Mqtt,
            ..self.fleet()
        }
    }

    /// Starts the fleet; [`Load::finish`] stops it and lets every device
    /// send what it still holds.
    pub fn start_load(&self, config: GeneratorConfig) -> Load {
        let stats = Arc::new(FleetStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(generator::run(config, stats.clone(), async move {
            let _ = stopped.await;
        }));
        Load {
            stop,
            handle,
            stats,
        }
    }

    /// Readings acknowledged by the ingest replicas and not yet stored by
    /// the analyzers (from their metrics): the backlog the queue holds,
    /// delivered or not.
    pub fn unstored(&self) -> Option<u64> {
        let accepted: f64 = self
            .ingest
            .iter()
            .map(|i| i.metric("ha_ingest_readings_accepted_total"))
            .sum::<Option<f64>>()?;
        let stored: f64 = self
            .analyzers
            .iter()
            .map(|a| {
                Some(
                    a.metric("ha_analyzer_readings_stored_total")?
                        + a.metric("ha_analyzer_duplicates_total")?,
                )
            })
            .sum::<Option<f64>>()?;
        Some((accepted - stored).max(0.0) as u64)
    }

    /// Counts the stored rows against the fleet's acknowledgements, waiting
    /// (up to 120 s) for the analyzers to store every acknowledged reading.
    pub async fn audit(&self, report: &GeneratorReport) -> Audit {
        let acked: HashSet<(String, u64)> = report
            .devices
            .iter()
            .flat_map(|d| d.acknowledged_seqs().map(|s| (d.device_id.clone(), s)))
            .collect();
        let sent = report.devices.iter().map(|d| d.generated).sum();
        let (client, conn) = tokio_postgres::connect(&self.db, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(conn);
        let deadline = Instant::now() + Duration::from_secs(120);
        let rows = loop {
            let rows: HashMap<(String, u64), i64> = client
                .query(
                    "SELECT device_id, seq, count(*) FROM readings WHERE metric = 'pulse' GROUP BY device_id, seq",
                    &[],
                )
                .await
                .expect("count readings")
                .iter()
                .map(|r| ((r.get::<_, String>(0), r.get::<_, i64>(1) as u64), r.get(2)))
                .collect();
            if acked.iter().all(|k| rows.contains_key(k)) || Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let stored = acked.iter().filter(|k| rows.get(*k) == Some(&1)).count() as u64;
        let lost = acked.iter().filter(|k| !rows.contains_key(*k)).count() as u64;
        let duplicates: u64 = rows.values().map(|n| (n - 1).max(0) as u64).sum();
        let anomaly_rows: i64 = client
            .query_one(
                "SELECT count(*) - count(DISTINCT (device_id, seq, metric)) FROM anomalies",
                &[],
            )
            .await
            .expect("count anomalies")
            .get(0);
        Audit {
            sent,
            acked: acked.len() as u64,
            stored,
            lost,
            duplicates: duplicates + anomaly_rows.max(0) as u64,
            dead_lettered: self.dead_lettered().await,
            ownership_overlaps: crate::ownership::overlaps(
                &crate::ownership::epochs(&self.db).await,
            )
            .len() as u64,
        }
    }

    async fn dead_lettered(&self) -> u64 {
        let connection = connect(&self.amqp).await.expect("connect to RabbitMQ");
        let ch = connection.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                dlq_name(&self.prefix).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the drill's dead-letter queue");
        let _ = connection.close(200, "done".into()).await;
        u64::from(q.message_count())
    }

    /// Sum of a metric over the live analyzers.
    pub fn analyzers_metric(&self, name: &str) -> f64 {
        self.analyzers.iter().filter_map(|a| a.metric(name)).sum()
    }

    /// Stops every process and removes the logs (kept when the drill
    /// failed: this is not reached then).
    pub fn finish(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `ingest-a`, `ingest-b`, ...
pub fn replica_name(kind: &str, i: usize) -> String {
    format!("{kind}-{}", (b'a' + i as u8) as char)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn dlq_name(prefix: &str) -> String {
    format!("{prefix}.dead")
}

async fn connect(urls: &str) -> Option<Connection> {
    for url in urls.split(',') {
        let attempt = tokio::time::timeout(
            Duration::from_secs(3),
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await;
        if let Ok(Ok(c)) = attempt {
            return Some(c);
        }
    }
    None
}

/// The drill's dead-letter queue: what the broker dead-letters from this
/// prefix's partitions (the `ha-readings` policy sends it to `ha.dlx`).
async fn declare_dead_letter_queue(urls: &str, prefix: &str) {
    let connection = connect(urls).await.expect("connect to RabbitMQ");
    let ch = connection.create_channel().await.expect("channel");
    ha_test_support::declare_dead_letter_queue(&ch, prefix, &dlq_name(prefix), true).await;
    let _ = connection.close(200, "done".into()).await;
}

/// The running fleet.
pub struct Load {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<GeneratorReport>,
    pub stats: Arc<FleetStats>,
}

impl Load {
    /// Sends under way now, over the fleet.
    pub fn open_sends(&self) -> u64 {
        self.stats
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Readings acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.stats
            .acknowledged
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops generating; every device then sends what it holds (with its
    /// normal retries) and the report comes back.
    pub async fn finish(self) -> GeneratorReport {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(120), self.handle)
            .await
            .expect("the fleet did not finish within 120 s")
            .expect("fleet task")
    }
}

/// Acknowledged against stored, per `(device_id, seq, metric)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Audit {
    /// Readings the devices generated.
    pub sent: u64,
    /// Distinct readings acknowledged with a 2xx.
    pub acked: u64,
    /// Acknowledged readings stored exactly once.
    pub stored: u64,
    /// Acknowledged readings not stored.
    pub lost: u64,
    /// Extra rows (readings or anomalies) beyond one per key.
    pub duplicates: u64,
    /// Messages in the drill's dead-letter queue.
    pub dead_lettered: u64,
    /// Violations of one-owner-per-partition in the analyzers' ownership
    /// record (`find_overlaps`).
    pub ownership_overlaps: u64,
}
