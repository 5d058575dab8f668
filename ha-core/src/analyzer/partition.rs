//! One partition's subscription loop on a replica: stand by, consume when
//! the broker makes this subscription the active one, make way for the
//! assigned owner.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use super::assignment::View;
use super::worker::{Ended, Worker};

/// Subscribes to `partition` until `stop` turns true (finishing the batch
/// in hand). Every replica runs this for every partition: the broker's
/// single-active-consumer delivers to the oldest subscription only, so the
/// others stand by and the next one takes over the moment the active
/// subscription's channel closes (a crash, a graceful stop).
///
/// A partition not assigned to this replica is subscribed to two
/// heartbeats after the start, so the assigned owner's subscription comes
/// first. An active subscription to a partition that `view` assigns to a live
/// other member makes way (see [`View::should_yield`]): it finishes its
/// batch, closes (going to the back of the broker's line) and subscribes
/// again after two heartbeats, leaving the partition to the assigned
/// owner's subscription meanwhile.
pub(super) async fn run_partition(
    shared: Arc<Shared>,
    partition: u32,
    mut stop: watch::Receiver<bool>,
    view: watch::Receiver<View>,
) {
    let hold_off = shared.config.heartbeat * 2;
    // Let the assigned owner subscribe first when replicas start together:
    // the oldest subscription is the active one.
    let assigned_here = view.borrow().owner(partition) == Some(shared.config.member_id.as_str());
    if !assigned_here {
        tokio::select! {
            () = tokio::time::sleep(hold_off) => {}
            _ = stop.changed() => return,
        }
    }
    let mut backoff = Duration::from_millis(100);
    while !*stop.borrow() {
        let sub = tokio::select! {
            s = shared.queue.subscribe(partition, shared.config.prefetch) => s,
            _ = stop.changed() => break,
        };
        let mut sub = match sub {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(partition, error = %e, "Subscribing failed; retrying.");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        tracing::debug!(partition, "Subscribed to the partition.");
        let mut worker = match Worker::new(shared.clone(), partition) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "Invalid detector configuration.");
                return;
            }
        };
        let ended = worker.consume(&mut sub, &mut stop, &view).await;
        let was_active = worker.claimed();
        // Close the subscription before waiting: its unacknowledged
        // deliveries go back, and the next subscription in line takes over.
        drop(worker);
        drop(sub);
        match ended {
            Ok(Ended::Stopped) => break,
            Ok(Ended::Released) => {
                if was_active {
                    shared.metrics.handovers.inc();
                    tracing::info!(
                        partition,
                        "Made way for the partition's assigned owner; standing by again."
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(hold_off) => {}
                    _ = stop.changed() => break,
                }
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "Subscription lost; subscribing again.")
            }
        }
    }
    tracing::info!(partition, "Released partition.");
}
