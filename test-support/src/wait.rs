//! Waiting on a condition with a deadline: how tests synchronise with
//! processes and servers, instead of sleeping a guessed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `done` until it holds; panics naming `what` after `limit`.
/// Returns how long it took.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(POLL);
    }
    t0.elapsed()
}

/// [`wait_until`] for an async condition (the runtime keeps running while
/// it waits).
pub async fn wait_until_async<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> F,
) -> Duration {
    let t0 = Instant::now();
    while !done().await {
        assert!(t0.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(POLL).await;
    }
    t0.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut n = 0;
        wait_until("three polls", Duration::from_secs(5), || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
    }

    #[test]
    #[should_panic(expected = "waited")]
    fn fails_naming_what_never_happened() {
        wait_until("never", Duration::from_millis(120), || false);
    }
}
