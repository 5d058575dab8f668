//! One harness run: start (or target) the pipeline, the fsync probe, the
//! stepped load over HTTPS then MQTT, the batched step, window and
//! connection memory (HTTPS, MQTT), ingest alone and the backlog drain, the
//! closed loop with the analyzer stopped, then the same-run baselines;
//! returns everything measured.
//!
//! | file | what |
//! |---|---|
//! | `pipeline.rs` | start (or target) ingest-api and the analyzer |
//! | `account.rs` | ingest's own account of a step (its `/metrics`): messages, confirm latency |
//! | `probes.rs` | stored readings, queue depth: what a step measures besides the driver |
//! | `steps.rs` | one measured step; the stepped load to the knee |
//! | `baselines.rs` | the naive composition and the raw lapin/COPY baselines |
//! | `connections.rs` | connection memory: generators with one connection per device (HTTPS, MQTT) |
//! | `fsync.rs` | fdatasync/s under PostgreSQL's data directory (`pg_test_fsync`) |
//! | `scaling.rs` | the backlog drain; 1 → 2 replicas of ingest and of the analyzer |

mod account;
mod baselines;
mod connections;
mod fsync;
mod latency;
mod pipeline;
mod probes;
mod scaling;
mod steps;

use std::path::PathBuf;
use std::time::Duration;

use ha_core::queue::amqp::{AmqpConfig, AmqpQueue};
use ha_core::wire::Timestamp;

use crate::closed_loop::{self, WrkConfig};
use crate::driver::{Driver, DriverConfig, Transport};
use crate::http1::Endpoint;
use crate::plan::{KneeBound, StepPlan, ms};
use crate::process::Spawned;
use crate::procfs::{self, Component};
use crate::results::{Machine, RunResults, Windows};

use baselines::baselines;
use connections::connections;
use pipeline::{Pipeline, components, run_prefix, start_pipeline};
use probes::{Probes, StoreCounter};
use steps::{Offer, measured_step, stepped};

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
    /// Only the warm-up and the latency target.
    pub latency_only: bool,
    /// Steps per placement of the latency target.
    pub repeats: usize,
    /// Quick mode (recorded in the results).
    pub quick: bool,
    /// The command line to print in the doc.
    pub command: String,
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("[ha-load] {msg}");
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
        ingest: Some(&endpoint),
    };

    if let Some(s) = &store {
        results.postgres_durability = s.durability().await;
        log(format!("PostgreSQL: {}.", results.postgres_durability));
        if results.postgres_durability.contains("fsync=on") {
            fsync_probe(s, &config, &mut results).await;
        }
    }

    // 1. Ours, one reading per request.
    let prefix = run_prefix("h");
    let first_seq = 1;
    let mut driver = Driver::connect(
        endpoint.clone(),
        fleet(&config, &p.keys, &prefix),
        first_seq,
    )
    .await
    .map_err(|e| format!("connecting the driver to {}: {e}", p.url))?;
    // Warm-up, not reported: TLS sessions, queue declarations, the
    // analyzer's start, and one reading from every device, so the steps
    // measure the steady state and not the analyzer warm-starting the
    // windows of devices it meets for the first time (one store query per
    // new series; a first run had its first steps stall on it).
    const WARM_RATE: f64 = 1_000.0;
    let warm_for = Duration::from_secs_f64((config.devices as f64 / WARM_RATE).max(2.0));
    log(format!(
        "Warm-up: {WARM_RATE:.0} req/s for {:.0} s (every device once), not reported…",
        warm_for.as_secs_f64()
    ));
    let warm = driver.step(WARM_RATE, 1, warm_for, |_, _, _| {}).await;
    let mut acked_total = warm.acked_readings;
    if warm.errors > 0 {
        log(format!(
            "Warm-up had {} errors (first: {:?}).",
            warm.errors, warm.first_error
        ));
    }
    if let Some(s) = &store {
        s.wait_for(&prefix, acked_total, Duration::from_secs(30))
            .await;
    }
    if !config.latency_only {
        let (rows, acked) =
            stepped("ours", &mut driver, &config, &probes, &prefix, acked_total).await;
        acked_total = acked;
        results.ours = rows;
    }
    // 1a. The latency target, analyzer storing: repeats in each placement
    // of the processes on the cores.
    let (target, acked) = latency::latency_target(
        &config,
        &mut driver,
        &probes,
        &prefix,
        config.repeats,
        acked_total,
    )
    .await;
    acked_total = acked;
    results.latency_target = Some(target);
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

    if config.latency_only {
        results.notes.push(
            "Only the latency target was run (--latency-only): no steps, baselines or memory figures.".into(),
        );
        results.load_average_end = load_average();
        return Ok(results);
    }

    // 1b. The same driver and steps over MQTT, analyzer storing.
    if p.mqtt_url.is_empty() {
        results.notes.push(
            "MQTT steps not run: the harness targeted a running pipeline (--url), whose MQTT listener it does not know.".into(),
        );
    } else {
        mqtt_steps(&config, &p, &probes, store.as_ref(), &mut results).await;
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
        match connections(&config, &p, Transport::Http).await {
            Ok(c) => results.conns = Some(c),
            Err(e) => results
                .notes
                .push(format!("Connection measurement (HTTPS) failed: {e}")),
        }
        match connections(&config, &p, Transport::Mqtt).await {
            Ok(c) => results.conns_mqtt = Some(c),
            Err(e) => results
                .notes
                .push(format!("Connection measurement (MQTT) failed: {e}")),
        }
    }

    // 4. Ingest alone, then the backlog drain: stop the analyzer, step the
    // load (the backlog), restart it.
    if let (Some(a), Some(s)) = (p.analyzer.take(), &store) {
        a.stop(Duration::from_secs(20)).await;
        let dprefix = run_prefix("d");
        let mut ddriver = Driver::connect(
            endpoint.clone(),
            fleet(&config, &p.keys, &dprefix),
            first_seq,
        )
        .await
        .map_err(|e| format!("connecting the driver: {e}"))?;
        // Ingest alone, like the naive composition (nothing consumes while
        // it runs): the like-for-like comparison. Its readings are the
        // backlog the restarted analyzer then drains.
        log("Analyzer stopped: ingest-only steps (they build the backlog for the drain)…");
        probes::checkpoint(s, &mut results.notes).await;
        let iprobes = Probes {
            store: None,
            queue: None,
            partitions: config.partitions,
            components: components(&config, &p, None),
            ingest: Some(&endpoint),
        };
        let (rows, backlog) =
            stepped("ingest-only", &mut ddriver, &config, &iprobes, &dprefix, 0).await;
        results.ingest_only = rows;
        drop(ddriver);
        log(format!(
            "Drain: {backlog} readings queued; restarting the analyzer."
        ));
        p.start_analyzer(&config).await?;
        results.drain = Some(scaling::drain(s, &dprefix, backlog, &[], &mut results.notes).await);
        // 4a. The same with two replicas of ingest, then of the analyzer.
        if let Err(e) = scaling::two_replicas(&config, &mut p, s, &mut results).await {
            results
                .notes
                .push(format!("1 → 2 replicas not measured: {e}"));
        }
    }
    drop(bdriver);
    if let Some(a) = p.analyzer.take() {
        a.stop(Duration::from_secs(20)).await;
    }

    // 5. The closed-loop driver against ingest alone (analyzer stopped), as
    // it runs against the naive composition, which has no consumer.
    closed_loop_ours(&config, &p, &mut results).await;
    if let Some(i) = p.ingest.take() {
        i.stop(Duration::from_secs(10)).await;
    }

    if !config.skip_baselines {
        baselines(&config, &p, &(p.cert.clone(), p.key.clone()), &mut results).await;
    }
    results.load_average_end = load_average();
    Ok(results)
}

/// The disk's fdatasync/s under the data directory, before any load.
async fn fsync_probe(s: &StoreCounter, config: &LoadConfig, results: &mut RunResults) {
    let Some(dir) = s.data_directory().await else {
        results
            .notes
            .push("fsync ceiling not measured: PostgreSQL did not tell its data_directory.".into());
        return;
    };
    match fsync::probe(std::path::Path::new(&dir), if config.quick { 1 } else { 2 }).await {
        Ok(f) => {
            log(format!(
                "fsync ceiling: {:.0} fdatasync/s on {} ({}).",
                f.fdatasync_per_s, f.data_directory, f.fs_type
            ));
            results.fsync = Some(f);
        }
        Err(e) => results
            .notes
            .push(format!("fsync ceiling not measured: {e}")),
    }
}

/// The stepped load over MQTT: one QoS 1 session per driver connection
/// (each its own device), one reading per PUBLISH; its readings count in
/// the run's acknowledged and stored totals.
async fn mqtt_steps(
    config: &LoadConfig,
    p: &Pipeline,
    probes: &Probes<'_>,
    store: Option<&StoreCounter>,
    results: &mut RunResults,
) {
    let endpoint = match Endpoint::parse(&p.mqtt_url, Some(&p.ca_pem)) {
        Ok(e) => e,
        Err(e) => {
            results.notes.push(format!("MQTT steps not run: {e}"));
            return;
        }
    };
    let prefix = run_prefix("q");
    let driver = Driver::connect(
        endpoint,
        DriverConfig {
            connections: config.connections,
            device_prefix: prefix.clone(),
            keys: Some(p.keys.clone()),
            transport: Transport::Mqtt,
            ..DriverConfig::default()
        },
        1,
    )
    .await;
    let mut driver = match driver {
        Ok(d) => d,
        Err(e) => {
            results.notes.push(format!(
                "MQTT steps not run: connecting to {}: {e}",
                p.mqtt_url
            ));
            return;
        }
    };
    log(format!(
        "MQTT: {} sessions (one device each), QoS 1, one reading per PUBLISH.",
        driver.devices()
    ));
    let warm = driver
        .step(200.0, 1, Duration::from_secs(2), |_, _, _| {})
        .await;
    let (rows, acked) = stepped(
        "mqtt",
        &mut driver,
        config,
        probes,
        &prefix,
        warm.acked_readings,
    )
    .await;
    results.mqtt = rows;
    drop(driver);
    if let Some(s) = store {
        let stored = s.wait_for(&prefix, acked, Duration::from_secs(60)).await;
        log(format!("MQTT: {acked} acknowledged, {stored} stored."));
        results.acked_total += acked;
        results.stored_total += stored;
    }
}

/// `wrk` against our ingest with nothing consuming; then its readings are
/// purged from the partition queues (no figure counts them, and a queue
/// holding them would burden the broker during the baselines).
async fn closed_loop_ours(config: &LoadConfig, p: &Pipeline, results: &mut RunResults) {
    log("Closed loop (wrk) against ingest alone (analyzer stopped)…");
    match closed_loop::run(
        &p.url,
        &p.keys,
        &run_prefix("k"),
        &wrk_config(config),
        &config.work_dir,
    )
    .await
    {
        Ok(c) => {
            log(format!(
                "Closed loop, ingest alone: {:.0} req/s ({} non-2xx), p99 {:.1} ms.",
                c.requests_per_sec, c.non_2xx, c.p99_ms
            ));
            results.closed_ours = Some(c);
        }
        Err(e) => results
            .notes
            .push(format!("Closed loop against ingest failed: {e}")),
    }
    if config.url.is_some() {
        return;
    }
    let names = AmqpConfig {
        partitions: config.partitions,
        ..AmqpConfig::default()
    };
    let purged = async {
        let conn =
            lapin::Connection::connect(&config.amqp_url, lapin::ConnectionProperties::default())
                .await?;
        let ch = conn.create_channel().await?;
        let mut n = 0;
        for part in 0..config.partitions {
            n += ch
                .queue_purge(names.queue_name(part).as_str().into(), Default::default())
                .await?;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(0, "done".into())).await;
        Ok::<u32, lapin::Error>(n)
    }
    .await;
    match purged {
        Ok(n) => log(format!(
            "Purged {n} closed-loop messages from the partition queues."
        )),
        Err(e) => results
            .notes
            .push(format!("Purging the closed-loop readings failed: {e}")),
    }
}

/// The closed-loop driver's shape: twice a step long, the connections of
/// the open-loop driver, 1,000 devices.
fn wrk_config(config: &LoadConfig) -> WrkConfig {
    WrkConfig {
        duration: config.step * 2,
        ..WrkConfig::default()
    }
}

/// The one-reading fleet: the driver's connections, `config.devices`
/// devices named `<prefix><index>` with their tokens.
pub(super) fn fleet(
    config: &LoadConfig,
    keys: &ha_core::ingest::DeviceKeys,
    prefix: &str,
) -> DriverConfig {
    DriverConfig {
        connections: config.connections,
        devices: config.devices,
        device_prefix: prefix.to_owned(),
        keys: Some(keys.clone()),
        ..DriverConfig::default()
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
