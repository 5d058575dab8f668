//! The failure drills: each one runs the real binaries (two ingest-api
//! replicas behind haproxy, analyzers) on the servers of `scripts/faults`
//! (a 3-node RabbitMQ cluster, PostgreSQL), drives the seed's fleet (100
//! devices through `ha-device-client`, a reading every 200 ms each, the
//! seed's retry defaults), injects one fault while work is in flight, then
//! counts every acknowledged reading in the store. Each drill prints one
//! `scenario=... lost=0 duplicates=0 ...` line and appends it to the
//! results file that `scripts/faults --docs` turns into
//! `docs/reliability.md`.
//!
//! Run with `scripts/faults` (one drill at a time: they kill shared servers).

mod at_load;
mod noisy;
mod ownership;
mod pipeline;
mod procs;
mod report;

use std::collections::BTreeSet;
use std::time::Duration;

use ha_analysis::{DetectorConfig, SeriesSet};
use tokio::time::Instant;

use at_load::Knee;
use pipeline::{Env, Options, Pipeline, env};
use procs::{PrepareSignal, Proc, http, when_in_flight};
use report::{Failover, Outcome, stall_ms};

/// Drills share servers and kill them: one at a time even under `cargo test`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Time under load before the fault.
const WARM_UP: Duration = Duration::from_secs(4);

/// Lets the fleet run until it has been acknowledged for `WARM_UP`.
async fn warm_up(load: &pipeline::Load) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acknowledged() == 0 {
        assert!(Instant::now() < deadline, "no reading acknowledged in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(WARM_UP).await;
}

fn ingest_in_flight(p: &Proc) -> Option<f64> {
    p.metric("ha_ingest_in_flight_publishes")
}

fn status_of(p: &Pipeline, server: &str) -> String {
    p.lb.stats()
        .into_iter()
        .find(|(n, _, _)| n == server)
        .map(|(_, st, _)| st)
        .unwrap_or_default()
}

/// haproxy's `retried/redispatched/5xx` counts, e.g. `3/3/0`.
fn lb_resends(p: &Pipeline) -> String {
    let (retried, redispatched, errors) = p.lb.resends();
    format!("{retried}/{redispatched}/{errors}")
}

/// Waits until haproxy reports `server` DOWN; returns how long that took.
async fn until_down(p: &Pipeline, server: &str, since: Instant) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !status_of(p, server).starts_with("DOWN") {
        assert!(Instant::now() < deadline, "haproxy kept {server} up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    since.elapsed().as_millis() as u64
}

/// Scenario 1: an ingest replica crashes (`kill -9`, and separately
/// `POST /kill`) under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_replica_crash() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    for scenario in [
        "ingest_kill9",
        "ingest_kill9_device_retry",
        "ingest_post_kill",
        "ingest_kill9_mqtt",
    ] {
        ingest_crash(&env, scenario, None).await;
    }
}

/// Scenario 1 at load: `kill -9` of an ingest replica with the fleet at
/// [`at_load::SHARE`] of this run's knee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_replica_crash_at_load() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let knee = at_load::knee(&env).await;
    ingest_crash(&env, "ingest_kill9_at_load", Some(knee)).await;
}

async fn ingest_crash(env: &Env, scenario: &str, knee: Option<Knee>) {
    let mqtt = scenario.ends_with("_mqtt");
    // The device-retry run turns haproxy's re-sending off: the devices
    // whose request died see the error and recover with their own retry.
    let options = Options {
        resend: scenario != "ingest_kill9_device_retry",
        mqtt,
        ..Options::default()
    };
    let p = Pipeline::start(env, scenario, options).await;
    let load = p.start_load(if mqtt {
        p.mqtt_fleet()
    } else {
        at_load::fleet(&p, knee)
    });
    warm_up(&load).await;
    let mut extra = at_load::figures(&load, knee).await;
    let victim = &p.ingest[0];
    let kill = victim.prepare_signal("KILL");
    at_load::wave(&load, knee, &mut extra).await;
    let in_flight = when_in_flight("ingest-a", || ingest_in_flight(victim)).await;
    let at = Instant::now();
    if scenario != "ingest_post_kill" {
        assert!(kill.fire(), "kill -9 ingest-a");
    } else {
        // The replica exits while answering: no response comes back.
        let (status, _) = http(victim.addr, "POST", "/kill");
        assert_eq!(status, 0, "POST /kill answered");
    }
    let removed_ms = until_down(&p, "ingest-a", at).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let report = load.finish().await;
    let audit = p.audit(&report).await;
    let failover = Failover::measure(&report, at);
    extra.extend([
        ("balancer_removed_ms", removed_ms.to_string()),
        ("balancer_resends", lb_resends(&p)),
    ]);
    Outcome {
        scenario: scenario.into(),
        audit,
        in_flight_at_fault: in_flight,
        redeliveries: p.analyzers_metric("ha_analyzer_redeliveries_total") as u64,
        failover,
        extra,
    }
    .record_and_check(env);
    // The seed's drill saw ≤ 4 s; the target is 1.5 s (reported, and
    // held to the seed's bound here).
    assert!(failover.max_ms <= 4_000, "failover {failover:?}");
    p.finish();
}

/// Scenario 2: an ingest replica hangs (`SIGSTOP`) under load, and later
/// resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_replica_hangs() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let p = Pipeline::start(&env, "ingest_sigstop", Options::default()).await;
    let load = p.start_load(p.fleet());
    warm_up(&load).await;
    let victim = &p.ingest[0];
    let stop = victim.prepare_signal("STOP");
    let in_flight = when_in_flight("ingest-a", || ingest_in_flight(victim)).await;
    let at = Instant::now();
    assert!(stop.fire(), "SIGSTOP ingest-a");
    let removed_ms = until_down(&p, "ingest-a", at).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // It wakes up: what it held is published late (the store absorbs the
    // resends) and haproxy takes it back.
    assert!(victim.signal("CONT"), "SIGCONT ingest-a");
    p.lb.wait_up(&["ingest-a", "ingest-b"], Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let audit = p.audit(&report).await;
    Outcome {
        scenario: "ingest_sigstop".into(),
        audit,
        in_flight_at_fault: in_flight,
        redeliveries: p.analyzers_metric("ha_analyzer_redeliveries_total") as u64,
        failover: Failover::measure(&report, at),
        extra: vec![
            ("balancer_removed_ms", removed_ms.to_string()),
            ("balancer_resends", lb_resends(&p)),
            (
                "resends_absorbed",
                p.analyzers_metric("ha_analyzer_duplicates_total")
                    .to_string(),
            ),
        ],
    }
    .record_and_check(&env);
    p.finish();
}

/// The RabbitMQ node that leads `queue`, as `ha-x@localhost`.
fn queue_leader(ctl: &std::path::Path, queue: &str) -> Option<String> {
    let out = std::process::Command::new(ctl)
        .args(["list_queues", "name", "leader", "--formatter", "json"])
        .output()
        .ok()?;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    list.as_array()?
        .iter()
        .find(|q| q["name"] == queue)
        .and_then(|q| q["leader"].as_str().map(str::to_owned))
}

fn running_nodes(ctl: &std::path::Path) -> Vec<String> {
    let Ok(out) = std::process::Command::new(ctl)
        .args(["cluster_status", "--formatter", "json"])
        .output()
    else {
        return Vec::new();
    };
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| {
            v["running_nodes"].as_array().map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Scenario 3: the RabbitMQ node leading a partition queue is killed
/// (`kill -9`) under load, then restarted and rejoins; with the HTTPS
/// fleet, then with the same fleet over MQTT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_leader_crash() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    for (scenario, mqtt) in [
        ("rabbitmq_leader_kill9", false),
        ("rabbitmq_leader_kill9_mqtt", true),
    ] {
        leader_crash(&env, scenario, mqtt, None).await;
    }
}

/// Scenario 3 at load (HTTPS fleet at [`at_load::SHARE`] of the knee).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_leader_crash_at_load() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let knee = at_load::knee(&env).await;
    leader_crash(&env, "rabbitmq_leader_kill9_at_load", false, Some(knee)).await;
}

async fn leader_crash(env: &Env, scenario: &str, mqtt: bool, knee: Option<Knee>) {
    let p = Pipeline::start(
        env,
        scenario,
        Options {
            mqtt,
            ..Options::default()
        },
    )
    .await;
    let load = p.start_load(if mqtt {
        p.mqtt_fleet()
    } else {
        at_load::fleet(&p, knee)
    });
    warm_up(&load).await;
    let mut extra = at_load::figures(&load, knee).await;
    let ctl = |i: usize| env.rabbit_nodes[i].join("rabbitmqctl");
    let leader = queue_leader(&ctl(1), &format!("{}.0", p.prefix)).expect("leader of partition 0");
    let index = ["ha-a@", "ha-b@", "ha-c@"]
        .iter()
        .position(|n| leader.starts_with(n))
        .unwrap_or_else(|| panic!("unknown leader {leader}"));
    let node = &env.rabbit_nodes[index];
    let pid = std::fs::read_to_string(node.join("pid")).expect("leader's pid file");
    let survivor = ctl((index + 1) % 3);
    let kill = procs::Trigger::new("KILL", pid.trim().parse().expect("pid"));
    at_load::wave(&load, knee, &mut extra).await;
    let in_flight = when_in_flight("ingest publishes", || {
        Some(p.ingest.iter().filter_map(ingest_in_flight).sum::<f64>())
    })
    .await;
    let at = Instant::now();
    assert!(kill.fire(), "kill -9 {leader}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Back it comes, and rejoins the cluster.
    let restarted = Instant::now();
    let start = std::process::Command::new(node.join("start"))
        .status()
        .expect("restart the node");
    assert!(start.success());
    let deadline = Instant::now() + Duration::from_secs(90);
    while !running_nodes(&survivor).contains(&leader) {
        assert!(Instant::now() < deadline, "{leader} did not rejoin");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rejoin_ms = restarted.elapsed().as_millis() as u64;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let audit = p.audit(&report).await;
    extra.extend([
        ("killed", leader.clone()),
        ("stall_ms", stall_ms(&report, at).to_string()),
        ("rejoin_ms", rejoin_ms.to_string()),
    ]);
    Outcome {
        scenario: scenario.into(),
        audit,
        in_flight_at_fault: in_flight,
        redeliveries: p.analyzers_metric("ha_analyzer_redeliveries_total") as u64,
        failover: Failover::measure(&report, at),
        extra,
    }
    .record_and_check(env);
    p.finish();
}

/// Replays the stored readings through an undisturbed detector (each
/// series fed in `seq` order from its first reading) and returns the
/// anomalies it finds and those the analyzers stored.
async fn verdicts(db: &str) -> (BTreeSet<(String, i64)>, BTreeSet<(String, i64)>) {
    let (client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT device_id, seq, value FROM readings WHERE metric = 'pulse' ORDER BY device_id, seq",
            &[],
        )
        .await
        .expect("readings");
    // The analyzers inherit HA_DETECTOR (`HA_DETECTOR=kestrel scripts/faults`
    // drills another detector); replay with the same one.
    let kind = std::env::var("HA_DETECTOR")
        .ok()
        .map(|name| name.parse().expect("HA_DETECTOR names a detector"))
        .unwrap_or_default();
    let config = DetectorConfig {
        kind,
        ..DetectorConfig::default()
    };
    let mut series = SeriesSet::new(&config).expect("detector");
    let mut expected = BTreeSet::new();
    for r in rows {
        let (device, seq, value): (String, i64, f64) = (r.get(0), r.get(1), r.get(2));
        let verdict = series
            .feed(device.clone(), seq as u64, value)
            .expect("finite value");
        if let Some(v) = verdict
            && v.is_anomaly
            && v.score.is_some()
        {
            expected.insert((device, seq));
        }
    }
    let stored = client
        .query("SELECT device_id, seq FROM anomalies", &[])
        .await
        .expect("anomalies")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (expected, stored)
}

/// Scenario 4: an analyzer is killed (`kill -9`) holding unacknowledged
/// deliveries; the other takes its partitions over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzer_crash_mid_batch() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    analyzer_crash(&env, "analyzer_kill9", None).await;
}

/// Scenario 4 at load (the fleet at [`at_load::SHARE`] of the knee).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzer_crash_mid_batch_at_load() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let knee = at_load::knee(&env).await;
    analyzer_crash(&env, "analyzer_kill9_at_load", Some(knee)).await;
}

async fn analyzer_crash(env: &Env, scenario: &str, knee: Option<Knee>) {
    let mut p = Pipeline::start(
        env,
        scenario,
        Options {
            analyzers: 2,
            ..Options::default()
        },
    )
    .await;
    let load = p.start_load(at_load::fleet(&p, knee));
    warm_up(&load).await;
    let mut extra = at_load::figures(&load, knee).await;
    let kill = p.analyzers[0].prepare_signal("KILL");
    at_load::wave(&load, knee, &mut extra).await;
    let in_flight = when_in_flight("analyzer-a", || {
        p.analyzers[0].metric("ha_analyzer_unacked_deliveries")
    })
    .await;
    let at = Instant::now();
    let at_wall = std::time::SystemTime::now();
    assert!(kill.fire(), "kill -9 analyzer-a");
    let _ = p.analyzers[0].wait_exit(Duration::from_secs(5));
    let victim = p.analyzers.remove(0);
    // The survivor is assigned every partition once the victim's lease
    // lapses; it consumes them long before (takeover_ms).
    p.wait_partitions_owned(Duration::from_secs(20)).await;
    let reassigned_ms = at.elapsed().as_millis() as u64;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = load.finish().await;
    let audit = p.audit(&report).await;
    let redeliveries = p.analyzers_metric("ha_analyzer_redeliveries_total") as u64;
    let (expected, stored) = verdicts(&p.db).await;
    let epochs = ownership::epochs(&p.db).await;
    let takeover_ms = ownership::takeover_ms(&epochs, &victim.name, at_wall)
        .expect("every partition of the victim taken over");
    extra.extend([
        ("takeover_ms", takeover_ms.to_string()),
        ("reassigned_ms", reassigned_ms.to_string()),
        ("ownership_epochs", epochs.len().to_string()),
        ("anomalies", stored.len().to_string()),
        ("verdicts_equal", (expected == stored).to_string()),
    ]);
    let outcome = Outcome {
        scenario: scenario.into(),
        audit,
        in_flight_at_fault: in_flight,
        redeliveries,
        failover: Failover::measure(&report, at),
        extra,
    };
    outcome.record_and_check(env);
    // Each partition: its first owner, at most one hand-over to its
    // assigned owner, the takeover. More means ownership flapped.
    assert!(
        epochs.len() as u32 <= 3 * pipeline::PARTITIONS,
        "ownership flapped: {}",
        outcome.line()
    );
    assert!(
        redeliveries > 0,
        "no redelivery observed: {}",
        outcome.line()
    );
    // At load each of the 1,000 devices sends too few readings during the
    // drill to fill the detector's window: the seed drill is the one that
    // proves windows rebuilt with anomalies in them.
    assert!(
        knee.is_some() || !expected.is_empty(),
        "the fleet's spikes produced no anomaly"
    );
    assert_eq!(
        stored, expected,
        "stored anomalies differ from an undisturbed run over the same readings"
    );
    drop(victim);
    p.finish();
}

/// Runs the drill cluster's `pg_ctl` off the runtime's workers.
async fn pg_ctl(env: &pipeline::Env, args: &[&str]) -> std::process::Output {
    let (pgctl, args): (_, Vec<String>) = (
        env.pgctl.clone(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(pgctl)
            .args(args)
            .output()
            .expect("run pg_ctl")
    })
    .await
    .expect("pg_ctl task")
}

/// Scenario 5: PostgreSQL restarts (fast shutdown) under load: ingest
/// keeps accepting, the queue absorbs, the analyzer drains the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    postgres_restart(&env, "postgres_restart", None).await;
}

/// Scenario 5 at load (the fleet at [`at_load::SHARE`] of the knee).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_at_load() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let knee = at_load::knee(&env).await;
    postgres_restart(&env, "postgres_restart_at_load", Some(knee)).await;
}

async fn postgres_restart(env: &Env, scenario: &str, knee: Option<Knee>) {
    let p = Pipeline::start(env, scenario, Options::default()).await;
    let load = p.start_load(at_load::fleet(&p, knee));
    warm_up(&load).await;
    let mut extra = at_load::figures(&load, knee).await;
    let before = p.unstored().expect("pipeline metrics");
    at_load::wave(&load, knee, &mut extra).await;
    let in_flight = when_in_flight("analyzer-a", || {
        p.analyzers[0].metric("ha_analyzer_unacked_deliveries")
    })
    .await;
    let at = Instant::now();
    let stop = pg_ctl(env, &["stop", "-m", "fast"]).await;
    assert!(stop.status.success(), "{stop:?}");
    let mut peak = before;
    let down_until = at + Duration::from_secs(3);
    while Instant::now() < down_until {
        peak = peak.max(p.unstored().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = pg_ctl(env, &["start"]).await;
    assert!(start.status.success(), "{start:?}");
    let up = Instant::now();
    let down_ms = (up - at).as_millis() as u64;
    // Drained: acknowledged-but-unstored is back to its level before the
    // fault (or half a second of load).
    let deadline = Instant::now() + Duration::from_secs(60);
    let drain_ms = loop {
        let now = p.unstored().unwrap_or(u64::MAX);
        if now != u64::MAX {
            peak = peak.max(now);
        }
        if now <= before.max(250) {
            break up.elapsed().as_millis() as u64;
        }
        assert!(Instant::now() < deadline, "backlog {now} not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let audit = p.audit(&report).await;
    let failover = Failover::measure(&report, at);
    extra.extend([
        ("db_down_ms", down_ms.to_string()),
        ("backlog_peak", peak.to_string()),
        ("drain_ms", drain_ms.to_string()),
    ]);
    let outcome = Outcome {
        scenario: scenario.into(),
        audit,
        in_flight_at_fault: in_flight,
        redeliveries: p.analyzers_metric("ha_analyzer_redeliveries_total") as u64,
        failover,
        extra,
    };
    outcome.record_and_check(env);
    assert_eq!(
        failover.failed_sends,
        0,
        "devices met errors during the database restart: {}",
        outcome.line()
    );
    p.finish();
}

/// Scenario 6: a faulty new version (wrong broker URL, never ready) joins
/// the balancer's backend: it is never routed to, devices see nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_update_never_serves() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let p = Pipeline::start(
        &env,
        "faulty_update",
        Options {
            spare: 1,
            ..Options::default()
        },
    )
    .await;
    let load = p.start_load(p.fleet());
    warm_up(&load).await;
    let in_flight = when_in_flight("the fleet", || Some(load.open_sends() as f64)).await;
    let at = Instant::now();
    let faulty = p.start_ingest_with("spare-a", p.spare[0], "amqp://guest:guest@127.0.0.1:1/%2f");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (ready, _) = http(faulty.addr, "GET", "/readyz");
    let routed =
        p.lb.stats()
            .into_iter()
            .find(|(n, _, _)| n == "spare-a")
            .map(|(_, _, sessions)| sessions)
            .expect("spare-a in haproxy");
    let posts = faulty.metric("ha_ingest_requests_total").unwrap_or(0.0);
    let report = load.finish().await;
    let audit = p.audit(&report).await;
    let failover = Failover::measure(&report, at);
    let outcome = Outcome {
        scenario: "faulty_update".into(),
        audit,
        in_flight_at_fault: in_flight,
        redeliveries: p.analyzers_metric("ha_analyzer_redeliveries_total") as u64,
        failover,
        extra: vec![
            ("faulty_readyz", ready.to_string()),
            ("faulty_sessions", routed.to_string()),
        ],
    };
    outcome.record_and_check(&env);
    assert_eq!(ready, 503, "the faulty replica reports ready");
    assert_eq!(routed, 0, "haproxy routed to the faulty replica");
    assert_eq!(posts, 0.0, "the faulty replica received readings");
    assert_eq!(
        failover.failed_sends,
        0,
        "devices met errors: {}",
        outcome.line()
    );
    drop(faulty);
    p.finish();
}

/// Scenario 7: `SIGTERM` to an ingest replica, to an analyzer, and to the
/// alerts API, under load: nothing in flight fails, each exits 0 within its
/// drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    for scenario in ["sigterm_ingest", "sigterm_analyzer", "sigterm_alerts"] {
        let mut p = Pipeline::start(
            &env,
            scenario,
            Options {
                analyzers: 2,
                ..Options::default()
            },
        )
        .await;
        let mut alerts = (scenario == "sigterm_alerts").then(|| p.start_alerts());
        let load = p.start_load(p.fleet());
        warm_up(&load).await;
        // The alerts API is under load from operators' queries.
        let clients = alerts.as_ref().map(|a| {
            procs::ApiClients::start(a.addr, "/v1/anomalies?limit=50", "operator-secret", 4)
        });
        let victim = match scenario {
            "sigterm_ingest" => &mut p.ingest[0],
            "sigterm_analyzer" => &mut p.analyzers[0],
            _ => alerts.as_mut().expect("alerts-api"),
        };
        let term = victim.prepare_signal("TERM");
        let in_flight = match (scenario, &clients) {
            ("sigterm_ingest", _) => when_in_flight("ingest-a", || ingest_in_flight(victim)).await,
            ("sigterm_analyzer", _) => {
                when_in_flight("analyzer-a", || {
                    victim.metric("ha_analyzer_unacked_deliveries")
                })
                .await
            }
            (_, Some(c)) => {
                when_in_flight("alerts-api", || {
                    Some(c.in_flight.load(std::sync::atomic::Ordering::SeqCst) as f64)
                })
                .await
            }
            _ => unreachable!("alerts drill without clients"),
        };
        let at = Instant::now();
        let at_wall = std::time::SystemTime::now();
        let victim_name = victim.name.clone();
        assert!(term.fire(), "SIGTERM {}", victim.name);
        let status = victim.wait_exit(Duration::from_secs(12));
        let exit_ms = at.elapsed().as_millis() as u64;
        let queries = clients.map(procs::ApiClients::finish);
        p.wait_partitions_owned(Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let report = load.finish().await;
        if scenario == "sigterm_analyzer" {
            p.analyzers.remove(0);
        }
        let audit = p.audit(&report).await;
        let failover = Failover::measure(&report, at);
        let mut takeover = Vec::new();
        if scenario == "sigterm_analyzer" {
            let epochs = ownership::epochs(&p.db).await;
            if let Some(ms) = ownership::takeover_ms(&epochs, &victim_name, at_wall) {
                takeover.push(("takeover_ms", ms.to_string()));
                takeover.push(("ownership_epochs", epochs.len().to_string()));
            }
        }
        let outcome = Outcome {
            scenario: scenario.into(),
            audit,
            in_flight_at_fault: in_flight,
            redeliveries: p.analyzers_metric("ha_analyzer_redeliveries_total") as u64,
            failover,
            extra: [
                ("exit_ms", exit_ms.to_string()),
                (
                    "exit_code",
                    status
                        .and_then(|s| s.code())
                        .map_or("none".into(), |c| c.to_string()),
                ),
            ]
            .into_iter()
            .chain(takeover)
            .chain(queries.map(|(ok, refused, failed)| {
                (
                    "queries_ok_refused_failed",
                    format!("{ok}/{refused}/{failed}"),
                )
            }))
            .collect(),
        };
        outcome.record_and_check(&env);
        assert!(
            scenario != "sigterm_analyzer"
                || outcome.extra.iter().any(|(k, _)| *k == "takeover_ms"),
            "the stopped analyzer's partitions were not taken over: {}",
            outcome.line()
        );
        if let Some((ok, _, failed)) = queries {
            assert!(ok > 0, "no query answered: {}", outcome.line());
            assert_eq!(failed, 0, "queries failed: {}", outcome.line());
        }
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "did not exit 0 within the 10 s drain timeout: {}",
            outcome.line()
        );
        assert_eq!(
            failover.failed_sends,
            0,
            "a device met an error during the shutdown: {}",
            outcome.line()
        );
        p.finish();
    }
}

/// Scenario 8: ingest is down for 30 s (both replicas), then back: every
/// device's buffered readings arrive exactly once, paced by the devices'
/// retry schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_outage_and_backlog() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let mut p = Pipeline::start(&env, "ingest_outage_30s", Options::default()).await;
    let load = p.start_load(p.fleet());
    warm_up(&load).await;
    let in_flight = when_in_flight("the fleet", || Some(load.open_sends() as f64)).await;
    let at = Instant::now();
    for replica in &p.ingest {
        assert!(replica.signal("KILL"), "kill {}", replica.name);
    }
    p.ingest.clear();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let backlog = load
        .stats
        .generated
        .load(std::sync::atomic::Ordering::Relaxed)
        - load.acknowledged();
    let back = Instant::now();
    let outage_ms = (back - at).as_millis() as u64;
    for i in 0..2 {
        let proc = p.start_ingest(i);
        p.ingest.push(proc);
    }
    // Drained: every device has sent what it buffered (at most one
    // reading per device in its current send).
    let deadline = Instant::now() + Duration::from_secs(90);
    let drain_ms = loop {
        let generated = load
            .stats
            .generated
            .load(std::sync::atomic::Ordering::Relaxed);
        if generated - load.acknowledged() <= 100 {
            break back.elapsed().as_millis() as u64;
        }
        assert!(Instant::now() < deadline, "backlog not drained in 90 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Answers other than 202 from the returned replicas (503 overloaded,
    // 429 rate limited, ...).
    let refused: f64 = p
        .ingest
        .iter()
        .filter_map(|i| {
            procs::metric_where(i.addr, "ha_ingest_requests_total", |labels| {
                !labels.contains("status=\"202\"")
            })
        })
        .sum();
    let report = load.finish().await;
    let audit = p.audit(&report).await;
    let failover = Failover::measure(&report, back);
    let outcome = Outcome {
        scenario: "ingest_outage_30s".into(),
        audit,
        in_flight_at_fault: in_flight,
        redeliveries: p.analyzers_metric("ha_analyzer_redeliveries_total") as u64,
        failover,
        extra: vec![
            ("outage_ms", outage_ms.to_string()),
            ("buffered_at_return", backlog.to_string()),
            ("drain_ms", drain_ms.to_string()),
            ("refused_after_return", refused.to_string()),
        ],
    };
    outcome.record_and_check(&env);
    assert_eq!(
        refused,
        0.0,
        "503 storm after the return: {}",
        outcome.line()
    );
    p.finish();
}
