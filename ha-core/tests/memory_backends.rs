//! The conformance suites against the in-memory backends.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ha_core::conformance::queue::QueueFixture;
use ha_core::queue::{MemoryQueue, MemoryQueueConfig, Queue};
use ha_core::store::{MemoryStore, Store};

struct MemoryFixture(MemoryQueue);

#[async_trait]
impl QueueFixture for MemoryFixture {
    fn queue(&self) -> Arc<dyn Queue> {
        Arc::new(self.0.clone())
    }

    async fn dead_letters(&self) -> Vec<Bytes> {
        self.0
            .dead_letters()
            .into_iter()
            .map(|d| d.payload)
            .collect()
    }

    fn delivery_limit(&self) -> u32 {
        20
    }
}

async fn queue_fixture(partitions: u32) -> Option<MemoryFixture> {
    Some(MemoryFixture(MemoryQueue::new(MemoryQueueConfig {
        partitions,
        delivery_limit: 20,
        ..MemoryQueueConfig::default()
    })))
}

async fn store_fixture() -> Option<Arc<dyn Store>> {
    Some(Arc::new(MemoryStore::new()))
}

mod queue {
    use super::*;
    ha_core::queue_conformance!(queue_fixture);
}

mod store {
    use super::*;
    ha_core::store_conformance!(store_fixture);
}
