//! Helpers shared by the analyzer test files (`mod common;` in each).
#![allow(dead_code, reason = "each test file uses part of it")]

use std::time::Duration;

use bytes::Bytes;
use ha_core::queue::{MemoryQueue, OutgoingMessage, Queue, partition_for};
use ha_core::wire::{Envelope, Reading};

/// One message per reading, like many small ingest requests.
pub async fn publish(queue: &MemoryQueue, readings: &[Reading]) {
    let partitions = queue.partitions();
    let messages = readings
        .iter()
        .map(|r| OutgoingMessage {
            partition: partition_for(&r.device_id, partitions),
            payload: Bytes::from(Envelope::encode(std::slice::from_ref(r))),
        })
        .collect();
    queue
        .publish(messages)
        .await
        .expect("the in-memory queue is up");
}

/// Polls `check` until it holds; fails after 20 s of tokio's clock (no
/// real time at all under a paused clock).
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
