//! Session takeover on one replica: a new connection with the same device
//! and client id ends the older one (DISCONNECT 0x8E).
//!
//! The key includes the device, so one device cannot end another's
//! connection by reusing its client id. Nothing else is kept: sessions are
//! clean (docs/mqtt.md), so a takeover moves no state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;

type Key = (Box<str>, Box<str>);
type Live = Mutex<HashMap<Key, (u64, Arc<Notify>)>>;

/// The live sessions of this replica, by (device, client id).
#[derive(Default)]
pub(super) struct Sessions {
    live: Arc<Live>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A map of notifiers stays usable whatever panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sessions {
    /// Registers a session, ending the one it replaces.
    pub(super) fn claim(&self, device: &str, client_id: &str) -> Claim {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let key: Key = (device.into(), client_id.into());
        let old = lock(&self.live).insert(key.clone(), (id, notify.clone()));
        if let Some((_, old)) = old {
            // A stored permit: the old session sees it even if it is busy.
            old.notify_one();
        }
        Claim {
            live: Arc::downgrade(&self.live),
            key,
            id,
            notify,
        }
    }

    /// A client id for a client that sent none (5.0 tells it back).
    pub(super) fn assign_id(&self, device: &str) -> String {
        format!("{device}-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Sessions registered now (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.live).len()
    }
}

/// A registered session; unregisters itself when dropped (unless a newer
/// session took its key).
pub(super) struct Claim {
    live: Weak<Live>,
    key: Key,
    id: u64,
    notify: Arc<Notify>,
}

impl Claim {
    /// Resolves when a newer connection took this session over.
    pub(super) async fn taken_over(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(live) = self.live.upgrade() {
            let mut live = lock(&live);
            if live.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                live.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_claim_ends_the_first_and_only_for_its_own_device() {
        let s = Sessions::default();
        let first = s.claim("dev-1", "c");
        let other = s.claim("dev-2", "c");
        let second = s.claim("dev-1", "c");
        tokio::time::timeout(Duration::from_secs(1), first.taken_over())
            .await
            .expect("the first session is told");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.taken_over())
                .await
                .is_err(),
            "another device's session with the same client id stays"
        );
        drop(first);
        assert_eq!(s.len(), 2, "the old claim does not remove the new one");
        drop(second);
        drop(other);
        assert_eq!(s.len(), 0);
    }
}
