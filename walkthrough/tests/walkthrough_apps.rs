//! The walkthrough binaries `hello`, `cpu-stresser` and `ram-hogger` as
//! real processes: they report their port, serve /healthz and /metrics,
//! exit 0 on SIGTERM and 64 on bad flags.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::Command;
use std::time::Duration;

use ha_test_support::{Proc, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// Starts a walkthrough binary on a free port of 127.0.0.1.
fn start(bin: &str, args: &[&str]) -> Proc {
    let name = bin.rsplit('/').next().unwrap_or(bin);
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Proc::start(name, bin, &all)
}

/// The value of `name` in the /metrics text.
fn metric(p: &Proc, name: &str) -> f64 {
    p.metric(name)
        .unwrap_or_else(|| panic!("{} exposes no {name}", p.name))
}

/// Runs `bin` with `args` to its end; returns the exit code and stderr.
fn run_to_end(bin: &str, args: &[&str]) -> (Option<i32>, String) {
    let (code, _, stderr) = ha_test_support::run_to_end(bin, args, &[]);
    (code, stderr)
}

#[test]
fn hello_greets_records_and_reads_back_its_log() {
    let dir = std::env::temp_dir().join(ha_core::conformance::unique_name("hello-bin-"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("hello.log");
    let p = start(
        env!("CARGO_BIN_EXE_hello"),
        &["--log-file", log.to_str().unwrap()],
    );
    assert_eq!(p.get("/healthz"), (200, "ok\n".into()));
    let (status, page) = p.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("uid "), "{page}");
    let (status, body) = p.get("/logs");
    assert_eq!(status, 200);
    assert!(body.contains("\"lines\":[]"), "{body}");
    let (status, body) = p.get("/hello/kubernetes");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello, kubernetes!"), "{body}");
    assert_eq!(p.get(&format!("/hello/{}", "x".repeat(65))).0, 400);
    let (_, body) = p.get("/logs?lines=1");
    assert!(body.contains("status=400"), "{body}");
    let (_, body) = p.get("/logs");
    assert!(body.contains("name=\\\"kubernetes\\\""), "{body}");
    // Each line: the client's address (from the real socket), method,
    // path, status and latency.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let fields = |line: &str| -> Vec<(String, String)> {
        line.split(' ')
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let first = fields(lines[0]);
    let get = |k: &str| {
        first
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k}= in {}", lines[0]))
    };
    assert!(
        get("client")
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .ip()
            .is_loopback(),
        "{text}"
    );
    assert_eq!(
        (get("method"), get("path"), get("status")),
        ("GET".into(), "/hello/kubernetes".into(), "200".into())
    );
    let latency: f64 = get("latency_ms").parse().unwrap();
    assert!(latency >= 0.0, "{text}");
    assert!(
        lines[1].contains(" path=/hello/{name} status=400 "),
        "{text}"
    );
    assert_eq!(p.terminate(Duration::from_secs(15)).code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cpu_stresser_burns_serves_metrics_and_stops_on_sigterm() {
    let p = start(
        env!("CARGO_BIN_EXE_cpu-stresser"),
        &["--threads", "1", "--load", "0.3"],
    );
    assert_eq!(p.get("/healthz"), (200, "ok\n".into()));
    assert_eq!(metric(&p, "ha_cpu_stresser_threads"), 1.0);
    wait_until("busy seconds", WAIT, || {
        metric(&p, "ha_cpu_stresser_busy_seconds_total") > 0.05
    });
    assert_eq!(p.terminate(Duration::from_secs(15)).code(), Some(0));

    // With a duration it stops burning by itself and keeps serving.
    let p = start(
        env!("CARGO_BIN_EXE_cpu-stresser"),
        &["--load", "0.1", "--duration", "300ms"],
    );
    wait_until("the burn to end", WAIT, || {
        metric(&p, "ha_cpu_stresser_threads") == 0.0
    });
    assert_eq!(p.get("/healthz").0, 200);
    assert_eq!(p.terminate(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn ram_hogger_grows_its_resident_set_and_stops_on_sigterm() {
    let p = start(
        env!("CARGO_BIN_EXE_ram-hogger"),
        &[
            "--megabytes",
            "48",
            "--step-megabytes",
            "16",
            "--step-interval",
            "100ms",
        ],
    );
    assert_eq!(p.get("/healthz"), (200, "ok\n".into()));
    wait_until("48 MiB allocated", WAIT, || {
        metric(&p, "ha_ram_hogger_allocated_bytes") == (48u64 << 20) as f64
    });
    assert_eq!(
        metric(&p, "ha_ram_hogger_target_bytes"),
        (48u64 << 20) as f64
    );
    // The pages were written, so they are resident.
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    assert!(rss_kib >= 48 * 1024, "VmRSS {rss_kib} kB");
    assert!(metric(&p, "ha_ram_hogger_resident_bytes") >= (48u64 << 20) as f64);
    assert_eq!(p.terminate(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn bad_flags_exit_64() {
    let cases: [(&str, &[&str]); 9] = [
        (env!("CARGO_BIN_EXE_hello"), &["--listen", "nowhere"]),
        (env!("CARGO_BIN_EXE_hello"), &["--no-such-flag"]),
        (env!("CARGO_BIN_EXE_cpu-stresser"), &["--load", "1.5"]),
        (env!("CARGO_BIN_EXE_cpu-stresser"), &["--threads", "0"]),
        (env!("CARGO_BIN_EXE_cpu-stresser"), &["--duration", "soon"]),
        (env!("CARGO_BIN_EXE_ram-hogger"), &["--megabytes", "0"]),
        (env!("CARGO_BIN_EXE_ram-hogger"), &["--megabytes", "lots"]),
        (
            env!("CARGO_BIN_EXE_ram-hogger"),
            &["--megabytes", "1000000000"],
        ),
        (
            env!("CARGO_BIN_EXE_ram-hogger"),
            &["--megabytes", "8", "--step-megabytes", "0"],
        ),
    ];
    for (bin, args) in cases {
        let (code, stderr) = run_to_end(bin, args);
        assert_eq!(code, Some(64), "{bin} {args:?}: {stderr}");
        assert!(!stderr.is_empty());
    }
    let (code, stderr) = run_to_end(
        env!("CARGO_BIN_EXE_ram-hogger"),
        &["--megabytes", "1000000000"],
    );
    assert_eq!(code, Some(64));
    assert!(stderr.contains("--i-know"), "{stderr}");
    let (code, _) = run_to_end(env!("CARGO_BIN_EXE_cpu-stresser"), &["--help"]);
    assert_eq!(code, Some(0));
}

#[test]
fn every_flag_has_an_environment_variable() {
    for bin in [
        env!("CARGO_BIN_EXE_hello"),
        env!("CARGO_BIN_EXE_cpu-stresser"),
        env!("CARGO_BIN_EXE_ram-hogger"),
    ] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        for line in help.lines() {
            let line = line.trim_start();
            let Some(flag) = line
                .strip_prefix("--")
                .and_then(|l| l.split([' ', '<']).next())
            else {
                continue;
            };
            if flag == "help" || flag == "version" {
                continue;
            }
            let var = format!("HA_{}", flag.to_uppercase().replace('-', "_"));
            assert!(
                // `[env: VAR]`, or `[env: VAR=value]` when it is set and shown.
                help.contains(&format!("[env: {var}]")) || help.contains(&format!("[env: {var}=")),
                "{bin}: --{flag} has no {var}:\n{help}"
            );
        }
    }
}
