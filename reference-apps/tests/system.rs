//! System test: the real binaries against real RabbitMQ and PostgreSQL
//! (from `scripts/test`). 100 devices × 50 readings through ingest-api,
//! two analyzers, alerts-api; every reading stored exactly once, every
//! injected spike found through the paginated alerts API; then the
//! two-analyzer balance check, at start and after one restarts.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ha_core::conformance::{server_url, unique_name};
use ha_test_support::{Proc, create_database, wait_until, wait_until_async};

const PARTITIONS: &str = "8";
const DEVICES: usize = 100;
const READINGS: u64 = 50;
/// The spike comes after each device's 34th reading.
const SPIKE_SEQ: u64 = 34;

/// A GET with an optional bearer token; returns status and body.
fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    ha_test_support::request(addr, "GET", path, &headers, "")
}

fn owned_partitions(analyzer: &Proc) -> Option<u32> {
    analyzer
        .metric("ha_analyzer_owned_partitions")
        .map(|v| v as u32)
}

/// Waits until both analyzers own 4 of the 8 partitions; returns how long it took.
fn wait_balanced(a: &Proc, b: &Proc, bound: Duration) -> Duration {
    let what = format!("{} and {} to own 4 partitions each", a.name, b.name);
    wait_until(&what, bound, || {
        (owned_partitions(a), owned_partitions(b)) == (Some(4), Some(4))
    })
}

async fn stored_counts(url: &str) -> (i64, i64) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT (device_id, seq, metric)) FROM readings",
            &[],
        )
        .await
        .expect("count readings");
    (row.get(0), row.get(1))
}

fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write file");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_store_every_reading_once_find_every_spike_and_balance() {
    let (Some(amqp), Some(pg)) = (
        server_url("HA_TEST_AMQP_URL"),
        server_url("HA_TEST_POSTGRES_URL"),
    ) else {
        return;
    };
    let dir = std::env::temp_dir().join(unique_name("ha-system-"));
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("logs in {}", dir.display());
    let db = create_database(&pg, "sys").await;
    let key = write_file(
        &dir,
        "device.key",
        "system-test-key-0123456789abcdef0123456789\n",
    );
    let token = write_file(&dir, "api.token", "operator-secret\n");
    let prefix = format!("{}.readings", unique_name("sys"));
    let (key, token) = (key.to_str().unwrap(), token.to_str().unwrap());

    let migrate = Command::new(env!("CARGO_BIN_EXE_ha-admin"))
        .args(["migrate", "--postgres-url", &db])
        .output()
        .expect("ha-admin migrate");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let ingest = Proc::start_logged(
        &dir,
        "ingest",
        env!("CARGO_BIN_EXE_ingest-api"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--amqp-url",
            &amqp,
            "--partitions",
            PARTITIONS,
            "--queue-prefix",
            &prefix,
            "--device-key-file",
            key,
        ],
    );
    let analyzer = |name: &str| {
        Proc::start_logged(
            &dir,
            name,
            env!("CARGO_BIN_EXE_analyzer"),
            &[
                "--listen",
                "127.0.0.1:0",
                "--amqp-url",
                &amqp,
                "--postgres-url",
                &db,
                "--partitions",
                PARTITIONS,
                "--queue-prefix",
                &prefix,
                "--member-id",
                name,
            ],
        )
    };
    let a = analyzer("analyzer-a");
    let mut b = analyzer("analyzer-b");
    let alerts = Proc::start_logged(
        &dir,
        "alerts",
        env!("CARGO_BIN_EXE_alerts-api"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--postgres-url",
            &db,
            "--api-token-file",
            token,
        ],
    );
    // Balance within 10 s of start (RabbitMQ 3.10 never rebalances by itself).
    let took = wait_balanced(&a, &b, Duration::from_secs(10));
    eprintln!("analyzers balanced 4/4 after {took:?}");

    let generator = Command::new(env!("CARGO_BIN_EXE_data-generator"))
        .args([
            "--url",
            &format!("http://{}", ingest.addr),
            "--devices",
            &DEVICES.to_string(),
            "--interval",
            "100ms",
            "--readings-per-device",
            &READINGS.to_string(),
            "--anomaly-rate",
            "1",
            "--max-spikes",
            "1",
            "--start-seq",
            "0",
            "--device-key-file",
            key,
        ])
        .output()
        .expect("run data-generator");
    let summary = String::from_utf8_lossy(&generator.stdout);
    assert!(
        generator.status.success(),
        "generator failed: {summary} {}",
        String::from_utf8_lossy(&generator.stderr)
    );
    let total = DEVICES as u64 * READINGS;
    assert!(
        summary.contains(&format!("acknowledged {total},")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("spikes injected {DEVICES}")),
        "{summary}"
    );

    // Every acknowledged reading stored exactly once.
    wait_until_async(
        "every acknowledged reading stored",
        Duration::from_secs(60),
        || async { stored_counts(&db).await.0 >= total as i64 },
    )
    .await;
    let (rows, distinct) = stored_counts(&db).await;
    assert_eq!(
        (rows, distinct),
        (total as i64, total as i64),
        "rows per (device_id, seq, metric)"
    );

    // Every spike is in /v1/anomalies; the cursor walk sees each anomaly once.
    let walk = || {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/anomalies?limit=7&cursor={}", urlencode(c)),
                None => "/v1/anomalies?limit=7".to_owned(),
            };
            let (status, body) = get(alerts.addr, &path, Some("operator-secret"));
            assert_eq!(status, 200, "{body}");
            let page: serde_json::Value = serde_json::from_str(&body).expect("JSON page");
            for item in page["items"].as_array().expect("items") {
                seen.push((
                    item["device_id"].as_str().unwrap().to_owned(),
                    item["seq"].as_u64().unwrap(),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return seen,
            }
        }
    };
    wait_until(
        "an anomaly per device in /v1/anomalies",
        Duration::from_secs(30),
        || walk().len() >= DEVICES,
    );
    let seen = walk();
    let unique: HashSet<&(String, u64)> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "pagination repeated an anomaly");
    for d in 0..DEVICES {
        let spike = (format!("dev-{d:05}"), SPIKE_SEQ);
        assert!(
            unique.contains(&spike),
            "spike {spike:?} not among the anomalies"
        );
    }
    eprintln!(
        "anomalies: {} ({} injected, {} others)",
        seen.len(),
        DEVICES,
        seen.len() - DEVICES
    );
    let (status, _) = get(alerts.addr, "/v1/anomalies", None);
    assert_eq!(status, 401, "the alerts API requires the operator token");

    // One analyzer dies and comes back: balanced again within 10 s.
    b.kill();
    b = analyzer("analyzer-b2");
    let took = wait_balanced(&a, &b, Duration::from_secs(10));
    eprintln!("rebalanced 4/4 {took:?} after the restart");
    drop((ingest, alerts, a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
