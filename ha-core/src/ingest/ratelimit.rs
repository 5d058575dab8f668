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
//!
//! A body costs its readings, or one token per [`BYTES_PER_TOKEN`] when
//! that is more: a legitimate reading (32 metrics with 64-character names)
//! is under 3 KiB, so a normal body pays by its readings, while a 1 MiB
//! body of one padded reading pays 256 and puts its device in debt. A
//! device in debt is refused from its headers alone
//! ([`Limiter::check`]), before its next body is read or parsed: what a
//! token holder can make the parser do is bounded by its rate.

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

/// Body bytes that cost one token (see the module docs).
pub const BYTES_PER_TOKEN: usize = 4096;

/// Admits a request costing `want` when the bucket holds `min(want,
/// burst)`, taking all of `want` when `take`; else the whole seconds to
/// wait.
fn admit(bucket: &mut Bucket, limit: RateLimit, want: f64, take: bool) -> Result<(), u32> {
    let needed = want.min(limit.burst);
    if bucket.tokens >= needed {
        if take {
            bucket.tokens -= want;
        }
        Ok(())
    } else {
        let wait = (needed - bucket.tokens) / limit.per_second;
        Err(wait.ceil().clamp(1.0, 3600.0) as u32)
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

    /// Refuses `device` while its bucket cannot admit any request (less
    /// than one token: in debt or empty), saying how many whole seconds
    /// until it could; takes nothing.
    pub(super) fn check(&self, device: &str) -> Result<(), u32> {
        self.with_bucket(device, |bucket, limit| admit(bucket, limit, 1.0, false))
    }

    /// Takes the cost of a body of `n` readings and `bytes` bytes for
    /// `device` (see the module docs), or says how many whole seconds until
    /// it could.
    pub(super) fn take(&self, device: &str, n: usize, bytes: usize) -> Result<(), u32> {
        let cost = n.max(bytes.div_ceil(BYTES_PER_TOKEN)) as f64;
        self.with_bucket(device, |bucket, limit| admit(bucket, limit, cost, true))
    }

    /// Runs `f` on `device`'s bucket, refilled to now.
    fn with_bucket<R>(&self, device: &str, f: impl FnOnce(&mut Bucket, RateLimit) -> R) -> R {
        let shard = crate::queue::partition_for(device, SHARDS as u32) as usize;
        let mut shard = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(shard.rotated) >= self.period {
            let current = std::mem::take(&mut shard.current);
            shard.old = current;
            shard.rotated = now;
        }
        let per_second = self.limit.per_second;
        let burst = self.limit.burst;
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
        f(bucket, self.limit)
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
        assert_eq!(l.take("d", 4, 0), Ok(()));
        assert_eq!(l.take("d", 1, 0), Err(1));
        assert_eq!(l.take("other", 4, 0), Ok(()), "devices are independent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(l.take("d", 1, 0), Ok(()));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(l.take("d", 4, 0), Ok(()));
        assert_eq!(l.take("d", 3, 0), Err(2));
    }

    #[tokio::test(start_paused = true)]
    async fn big_bodies_pay_by_their_bytes_and_debt_is_refused_from_the_headers() {
        // The manifests' limit: 5 readings/s, burst 50.
        let l = limiter(5.0, 50.0);
        // A normal body pays by its readings: 10 readings of 3 KiB each.
        assert_eq!(l.take("d", 10, 10 * 3 * 1024), Ok(()));
        assert_eq!(l.check("d"), Ok(()));
        // One padded reading of 1 MiB pays 256 tokens: deep debt.
        assert_eq!(l.take("pad", 1, 1 << 20), Ok(()), "a full bucket admits it");
        let wait = l.check("pad").unwrap_err();
        assert_eq!(wait, 42, "(256 - 50 + 1) tokens at 5/s, whole seconds");
        // The check takes nothing: the wait does not grow with refusals.
        for _ in 0..100 {
            assert_eq!(l.check("pad"), Err(wait));
        }
        tokio::time::advance(Duration::from_secs(u64::from(wait))).await;
        assert_eq!(l.check("pad"), Ok(()));
        assert_eq!(l.check("other"), Ok(()), "devices are independent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_burst_is_admitted_once_full() {
        // --rate-limit 1 with burst 10, one request of 11 readings, retried.
        let l = limiter(1.0, 10.0);
        assert_eq!(l.take("d", 11, 0), Ok(()), "a full bucket admits it");
        // The debt (-1) makes the device wait for the rate: 11 s to full.
        assert_eq!(l.take("d", 11, 0), Err(11));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(l.take("d", 11, 0), Err(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.take("d", 11, 0), Ok(()), "admitted again, never starved");
        // Over a long run the device gets the rate, not more.
        let mut admitted = 0;
        for _ in 0..1_000 {
            tokio::time::advance(Duration::from_secs(1)).await;
            if l.take("d", 11, 0).is_ok() {
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
            assert_eq!(l.take(&format!("dev-{i}"), 10, 0), Ok(()));
        }
        assert_eq!(l.len(), 10_000);
        // A period later, a lookup in a shard makes its generation old;
        // one more period, and the next lookup drops it whole.
        for round in 0..2 {
            tokio::time::advance(period).await;
            for i in 0..64 {
                assert_eq!(l.take(&format!("new-{round}-{i}"), 1, 0), Ok(()));
            }
        }
        assert_eq!(l.take("dev-0", 10, 0), Ok(()), "a forgotten bucket is full");
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
        assert_eq!(l.take("d", 1000, 0), Ok(()));
        // Another device's request rotates the generations: "d" moves to
        // the old one with its debt instead of being forgotten.
        tokio::time::advance(Duration::from_secs(1)).await;
        let _ = l.take("other", 1, 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            l.take("d", 10, 0),
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
