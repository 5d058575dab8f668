//! A small latency histogram: log-linear buckets (64 per power of two, so
//! any quantile is within ~1.6 % of the true value), microsecond unit,
//! fixed memory, mergeable. Enough for p50/p99/p99.9 of a load step
//! without a dependency.

use std::time::Duration;

/// Sub-buckets per power of two.
const SUB: u64 = 64;
const SUB_BITS: u32 = 6;
/// Covers up to 2^40 µs (12 days); larger values land in the last bucket.
const BUCKETS: usize = ((40 - SUB_BITS as usize) + 2) * SUB as usize;

/// Counts of latencies in microseconds.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_us: 0,
        }
    }
}

fn index(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() - SUB_BITS; // >= 0 here
    let mantissa = (us >> exp) - SUB; // 0..SUB
    ((exp as u64 + 1) * SUB + mantissa).min(BUCKETS as u64 - 1) as usize
}

/// The highest value of bucket `i` (what a quantile reports: never low).
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let exp = i / SUB - 1;
    let mantissa = i % SUB + SUB;
    ((mantissa + 1) << exp) - 1
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[index(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The smallest recorded value `v` with at least `q` of the values
    /// `<= v` (bucket upper bound, capped at the maximum); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(upper(i).min(self.max_us));
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut last = 0;
        for us in 0..200_000u64 {
            let i = index(us);
            assert!(i >= last, "{us}");
            assert!(upper(i) >= us, "{us} above its bucket's bound {}", upper(i));
            last = i;
        }
    }

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = LatencyHistogram::default();
        for us in 1..=100_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q).as_micros() as f64;
            assert!(got >= want && got <= want * 1.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), Duration::from_micros(100_000));
    }

    #[test]
    fn merge_adds_counts_and_empty_is_zero() {
        let mut a = LatencyHistogram::default();
        assert_eq!(a.quantile(0.99), Duration::ZERO);
        let mut b = LatencyHistogram::default();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(9));
        b.record(Duration::from_millis(9));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert!(a.quantile(0.5) >= Duration::from_millis(9));
        assert_eq!(a.max(), Duration::from_millis(9));
    }
}
