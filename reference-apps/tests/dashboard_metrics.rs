//! The Grafana dashboard (`deploy/k8s/base/dashboards/ha-pipeline.json`)
//! queries only metric names our services really expose: the ingest,
//! analyzer and alerts services are served on 127.0.0.1 (in-memory
//! backends, the same routers the binaries serve), their `/metrics` is
//! scraped after some traffic, and every `ha_*` name in a panel query must
//! be one of the scraped sample names.
//!
//! `cargo test -p reference-apps --test dashboard_metrics`

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ha_core::alerts::{AlertsConfig, AlertsService};
use ha_core::analyzer::{Analyzer, AnalyzerConfig};
use ha_core::ingest::{IngestConfig, IngestService};
use ha_core::queue::MemoryQueue;
use ha_core::store::MemoryStore;
use ha_core::wire::Timestamp;
use ha_test_support::wait_until_async;

const DASHBOARD: &str = "../deploy/k8s/base/dashboards/ha-pipeline.json";

/// Serves `router` on a free loopback port for the rest of the test.
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(ha_core::http::serve(
        listener,
        router,
        None,
        std::future::pending(),
        Duration::ZERO,
    ));
    addr
}

/// One plain HTTP/1.1 request; returns status and body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// Sample names in a Prometheus/OpenMetrics text exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every `ha_<service>_...` identifier in the panels' `expr` strings.
fn dashboard_names(dashboard: &serde_json::Value) -> BTreeSet<String> {
    fn walk(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => idents(e, out),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    fn idents(expr: &str, out: &mut BTreeSet<String>) {
        let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let mut rest = expr;
        while let Some(i) = rest.find("ha_") {
            let preceded = rest[..i].chars().next_back().is_some_and(is_ident);
            let tail = &rest[i..];
            let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
            if !preceded {
                out.insert(tail[..end].to_owned());
            }
            rest = &tail[end.max(3)..];
        }
    }
    let mut out = BTreeSet::new();
    walk(dashboard, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_exposed_by_a_running_service() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let wanted = dashboard_names(&dashboard);
    assert!(
        wanted.len() >= 10,
        "the dashboard queries too few ha_* metrics: {wanted:?}"
    );

    let queue = Arc::new(MemoryQueue::with_partitions(8));
    let store = Arc::new(MemoryStore::new());
    let ingest = IngestService::new(queue.clone(), IngestConfig::default());
    let analyzer =
        Analyzer::new(queue.clone(), store.clone(), AnalyzerConfig::default()).expect("analyzer");
    let alerts = AlertsService::new(store.clone(), AlertsConfig::default());
    let ingest_addr = serve(ingest.router()).await;
    let analyzer_addr = serve(analyzer.router()).await;
    let alerts_addr = serve(alerts.router()).await;
    let stop = tokio::spawn(analyzer.run(std::future::pending(), Duration::from_secs(1)));

    // Traffic, so labelled families (requests by status, ...) have samples.
    let body = format!(
        r#"{{"readings":[{{"device_id":"dev-1","seq":1,"ts":"{}","metrics":{{"hr":70}}}}]}}"#,
        Timestamp::now()
    );
    let (status, answer) =
        tokio::task::spawn_blocking(move || request(ingest_addr, "POST", "/v1/readings", &body))
            .await
            .expect("post");
    assert_eq!(status, 202, "ingest answered {status}: {answer}");
    let (status, _) =
        tokio::task::spawn_blocking(move || request(alerts_addr, "GET", "/v1/anomalies", ""))
            .await
            .expect("get");
    assert_eq!(status, 200);
    // The analyzer's families get samples once it has stored the reading.
    wait_until_async(
        "the analyzer to store the reading",
        Duration::from_secs(10),
        || async {
            tokio::task::spawn_blocking(move || {
                ha_test_support::metric(analyzer_addr, "ha_analyzer_readings_stored_total")
            })
            .await
            .expect("scrape")
            .is_some_and(|n| n >= 1.0)
        },
    )
    .await;

    let mut exposed = BTreeSet::new();
    for addr in [ingest_addr, analyzer_addr, alerts_addr] {
        let (status, text) =
            tokio::task::spawn_blocking(move || request(addr, "GET", "/metrics", ""))
                .await
                .expect("scrape");
        assert_eq!(status, 200, "GET /metrics on {addr}");
        exposed.extend(sample_names(&text));
    }
    stop.abort();

    let missing: Vec<_> = wanted.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no service exposes: {missing:?}\nexposed: {exposed:?}"
    );
}
