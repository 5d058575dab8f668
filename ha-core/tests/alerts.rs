//! The alerts service through `Router::oneshot` over a seeded `MemoryStore`:
//! operator auth, filters, pagination, bad parameters, readings, device
//! health, the live stream, probes, metrics and the OpenAPI document.
#![cfg(feature = "server")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

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

#[tokio::test]
async fn every_v1_route_requires_the_operator_token() {
    let app = app(seeded().await, config());
    let routes = [
        "/v1/anomalies",
        "/v1/devices/dev-1/readings",
        "/v1/devices/dev-1/health",
        "/v1/stream",
    ];
    let basic = "Basic b3BlcmF0b3I6b3BlcmF0b3ItdG9rZW4tZm9yLXRlc3Rz";
    let wrong = format!("Bearer {TOKEN}x");
    for route in routes {
        for auth in [None, Some(wrong.as_str()), Some("Bearer "), Some(basic)] {
            let resp = call(&app, route, auth).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{route} {auth:?}");
            assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
            let body: Value = serde_json::from_str(&text(resp).await).unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
        let resp = call(&app, route, Some(&format!("bearer {TOKEN}"))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{route}");
    }
    // The token is never taken from the URL, not even on the stream.
    let resp = call(&app, &format!("/v1/stream?access_token={TOKEN}"), None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn probes_metrics_openapi_and_ui_are_open() {
    let app = app(seeded().await, config());
    for (path, want) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/openapi.json", "/v1/anomalies"),
        ("/", "<html"),
        ("/ui/app.js", "sessionStorage"),
        ("/ui/app.css", "{"),
    ] {
        let resp = call(&app, path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(text(resp).await.contains(want), "{path}");
    }
    let resp = call(&app, "/", None).await;
    let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    let doc: Value =
        serde_json::from_str(&text(call(&app, "/openapi.json", None).await).await).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/stream"]["get"].is_object());

    get(&app, "/v1/anomalies").await;
    let metrics = text(call(&app, "/metrics", None).await).await;
    assert!(
        metrics.contains(r#"ha_alerts_requests_total{route="/v1/anomalies",status="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("ha_alerts_request_duration_seconds_bucket"));
    assert!(metrics.contains("ha_alerts_stream_clients 0"));
}

#[tokio::test]
async fn without_a_token_configured_no_auth_is_needed() {
    let app = app(
        seeded().await,
        AlertsConfig {
            api_token: None,
            ..config()
        },
    );
    let resp = call(&app, "/v1/anomalies", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn anomalies_are_newest_first_and_filtered() {
    let app = app(seeded().await, config());
    let (status, body) = get(&app, "/v1/anomalies").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&body["items"]),
        [
            "dev-1/17/pulse",
            "dev-1/7/spo2",
            "dev-1/7/pulse",
            "dev-1/3/pulse",
            "dev-2/2/pulse"
        ]
    );
    assert_eq!(body["next_cursor"], Value::Null);
    let a = &body["items"][0];
    assert_eq!(a["ts"], "2026-11-26T12:02:50Z");
    assert_eq!(a["value"], 180.0);
    assert_eq!(a["anomaly_score"], 0.999);
    assert_eq!(a["detector"], "zscore");

    let cases = [
        ("device=dev-2", vec!["dev-2/2/pulse"]),
        ("metric=spo2", vec!["dev-1/7/spo2"]),
        (
            "device=dev-1&metric=pulse&limit=2",
            vec!["dev-1/17/pulse", "dev-1/7/pulse"],
        ),
        (
            "from=2026-11-26T12:00:30Z&to=2026-11-26T12:01:10Z",
            vec!["dev-1/3/pulse"],
        ),
        (
            "from=2026-11-26T12:01:10%2B00:00",
            vec!["dev-1/17/pulse", "dev-1/7/spo2", "dev-1/7/pulse"],
        ),
        ("device=nobody", vec![]),
        (
            "device=&metric=",
            vec![
                "dev-1/17/pulse",
                "dev-1/7/spo2",
                "dev-1/7/pulse",
                "dev-1/3/pulse",
                "dev-2/2/pulse",
            ],
        ),
    ];
    for (query, want) in cases {
        let (status, body) = get(&app, &format!("/v1/anomalies?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(keys(&body["items"]), want, "{query}");
    }
}

#[tokio::test]
async fn following_next_cursor_visits_every_anomaly_once() {
    let store = MemoryStore::new();
    // 250 anomalies over 6 devices, many sharing a timestamp.
    let all: Vec<Anomaly> = (0..250u64)
        .map(|i| anomaly(&format!("dev-{}", i % 6), i, "pulse", (i / 4) as i64))
        .collect();
    store.write(&[], &all).await.unwrap();
    let app = app(store, config());
    let mut seen = Vec::new();
    let mut uri = "/v1/anomalies?limit=7".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(keys(&body["items"]));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => {
                let c = c
                    .replace('%', "%25")
                    .replace(',', "%2C")
                    .replace(':', "%3A");
                uri = format!("/v1/anomalies?limit=7&cursor={c}");
            }
            None => break,
        }
        assert!(pages < 100, "pagination does not end");
    }
    assert_eq!(pages, 250usize.div_ceil(7));
    assert_eq!(seen.len(), 250);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250);
    // Newest first: the seq order follows ts here.
    assert!(seen[0].ends_with("/249/pulse"));
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let app = app(seeded().await, config());
    let cases = [
        ("/v1/anomalies?from=yesterday", "from"),
        ("/v1/anomalies?to=2026-11-26T12:00:00", "to"),
        ("/v1/anomalies?from=2026-11-26T12:00:00%2B01:00", "from"),
        (
            "/v1/anomalies?from=2026-11-26T13:00:00Z&to=2026-11-26T12:00:00Z",
            "from",
        ),
        ("/v1/anomalies?limit=0", "limit"),
        ("/v1/anomalies?limit=1001", "limit"),
        ("/v1/anomalies?limit=-1", "limit"),
        ("/v1/anomalies?limit=ten", "limit"),
        ("/v1/anomalies?cursor=garbage", "cursor"),
        ("/v1/anomalies?cursor=1,2,dev", "cursor"),
        ("/v1/anomalies?devcie=dev-1", "devcie"),
        ("/v1/anomalies?device=a&device=b", "device"),
        ("/v1/devices/dev-1/readings?limit=10001", "limit"),
        (
            "/v1/devices/dev-1/readings?from=2026-13-01T00:00:00Z",
            "from",
        ),
        ("/v1/devices/dev-1/readings?cursor=x", "cursor"),
        ("/v1/devices/bad%20id/readings", "id"),
        ("/v1/devices/bad%20id/health", "id"),
        ("/v1/stream?limit=5", "limit"),
    ];
    for (uri, field) in cases {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"], "invalid_parameter", "{uri}");
        assert_eq!(body["field"], field, "{uri}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    // Still healthy after all that.
    assert_eq!(get(&app, "/v1/anomalies").await.0, StatusCode::OK);
}

#[tokio::test]
async fn readings_of_a_device_in_a_range() {
    let app = app(seeded().await, config());
    let range = "from=2026-11-26T12:00:00Z&to=2026-11-26T12:01:00Z";
    let (status, body) = get(
        &app,
        &format!("/v1/devices/dev-1/readings?{range}&metric=pulse"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "seqs 0..=5");
    assert_eq!(items[0]["seq"], 0);
    assert_eq!(items[0]["ts"], "2026-11-26T12:00:00Z");
    assert_eq!(items[5]["value"], 75.0);
    assert!(items.iter().all(|v| v["metric"] == "pulse"));
    assert_eq!(body["truncated"], false);
    assert_eq!(body["from"], "2026-11-26T12:00:00Z");

    let (_, body) = get(&app, &format!("/v1/devices/dev-1/readings?{range}&limit=4")).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 4);
    assert_eq!(body["truncated"], true);

    // Default range: the last hour up to now; the seed is in the past.
    let (status, body) = get(&app, "/v1/devices/dev-1/readings").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], Value::Array(vec![]));
    let (status, body) = get(&app, &format!("/v1/devices/nobody/readings?{range}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], Value::Array(vec![]));
}

#[tokio::test]
async fn device_health_reports_gaps_and_404_for_unknown_devices() {
    let app = app(seeded().await, config());
    let (status, body) = get(&app, "/v1/devices/dev-1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["device_id"], "dev-1");
    assert_eq!(body["last_seq"], 19);
    assert_eq!(body["last_seen"], "2026-11-26T12:03:10Z");
    assert_eq!(
        body["seq_gaps"],
        serde_json::json!([{"from": 10, "to": 14}])
    );
    assert_eq!(body["gap_search"]["to_seq"], 19);
    assert_eq!(body["gap_search"]["truncated"], false);

    let (status, body) = get(&app, "/v1/devices/dev-2/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["seq_gaps"], serde_json::json!([]));

    let (status, body) = get(&app, "/v1/devices/nobody/health").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown_device");
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

#[tokio::test]
async fn stream_sends_each_new_anomaly_once_even_with_an_old_timestamp() {
    let store = seeded().await;
    let service = AlertsService::new(Arc::new(store.clone()), config());
    let app = service.router();
    let resp = call(&app, "/v1/stream", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    let mut body = resp.into_body();
    let mut buf = String::new();
    read_until(&mut body, &mut buf, "event: ready").await;
    assert!(
        !buf.contains("event: anomaly"),
        "seeded ones are not re-sent"
    );

    // A new one older than everything seen (a late device flush) and a
    // new one newer than everything.
    store
        .write(&[], &[anomaly("dev-3", 1, "pulse", -3600)])
        .await
        .unwrap();
    read_until(&mut body, &mut buf, "\"device_id\":\"dev-3\"").await;
    store
        .write(&[], &[anomaly("dev-4", 1, "spo2", 9999)])
        .await
        .unwrap();
    read_until(&mut body, &mut buf, "\"device_id\":\"dev-4\"").await;
    // Many polls later, still exactly once each.
    tokio::time::sleep(Duration::from_millis(200)).await;
    store
        .write(&[], &[anomaly("dev-5", 1, "pulse", 5)])
        .await
        .unwrap();
    read_until(&mut body, &mut buf, "\"device_id\":\"dev-5\"").await;
    assert_eq!(buf.matches("event: anomaly").count(), 3, "{buf}");
    assert_eq!(buf.matches("\"device_id\":\"dev-3\"").count(), 1);
    assert!(buf.contains(&format!("id: {},1,dev-4,spo2", ts(9999).unix_micros())));

    let metrics = text(call(&app, "/metrics", None).await).await;
    assert!(metrics.contains("ha_alerts_stream_clients 1"), "{metrics}");
    assert!(
        metrics.contains("ha_alerts_stream_events_total 3"),
        "{metrics}"
    );

    // Draining ends the stream, so a graceful shutdown is not held up.
    service.drain();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "stream did not end on drain");
    let resp = call(&app, "/readyz", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = get(&app, "/v1/stream").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "draining");
}

#[tokio::test]
async fn stream_filters_by_device_and_caps_clients() {
    let store = seeded().await;
    let app = app(
        store.clone(),
        AlertsConfig {
            max_stream_clients: 1,
            ..config()
        },
    );
    let auth = format!("Bearer {TOKEN}");
    let resp = call(&app, "/v1/stream?device=dev-2", Some(&auth)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut buf = String::new();
    read_until(&mut body, &mut buf, "event: ready").await;

    let (status, err) = get(&app, "/v1/stream").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err["error"], "too_many_streams");

    store
        .write(
            &[],
            &[
                anomaly("dev-1", 99, "pulse", 500),
                anomaly("dev-2", 99, "pulse", 500),
            ],
        )
        .await
        .unwrap();
    read_until(&mut body, &mut buf, "\"seq\":99").await;
    assert!(!buf.contains("\"device_id\":\"dev-1\""), "{buf}");

    // The slot is free again once the client hangs up.
    drop(body);
    let resp = call(&app, "/v1/stream", Some(&auth)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_stream_sends_keep_alive_comments() {
    let app = app(
        seeded().await,
        AlertsConfig {
            stream_keep_alive: Duration::from_millis(50),
            ..config()
        },
    );
    let resp = call(&app, "/v1/stream", Some(&format!("Bearer {TOKEN}"))).await;
    let mut body = resp.into_body();
    let mut buf = String::new();
    read_until(&mut body, &mut buf, "event: ready").await;
    read_until(&mut body, &mut buf, ": keep-alive\n").await;
}

/// A store whose database is down.
struct DownStore;

#[async_trait]
impl Store for DownStore {
    async fn write(&self, _: &[Reading], _: &[Anomaly]) -> Result<WriteOutcome, StoreError> {
        Err(down())
    }
    async fn recent_values(
        &self,
        _: &str,
        _: &str,
        _: u64,
        _: u32,
    ) -> Result<Vec<(u64, f64)>, StoreError> {
        Err(down())
    }
    async fn anomalies(&self, _: &AnomalyQuery) -> Result<Page<Anomaly>, StoreError> {
        Err(down())
    }
    async fn readings(&self, _: &ReadingQuery) -> Result<Vec<StoredValue>, StoreError> {
        Err(down())
    }
    async fn device_status(&self, _: &str) -> Result<Option<DeviceStatus>, StoreError> {
        Err(down())
    }
    async fn seq_gaps(&self, _: &str, _: u64, _: u64, _: u32) -> Result<Vec<SeqGap>, StoreError> {
        Err(down())
    }
    async fn delete_readings_before(&self, _: Timestamp, _: u32) -> Result<u64, StoreError> {
        Err(down())
    }
    async fn heartbeat(
        &self,
        _: &str,
        _: &str,
        _: std::time::Duration,
    ) -> Result<Vec<String>, StoreError> {
        Err(down())
    }
    async fn leave(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Err(down())
    }
    async fn claim_partition(
        &self,
        _: &str,
        _: u32,
        _: &str,
    ) -> Result<ha_core::store::Fence, StoreError> {
        Err(down())
    }
    async fn write_fenced(
        &self,
        _: &ha_core::store::Fence,
        _: &[Reading],
        _: &[Anomaly],
    ) -> Result<WriteOutcome, StoreError> {
        Err(down())
    }
    async fn partition_epochs(
        &self,
        _: &str,
    ) -> Result<Vec<ha_core::store::EpochRecord>, StoreError> {
        Err(down())
    }
}

fn down() -> StoreError {
    StoreError::Unavailable("connection refused to 10.0.0.7".into())
}

#[tokio::test]
async fn a_down_store_is_503_with_retry_after_and_not_ready() {
    let app = app(DownStore, config());
    for uri in [
        "/v1/anomalies",
        "/v1/devices/dev-1/readings",
        "/v1/devices/dev-1/health",
    ] {
        let resp = call(&app, uri, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
        let body = text(resp).await;
        assert!(body.contains("store_unavailable"));
        assert!(!body.contains("10.0.0.7"), "internal details leak: {body}");
    }
    let resp = call(&app, "/readyz", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The stream stays open and says so once.
    let resp = call(&app, "/v1/stream", Some(&format!("Bearer {TOKEN}"))).await;
    let mut body = resp.into_body();
    let mut buf = String::new();
    read_until(&mut body, &mut buf, "event: store_error").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let more = tokio::time::timeout(Duration::from_millis(50), body.frame()).await;
    assert!(more.is_err(), "store_error repeated");
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let app = app(seeded().await, config());
    let (status, body) = get(&app, "/v1/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
}
