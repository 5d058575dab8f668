//! The replica's bound on unacknowledged bytes (RabbitMQ's prefetch counts
//! messages, not bytes): every delivery pulled from a subscription holds
//! its payload's bytes until its batch is settled or given back; workers
//! stop pulling while the total is at the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// Bytes held by all partitions' workers of one replica.
pub(super) struct ByteBudget {
    bound: usize,
    held: AtomicUsize,
    released: Notify,
    gauge: Gauge,
}

impl ByteBudget {
    pub(super) fn new(bound: usize, gauge: Gauge) -> Self {
        ByteBudget {
            bound,
            held: AtomicUsize::new(0),
            released: Notify::new(),
            gauge,
        }
    }

    /// True while pulling another delivery is allowed.
    pub(super) fn has_room(&self) -> bool {
        self.held.load(Ordering::SeqCst) < self.bound
    }

    /// Waits until the total is below the bound. A worker with nothing in
    /// hand calls this before pulling, so the total exceeds the bound by at
    /// most one delivery per partition.
    pub(super) async fn wait_for_room(&self) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.has_room() {
                return;
            }
            released.await;
        }
    }
}

/// One batch's deliveries: their count and bytes, given back to the gauges
/// and the budget when the batch is settled or abandoned (its deliveries
/// then come back).
pub(super) struct Held {
    budget: Arc<ByteBudget>,
    deliveries: Gauge,
    count: i64,
    bytes: usize,
}

impl Held {
    pub(super) fn new(budget: &Arc<ByteBudget>, deliveries: &Gauge) -> Self {
        Held {
            budget: budget.clone(),
            deliveries: deliveries.clone(),
            count: 0,
            bytes: 0,
        }
    }

    pub(super) fn add(&mut self, bytes: usize) {
        self.deliveries.inc();
        self.count += 1;
        self.bytes += bytes;
        self.budget.held.fetch_add(bytes, Ordering::SeqCst);
        self.budget.gauge.inc_by(bytes as i64);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.deliveries.dec_by(self.count);
        self.budget.held.fetch_sub(self.bytes, Ordering::SeqCst);
        self.budget.gauge.dec_by(self.bytes as i64);
        self.budget.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_while_full_and_wakes_on_release() {
        let budget = Arc::new(ByteBudget::new(100, Gauge::default()));
        let deliveries = Gauge::default();
        let mut held = Held::new(&budget, &deliveries);
        held.add(60);
        assert!(budget.has_room());
        held.add(60);
        assert!(!budget.has_room());
        assert_eq!((budget.gauge.get(), deliveries.get()), (120, 2));
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.wait_for_room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap();
        assert_eq!((budget.gauge.get(), deliveries.get()), (0, 0));
    }
}
