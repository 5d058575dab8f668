//! One harness run: start (or target) the pipeline, the stepped load, the
//! batched step, window and connection memory, the backlog drain, then the
//! same-run baselines; returns everything measured.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ha_core::ingest::DeviceKeys;
use ha_core::queue::Queue;
use ha_core::queue::amqp::{AmqpConfig, AmqpQueue};
use ha_core::wire::Timestamp;

use super::baseline;
use super::driver::{Driver, DriverConfig, StepStats};
use super::http1::Endpoint;
use super::plan::{KneeBound, StepOutcome, StepPlan, Verdict, ms};
use super::process::{Spawned, run_to_end};
use super::procfs::{self, Component};
use super::results::{Connections, Machine, RunResults, StepRow, Windows};

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Where `ingest-api`, `analyzer`, `data-generator`, `ha-admin` are.
    pub bin_dir: PathBuf,
    /// RabbitMQ.
    pub amqp_url: String,
    /// PostgreSQL.
    pub postgres_url: String,
    /// Processes to account for besides the ones the harness starts
    /// (`rabbitmq=PID`, `postgres=PID`, or a running pipeline's).
    pub components: Vec<Component>,
    /// A running ingest API to target instead of starting one.
    pub url: Option<String>,
    /// Its CA certificate (with `url`).
    pub ca_cert: Option<PathBuf>,
    /// Its device key file (with `url`).
    pub device_key_file: Option<PathBuf>,
    /// Partition queues (for the queue depth).
    pub partitions: u32,
    /// Scratch files (certificates, logs).
    pub work_dir: PathBuf,
    /// Length of a step.
    pub step: Duration,
    /// The offered rates.
    pub plan: StepPlan,
    /// The knee.
    pub bound: KneeBound,
    /// Driver connections (ours and naive alike).
    pub connections: usize,
    /// Devices the one-reading steps cycle through.
    pub devices: usize,
    /// Readings per batched request.
    pub batch: usize,
    /// Batched requests per second.
    pub batch_rate: f64,
    /// Devices of the batched step (their windows are measured).
    pub window_devices: usize,
    /// Generator processes for the connection measurement (0: skip it).
    pub generators: usize,
    /// Devices (= connections) per generator.
    pub devices_per_generator: usize,
    /// Skip the naive composition and the raw baselines.
    pub skip_baselines: bool,
    /// Quick mode (recorded in the results).
    pub quick: bool,
    /// The command line to print in the doc.
    pub command: String,
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("[ha-load] {msg}");
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A prefix unique to this run (device ids must not collide with an
/// earlier run's, or the store's idempotency would hide readings).
fn run_prefix(kind: &str) -> String {
    let t = Timestamp::now().unix_micros() / 1_000_000 % 1_000_000;
    format!("{kind}{t}-")
}

struct Pipeline {
    url: String,
    ca_pem: Vec<u8>,
    keys: DeviceKeys,
    key_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ingest: Option<Spawned>,
    analyzer: Option<Spawned>,
    analyzer_runs: u32,
}

impl Pipeline {
    async fn start_analyzer(&mut self, config: &LoadConfig) -> Result<(), String> {
        self.analyzer_runs += 1;
        let mut a = Spawned::start(
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
        )?;
        a.listening(Duration::from_secs(30)).await?;
        self.analyzer = Some(a);
        Ok(())
    }
}

fn ingest_args(config: &LoadConfig, p: &Pipeline) -> Vec<String> {
    vec![
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

async fn start_pipeline(config: &LoadConfig) -> Result<Pipeline, String> {
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
    let tls = crate::demo_tls::DemoTls::generate()?;
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
        ca_pem: tls.ca_pem.into_bytes(),
        keys,
        key_file,
        cert,
        key,
        ingest: None,
        analyzer: None,
        analyzer_runs: 0,
    };
    let mut ingest = Spawned::start(
        "ingest-api",
        &config.bin_dir.join("ingest-api"),
        &ingest_args(config, &p),
        w.join("ingest-api.log"),
    )?;
    let addr = ingest.listening(Duration::from_secs(30)).await?;
    p.url = format!("https://{addr}");
    p.ingest = Some(ingest);
    p.start_analyzer(config).await?;
    log(format!("Pipeline up: ingest-api at {}.", p.url));
    Ok(p)
}

/// Stored readings of devices whose id starts with `prefix`.
struct StoreCounter {
    client: tokio_postgres::Client,
}

impl StoreCounter {
    async fn connect(url: &str) -> Result<StoreCounter, String> {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("PostgreSQL: {e}"))?;
        tokio::spawn(conn);
        Ok(StoreCounter { client })
    }

    async fn count(&self, prefix: &str) -> u64 {
        // Device ids are `<prefix><digits>`: a range on the key, not LIKE.
        let upper = format!("{prefix}\u{7f}");
        self.client
            .query_one(
                "SELECT count(*) FROM readings WHERE device_id >= $1 AND device_id < $2",
                &[&prefix, &upper],
            )
            .await
            .map(|row| row.get::<_, i64>(0).max(0) as u64)
            .unwrap_or(0)
    }

    /// Waits until `target` readings are stored (or `timeout`); returns the count.
    async fn wait_for(&self, prefix: &str, target: u64, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.count(prefix).await;
            if n >= target || tokio::time::Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn queue_depth(q: &AmqpQueue, partitions: u32) -> Option<u64> {
    let mut total = 0;
    for p in 0..partitions {
        total += q.depth(p).await.ok()?;
    }
    Some(total)
}

fn components(config: &LoadConfig, p: &Pipeline, naive: Option<&Spawned>) -> Vec<Component> {
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

fn row(stats: &StepStats, devices: usize, verdict: &Verdict) -> StepRow {
    StepRow {
        offered_rps: stats.offered_rps,
        batch: stats.batch,
        devices,
        acked_rps: stats.acked_readings_per_s(),
        p50_ms: ms(stats.latency.quantile(0.5)),
        p99_ms: ms(stats.latency.quantile(0.99)),
        p999_ms: ms(stats.latency.quantile(0.999)),
        requests: stats.requests,
        errors: stats.errors,
        verdict: match verdict {
            Verdict::Sustained => "sustained".into(),
            Verdict::Knee(why) => why.clone(),
        },
        first_error: stats.first_error.clone(),
        seconds: stats.duration.as_secs_f64(),
        ..StepRow::default()
    }
}

/// What a measured step needs besides the driver.
struct Probes<'a> {
    store: Option<&'a StoreCounter>,
    queue: Option<&'a AmqpQueue>,
    partitions: u32,
    components: Vec<Component>,
}

/// Runs one step and fills its row: rates, latency, stored rate, depth,
/// CPU and RSS per component.
/// What one step offers.
#[derive(Clone, Copy)]
struct Offer {
    rate: f64,
    batch: usize,
    duration: Duration,
}

async fn measured_step(
    label: &str,
    driver: &mut Driver,
    offer: Offer,
    bound: &KneeBound,
    probes: &Probes<'_>,
    prefix: &str,
    acked_before: u64,
) -> (StepRow, u64) {
    let Offer {
        rate,
        batch,
        duration,
    } = offer;
    let cpu_before = procfs::sample(&probes.components);
    let stored_before = match probes.store {
        Some(s) => Some(s.count(prefix).await),
        None => None,
    };
    let t0 = tokio::time::Instant::now();
    log(format!(
        "{label}: offering {rate:.0} req/s × {batch} reading(s) over {} devices for {:.0} s…",
        driver.devices(),
        duration.as_secs_f64()
    ));
    let expected = (rate * duration.as_secs_f64()) as u64;
    let stats = driver
        .step(rate, batch, duration, |t, acked, errors| {
            eprintln!(
                "[ha-load]   {label} {:>4.1} s: {acked}/{expected} acknowledged, {errors} errors",
                t.as_secs_f64()
            );
        })
        .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_after = procfs::sample(&probes.components);
    let outcome = StepOutcome {
        offered: rate * batch as f64,
        acked: stats.acked_readings_per_s(),
        errors: stats.errors,
        requests: stats.requests,
        p99: stats.latency.quantile(0.99),
    };
    let verdict = bound.judge(&outcome);
    let mut r = row(&stats, driver.devices(), &verdict);
    // The window the CPU figures cover (the step and its answers).
    r.seconds = elapsed;
    let acked_after = acked_before + stats.acked_readings;
    if let (Some(s), Some(before)) = (probes.store, stored_before) {
        let now = s.count(prefix).await;
        r.stored_rps = Some(now.saturating_sub(before) as f64 / elapsed.max(1e-9));
        r.backlog = Some(acked_after as i64 - now as i64);
    }
    if let Some(q) = probes.queue {
        r.queue_depth = queue_depth(q, probes.partitions).await;
    }
    r.cpu = probes
        .components
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|(c, (b, a))| (c.name.clone(), a.cpu.saturating_sub(b.cpu).as_secs_f64()))
        .collect();
    r.rss = probes
        .components
        .iter()
        .zip(&cpu_after)
        .map(|(c, a)| (c.name.clone(), a.rss))
        .collect();
    log(format!(
        "{label}: offered {:.0} readings/s → acked {:.0}/s, stored {}, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} errors{} — {}",
        outcome.offered,
        r.acked_rps,
        r.stored_rps.map_or("—".into(), |s| format!("{s:.0}/s")),
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        r.errors,
        r.first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})")),
        r.verdict
    ));
    (r, acked_after)
}

/// Runs the stepped load until the knee; returns the rows and the
/// readings acknowledged.
async fn stepped(
    label: &str,
    driver: &mut Driver,
    config: &LoadConfig,
    probes: &Probes<'_>,
    prefix: &str,
    acked_before: u64,
) -> (Vec<StepRow>, u64) {
    let mut rows = Vec::new();
    let mut acked = acked_before;
    for rate in config.plan.rates() {
        let (r, a) = measured_step(
            label,
            driver,
            Offer {
                rate,
                batch: 1,
                duration: config.step,
            },
            &config.bound,
            probes,
            prefix,
            acked,
        )
        .await;
        acked = a;
        let mut r = r;
        if !r.sustained() {
            // Other work on a shared machine can stall one step; a knee is
            // two failures in a row at the same rate.
            log(format!(
                "{label}: repeating the step once to rule out a transient stall."
            ));
            if let Some(s) = probes.store {
                s.wait_for(prefix, acked, config.step).await;
            }
            let (again, a) = measured_step(
                label,
                driver,
                Offer {
                    rate,
                    batch: 1,
                    duration: config.step,
                },
                &config.bound,
                probes,
                prefix,
                acked,
            )
            .await;
            acked = a;
            let first = r.verdict.clone();
            r = again;
            if r.sustained() {
                r.verdict = format!("sustained on the repeat (first try: {first})");
            }
        }
        let knee = !r.sustained();
        rows.push(r);
        if knee {
            log(format!("{label}: knee reached at {rate:.0} req/s."));
            break;
        }
        // Let the analyzer catch up so each step starts from an empty queue.
        if let Some(s) = probes.store {
            s.wait_for(prefix, acked, config.step).await;
        }
    }
    (rows, acked)
}

/// The whole run.
pub async fn run(config: LoadConfig) -> Result<RunResults, String> {
    let mut results = RunResults {
        machine: Machine::detect(),
        started: Timestamp::now().to_string(),
        quick: config.quick,
        command: config.command.clone(),
        step_seconds: config.step.as_secs_f64(),
        p99_bound_ms: ms(config.bound.p99),
        connections: config.connections,
        ..RunResults::default()
    };
    results.load_average_start = load_average();
    let mut p = start_pipeline(&config).await?;
    let endpoint = Endpoint::parse(&p.url, Some(&p.ca_pem))?;
    let store = StoreCounter::connect(&config.postgres_url).await.ok();
    let queue = AmqpQueue::new(AmqpConfig {
        urls: vec![config.amqp_url.clone()],
        partitions: config.partitions,
        connection_name: "ha-load".into(),
        ..AmqpConfig::default()
    })
    .ok();
    let probes = Probes {
        store: store.as_ref(),
        queue: queue.as_ref(),
        partitions: config.partitions,
        components: components(&config, &p, None),
    };

    // 1. Ours, one reading per request.
    let prefix = run_prefix("h");
    let first_seq = 1;
    let mut driver = Driver::connect(
        endpoint.clone(),
        DriverConfig {
            connections: config.connections,
            devices: config.devices,
            device_prefix: prefix.clone(),
            keys: Some(p.keys.clone()),
            ..DriverConfig::default()
        },
        first_seq,
    )
    .await
    .map_err(|e| format!("connecting the driver to {}: {e}", p.url))?;
    // Warm-up (TLS sessions, queue declarations, analyzer start): not reported.
    let warm = driver
        .step(200.0, 1, Duration::from_secs(2), |_, _, _| {})
        .await;
    let mut acked_total = warm.acked_readings;
    if warm.errors > 0 {
        log(format!(
            "Warm-up had {} errors (first: {:?}).",
            warm.errors, warm.first_error
        ));
    }
    let (rows, acked) = stepped("ours", &mut driver, &config, &probes, &prefix, acked_total).await;
    acked_total = acked;
    results.ours = rows;
    drop(driver);
    if let Some(s) = &store {
        log("Waiting for the analyzer to store every acknowledged reading…");
        results.stored_total = s
            .wait_for(&prefix, acked_total, Duration::from_secs(60))
            .await;
        results.acked_total = acked_total;
        log(format!(
            "{} acknowledged, {} stored.",
            results.acked_total, results.stored_total
        ));
    }

    // 2. Batched requests; the same devices' windows fill up.
    let wprefix = run_prefix("w");
    let analyzer_pid = p.analyzer.as_ref().map(Spawned::pid);
    let rss_before = analyzer_pid.map(procfs::rss);
    let mut bdriver = Driver::connect(
        endpoint.clone(),
        DriverConfig {
            connections: config.connections,
            devices: config.window_devices,
            device_prefix: wprefix.clone(),
            keys: Some(p.keys.clone()),
            ..DriverConfig::default()
        },
        first_seq,
    )
    .await
    .map_err(|e| format!("connecting the driver: {e}"))?;
    let per_device = 220u64;
    let readings = config.window_devices as u64 * per_device;
    let batched_secs = (readings as f64 / (config.batch_rate * config.batch as f64))
        .max(config.step.as_secs_f64());
    let (brow, backed) = measured_step(
        "batched",
        &mut bdriver,
        Offer {
            rate: config.batch_rate,
            batch: config.batch,
            duration: Duration::from_secs_f64(batched_secs),
        },
        &config.bound,
        &probes,
        &wprefix,
        0,
    )
    .await;
    let readings_per_window = backed / config.window_devices.max(1) as u64;
    results.batched = Some(brow);
    if let (Some(s), Some(pid), Some(before)) = (&store, analyzer_pid, rss_before) {
        s.wait_for(&wprefix, backed, Duration::from_secs(60)).await;
        results.windows = Some(Windows {
            windows: config.window_devices as u64,
            readings_per_window,
            rss_before: before,
            rss_after: procfs::rss(pid),
        });
    }

    // 3. Connections: a fresh ingest process, generators with one
    // connection per device.
    if config.generators > 0 && config.url.is_none() {
        match connections(&config, &p).await {
            Ok(c) => results.conns = Some(c),
            Err(e) => results
                .notes
                .push(format!("Connection measurement failed: {e}")),
        }
    }

    // 4. Ingest alone, then the backlog drain: stop the analyzer, step the
    // load (the backlog), restart it.
    if let (Some(a), Some(s)) = (p.analyzer.take(), &store) {
        a.stop(Duration::from_secs(20)).await;
        let dprefix = run_prefix("d");
        let mut ddriver = Driver::connect(
            endpoint.clone(),
            DriverConfig {
                connections: config.connections,
                devices: config.devices,
                device_prefix: dprefix.clone(),
                keys: Some(p.keys.clone()),
                ..DriverConfig::default()
            },
            first_seq,
        )
        .await
        .map_err(|e| format!("connecting the driver: {e}"))?;
        // Ingest alone, like the naive composition (nothing consumes while
        // it runs): the like-for-like comparison. Its readings are the
        // backlog the restarted analyzer then drains.
        log("Analyzer stopped: ingest-only steps (they build the backlog for the drain)…");
        let iprobes = Probes {
            store: None,
            queue: None,
            partitions: config.partitions,
            components: components(&config, &p, None),
        };
        let (rows, backlog) =
            stepped("ingest-only", &mut ddriver, &config, &iprobes, &dprefix, 0).await;
        results.ingest_only = rows;
        drop(ddriver);
        log(format!(
            "Drain: {backlog} readings queued; restarting the analyzer."
        ));
        p.start_analyzer(&config).await?;
        // The rate from the first stored reading to the last: the
        // analyzer's start-up is not drain throughput.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut first: Option<(tokio::time::Instant, u64)> = None;
        let mut stored = 0;
        while tokio::time::Instant::now() < deadline {
            stored = s.count(&dprefix).await;
            if first.is_none() && stored > 0 {
                first = Some((tokio::time::Instant::now(), stored));
            }
            if stored >= backlog {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (t_first, n_first) = first.unwrap_or((tokio::time::Instant::now(), 0));
        let secs = t_first.elapsed().as_secs_f64();
        let drained = stored.saturating_sub(n_first);
        log(format!(
            "Drain: {stored} of {backlog} stored; {drained} in {secs:.2} s after the first = {:.0} readings/s.",
            drained as f64 / secs.max(1e-9)
        ));
        if stored < backlog {
            results.notes.push(format!(
                "Drain: only {stored} of {backlog} readings stored within 120 s."
            ));
        }
        results.drain = Some(baseline::Rate {
            items: drained,
            seconds: secs,
        });
    }
    drop(bdriver);
    if let Some(a) = p.analyzer.take() {
        a.stop(Duration::from_secs(20)).await;
    }
    if let Some(i) = p.ingest.take() {
        i.stop(Duration::from_secs(10)).await;
    }

    if !config.skip_baselines {
        baselines(&config, &p, &(p.cert.clone(), p.key.clone()), &mut results).await;
    }
    results.load_average_end = load_average();
    Ok(results)
}

async fn baselines(
    config: &LoadConfig,
    p: &Pipeline,
    tls: &(PathBuf, PathBuf),
    results: &mut RunResults,
) {
    // The naive composition, same driver, same steps, same connections.
    if tls.0.as_os_str().is_empty() {
        results
            .notes
            .push("Naive composition not run: the harness targeted a running pipeline without its TLS key.".into());
    } else {
        match naive(config, p, tls).await {
            Ok(rows) => results.naive = rows,
            Err(e) => results.notes.push(format!("Naive composition failed: {e}")),
        }
    }
    log("Raw lapin publish, confirms pipelined (window 256, 2 channels)…");
    match baseline::raw_publish(&config.amqp_url, "perf.raw", config.step, 256, 2).await {
        Ok(r) => {
            log(format!("Raw publish: {:.0} msg/s.", r.per_second()));
            results.raw_publish = Some(r);
            log("Raw consume, prefetch 1000, `multiple` ack every 500…");
            match baseline::raw_consume(&config.amqp_url, "perf.raw", r.items).await {
                Ok(c) => {
                    log(format!("Raw consume: {:.0} msg/s.", c.per_second()));
                    results.raw_consume = Some(c);
                }
                Err(e) => results.notes.push(format!("Raw consume failed: {e}")),
            }
        }
        Err(e) => results.notes.push(format!("Raw publish failed: {e}")),
    }
    log("Raw binary COPY into PostgreSQL, 500 rows per COPY…");
    match baseline::raw_copy(&config.postgres_url, config.step, 500).await {
        Ok(r) => {
            log(format!("Raw COPY: {:.0} rows/s.", r.per_second()));
            results.raw_copy = Some(r);
        }
        Err(e) => results.notes.push(format!("Raw COPY failed: {e}")),
    }
}

async fn naive(
    config: &LoadConfig,
    p: &Pipeline,
    tls: &(PathBuf, PathBuf),
) -> Result<Vec<StepRow>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut server = Spawned::start(
        "naive",
        &exe,
        &[
            "naive-server".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--amqp-url".into(),
            config.amqp_url.clone(),
            "--tls-cert".into(),
            tls.0.display().to_string(),
            "--tls-key".into(),
            tls.1.display().to_string(),
        ],
        config.work_dir.join("naive.log"),
    )?;
    let addr = server.listening(Duration::from_secs(30)).await?;
    let endpoint = Endpoint::parse(&format!("https://{addr}"), Some(&p.ca_pem))?;
    let prefix = run_prefix("n");
    let mut driver = Driver::connect(
        endpoint,
        DriverConfig {
            connections: config.connections,
            devices: config.devices,
            device_prefix: prefix.clone(),
            keys: Some(p.keys.clone()),
            ..DriverConfig::default()
        },
        1,
    )
    .await
    .map_err(|e| format!("connecting to the naive server: {e}"))?;
    let warm = driver
        .step(200.0, 1, Duration::from_secs(2), |_, _, _| {})
        .await;
    let mut comps = vec![Component {
        name: "naive".into(),
        pid: server.pid(),
        tree: true,
    }];
    comps.extend(config.components.iter().cloned());
    comps.push(Component {
        name: "ha-load".into(),
        pid: std::process::id(),
        // Its children are the other components.
        tree: false,
    });
    let probes = Probes {
        store: None,
        queue: None,
        partitions: 0,
        components: comps,
    };
    let (rows, _) = stepped(
        "naive",
        &mut driver,
        config,
        &probes,
        &prefix,
        warm.acked_readings,
    )
    .await;
    drop(driver);
    server.stop(Duration::from_secs(5)).await;
    // Drop what the naive server queued (nobody consumes it).
    if let Ok(conn) =
        lapin::Connection::connect(&config.amqp_url, lapin::ConnectionProperties::default()).await
        && let Ok(ch) = conn.create_channel().await
    {
        let _ = ch
            .queue_delete(super::naive::NAIVE_QUEUE.into(), Default::default())
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(0, "done".into())).await;
    }
    Ok(rows)
}

async fn connections(config: &LoadConfig, p: &Pipeline) -> Result<Connections, String> {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .and_then(|x| x.split_whitespace().nth(4).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut ingest = Spawned::start(
        "ingest-conns",
        &config.bin_dir.join("ingest-api"),
        &ingest_args(config, p),
        config.work_dir.join("ingest-conns.log"),
    )?;
    let addr = ingest.listening(Duration::from_secs(30)).await?;
    let url = format!("https://{addr}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = ingest.pid();
    let ingest_rss_before = procfs::rss(pid);
    let fds_before = procfs::open_fds(pid);
    let generator = |name: &str, devices: usize, addrs: &[IpAddr], i: usize| {
        let mut args = vec![
            "--url".into(),
            url.clone(),
            "--ca-cert".into(),
            config.work_dir.join("ca.pem").display().to_string(),
            "--device-key-file".into(),
            p.key_file.display().to_string(),
            "--devices".into(),
            devices.to_string(),
            "--interval".into(),
            "10s".into(),
            "--device-prefix".into(),
            format!("{}{i}-", run_prefix("c")),
            "--log".into(),
            "warn".into(),
        ];
        if !addrs.is_empty() {
            args.push("--source-addrs".into());
            args.push(
                addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        Spawned::start(
            name,
            &config.bin_dir.join("data-generator"),
            &args,
            config.work_dir.join(format!("{name}.log")),
        )
    };
    // A small fleet first: the generator's own footprint.
    let small_devices = 100;
    let small = generator("generator-small", small_devices, &[], 0)?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let generator_rss_small = procfs::rss(small.pid());
    small.stop(Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let n = config.devices_per_generator;
    let mut gens = Vec::new();
    for g in 0..config.generators {
        // ~28k ports per source address: two addresses per generator.
        let addrs: Vec<IpAddr> = (0..2)
            .map(|k| IpAddr::from([127, 0, 0, (2 + g * 2 + k) as u8]))
            .collect();
        gens.push(generator(&format!("generator-{g}"), n, &addrs, g + 1)?);
    }
    let attempted = n * config.generators;
    log(format!(
        "Connections: {} generators × {n} devices connecting (one reading / 10 s each)…",
        config.generators
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut held;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        held = procfs::open_fds(pid).saturating_sub(fds_before);
        log(format!("Connections: ingest holds {held} of {attempted}."));
        if held >= attempted || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    // Let every device send at least once, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    held = procfs::open_fds(pid).saturating_sub(fds_before);
    let ingest_rss_after = procfs::rss(pid);
    let big: Vec<u64> = gens.iter().map(|g| procfs::rss(g.pid())).collect();
    let generator_rss_big = big.iter().sum::<u64>() / big.len().max(1) as u64;
    for g in gens {
        g.stop(Duration::from_secs(15)).await;
    }
    ingest.stop(Duration::from_secs(10)).await;
    Ok(Connections {
        connections: held,
        attempted,
        generators: config.generators,
        ingest_rss_before,
        ingest_rss_after,
        generator_rss_small,
        small_devices,
        generator_rss_big,
        devices_per_generator: n,
        fd_hard_limit: hard,
    })
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
