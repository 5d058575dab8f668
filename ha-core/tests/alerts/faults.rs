//! A database that is down: 503 with Retry-After, not ready, the stream says so once.

use super::*;

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
