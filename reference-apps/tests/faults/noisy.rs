//! Scenario: noisy neighbours. The seed's fleet runs undisturbed, then for
//! 30 s, beside it and with valid tokens: 4 closed-loop connections sending
//! 1 MiB adversarial bodies, 1,000 half-open connections, one device
//! sending 100 new metric names per second, and one device sending at 10×
//! its rate limit. The fleet must lose nothing, see no error, keep its p99
//! send latency (the median of per-second p99s) within max(2× undisturbed,
//! undisturbed + 20 ms), and ingest
//! and the analyzer must stay under their manifests' memory limits.
//!
//! The noise goes straight to the ingest replicas (plain HTTP, as haproxy
//! forwards it), so each replica's own bounds are what is tested.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;
use ha_core::ingest::DeviceKeys;
use ha_core::wire::Timestamp;
use reference_apps::generator::GeneratorReport;
use tokio::time::Instant;

use crate::pipeline::{Options, Pipeline, env};
use crate::procs::when_in_flight;
use crate::report::{Failover, Outcome};
use crate::{SERIAL, ingest_in_flight, warm_up};

/// The fleet's undisturbed window, then the noise's.
const QUIET: Duration = Duration::from_secs(15);
const NOISE: Duration = Duration::from_secs(30);
/// Readings per second per device, as the manifests set it (ConfigMap
/// `rate-limit`); the fleet sends 5 a second per device.
const RATE_LIMIT: u32 = 5;
const HALF_OPEN: usize = 1_000;
const ADVERSARIAL_CONNECTIONS: usize = 4;
/// Just under ingest's 1 MiB body limit.
const ADVERSARIAL_BYTES: usize = 1_040_000;

/// Scenario 10: noisy neighbours beside the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noisy_neighbours() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let options = Options {
        ingest_args: vec!["--rate-limit".into(), RATE_LIMIT.to_string()],
        ..Options::default()
    };
    let p = Pipeline::start(&env, "noisy_neighbour", options).await;
    let load = p.start_load(p.fleet());
    warm_up(&load).await;
    let quiet_from = Instant::now();
    tokio::time::sleep(QUIET).await;
    let in_flight = when_in_flight("ingest publishes", || {
        Some(p.ingest.iter().filter_map(ingest_in_flight).sum::<f64>())
    })
    .await;
    let noise_from = Instant::now();
    let noise = Noise::start(&p.ingest_addrs, &p.keys);
    tokio::time::sleep(NOISE).await;
    let rss_mib = |procs: &[ha_test_support::Proc]| {
        procs
            .iter()
            .map(|proc| peak_rss_mib(proc.pid()))
            .fold(0, u64::max)
    };
    let (ingest_rss, analyzer_rss) = (rss_mib(&p.ingest), rss_mib(&p.analyzers));
    let noise = noise.stop();
    let noise_to = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let audit = p.audit(&report).await;
    let names_stored = p
        .rows_of("noisy-names", noise.names_acked * NAMES_PER_READING)
        .await;
    let quiet = median_p99_per_second(&report, quiet_from, noise_from);
    let noisy = median_p99_per_second(&report, noise_from, noise_to);
    let bound = (2 * quiet).max(quiet + 20);
    let (quiet_overall, noisy_overall) = (
        p99_send_ms(&report, quiet_from, noise_from),
        p99_send_ms(&report, noise_from, noise_to),
    );
    let (ingest_limit, analyzer_limit) = (
        manifest_memory_mib("ingest-api.yaml"),
        manifest_memory_mib("analyzer.yaml"),
    );
    let failover = Failover::measure(&report, noise_from);
    Outcome {
        scenario: "noisy_neighbour".into(),
        audit,
        in_flight_at_fault: in_flight,
        redeliveries: p.analyzers_metric("ha_analyzer_redeliveries_total") as u64,
        failover,
        extra: vec![
            ("p99_quiet_ms", quiet.to_string()),
            ("p99_noisy_ms", noisy.to_string()),
            ("p99_bound_ms", bound.to_string()),
            (
                "p99_window_quiet_noisy_ms",
                format!("{quiet_overall}/{noisy_overall}"),
            ),
            ("adversarial_answers", noise.adversarial.to_string()),
            ("half_open_held", noise.half_open.to_string()),
            (
                "names_stored",
                format!("{names_stored}/{}", noise.names_acked * NAMES_PER_READING),
            ),
            (
                "flood_accepted_refused",
                format!("{}/{}", noise.flood_accepted, noise.flood_limited),
            ),
            ("ingest_rss_mib", format!("{ingest_rss}/{ingest_limit}")),
            (
                "analyzer_rss_mib",
                format!("{analyzer_rss}/{analyzer_limit}"),
            ),
        ],
    }
    .record_and_check(&env);
    assert_eq!(failover.failed_sends, 0, "the fleet met errors");
    assert!(noisy <= bound, "fleet p99 {noisy} ms > {bound} ms");
    assert!(ingest_rss < ingest_limit && analyzer_rss < analyzer_limit);
    // The noise happened.
    assert!(noise.adversarial >= ADVERSARIAL_CONNECTIONS as u64);
    assert_eq!(noise.half_open, HALF_OPEN as u64);
    assert!(
        noise.flood_limited > 0,
        "the flooding device was never limited"
    );
    assert!(noise.names_acked > 0, "no new-names reading was accepted");
    assert_eq!(names_stored, noise.names_acked * NAMES_PER_READING);
    p.finish();
}

/// The latencies, in ms, of the fleet's successful sends started in
/// `[from, to)`, sorted.
fn send_ms(report: &GeneratorReport, from: Instant, to: Instant) -> Vec<u64> {
    let mut ms: Vec<u64> = report
        .devices
        .iter()
        .flat_map(|d| d.sends.iter())
        .filter(|s| s.ok && s.started >= from && s.started < to)
        .map(|s| (s.finished - s.started).as_millis() as u64)
        .collect();
    ms.sort_unstable();
    ms
}

fn p99(sorted: &[u64]) -> u64 {
    assert!(!sorted.is_empty(), "no send in the window");
    sorted[((sorted.len() as f64 * 0.99).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The p99 latency, in ms, of the fleet's sends started in `[from, to)`.
fn p99_send_ms(report: &GeneratorReport, from: Instant, to: Instant) -> u64 {
    p99(&send_ms(report, from, to))
}

/// The median over the seconds of `[from, to)` of each second's p99 send
/// latency, in ms: one second in which the shared machine stalled every
/// process (a build, another tenant) moves it by one place, not to the
/// stall's height, so the bound neither loosens with a transient in the
/// quiet window nor trips on one in the noisy window.
fn median_p99_per_second(report: &GeneratorReport, from: Instant, to: Instant) -> u64 {
    let seconds = (to - from).as_secs().max(1);
    let mut p99s: Vec<u64> = (0..seconds)
        .map(|i| {
            let start = from + Duration::from_secs(i);
            send_ms(report, start, start + Duration::from_secs(1))
        })
        .filter(|ms| !ms.is_empty())
        .map(|ms| p99(&ms))
        .collect();
    assert!(!p99s.is_empty(), "no send in the window");
    p99s.sort_unstable();
    p99s[p99s.len() / 2]
}

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024
}

/// The container memory limit of a base manifest, in MiB (`limits:` then
/// `memory: 512Mi` or `1Gi`).
fn manifest_memory_mib(file: &str) -> u64 {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s/base")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("manifest");
    let limits = text.split("limits:").nth(1).expect("a limits block");
    let value = limits
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory:"))
        .expect("a memory limit")
        .trim();
    match (value.strip_suffix("Gi"), value.strip_suffix("Mi")) {
        (Some(g), _) => g.parse::<u64>().expect("Gi") * 1024,
        (_, Some(m)) => m.parse().expect("Mi"),
        _ => panic!("memory limit {value} in {}", path.display()),
    }
}

const NAMES_PER_READING: u64 = 32;

/// The noise makers, each on its own threads (blocking sockets).
struct Noise {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<NoiseCount>>,
}

#[derive(Default)]
struct NoiseCount {
    adversarial: u64,
    half_open: u64,
    names_acked: u64,
    flood_accepted: u64,
    flood_limited: u64,
}

impl Noise {
    fn start(ingest: &[SocketAddr], keys: &DeviceKeys) -> Noise {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let replica = |i: usize| ingest[i % ingest.len()];
        for i in 0..ADVERSARIAL_CONNECTIONS {
            let device = format!("noisy-adv-{i}");
            let auth = authorization(keys, &device);
            let (addr, stop) = (replica(i), stop.clone());
            threads.push(std::thread::spawn(move || {
                let body = adversarial_body(&device);
                let mut n = NoiseCount::default();
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) {
                    if post(&mut conn, addr, &auth, &body).is_some() {
                        n.adversarial += 1;
                    }
                }
                n
            }));
        }
        let (addrs, stop2) = (ingest.to_vec(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let held = hold_half_open(&addrs, &stop2);
            NoiseCount {
                half_open: held,
                ..NoiseCount::default()
            }
        }));
        // 32 new names every 320 ms: 100 a second, 3 readings a second.
        let auth = authorization(keys, "noisy-names");
        let (addr, stop2) = (replica(0), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut conn = None;
            paced(&stop2, Duration::from_millis(320), |seq, n| {
                let names = (0..NAMES_PER_READING)
                    .map(|m| format!(r#""n{seq}_{m}":{m}.5"#))
                    .collect::<Vec<_>>()
                    .join(",");
                let body = readings_body("noisy-names", seq, 1, &names);
                if post(&mut conn, addr, &auth, &body) == Some(202) {
                    n.names_acked += 1;
                }
            })
        }));
        // 5 readings every 100 ms to one replica: 10× the limit it keeps.
        let auth = authorization(keys, "noisy-flood");
        let (addr, stop2) = (replica(1), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut conn = None;
            paced(&stop2, Duration::from_millis(100), |seq, n| {
                let body = readings_body("noisy-flood", seq * 5, 5, r#""pulse":70.5"#);
                match post(&mut conn, addr, &auth, &body) {
                    Some(202) => n.flood_accepted += 1,
                    Some(429) => n.flood_limited += 1,
                    _ => {}
                }
            })
        }));
        Noise { stop, threads }
    }

    fn stop(self) -> NoiseCount {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = NoiseCount::default();
        for t in self.threads {
            let n = t.join().expect("noise thread");
            total.adversarial += n.adversarial;
            total.half_open += n.half_open;
            total.names_acked += n.names_acked;
            total.flood_accepted += n.flood_accepted;
            total.flood_limited += n.flood_limited;
        }
        total
    }
}

/// Runs `step(i, counts)` every `period` until stopped.
fn paced(
    stop: &AtomicBool,
    period: Duration,
    mut step: impl FnMut(u64, &mut NoiseCount),
) -> NoiseCount {
    let mut n = NoiseCount::default();
    let started = std::time::Instant::now();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        step(i, &mut n);
        i += 1;
        let next = started + period * i as u32;
        if let Some(wait) = next.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    n
}

/// Opens `HALF_OPEN` connections that send part of a request's headers and
/// nothing more, and holds them until stopped; returns how many were open.
fn hold_half_open(addrs: &[SocketAddr], stop: &AtomicBool) -> u64 {
    let mut held = Vec::with_capacity(HALF_OPEN);
    for i in 0..HALF_OPEN {
        let addr = addrs[i % addrs.len()];
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            continue;
        };
        if s.write_all(b"POST /v1/readings HTTP/1.1\r\nHost: ingest\r\n")
            .is_ok()
        {
            held.push(s);
        }
    }
    let count = held.len() as u64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    count
}

fn authorization(keys: &DeviceKeys, device: &str) -> String {
    let pair = format!("{device}:{}", keys.token(device));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `n` readings of `device` from `seq`, each with the metrics `metrics`
/// (a JSON object's members).
fn readings_body(device: &str, seq: u64, n: u64, metrics: &str) -> Vec<u8> {
    let ts = Timestamp::now().to_string();
    let readings: Vec<String> = (seq..seq + n)
        .map(|s| {
            format!(r#"{{"device_id":"{device}","seq":{s},"ts":"{ts}","metrics":{{{metrics}}}}}"#)
        })
        .collect();
    format!(r#"{{"readings":[{}]}}"#, readings.join(",")).into_bytes()
}

/// One reading with as many distinct metric names as fit in
/// `ADVERSARIAL_BYTES`: the costliest body the wire bench found.
fn adversarial_body(device: &str) -> Vec<u8> {
    let ts = Timestamp::now().to_string();
    let mut body =
        format!(r#"{{"readings":[{{"device_id":"{device}","seq":1,"ts":"{ts}","metrics":{{"#);
    let mut i = 0;
    while body.len() < ADVERSARIAL_BYTES - 32 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#""m{i}":1"#));
        i += 1;
    }
    body.push_str("}}]}");
    body.into_bytes()
}

/// Sends one `POST /v1/readings` on `conn` (opened to `addr` when absent,
/// dropped after an error or `Connection: close`) and returns the status.
fn post(
    conn: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    auth: &str,
    body: &[u8],
) -> Option<u16> {
    let result = (|| -> io::Result<(u16, bool)> {
        if conn.is_none() {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            *conn = Some(BufReader::new(s));
        }
        let reader = conn.as_mut().expect("connected above");
        let head = format!(
            "POST /v1/readings HTTP/1.1\r\nHost: ingest\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        read_response(reader)
    })();
    match result {
        Ok((status, keep)) => {
            if !keep {
                *conn = None;
            }
            Some(status)
        }
        Err(_) => {
            *conn = None;
            None
        }
    }
}

/// Reads a response's status line, headers and `Content-Length` body;
/// returns the status and whether the connection stays open.
fn read_response(reader: &mut BufReader<TcpStream>) -> io::Result<(u16, bool)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}"))
        })?;
    let (mut length, mut keep) = (0usize, true);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if lower.starts_with("connection:") && lower.contains("close") {
            keep = false;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, keep))
}

impl Pipeline {
    /// Waits (up to 60 s) until `device` has `expected` rows stored and
    /// returns how many it has.
    pub async fn rows_of(&self, device: &str, expected: u64) -> u64 {
        let (client, conn) = tokio_postgres::connect(&self.db, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(conn);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM readings WHERE device_id = $1",
                    &[&device],
                )
                .await
                .expect("count rows")
                .get(0);
            if n as u64 >= expected || Instant::now() > deadline {
                return n as u64;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
