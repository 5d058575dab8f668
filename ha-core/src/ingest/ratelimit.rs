//! Per-device rate limit: a token bucket of readings per device.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

/// Readings per second a device may send on average, with a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained readings per second.
    pub per_second: f64,
    /// Readings a device may send at once after being idle.
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

const SHARDS: usize = 16;
/// Buckets per shard before idle (full) buckets are swept.
const SWEEP_AT: usize = 4096;

/// Token buckets, sharded to keep lock contention low.
pub(super) struct Limiter {
    limit: RateLimit,
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

impl Limiter {
    pub(super) fn new(limit: RateLimit) -> Self {
        Limiter {
            limit,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes `n` readings' worth of tokens for `device`, or says how many
    /// whole seconds until it could.
    pub(super) fn take(&self, device: &str, n: usize) -> Result<(), u32> {
        let shard = crate::queue::partition_for(device, SHARDS as u32) as usize;
        let mut map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let RateLimit { per_second, burst } = self.limit;
        if map.len() >= SWEEP_AT {
            map.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst
            });
        }
        let b = map.entry(device.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_second).min(burst);
        b.at = now;
        let want = n as f64;
        if b.tokens >= want {
            b.tokens -= want;
            Ok(())
        } else {
            let wait = (want.min(burst) - b.tokens) / per_second;
            Err(wait.ceil().clamp(1.0, 3600.0) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refills_at_the_rate_and_caps_at_the_burst() {
        let l = Limiter::new(RateLimit {
            per_second: 2.0,
            burst: 4.0,
        });
        assert_eq!(l.take("d", 4), Ok(()));
        assert_eq!(l.take("d", 1), Err(1));
        assert_eq!(l.take("other", 4), Ok(()), "devices are independent");
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert_eq!(l.take("d", 1), Ok(()));
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        assert_eq!(l.take("d", 4), Ok(()));
        assert_eq!(l.take("d", 3), Err(2));
    }
}
