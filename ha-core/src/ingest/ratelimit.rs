//! Per-device rate limit: a token bucket of readings per device that may go
//! into debt, so no request size can be refused for ever.
//!
//! A request is admitted when the bucket holds at least `min(n, burst)`
//! tokens; it then takes all `n`, possibly leaving the bucket negative. A
//! request of more readings than the burst is therefore admitted once the
//! bucket is full, and the debt makes the device wait as long as the rate
//! demands before its next one (a bucket that never allowed more than the
//! burst would answer 429 to that request for ever, and the device's buffer
//! would fill).
//!
//! Memory and cost do not grow with the fleet: buckets live in two
//! generations per shard. A lookup moves a bucket from the old generation
//! to the current one; every `period` (the time a bucket needs to refill
//! from its deepest possible debt) the old generation is dropped whole and
//! the current one becomes old. A dropped bucket had been untouched for at
//! least a period, so it was full anyway: forgetting it changes nothing.

use crate::ConfigError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::wire::MAX_READINGS;

/// Readings per second a device may send on average, with a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained readings per second.
    pub per_second: f64,
    /// Readings a device may send at once after being idle.
    pub burst: f64,
}

impl RateLimit {
    /// Checks the values; the error names the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(ConfigError::new(
                "rate_limit.per_second",
                format!(
                    "must be a positive number of readings per second, not {}",
                    self.per_second
                ),
            ));
        }
        if !(self.burst.is_finite() && self.burst >= 1.0) {
            return Err(ConfigError::new(
                "rate_limit.burst",
                format!("must be at least 1, not {}", self.burst),
            ));
        }
        Ok(())
    }

    /// How long a bucket takes to refill from its deepest debt (a request
    /// of [`MAX_READINGS`] taken from a bucket holding just `burst`).
    fn refill_period(&self) -> Duration {
        let deepest = self.burst + MAX_READINGS as f64;
        Duration::from_secs_f64((deepest / self.per_second).clamp(1.0, 86_400.0))
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Negative while in debt.
    tokens: f64,
    at: Instant,
}

struct Shard {
    current: HashMap<Box<str>, Bucket>,
    old: HashMap<Box<str>, Bucket>,
    rotated: Instant,
}

const SHARDS: usize = 16;

/// Token buckets, sharded to keep lock contention low.
pub(super) struct Limiter {
    limit: RateLimit,
    period: Duration,
    shards: Vec<Mutex<Shard>>,
}

impl Limiter {
    pub(super) fn new(limit: RateLimit) -> Self {
        let now = Instant::now();
        Limiter {
            limit,
            period: limit.refill_period(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        current: HashMap::new(),
                        old: HashMap::new(),
                        rotated: now,
                    })
                })
                .collect(),
        }
    }

    /// Takes `n` readings' worth of tokens for `device`, or says how many
    /// whole seconds until it could.
    pub(super) fn take(&self, device: &str, n: usize) -> Result<(), u32> {
        let shard = crate::queue::partition_for(device, SHARDS as u32) as usize;
        let mut shard = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(shard.rotated) >= self.period {
            let current = std::mem::take(&mut shard.current);
            shard.old = current;
            shard.rotated = now;
        }
        let RateLimit { per_second, burst } = self.limit;
        let bucket = match shard.current.get_mut(device) {
            Some(b) => b,
            None => {
                let b = shard.old.remove(device).unwrap_or(Bucket {
                    tokens: burst,
                    at: now,
                });
                shard.current.entry(device.into()).or_insert(b)
            }
        };
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second).min(burst);
        bucket.at = now;
        let want = n as f64;
        let needed = want.min(burst);
        if bucket.tokens >= needed {
            bucket.tokens -= want;
            Ok(())
        } else {
            let wait = (needed - bucket.tokens) / per_second;
            Err(wait.ceil().clamp(1.0, 3600.0) as u32)
        }
    }

    /// Buckets held, both generations (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.current.len() + s.old.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: f64) -> Limiter {
        Limiter::new(RateLimit { per_second, burst })
    }

    #[tokio::test(start_paused = true)]
    async fn refills_at_the_rate_and_caps_at_the_burst() {
        let l = limiter(2.0, 4.0);
        assert_eq!(l.take("d", 4), Ok(()));
        assert_eq!(l.take("d", 1), Err(1));
        assert_eq!(l.take("other", 4), Ok(()), "devices are independent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(l.take("d", 1), Ok(()));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(l.take("d", 4), Ok(()));
        assert_eq!(l.take("d", 3), Err(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_burst_is_admitted_once_full() {
        // --rate-limit 1 with burst 10, one request of 11 readings, retried.
        let l = limiter(1.0, 10.0);
        assert_eq!(l.take("d", 11), Ok(()), "a full bucket admits it");
        // The debt (-1) makes the device wait for the rate: 11 s to full.
        assert_eq!(l.take("d", 11), Err(11));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(l.take("d", 11), Err(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.take("d", 11), Ok(()), "admitted again, never starved");
        // Over a long run the device gets the rate, not more.
        let mut admitted = 0;
        for _ in 0..1_000 {
            tokio::time::advance(Duration::from_secs(1)).await;
            if l.take("d", 11).is_ok() {
                admitted += 11;
            }
        }
        assert!(
            (990..=1_012).contains(&admitted),
            "{admitted} readings in 1,000 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_forgotten_without_scanning() {
        let l = limiter(100.0, 10.0);
        let period = RateLimit {
            per_second: 100.0,
            burst: 10.0,
        }
        .refill_period();
        for i in 0..10_000 {
            assert_eq!(l.take(&format!("dev-{i}"), 10), Ok(()));
        }
        assert_eq!(l.len(), 10_000);
        // A period later, a lookup in a shard makes its generation old;
        // one more period, and the next lookup drops it whole.
        for round in 0..2 {
            tokio::time::advance(period).await;
            for i in 0..64 {
                assert_eq!(l.take(&format!("new-{round}-{i}"), 1), Ok(()));
            }
        }
        assert_eq!(l.take("dev-0", 10), Ok(()), "a forgotten bucket is full");
        assert!(l.len() < 200, "{} buckets left", l.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_in_debt_survives_a_rotation() {
        let l = limiter(1.0, 10.0);
        let period = RateLimit {
            per_second: 1.0,
            burst: 10.0,
        }
        .refill_period();
        // Late in the first generation, "d" goes deep into debt.
        tokio::time::advance(period - Duration::from_secs(1)).await;
        assert_eq!(l.take("d", 1000), Ok(()));
        // Another device's request rotates the generations: "d" moves to
        // the old one with its debt instead of being forgotten.
        tokio::time::advance(Duration::from_secs(1)).await;
        let _ = l.take("other", 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            l.take("d", 10),
            Err(994),
            "still in debt: 984 short, plus the 10 wanted"
        );
    }

    #[test]
    fn limits_validate() {
        assert!(
            RateLimit {
                per_second: 1.0,
                burst: 10.0
            }
            .validate()
            .is_ok()
        );
        assert!(
            RateLimit {
                per_second: 0.0,
                burst: 10.0
            }
            .validate()
            .is_err()
        );
        assert!(
            RateLimit {
                per_second: f64::NAN,
                burst: 10.0
            }
            .validate()
            .is_err()
        );
        assert!(
            RateLimit {
                per_second: 1.0,
                burst: 0.5
            }
            .validate()
            .is_err()
        );
    }
}
