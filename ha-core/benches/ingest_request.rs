//! One `POST /v1/readings` of one reading through the ingest router, in
//! process: the per-request layer (request id, lingering), authentication,
//! parse and validation, encoding, the group-commit batcher and the answer.
//! No TLS, no HTTP parsing, no broker (a queue that confirms at once and
//! keeps nothing), so it isolates the CPU that ingest's own code adds to
//! each request (docs/ingest-hot-path.md).
//!
//! Run with `cargo bench -p ha-core --features server --bench ingest_request`;
//! compare two commits with criterion's `--save-baseline` / `--baseline`.

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ha_core::ingest::{DeviceKeys, IngestConfig, IngestService};
use ha_core::queue::{OutgoingMessage, Queue, QueueError, Subscription};
use ha_core::wire::Timestamp;
use tower::ServiceExt;

/// Confirms every publish at once and drops the payload.
struct Discarding;

#[async_trait::async_trait]
impl Queue for Discarding {
    fn partitions(&self) -> u32 {
        8
    }

    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        black_box(messages);
        Ok(())
    }

    async fn subscribe(
        &self,
        _partition: u32,
        _prefetch: u16,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        Err(QueueError::Unavailable(
            "the bench queue only publishes".into(),
        ))
    }

    async fn depth(&self, _partition: u32) -> Result<u64, QueueError> {
        Ok(0)
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys =
        DeviceKeys::from_keys(vec![b"an ingest bench key of 32 bytes!".to_vec()]).expect("key");
    let devices: Vec<(String, String)> = (0..1000)
        .map(|i| {
            let id = format!("bench-{i:05}");
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{id}:{}", keys.token(&id)));
            (id, format!("Basic {basic}"))
        })
        .collect();
    let service = IngestService::new(
        Arc::new(Discarding),
        IngestConfig {
            keys: Some(keys),
            ..IngestConfig::default()
        },
    );
    let router = service.router();
    let ts = Timestamp::now().to_string();
    let mut k = 0u64;
    let mut request = || {
        let (id, auth) = &devices[(k % 1000) as usize];
        k += 1;
        let body = format!(
            r#"{{"readings":[{{"device_id":"{id}","seq":{k},"ts":"{ts}","metrics":{{"pulse":72.5}}}}]}}"#
        );
        Request::post("/v1/readings")
            .header(header::AUTHORIZATION, auth.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .expect("request")
    };
    // The request must be accepted, or the bench measures a refusal.
    let status = rt.block_on(router.clone().oneshot(request()));
    assert_eq!(status.expect("infallible").status(), StatusCode::ACCEPTED);

    let mut group = c.benchmark_group("ingest_request");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_reading", |b| {
        b.iter(|| {
            let request = request();
            let response = rt
                .block_on(router.clone().oneshot(request))
                .expect("infallible");
            black_box(response.status())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
