//! The alerts service through `Router::oneshot` over a seeded `MemoryStore`:
//! operator auth, filters, pagination, bad parameters, readings, device
//! health, the live stream, probes, metrics and the OpenAPI document.
//! Shared fixtures here; the cases in `api.rs`, `stream.rs` and `faults.rs`.
#![cfg(feature = "server")]

mod api;
mod faults;
mod stream;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use ha_core::alerts::{AlertsConfig, AlertsService};
use ha_core::store::{
    Anomaly, AnomalyQuery, DeviceStatus, MemoryStore, Page, ReadingQuery, SeqGap, Store,
    StoreError, StoredValue, WriteOutcome,
};
use ha_core::wire::{Metric, Reading, Timestamp};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "operator-token-for-tests";
/// 2026-11-26T12:00:00Z.
const T0: i64 = 1_795_694_400_000_000;
const SECOND: i64 = 1_000_000;

fn ts(offset_secs: i64) -> Timestamp {
    Timestamp::from_unix_micros(T0 + offset_secs * SECOND)
}

fn reading(device: &str, seq: u64, at: i64, pulse: f64) -> Reading {
    Reading {
        device_id: device.into(),
        seq,
        ts: ts(at),
        metrics: vec![Metric::new("pulse", pulse), Metric::new("spo2", 97.0)],
    }
}

fn anomaly(device: &str, seq: u64, metric: &str, at: i64) -> Anomaly {
    Anomaly {
        device_id: device.into(),
        seq,
        metric: metric.into(),
        ts: ts(at),
        value: 180.0,
        score: 9.5,
        anomaly_score: 0.999,
        detector: "zscore".into(),
    }
}

fn config() -> AlertsConfig {
    AlertsConfig {
        api_token: Some(TOKEN.into()),
        stream_poll: Duration::from_millis(20),
        ..AlertsConfig::default()
    }
}

/// dev-1: seqs 0..=9 and 15..=19 (gap 10..=14), one reading per 10 s;
/// dev-2: seqs 0..=4. Anomalies: dev-1 pulse at 3, 7, 17 and spo2 at 7;
/// dev-2 pulse at 2.
async fn seeded() -> MemoryStore {
    let store = MemoryStore::new();
    let mut readings: Vec<Reading> = (0..20)
        .filter(|s| !(10..15).contains(s))
        .map(|s| reading("dev-1", s, s as i64 * 10, 70.0 + s as f64))
        .collect();
    readings.extend((0..5).map(|s| reading("dev-2", s, s as i64 * 10 + 5, 60.0)));
    let anomalies = [
        anomaly("dev-1", 3, "pulse", 30),
        anomaly("dev-1", 7, "pulse", 70),
        anomaly("dev-1", 7, "spo2", 70),
        anomaly("dev-1", 17, "pulse", 170),
        anomaly("dev-2", 2, "pulse", 25),
    ];
    store.write(&readings, &anomalies).await.unwrap();
    store
}

fn app(store: impl Store, config: AlertsConfig) -> Router {
    AlertsService::new(Arc::new(store), config).router()
}

async fn call(app: &Router, uri: &str, auth: Option<&str>) -> Response<Body> {
    let mut req = Request::get(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let resp = call(app, uri, Some(&format!("Bearer {TOKEN}"))).await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn text(resp: Response<Body>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

fn keys(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}/{}", a["device_id"], a["seq"], a["metric"]).replace('"', ""))
        .collect()
}

/// Reads the event stream until `want` shows up, or panics after 5 s.
async fn read_until(body: &mut Body, buf: &mut String, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !buf.contains(want) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no `{want}` within 5 s; got:\n{buf}"))
            .expect("stream ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buf.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}
