//! The ingest service through `Router::oneshot`: the bad-input table (each
//! request gets its documented status, nothing is enqueued, the service
//! stays healthy), the check order, backpressure and draining.
#![cfg(feature = "server")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use ha_core::ingest::{DeviceKeys, IngestConfig, IngestService, RateLimit, token_for};
use ha_core::queue::{MemoryQueue, OutgoingMessage, Queue, QueueError, Subscription};
use ha_core::wire::{Envelope, Timestamp};
use http_body_util::BodyExt;
use tower::ServiceExt;

const KEY: &[u8] = b"test-key";
const PARTITIONS: u32 = 4;

fn service(queue: Arc<dyn Queue>, config: IngestConfig) -> Router {
    IngestService::new(
        queue,
        IngestConfig {
            keys: Some(DeviceKeys::from_keys(vec![KEY.to_vec()]).unwrap()),
            ..config
        },
    )
    .router()
}

fn auth(device: &str) -> String {
    basic(device, &token_for(KEY, device))
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

fn now_ts() -> String {
    Timestamp::now().to_string()
}

fn reading(device: &str, seq: &str, ts: &str, metrics: &str) -> String {
    format!(r#"{{"device_id":"{device}","seq":{seq},"ts":"{ts}","metrics":{metrics}}}"#)
}

fn body_of(readings: &[String]) -> String {
    format!(r#"{{"readings":[{}]}}"#, readings.join(","))
}

fn ok_body(device: &str) -> String {
    body_of(&[reading(device, "1", &now_ts(), r#"{"pulse":72.5}"#)])
}

struct Case {
    name: &'static str,
    auth: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: StatusCode,
    code: &'static str,
) -> Case {
    Case {
        name,
        auth: Some(auth("dev-1")),
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
    }
}

async fn send(
    app: &Router,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value, Option<String>) {
    let mut req = Request::post("/v1/readings");
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, retry_after)
}

async fn total_depth(q: &MemoryQueue) -> u64 {
    let mut n = 0;
    for p in 0..PARTITIONS {
        n += q.depth(p).await.unwrap();
    }
    n
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_nothing_is_enqueued() {
    use StatusCode as S;
    let ts = now_ts();
    let r = |seq: &str, metrics: &str| reading("dev-1", seq, &ts, metrics);
    let many_metrics = format!(
        "{{{}}}",
        (0..33)
            .map(|i| format!(r#""m{i}":1"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let future = Timestamp::now()
        .saturating_add(Duration::from_secs(600))
        .to_string();
    let long_id = "d".repeat(65);
    let mut cases = vec![
        Case {
            auth: None,
            ..case(
                "missing auth",
                ok_body("dev-1"),
                S::UNAUTHORIZED,
                "unauthorized",
            )
        },
        Case {
            auth: Some(basic("dev-1", &"0".repeat(64))),
            ..case(
                "wrong token",
                ok_body("dev-1"),
                S::UNAUTHORIZED,
                "unauthorized",
            )
        },
        Case {
            auth: Some(basic("dev-1", &token_for(KEY, "dev-2"))),
            ..case(
                "another device's token",
                ok_body("dev-1"),
                S::UNAUTHORIZED,
                "unauthorized",
            )
        },
        Case {
            auth: Some("Bearer abc".into()),
            ..case(
                "bearer instead of basic",
                ok_body("dev-1"),
                S::UNAUTHORIZED,
                "unauthorized",
            )
        },
        Case {
            auth: Some(basic("dev-1", &token_for(b"other-key", "dev-1"))),
            ..case(
                "token from another key",
                ok_body("dev-1"),
                S::UNAUTHORIZED,
                "unauthorized",
            )
        },
        Case {
            auth: None,
            content_type: Some("text/plain"),
            ..case(
                "no auth and wrong type: 401 first",
                ok_body("dev-1"),
                S::UNAUTHORIZED,
                "unauthorized",
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..case(
                "wrong content type",
                ok_body("dev-1"),
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: None,
            ..case(
                "no content type",
                ok_body("dev-1"),
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..case(
                "wrong type and too large: 415 first",
                vec![b' '; 2 << 20],
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
        },
        case(
            "2 MB body",
            vec![b' '; 2 << 20],
            S::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        case(
            "truncated JSON",
            &ok_body("dev-1")[..30],
            S::BAD_REQUEST,
            "malformed",
        ),
        case("empty body", "", S::BAD_REQUEST, "malformed"),
        case(
            "not UTF-8",
            b"{\"readings\":[\xff]}".to_vec(),
            S::BAD_REQUEST,
            "malformed",
        ),
        case("array at the top", "[]", S::BAD_REQUEST, "malformed"),
        case(
            "seq as a string",
            body_of(&[r(r#""7""#, r#"{"a":1}"#)]),
            S::BAD_REQUEST,
            "malformed",
        ),
        case(
            "negative seq",
            body_of(&[r("-1", r#"{"a":1}"#)]),
            S::BAD_REQUEST,
            "malformed",
        ),
        case(
            "fractional seq",
            body_of(&[r("1.5", r#"{"a":1}"#)]),
            S::BAD_REQUEST,
            "malformed",
        ),
        case(
            "\"NaN\" value",
            body_of(&[r("1", r#"{"a":"NaN"}"#)]),
            S::BAD_REQUEST,
            "malformed",
        ),
        case(
            "number out of f64 range",
            body_of(&[r("1", r#"{"a":1e999}"#)]),
            S::BAD_REQUEST,
            "malformed",
        ),
        case(
            "repeated metric key",
            body_of(&[r("1", r#"{"a":1,"a":2}"#)]),
            S::BAD_REQUEST,
            "malformed",
        ),
        case(
            "unknown field",
            body_of(&[r("1", r#"{"a":1},"extra":true"#)]),
            S::BAD_REQUEST,
            "malformed",
        ),
        case(
            "missing ts",
            r#"{"readings":[{"device_id":"dev-1","seq":1,"metrics":{"a":1}}]}"#,
            S::BAD_REQUEST,
            "malformed",
        ),
        case(
            "another device's reading",
            body_of(&[
                r("1", r#"{"a":1}"#),
                reading("dev-2", "1", &ts, r#"{"a":1}"#),
            ]),
            S::FORBIDDEN,
            "wrong_device",
        ),
        case(
            "other device with bad seq: 403 before 422",
            body_of(&[reading("dev-2", "9223372036854775808", &ts, r#"{"a":1}"#)]),
            S::FORBIDDEN,
            "wrong_device",
        ),
        case(
            "seq 2^63",
            body_of(&[r("9223372036854775808", r#"{"a":1}"#)]),
            S::UNPROCESSABLE_ENTITY,
            "seq_out_of_range",
        ),
        case(
            "ts 10 minutes ahead",
            body_of(&[reading("dev-1", "1", &future, r#"{"a":1}"#)]),
            S::UNPROCESSABLE_ENTITY,
            "ts_in_future",
        ),
        case(
            "ts not UTC",
            body_of(&[reading(
                "dev-1",
                "1",
                "2026-11-26T12:00:00+02:00",
                r#"{"a":1}"#,
            )]),
            S::UNPROCESSABLE_ENTITY,
            "ts_not_utc",
        ),
        case(
            "ts not RFC 3339",
            body_of(&[reading("dev-1", "1", "26/11/2026", r#"{"a":1}"#)]),
            S::UNPROCESSABLE_ENTITY,
            "ts_format",
        ),
        case(
            "no metrics",
            body_of(&[r("1", "{}")]),
            S::UNPROCESSABLE_ENTITY,
            "no_metrics",
        ),
        case(
            "33 metrics",
            body_of(&[r("1", &many_metrics)]),
            S::UNPROCESSABLE_ENTITY,
            "too_many_metrics",
        ),
        case(
            "83,000 distinct metric names in one reading (the parser stops keeping them at 32)",
            body_of(&[r(
                "1",
                &format!(
                    "{{{}}}",
                    (0..83_000)
                        .map(|i| format!(r#""m{i}":1"#))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            )]),
            S::UNPROCESSABLE_ENTITY,
            "too_many_metrics",
        ),
        case(
            "ts older than --max-reading-age (1971)",
            body_of(&[reading("dev-1", "1", "1971-01-01T00:00:00Z", r#"{"a":1}"#)]),
            S::UNPROCESSABLE_ENTITY,
            "ts_too_old",
        ),
        case(
            "bad metric name",
            body_of(&[r("1", r#"{"heart rate":1}"#)]),
            S::UNPROCESSABLE_ENTITY,
            "metric_name",
        ),
        case(
            "no readings",
            r#"{"readings":[]}"#,
            S::UNPROCESSABLE_ENTITY,
            "no_readings",
        ),
        case(
            "1001 readings",
            body_of(&vec![r("1", r#"{"a":1}"#); 1001]),
            S::UNPROCESSABLE_ENTITY,
            "too_many_readings",
        ),
        Case {
            auth: Some(auth("dév-1")),
            ..case(
                "unicode device id",
                body_of(&[reading("dév-1", "1", &ts, r#"{"a":1}"#)]),
                S::UNPROCESSABLE_ENTITY,
                "device_id_charset",
            )
        },
        Case {
            auth: Some(auth(&long_id)),
            ..case(
                "65-character device id",
                body_of(&[reading(&long_id, "1", &ts, r#"{"a":1}"#)]),
                S::UNPROCESSABLE_ENTITY,
                "device_id_length",
            )
        },
    ];
    assert!(cases.len() >= 25);
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let app = service(Arc::new(queue.clone()), IngestConfig::default());
    for c in cases.drain(..) {
        let (status, json, _) = send(&app, c.auth.as_deref(), c.content_type, c.body).await;
        assert_eq!(status, c.status, "{}: {json}", c.name);
        assert_eq!(json["error"], c.code, "{}: {json}", c.name);
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            c.name
        );
    }
    assert_eq!(
        total_depth(&queue).await,
        0,
        "bad input never reaches the queue"
    );

    // The error names the reading and the field.
    let (_, json, _) = send(
        &app,
        Some(&auth("dev-1")),
        Some("application/json"),
        body_of(&[r("1", r#"{"a":1}"#), r("2", "{}")]).into(),
    )
    .await;
    assert_eq!(
        (json["index"].as_u64(), json["field"].as_str()),
        (Some(1), Some("readings[1].metrics"))
    );

    // Still healthy, and a good request goes through.
    let health = app
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let (status, json, _) = send(
        &app,
        Some(&auth("dev-1")),
        Some("application/json; charset=utf-8"),
        ok_body("dev-1").into(),
    )
    .await;
    assert_eq!(
        (status, json["accepted"].as_u64()),
        (StatusCode::ACCEPTED, Some(1))
    );
    assert_eq!(total_depth(&queue).await, 1);
}

#[tokio::test]
async fn accepted_readings_are_on_the_queue_by_partition_in_order() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let app = service(Arc::new(queue.clone()), IngestConfig::default());
    let ts = now_ts();
    let readings: Vec<String> = (0..50)
        .map(|s| reading("dev-7", &s.to_string(), &ts, r#"{"t":1.5,"u":-2}"#))
        .collect();
    let (status, json, _) = send(
        &app,
        Some(&auth("dev-7")),
        Some("application/json"),
        body_of(&readings).into(),
    )
    .await;
    assert_eq!(
        (status, json["accepted"].as_u64()),
        (StatusCode::ACCEPTED, Some(50))
    );
    let p = ha_core::queue::partition_for("dev-7", PARTITIONS);
    let mut sub = queue.subscribe(p, 10).await.unwrap();
    let d = sub.next().await.unwrap();
    let env = Envelope::decode(&d.payload).unwrap();
    let seqs: Vec<u64> = env.readings.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (0..50).collect::<Vec<_>>(),
        "one message, in body order"
    );
    assert_eq!(env.readings[3].metric("u"), Some(-2.0));
}

/// A broker that stops answering after a success: still ready within the
/// grace (a momentary stall must not pull every replica out of the
/// balancer), and not ready once the background check has failed.
#[tokio::test]
async fn readiness_rides_out_a_moment_of_broker_silence_then_reports_it() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let app = service(
        Arc::new(queue.clone()),
        IngestConfig {
            ready_cache: Duration::ZERO,
            ready_grace: Duration::from_secs(30),
            ..IngestConfig::default()
        },
    );
    let readyz = || async {
        app.clone()
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    };
    assert_eq!(readyz().await, StatusCode::OK);
    queue.set_available(false);
    assert_eq!(readyz().await, StatusCode::OK, "within the grace");
    let mut status = StatusCode::OK;
    for _ in 0..200 {
        status = readyz().await;
        if status != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "after the failed check"
    );
    queue.set_available(true);
    assert_eq!(readyz().await, StatusCode::OK);
}

#[tokio::test]
async fn broker_outage_is_503_with_retry_after_and_not_ready() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let app = service(
        Arc::new(queue.clone()),
        IngestConfig {
            ready_cache: Duration::ZERO,
            ..IngestConfig::default()
        },
    );
    queue.set_available(false);
    let (status, json, retry) = send(
        &app,
        Some(&auth("dev-1")),
        Some("application/json"),
        ok_body("dev-1").into(),
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str(), retry.as_deref()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("broker_unavailable"),
            Some("1")
        )
    );
    let ready = app
        .clone()
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    queue.set_available(true);
    let ready = app
        .clone()
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let (status, _, _) = send(
        &app,
        Some(&auth("dev-1")),
        Some("application/json"),
        ok_body("dev-1").into(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn per_device_rate_limit_is_429_with_retry_after() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let app = service(
        Arc::new(queue.clone()),
        IngestConfig {
            rate_limit: Some(RateLimit {
                per_second: 1.0,
                burst: 2.0,
            }),
            ..IngestConfig::default()
        },
    );
    let two = body_of(&[
        reading("dev-1", "1", &now_ts(), r#"{"a":1}"#),
        reading("dev-1", "2", &now_ts(), r#"{"a":1}"#),
    ]);
    let (status, _, _) = send(
        &app,
        Some(&auth("dev-1")),
        Some("application/json"),
        two.clone().into(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, json, retry) = send(
        &app,
        Some(&auth("dev-1")),
        Some("application/json"),
        two.into(),
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    assert!(retry.is_some_and(|r| r.parse::<u32>().unwrap() >= 1));
    let (status, _, _) = send(
        &app,
        Some(&auth("dev-2")),
        Some("application/json"),
        ok_body("dev-2").into(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "other devices are not limited"
    );
}

/// A queue whose publishes wait until released: holds requests in flight.
struct StalledQueue {
    release: tokio::sync::Semaphore,
}

#[async_trait]
impl Queue for StalledQueue {
    fn partitions(&self) -> u32 {
        PARTITIONS
    }
    async fn publish(&self, _: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        let _permit = self
            .release
            .acquire()
            .await
            .map_err(|_| QueueError::Unavailable("closed".into()))?;
        Ok(())
    }
    async fn subscribe(&self, _: u32, _: u16) -> Result<Box<dyn Subscription>, QueueError> {
        Err(QueueError::Unavailable("not for this test".into()))
    }
    async fn depth(&self, _: u32) -> Result<u64, QueueError> {
        Ok(0)
    }
}

#[tokio::test]
async fn in_flight_publishes_are_bounded_then_503_and_drain_refuses_new_work() {
    let queue = Arc::new(StalledQueue {
        release: tokio::sync::Semaphore::new(0),
    });
    let svc = IngestService::new(
        queue.clone(),
        IngestConfig {
            keys: Some(DeviceKeys::from_keys(vec![KEY.to_vec()]).unwrap()),
            max_in_flight: 2,
            ..IngestConfig::default()
        },
    );
    let app = svc.router();
    let mut held = Vec::new();
    for d in ["dev-1", "dev-2"] {
        let app = app.clone();
        held.push(tokio::spawn(async move {
            send(
                &app,
                Some(&auth(d)),
                Some("application/json"),
                ok_body(d).into(),
            )
            .await
            .0
        }));
    }
    // Wait until both hold their permits.
    while svc.metrics().in_flight.get() < 2 {
        tokio::task::yield_now().await;
    }
    let (status, json, retry) = send(
        &app,
        Some(&auth("dev-3")),
        Some("application/json"),
        ok_body("dev-3").into(),
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str(), retry.as_deref()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("overloaded"),
            Some("1")
        )
    );

    svc.drain();
    let ready = app
        .clone()
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, json, _) = send(
        &app,
        Some(&auth("dev-4")),
        Some("application/json"),
        ok_body("dev-4").into(),
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
    );

    // Requests already publishing complete normally.
    queue.release.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap(), StatusCode::ACCEPTED);
    }
}

#[tokio::test]
async fn metrics_and_openapi_are_served() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let app = service(Arc::new(queue), IngestConfig::default());
    send(
        &app,
        Some(&auth("dev-1")),
        Some("application/json"),
        ok_body("dev-1").into(),
    )
    .await;
    send(
        &app,
        None,
        Some("application/json"),
        ok_body("dev-1").into(),
    )
    .await;
    let resp = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("ha_ingest_readings_accepted_total 1"),
        "{text}"
    );
    assert!(
        text.contains(r#"ha_ingest_requests_total{status="401",code="unauthorized"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("ha_ingest_confirm_latency_seconds_bucket"),
        "{text}"
    );
    let resp = app
        .clone()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(doc["paths"]["/v1/readings"]["post"]["responses"]["422"].is_object());
    // /kill is off unless enabled.
    let resp = app
        .clone()
        .oneshot(Request::post("/kill").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// A [`MemoryQueue`] whose publishes to each partition wait for that
/// partition's gate, and which counts publish calls and messages.
struct GatedQueue {
    inner: MemoryQueue,
    gates: Vec<tokio::sync::Semaphore>,
    publishes: std::sync::atomic::AtomicUsize,
    messages: std::sync::atomic::AtomicUsize,
}

impl GatedQueue {
    fn closed() -> Arc<Self> {
        Arc::new(GatedQueue {
            inner: MemoryQueue::with_partitions(PARTITIONS),
            gates: (0..PARTITIONS)
                .map(|_| tokio::sync::Semaphore::new(0))
                .collect(),
            publishes: Default::default(),
            messages: Default::default(),
        })
    }

    fn open(&self, partition: u32) {
        self.gates[partition as usize].add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    fn messages(&self) -> usize {
        self.messages.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn publishes(&self) -> usize {
        self.publishes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every reading in the queue as `(device_id, seq)`, in no set order.
    async fn drain_readings(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for p in 0..PARTITIONS {
            let n = self.inner.depth(p).await.unwrap();
            let mut sub = self.inner.subscribe(p, u16::MAX).await.unwrap();
            for _ in 0..n {
                let d = sub.next().await.unwrap();
                for r in Envelope::decode(&d.payload).unwrap().readings {
                    assert_eq!(ha_core::queue::partition_for(&r.device_id, PARTITIONS), p);
                    out.push((r.device_id, r.seq));
                }
                d.ack().await.unwrap();
            }
        }
        out
    }
}

#[async_trait]
impl Queue for GatedQueue {
    fn partitions(&self) -> u32 {
        PARTITIONS
    }
    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.publishes.fetch_add(1, SeqCst);
        for m in &messages {
            let gate = self
                .gates
                .get(m.partition as usize)
                .ok_or(QueueError::Unavailable("no such gate".into()))?;
            gate.acquire()
                .await
                .map_err(|_| QueueError::Unavailable("gate closed".into()))?
                .forget();
        }
        self.messages.fetch_add(messages.len(), SeqCst);
        self.inner.publish(messages).await
    }
    async fn subscribe(&self, p: u32, prefetch: u16) -> Result<Box<dyn Subscription>, QueueError> {
        self.inner.subscribe(p, prefetch).await
    }
    async fn depth(&self, p: u32) -> Result<u64, QueueError> {
        self.inner.depth(p).await
    }
}

fn keyed(queue: Arc<dyn Queue>, config: IngestConfig) -> IngestService {
    IngestService::new(
        queue,
        IngestConfig {
            keys: Some(DeviceKeys::from_keys(vec![KEY.to_vec()]).unwrap()),
            ..config
        },
    )
}

/// Devices whose readings go to `partition`.
fn devices_of(partition: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("dev-{i:05}"))
        .filter(|d| ha_core::queue::partition_for(d, PARTITIONS) == partition)
        .take(n)
        .collect()
}

fn spawn_post(
    app: &Router,
    device: &str,
    seq: u64,
) -> tokio::task::JoinHandle<(StatusCode, serde_json::Value)> {
    let app = app.clone();
    let device = device.to_owned();
    tokio::spawn(async move {
        let body = body_of(&[reading(&device, &seq.to_string(), &now_ts(), r#"{"v":1}"#)]);
        let (status, json, _) = send(
            &app,
            Some(&auth(&device)),
            Some("application/json"),
            body.into(),
        )
        .await;
        (status, json)
    })
}

async fn wait_for_waiting_requests(svc: &IngestService, n: i64) {
    while svc.metrics().in_flight.get() < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn concurrent_requests_share_messages_and_every_reading_is_queued_once() {
    let queue = GatedQueue::closed();
    let svc = keyed(
        queue.clone(),
        IngestConfig {
            publishes_per_partition: 1,
            ..IngestConfig::default()
        },
    );
    let app = svc.router();
    // 50 devices per partition, two requests each.
    let devices: Vec<String> = (0..PARTITIONS).flat_map(|p| devices_of(p, 50)).collect();
    let mut requests = Vec::new();
    for seq in [1, 2] {
        for d in &devices {
            requests.push(spawn_post(&app, d, seq));
        }
    }
    let n = requests.len();
    // Every request is waiting: one message per partition is held at the
    // gate, the others queue behind it.
    wait_for_waiting_requests(&svc, n as i64).await;
    for p in 0..PARTITIONS {
        queue.open(p);
    }
    for r in requests {
        let (status, json) = r.await.unwrap();
        assert_eq!(
            (status, json["accepted"].as_u64()),
            (StatusCode::ACCEPTED, Some(1))
        );
    }
    let messages = queue.messages();
    assert!(
        messages <= 2 * PARTITIONS as usize,
        "{messages} messages for {n} requests: one held per partition, then one with the rest"
    );
    let mut got = queue.drain_readings().await;
    got.sort();
    let mut want: Vec<(String, u64)> = devices
        .iter()
        .flat_map(|d| [(d.clone(), 1), (d.clone(), 2)])
        .collect();
    want.sort();
    assert_eq!(got, want, "every accepted reading exactly once");
    assert_eq!(svc.metrics().readings_accepted.get(), n as u64);
    assert_eq!(svc.metrics().in_flight.get(), 0);
    assert_eq!(svc.metrics().messages_in_flight.get(), 0);
}

#[tokio::test]
async fn messages_respect_the_reading_limit() {
    let queue = GatedQueue::closed();
    let svc = keyed(
        queue.clone(),
        IngestConfig {
            publishes_per_partition: 1,
            max_message_readings: 4,
            ..IngestConfig::default()
        },
    );
    let app = svc.router();
    let devices = devices_of(2, 21);
    let requests: Vec<_> = devices.iter().map(|d| spawn_post(&app, d, 1)).collect();
    wait_for_waiting_requests(&svc, 21).await;
    queue.open(2);
    for r in requests {
        assert_eq!(r.await.unwrap().0, StatusCode::ACCEPTED);
    }
    // At least ceil(21 / 4) messages, each of at most 4 readings.
    assert!(queue.messages() >= 6, "{}", queue.messages());
    let mut sub = queue.inner.subscribe(2, u16::MAX).await.unwrap();
    let mut total = 0;
    for _ in 0..queue.messages() {
        let env = Envelope::decode(&sub.next().await.unwrap().payload).unwrap();
        assert!(
            (1..=4).contains(&env.readings.len()),
            "{}",
            env.readings.len()
        );
        total += env.readings.len();
    }
    assert_eq!(total, 21);
}

#[tokio::test]
async fn a_failed_message_answers_503_to_every_request_in_it() {
    let queue = GatedQueue::closed();
    let svc = keyed(
        queue.clone(),
        IngestConfig {
            publishes_per_partition: 1,
            ..IngestConfig::default()
        },
    );
    let app = svc.router();
    let devices = devices_of(1, 30);
    let requests: Vec<_> = devices.iter().map(|d| spawn_post(&app, d, 1)).collect();
    wait_for_waiting_requests(&svc, 30).await;
    queue.inner.set_available(false);
    queue.open(1);
    for r in requests {
        let (status, json) = r.await.unwrap();
        assert_eq!(
            (status, json["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("broker_unavailable"))
        );
    }
    assert!(
        queue.publishes() <= 2,
        "30 requests shared at most 2 messages, got {}",
        queue.publishes()
    );
    assert_eq!(svc.metrics().readings_accepted.get(), 0);
    queue.inner.set_available(true);
    assert!(queue.drain_readings().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_publishes_what_was_handed_over_and_waits_for_it() {
    let queue = GatedQueue::closed();
    let svc = keyed(
        queue.clone(),
        IngestConfig {
            publishes_per_partition: 1,
            ..IngestConfig::default()
        },
    );
    let app = svc.router();
    let devices = devices_of(3, 10);
    let mut requests: Vec<_> = devices.iter().map(|d| spawn_post(&app, d, 7)).collect();
    wait_for_waiting_requests(&svc, 10).await;
    // A client that hangs up: its readings were handed over and still go out.
    let gone = requests.pop().unwrap();
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());

    let stopping = tokio::spawn({
        let svc = svc.clone();
        async move { svc.shutdown().await }
    });
    // (Paused clock: this only lets every task run until it blocks.)
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the held message"
    );
    assert!(requests.iter().all(|r| !r.is_finished()));
    let (status, json, _) = send(
        &app,
        Some(&auth(&devices[0])),
        Some("application/json"),
        ok_body(&devices[0]).into(),
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
    );

    queue.open(3);
    stopping.await.unwrap();
    for r in requests {
        assert_eq!(r.await.unwrap().0, StatusCode::ACCEPTED);
    }
    let mut got = queue.drain_readings().await;
    got.sort();
    let mut want: Vec<(String, u64)> = devices.iter().map(|d| (d.clone(), 7)).collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(start_paused = true)]
async fn a_request_spanning_partitions_waits_for_all_of_them() {
    let queue = GatedQueue::closed();
    // Without device keys one body may carry several devices' readings.
    let app = IngestService::new(queue.clone(), IngestConfig::default()).router();
    let (a, b) = (devices_of(0, 1).remove(0), devices_of(1, 1).remove(0));
    let body = body_of(&[
        reading(&a, "1", &now_ts(), r#"{"v":1}"#),
        reading(&b, "1", &now_ts(), r#"{"v":2}"#),
        reading(&a, "2", &now_ts(), r#"{"v":3}"#),
    ]);
    queue.open(0);
    let request = tokio::spawn({
        let app = app.clone();
        async move { send(&app, None, Some("application/json"), body.into()).await }
    });
    while queue.inner.depth(0).await.unwrap() < 1 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!request.is_finished(), "partition 1 is not confirmed yet");
    queue.open(1);
    let (status, json, _) = request.await.unwrap();
    assert_eq!(
        (status, json["accepted"].as_u64()),
        (StatusCode::ACCEPTED, Some(3))
    );
    let mut got = queue.drain_readings().await;
    got.sort();
    let mut want = vec![(a.clone(), 1), (a, 2), (b, 1)];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn group_commit_settings_are_validated() {
    assert!(IngestConfig::default().validate().is_ok());
    for bad in [
        IngestConfig {
            publishes_per_partition: 0,
            ..IngestConfig::default()
        },
        IngestConfig {
            max_message_readings: 0,
            ..IngestConfig::default()
        },
        IngestConfig {
            max_message_bytes: 10,
            ..IngestConfig::default()
        },
        IngestConfig {
            linger: Duration::from_secs(5),
            ..IngestConfig::default()
        },
        IngestConfig {
            max_in_flight: 0,
            ..IngestConfig::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_device_id_with_a_colon_authenticates() {
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let app = service(Arc::new(queue.clone()), IngestConfig::default());
    let body = body_of(&[reading("dev:1", "1", &now_ts(), r#"{"a":1}"#)]);
    let (status, json, _) = send(
        &app,
        Some(&auth("dev:1")),
        Some("application/json"),
        body.into(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(total_depth(&queue).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_burst_is_admitted_when_the_bucket_is_full() {
    // --rate-limit 1 (burst 10) and one request of 11 readings, retried as
    // the Retry-After says: admitted, never 429 for ever.
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let app = service(
        Arc::new(queue.clone()),
        IngestConfig {
            rate_limit: Some(RateLimit {
                per_second: 1.0,
                burst: 10.0,
            }),
            ..IngestConfig::default()
        },
    );
    let eleven = |first: u64| {
        body_of(
            &(first..first + 11)
                .map(|s| reading("dev-1", &s.to_string(), &now_ts(), r#"{"a":1}"#))
                .collect::<Vec<_>>(),
        )
    };
    let mut accepted = 0;
    for round in 0..3u64 {
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(
                tries <= 3,
                "round {round}: still refused after {tries} tries"
            );
            let (status, json, retry) = send(
                &app,
                Some(&auth("dev-1")),
                Some("application/json"),
                eleven(round * 11).into(),
            )
            .await;
            if status == StatusCode::ACCEPTED {
                accepted += 11;
                break;
            }
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
            let wait: u64 = retry.expect("Retry-After").parse().unwrap();
            tokio::time::advance(Duration::from_secs(wait)).await;
        }
    }
    assert_eq!(accepted, 33);
    assert_eq!(total_depth(&queue).await, 3);
}

#[tokio::test(start_paused = true)]
async fn a_padded_body_pays_by_its_bytes_and_the_debt_is_refused_before_the_body() {
    // The manifests' limit: 5 readings/s, burst 50. A body costs its
    // readings or one token per 4 KiB, whichever is more.
    let queue = MemoryQueue::with_partitions(PARTITIONS);
    let app = service(
        Arc::new(queue.clone()),
        IngestConfig {
            rate_limit: Some(RateLimit {
                per_second: 5.0,
                burst: 50.0,
            }),
            ..IngestConfig::default()
        },
    );
    let small = |device: &str, seq: u64| {
        body_of(&[reading(device, &seq.to_string(), &now_ts(), r#"{"a":1}"#)])
    };
    let padded = |device: &str| {
        let mut b = small(device, 0);
        b.push_str(&" ".repeat(1_000_000));
        b
    };
    // Accepted (a full bucket admits it), then 245 tokens of debt.
    let (status, json, _) = send(
        &app,
        Some(&auth("pad")),
        Some("application/json"),
        padded("pad").into(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    // A refused padded body pays too (its parse was the cost).
    let mut garbage = padded("junk");
    garbage.insert(0, '!');
    let (status, _, _) = send(
        &app,
        Some(&auth("junk")),
        Some("application/json"),
        garbage.into(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut longest = 0;
    for device in ["pad", "junk"] {
        // Refused from the headers: even a body that is not JSON gets 429.
        let started = tokio::time::Instant::now();
        let (status, json, retry) = send(
            &app,
            Some(&auth(device)),
            Some("application/json"),
            "not json".into(),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{device}: {json}");
        let wait: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((35..=50).contains(&wait), "{device}: Retry-After {wait}");
        // tokio's paused clock: the pause is the behaviour under test, not
        // a speed measurement (no real time passes).
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "the answer is held 1 s"
        );
        longest = longest.max(wait);
    }
    tokio::time::advance(Duration::from_secs(longest)).await;
    for device in ["pad", "junk"] {
        let (status, json, _) = send(
            &app,
            Some(&auth(device)),
            Some("application/json"),
            small(device, 1).into(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{device} after the wait: {json}"
        );
    }
    // Other devices never noticed.
    let (status, _, _) = send(
        &app,
        Some(&auth("calm")),
        Some("application/json"),
        small("calm", 0).into(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(total_depth(&queue).await, 4);
}

#[tokio::test]
async fn post_kill_calls_the_binarys_hook_and_never_exits_by_itself() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let app = service(
        Arc::new(MemoryQueue::with_partitions(PARTITIONS)),
        IngestConfig {
            kill: Some(ha_core::ingest::KillHook::new(move || {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })),
            ..IngestConfig::default()
        },
    );
    let resp = app
        .clone()
        .oneshot(Request::post("/kill").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}
