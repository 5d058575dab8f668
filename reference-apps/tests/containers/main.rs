//! The pipeline and the walkthrough apps as real containers of the image
//! deploy/build-image built: every service in its own podman container
//! (host network, read-only root, uid 65532, all capabilities dropped, no
//! privilege gain, the CPU and memory limits of its Kubernetes manifest,
//! each read back from the container's cgroup), RabbitMQ, PostgreSQL and
//! haproxy on the host. Each drill prints one result line in the failure
//! drills' format (reference-apps/tests/faults, docs/reliability.md); the
//! pipeline drills audit the data generator's report against the store
//! exactly as those do (their code is shared, not copied).
//!
//! Run with `scripts/containers` (it builds the image, starts the servers
//! and removes every container afterwards).

#[allow(
    dead_code,
    reason = "shared with the fault drills; not all of it is used here"
)]
#[path = "../faults/ownership.rs"]
mod ownership;
#[allow(
    dead_code,
    reason = "shared with the fault drills; not all of it is used here"
)]
#[path = "../faults/pipeline.rs"]
mod pipeline;
mod podman;
#[allow(
    dead_code,
    unused_imports,
    reason = "shared with the fault drills; not all of it is used here"
)]
#[path = "../faults/procs.rs"]
mod procs;
#[allow(
    dead_code,
    reason = "shared with the fault drills; not all of it is used here"
)]
#[path = "../faults/report.rs"]
mod report;
mod walkthrough;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ha_test_support::metric;
use reference_apps::generator::{Anchor, GeneratorReport, ReportFile};
use tokio::time::Instant;

use pipeline::{Env, Options, PARTITIONS, Pipeline};
use podman::{Container, Limits, Setup, Spec, manifest_limits, wait_http_ok};
use procs::{free_addr, when_in_flight};
use report::{Failover, Outcome};

/// Drills share the servers: one at a time even under `cargo test`.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The manifests' drain timeout (`HA_DRAIN_TIMEOUT`) of the pipeline services.
const DRAIN: &str = "20s";
const DRAIN_SECS: u64 = 20;
const WAIT: Duration = Duration::from_secs(60);

/// Seconds of steady load (100 devices, one reading each every 200 ms).
fn steady_secs() -> u64 {
    std::env::var("HA_CONTAINERS_STEADY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// The pipeline of one drill: a [`Pipeline`] of the fault drills without
/// host processes (its database, queue prefix, key, certificate, and
/// haproxy with two empty slots), whose slots the ingest containers fill.
struct Stack {
    p: Pipeline,
    ingest: Vec<Container>,
    ingest_grace: u64,
    analyzers: Vec<Container>,
    analyzer_addrs: Vec<SocketAddr>,
    alerts: Container,
    alerts_addr: SocketAddr,
    generator: Option<Container>,
    generator_addr: SocketAddr,
    report_dir: PathBuf,
    limits_read: Vec<String>,
}

impl Stack {
    /// Without `resend`, haproxy does not re-send a request that met a
    /// dead replica: the device sees the error and retries itself.
    async fn start(env: &Env, setup: &Setup, name: &str, resend: bool) -> Stack {
        let options = Options {
            ingest: 0,
            analyzers: 0,
            spare: 2,
            resend,
            ..Options::default()
        };
        let p = Pipeline::start(env, name, options).await;
        std::fs::write(p.dir.join("ca.pem"), &p.tls.ca_pem).expect("ca.pem");
        std::fs::write(p.dir.join("operator.token"), "operator-secret\n").expect("token");
        let report_dir = p.dir.join("report");
        std::fs::create_dir_all(&report_dir).expect("report dir");
        // The containers run as 65532: the report directory is theirs to write.
        set_mode(&report_dir, 0o777);
        let ingest_limits = manifest_limits("base/ingest-api.yaml");
        let ingest_grace = 35;
        let ingest: Vec<Container> = p
            .spare
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                Container::run(
                    setup,
                    Spec {
                        name: ct_name(setup, name, &pipeline::replica_name("ingest", i)),
                        binary: "ingest-api",
                        args: strings(&[
                            "--listen",
                            &addr.to_string(),
                            "--amqp-url",
                            &p.amqp,
                            "--partitions",
                            &PARTITIONS.to_string(),
                            "--queue-prefix",
                            &p.prefix,
                            "--device-key-file",
                            "/run/ha/device.key",
                            "--drain-timeout",
                            DRAIN,
                        ]),
                        env: vec![],
                        mounts: vec![(p.dir.join("device.key"), "/run/ha/device.key", true)],
                        limits: ingest_limits,
                        grace_secs: ingest_grace,
                        log_dir: p.dir.clone(),
                    },
                )
            })
            .collect();
        let analyzer_limits = manifest_limits("base/analyzer.yaml");
        let analyzer_addrs: Vec<SocketAddr> = (0..2).map(|_| free_addr()).collect();
        let analyzers: Vec<Container> = analyzer_addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let member = pipeline::replica_name("analyzer", i);
                Container::run(
                    setup,
                    Spec {
                        name: ct_name(setup, name, &member),
                        binary: "analyzer",
                        args: strings(&[
                            "--listen",
                            &addr.to_string(),
                            "--amqp-url",
                            &p.amqp,
                            "--postgres-url",
                            &p.db,
                            "--partitions",
                            &PARTITIONS.to_string(),
                            "--queue-prefix",
                            &p.prefix,
                            "--member-id",
                            &member,
                            "--drain-timeout",
                            DRAIN,
                        ]),
                        env: vec![],
                        mounts: vec![],
                        limits: analyzer_limits,
                        grace_secs: 30,
                        log_dir: p.dir.clone(),
                    },
                )
            })
            .collect();
        let alerts_addr = free_addr();
        let alerts = Container::run(
            setup,
            Spec {
                name: ct_name(setup, name, "alerts-api"),
                binary: "alerts-api",
                args: strings(&[
                    "--listen",
                    &alerts_addr.to_string(),
                    "--postgres-url",
                    &p.db,
                    "--api-token-file",
                    "/run/ha/operator.token",
                    "--drain-timeout",
                    DRAIN,
                ]),
                env: vec![],
                mounts: vec![(p.dir.join("operator.token"), "/run/ha/operator.token", true)],
                limits: manifest_limits("base/alerts-api.yaml"),
                grace_secs: 35,
                log_dir: p.dir.clone(),
            },
        );
        let mut stack = Stack {
            generator_addr: free_addr(),
            p,
            ingest,
            ingest_grace,
            analyzers,
            analyzer_addrs,
            alerts,
            alerts_addr,
            generator: None,
            report_dir,
            limits_read: Vec::new(),
        };
        stack.wait_ingest_up(&["spare-a", "spare-b"]);
        stack.wait_partitions_owned(2);
        wait_http_ok("alerts-api", stack.alerts_addr, "/readyz", WAIT);
        for c in stack
            .ingest
            .iter()
            .chain(&stack.analyzers)
            .chain(std::iter::once(&stack.alerts))
        {
            stack.limits_read.push(c.check_limits());
        }
        stack
    }

    fn wait_ingest_up(&self, up: &[&str]) {
        self.p.lb.wait_up(up, WAIT);
    }

    /// Waits until the `n` analyzers own every partition between them.
    fn wait_partitions_owned(&self, n: usize) {
        ha_test_support::wait_until("analyzers own every partition", WAIT, || {
            let owned: Vec<f64> = self
                .analyzer_addrs
                .iter()
                .filter_map(|a| metric(*a, "ha_analyzer_owned_partitions"))
                .collect();
            owned.len() == n && owned.iter().sum::<f64>() as u32 == PARTITIONS
        });
    }

    /// The data generator in its own container: the fault drills' fleet
    /// (100 devices, a reading every 200 ms each, some spikes), through
    /// haproxy, writing its report for the audit at the end.
    fn start_generator(&mut self, setup: &Setup, name: &str, duration: Option<u64>) {
        let mut args = strings(&[
            "--listen",
            &self.generator_addr.to_string(),
            "--url",
            &format!("https://{}", self.p.lb.addr),
            "--devices",
            "100",
            "--interval",
            "200ms",
            "--anomaly-rate",
            "0.02",
            "--max-spikes",
            "3",
            "--start-seq",
            "0",
            "--ca-cert",
            "/run/ha/ca.pem",
            "--device-key-file",
            "/run/ha/device.key",
            "--report-file",
            "/report/report.json",
            "--drain-timeout",
            DRAIN,
        ]);
        if let Some(secs) = duration {
            args.extend(strings(&["--duration", &format!("{secs}s")]));
        }
        let generator = Container::run(
            setup,
            Spec {
                name: ct_name(setup, name, "data-generator"),
                binary: "data-generator",
                args,
                env: vec![],
                mounts: vec![
                    (self.p.dir.join("device.key"), "/run/ha/device.key", true),
                    (self.p.dir.join("ca.pem"), "/run/ha/ca.pem", true),
                    (self.report_dir.clone(), "/report", false),
                ],
                limits: manifest_limits("overlays/demo/data-generator.yaml"),
                grace_secs: 30,
                log_dir: self.p.dir.clone(),
            },
        );
        wait_http_ok("data-generator", self.generator_addr, "/healthz", WAIT);
        self.limits_read.push(generator.check_limits());
        self.generator = Some(generator);
    }

    fn acknowledged(&self) -> f64 {
        metric(
            self.generator_addr,
            "ha_generator_readings_acknowledged_total",
        )
        .unwrap_or(0.0)
    }

    /// Until the fleet has been acknowledged for a few seconds.
    async fn warm_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acknowledged() == 0.0 {
            assert!(Instant::now() < deadline, "no reading acknowledged in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
    }

    /// The generator's report once it exited (by `--duration` or a stop).
    fn report(&self, exit_code: i32) -> GeneratorReport {
        let generator = self.generator.as_ref().expect("generator started");
        assert_eq!(
            exit_code,
            0,
            "data-generator exited with {exit_code}: {}",
            generator.logs()
        );
        ReportFile::read(&self.report_dir.join("report.json"))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_report(&Anchor::now())
    }

    fn in_flight(&self, i: usize) -> Option<f64> {
        metric(self.p.spare[i], "ha_ingest_in_flight_publishes")
    }

    fn redeliveries(&self) -> u64 {
        self.analyzer_addrs
            .iter()
            .filter_map(|a| metric(*a, "ha_analyzer_redeliveries_total"))
            .sum::<f64>() as u64
    }

    fn finish(self) {
        drop(self.generator);
        drop(self.ingest);
        drop(self.analyzers);
        drop(self.alerts);
        self.p.finish();
    }
}

/// `t - from` in milliseconds, negative when `t` is earlier.
fn signed_ms(t: Instant, from: Instant) -> i64 {
    if t >= from {
        (t - from).as_millis() as i64
    } else {
        -((from - t).as_millis() as i64)
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `ha-ct-<run>-<drill>-<service>`.
fn ct_name(setup: &Setup, drill: &str, service: &str) -> String {
    format!("ha-ct-{}-{drill}-{service}", setup.run_label)
}

/// What every pipeline drill must show (as the fault drills'
/// `record_and_check`, which also asks for a fault met in flight).
fn record_and_check(env: &Env, outcome: &Outcome) {
    let line = outcome.line();
    println!("{line}");
    eprintln!("{line}");
    let mut results = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&env.results)
        .expect("results file");
    std::io::Write::write_all(&mut results, format!("{line}\n").as_bytes()).expect("results");
    let a = &outcome.audit;
    assert_eq!(a.lost, 0, "acknowledged readings lost: {line}");
    assert_eq!(a.duplicates, 0, "rows stored twice: {line}");
    assert_eq!(a.dead_lettered, 0, "valid readings dead-lettered: {line}");
    assert_eq!(a.acked, a.sent, "readings never acknowledged: {line}");
    assert_eq!(a.stored, a.acked, "{line}");
    assert!(a.acked > 0, "nothing acknowledged: {line}");
}

/// 100 devices for `HA_CONTAINERS_STEADY_SECS` (60 s): every acknowledged
/// reading stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_steady_load() {
    let (Some(env), Some(setup)) = (pipeline::env(), podman::setup()) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let name = "steady";
    let mut s = Stack::start(&env, &setup, name, true).await;
    let secs = steady_secs();
    s.start_generator(&setup, name, Some(secs));
    let code = s
        .generator
        .as_ref()
        .expect("generator")
        .wait_exit(Duration::from_secs(secs + 120));
    let report = s.report(code);
    let audit = s.p.audit(&report).await;
    let outcome = Outcome {
        scenario: "containers_steady".into(),
        audit,
        in_flight_at_fault: 0,
        redeliveries: s.redeliveries(),
        failover: Failover::default(),
        extra: vec![
            ("seconds", secs.to_string()),
            ("limits", s.limits_read.join(",")),
        ],
    };
    record_and_check(&env, &outcome);
    s.finish();
}

/// `podman kill` (SIGKILL) of an ingest container with publishes in
/// flight; then again with haproxy's re-sending off, so that the devices
/// whose request died see it and recover with their own retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_ingest_kill() {
    let (Some(env), Some(setup)) = (pipeline::env(), podman::setup()) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    for (name, scenario, resend) in [
        ("kill", "containers_ingest_podman_kill", true),
        (
            "kill-retry",
            "containers_ingest_podman_kill_device_retry",
            false,
        ),
    ] {
        let mut s = Stack::start(&env, &setup, name, resend).await;
        s.start_generator(&setup, name, None);
        s.warm_up().await;
        let in_flight = when_in_flight("ingest-a", || s.in_flight(0)).await;
        let at = Instant::now();
        s.ingest[0].kill("KILL");
        let kill_ms = at.elapsed().as_millis();
        let removed_deadline = Instant::now() + Duration::from_secs(10);
        while !s
            .p
            .lb
            .stats()
            .iter()
            .any(|(n, st, _)| n == "spare-a" && st.starts_with("DOWN"))
        {
            assert!(
                Instant::now() < removed_deadline,
                "haproxy kept the killed replica"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let removed_ms = at.elapsed().as_millis();
        let exit = s.ingest[0].wait_exit(Duration::from_secs(10));
        assert_eq!(exit, 137, "podman kill -s KILL: exit code");
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (code, _) = s.generator.as_ref().expect("generator").stop();
        let report = s.report(code);
        let audit = s.p.audit(&report).await;
        let failover = Failover::measure(&report, at);
        let (retried, redispatched, errors) = s.p.lb.resends();
        // When the sends that met an error began, from the kill (ms).
        let failed_starts: Vec<i64> = report
            .devices
            .iter()
            .flat_map(|d| d.sends.iter())
            .filter(|x| x.retries > 0 || !x.ok)
            .map(|x| signed_ms(x.started, at))
            .collect();
        let span = match (failed_starts.iter().min(), failed_starts.iter().max()) {
            (Some(a), Some(b)) => format!("{a}..{b}"),
            _ => "-".into(),
        };
        let outcome = Outcome {
            scenario: scenario.into(),
            audit,
            in_flight_at_fault: in_flight,
            redeliveries: s.redeliveries(),
            failover,
            extra: vec![
                ("podman_kill_ms", kill_ms.to_string()),
                ("exit_code", exit.to_string()),
                ("balancer_removed_ms", removed_ms.to_string()),
                ("failed_sends_started_ms", span),
                (
                    "balancer_resends",
                    format!("{retried}/{redispatched}/{errors}"),
                ),
            ],
        };
        record_and_check(&env, &outcome);
        // The fault drills' bound on what devices see (the seed saw ≤ 4 s).
        assert!(failover.max_ms <= 4_000, "failover {failover:?}");
        s.finish();
    }
}

/// `podman stop` (SIGTERM to PID 1) of every service in turn under load,
/// each started again before the next; the data generator last, which
/// ends the run: every one exits 0 before its grace period, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_stop_each_service() {
    let (Some(env), Some(setup)) = (pipeline::env(), podman::setup()) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let name = "stop";
    let mut s = Stack::start(&env, &setup, name, true).await;
    s.start_generator(&setup, name, None);
    s.warm_up().await;
    let mut stops = Vec::new();
    let mut in_flight_total = 0;
    let check = |what: &str, code: i32, took: Duration| {
        assert_eq!(code, 0, "{what}: exit code after SIGTERM");
        assert!(
            took < Duration::from_secs(DRAIN_SECS),
            "{what}: stopping took {took:?}, more than the drain timeout"
        );
        format!("{what}:exit{code}:{}ms", took.as_millis())
    };
    for i in 0..s.ingest.len() {
        in_flight_total += when_in_flight("ingest", || s.in_flight(i)).await;
        let (code, took) = s.ingest[i].stop();
        stops.push(check(&pipeline::replica_name("ingest", i), code, took));
        assert!(took < Duration::from_secs(s.ingest_grace));
        s.ingest[i].start();
        s.wait_ingest_up(&["spare-a", "spare-b"]);
    }
    for i in 0..s.analyzers.len() {
        let (code, took) = s.analyzers[i].stop();
        stops.push(check(&pipeline::replica_name("analyzer", i), code, took));
        s.wait_partitions_owned(1);
        s.analyzers[i].start();
        s.wait_partitions_owned(2);
    }
    let (code, took) = s.alerts.stop();
    stops.push(check("alerts-api", code, took));
    s.alerts.start();
    wait_http_ok("alerts-api", s.alerts_addr, "/readyz", WAIT);
    let (code, took) = s.generator.as_ref().expect("generator").stop();
    stops.push(check("data-generator", code, took));
    let report = s.report(code);
    let audit = s.p.audit(&report).await;
    let outcome = Outcome {
        scenario: "containers_podman_stop".into(),
        audit,
        in_flight_at_fault: in_flight_total,
        redeliveries: s.redeliveries(),
        failover: Failover::default(),
        extra: vec![("stopped", stops.join(","))],
    };
    record_and_check(&env, &outcome);
    s.finish();
}

/// Limits of a walkthrough manifest, for the experiments.
pub fn walkthrough_limits(app: &str) -> Limits {
    manifest_limits(&format!("overlays/walkthrough/{app}.yaml"))
}
