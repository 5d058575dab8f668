//! The retry policy: linear backoff with a cap, a retry budget, optional
//! jitter and `Retry-After`.

use std::time::Duration;

pub use cause::RetryCause;

use crate::error::Error;

mod cause;

/// Longest `Retry-After` honoured; a larger value is clamped to this, so a
/// misconfigured proxy cannot park a device for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long to wait before each retry of a send, and how many retries to
/// make before giving up.
///
/// The delay before retry `n` (1-based) is `min(n × step, cap)`. The default
/// is the seed's policy: step 1 s, cap 10 s, 10 retries, so the schedule is
/// exactly 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 s, then the send gives up:
///
/// ```
/// use std::time::Duration;
/// use ha_device_client::RetryPolicy;
///
/// let secs: Vec<u64> = RetryPolicy::default().schedule().map(|d| d.as_secs()).collect();
/// assert_eq!(secs, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
/// ```
///
/// **Jitter** (off by default) spreads a fleet's retries so that devices cut
/// off by the same failover do not come back in lock-step. With jitter
/// fraction `j` (0 ≤ j ≤ 1) and `u` drawn uniformly from `[0, 1)` for every
/// retry, the delay is
///
/// ```text
/// delay = base × (1 − j + 2·j·u)        base = min(n × step, cap)
/// ```
///
/// i.e. uniform in `[base·(1 − j), base·(1 + j))`: the mean load on the
/// server stays that of the un-jittered schedule.
///
/// **`Retry-After`** (429 and 503, in delta-seconds, clamped to
/// [`MAX_RETRY_AFTER`]) is honoured as `max(Retry-After, delay)`, and the
/// retry counts against the budget like any other.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    step: Duration,
    cap: Duration,
    max_retries: u32,
    jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            step: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            max_retries: 10,
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// Delay `min(n × step, cap)` before retry `n`, at most `max_retries`
    /// retries per send (0: never retry).
    ///
    /// Errors when `step` is zero or `cap` is below `step`.
    pub fn linear(step: Duration, cap: Duration, max_retries: u32) -> Result<Self, Error> {
        if step.is_zero() {
            return Err(Error::Config("retry step must be positive".into()));
        }
        if cap < step {
            return Err(Error::Config(format!(
                "retry cap {cap:?} is below the step {step:?}"
            )));
        }
        Ok(RetryPolicy {
            step,
            cap,
            max_retries,
            jitter: 0.0,
        })
    }

    /// This policy with jitter fraction `fraction` (see the type's docs).
    /// Errors unless `0 ≤ fraction ≤ 1`.
    pub fn with_jitter(mut self, fraction: f64) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(Error::Config(format!(
                "jitter fraction {fraction} is outside 0..=1"
            )));
        }
        self.jitter = fraction;
        Ok(self)
    }

    /// The delay added per retry.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// The longest un-jittered delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Retries per send before giving up.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The jitter fraction (0 = none).
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The un-jittered delay before retry `attempt` (1-based):
    /// `min(attempt × step, cap)`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        self.step.saturating_mul(attempt.max(1)).min(self.cap)
    }

    /// The delay before retry `attempt` given a uniform sample `u` in
    /// `[0, 1)` for the jitter and the server's `Retry-After`, if any.
    pub fn delay(&self, attempt: u32, u: f64, retry_after: Option<Duration>) -> Duration {
        let base = self.base_delay(attempt);
        let jittered = if self.jitter > 0.0 {
            let u = u.clamp(0.0, 1.0);
            base.mul_f64(1.0 - self.jitter + 2.0 * self.jitter * u)
        } else {
            base
        };
        match retry_after {
            Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }

    /// The un-jittered delays of all retries of one send, in order.
    pub fn schedule(&self) -> impl Iterator<Item = Duration> + '_ {
        (1..=self.max_retries).map(|n| self.base_delay(n))
    }
}

/// A small deterministic generator (SplitMix64) for jitter samples: no
/// dependency, and tests can fix the seed.
#[derive(Clone, Debug)]
pub(crate) struct JitterRng(u64);

impl JitterRng {
    pub(crate) fn new(seed: u64) -> Self {
        JitterRng(seed)
    }

    /// A sample uniform in `[0, 1)`.
    pub(crate) fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 random bits as a fraction.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn default_is_the_seed_schedule() {
        let p = RetryPolicy::default();
        assert_eq!(p, RetryPolicy::linear(S, 10 * S, 10).unwrap());
        let got: Vec<Duration> = p.schedule().collect();
        let want: Vec<Duration> = (1..=10).map(|n| n * S).collect();
        assert_eq!(got, want);
        assert_eq!(p.delay(10, 0.7, None), 10 * S);
    }

    #[test]
    fn cap_holds_past_the_step_count() {
        let p = RetryPolicy::linear(S, 3 * S, 6).unwrap();
        let got: Vec<u64> = p.schedule().map(|d| d.as_secs()).collect();
        assert_eq!(got, [1, 2, 3, 3, 3, 3]);
        assert_eq!(p.base_delay(u32::MAX), 3 * S);
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(RetryPolicy::linear(Duration::ZERO, S, 1).is_err());
        assert!(RetryPolicy::linear(2 * S, S, 1).is_err());
        assert!(RetryPolicy::default().with_jitter(-0.1).is_err());
        assert!(RetryPolicy::default().with_jitter(1.5).is_err());
        assert!(RetryPolicy::default().with_jitter(f64::NAN).is_err());
        assert_eq!(RetryPolicy::linear(S, S, 0).unwrap().schedule().count(), 0);
    }

    #[test]
    fn retry_after_is_a_floor_and_clamped() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 0.0, Some(7 * S)), 7 * S);
        assert_eq!(p.delay(9, 0.0, Some(2 * S)), 9 * S);
        assert_eq!(p.delay(1, 0.0, Some(86_400 * S)), MAX_RETRY_AFTER);
    }

    #[test]
    fn jitter_follows_the_formula() {
        let p = RetryPolicy::default().with_jitter(0.5).unwrap();
        assert_eq!(p.delay(4, 0.0, None), 2 * S);
        assert_eq!(p.delay(4, 0.5, None), 4 * S);
        assert_eq!(p.delay(4, 0.75, None), 5 * S);
        let mut rng = JitterRng::new(42);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let u = rng.next_unit();
            assert!((0.0..1.0).contains(&u));
            let d = p.delay(4, u, None);
            assert!(d >= 2 * S && d < 6 * S);
            sum += d.as_secs_f64();
        }
        let mean = sum / 10_000.0;
        assert!((mean - 4.0).abs() < 0.1, "mean {mean}");
    }
}
