//! The stepped load and the knee: which offered rates to try, and whether
//! a step was sustained. Pure: no clock, no I/O.

use std::time::Duration;

/// Rates to offer, one step after another.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPlan {
    /// First offered rate, requests per second.
    pub start: f64,
    /// Each step offers this many times the previous one.
    pub factor: f64,
    /// No step above this rate.
    pub max: f64,
}

impl StepPlan {
    /// The offered rates, ascending, `start` to `max` (`max` included as
    /// the last step when the factor overshoots it).
    pub fn rates(&self) -> Vec<f64> {
        let mut rates = Vec::new();
        if !(self.start > 0.0 && self.factor > 1.0 && self.max >= self.start) {
            return rates;
        }
        let mut r = self.start;
        while r < self.max * 0.999 {
            rates.push(r.round());
            r *= self.factor;
        }
        rates.push(self.max.round());
        rates
    }
}

/// Narrowing a knee down: between the last sustained rate and the first
/// that was not, each step halves the gap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bisection {
    /// Highest rate sustained so far.
    pub sustained: f64,
    /// Lowest rate not sustained so far.
    pub knee: f64,
}

impl Bisection {
    /// The next rate to try (whole requests per second), or `None` when the
    /// gap is closed.
    pub fn next(&self) -> Option<f64> {
        let mid = ((self.sustained + self.knee) / 2.0).round();
        (mid > self.sustained && mid < self.knee).then_some(mid)
    }

    /// Records the verdict of a step at `rate`.
    pub fn record(&mut self, rate: f64, sustained: bool) {
        if sustained {
            self.sustained = self.sustained.max(rate);
        } else {
            self.knee = self.knee.min(rate);
        }
    }
}

/// What a step must show to count as sustained.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KneeBound {
    /// Ack latency p99 at most this.
    pub p99: Duration,
    /// Acknowledged at least this fraction of the offered rate.
    pub min_delivered: f64,
    /// Errors (non-2xx, I/O, requests the driver could not send in time)
    /// at most this fraction of requests.
    pub max_error_rate: f64,
}

impl Default for KneeBound {
    fn default() -> Self {
        KneeBound {
            p99: Duration::from_millis(50),
            min_delivered: 0.95,
            max_error_rate: 0.0,
        }
    }
}

/// The measured outcome of one step, as far as the knee is concerned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// Offered requests per second.
    pub offered: f64,
    /// Acknowledged (2xx) requests per second.
    pub acked: f64,
    /// Requests that failed or could not be sent.
    pub errors: u64,
    /// Requests attempted.
    pub requests: u64,
    /// Ack latency p99.
    pub p99: Duration,
}

/// Why a step was not sustained.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Within every bound.
    Sustained,
    /// Over a bound; the text says which.
    Knee(String),
}

impl KneeBound {
    /// Judges one step.
    pub fn judge(&self, s: &StepOutcome) -> Verdict {
        let mut why = Vec::new();
        if s.p99 > self.p99 {
            why.push(format!("p99 {:.1} ms > {:.1} ms", ms(s.p99), ms(self.p99)));
        }
        if s.requests > 0 && s.errors as f64 / s.requests as f64 > self.max_error_rate {
            why.push(format!("{} errors of {} requests", s.errors, s.requests));
        }
        if s.acked < s.offered * self.min_delivered {
            why.push(format!(
                "acknowledged {:.0}/s < {:.0}% of offered {:.0}/s",
                s.acked,
                self.min_delivered * 100.0,
                s.offered
            ));
        }
        if why.is_empty() {
            Verdict::Sustained
        } else {
            Verdict::Knee(why.join("; "))
        }
    }
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offered: f64, acked: f64, errors: u64, p99_ms: u64) -> StepOutcome {
        StepOutcome {
            offered,
            acked,
            errors,
            requests: (offered * 5.0) as u64,
            p99: Duration::from_millis(p99_ms),
        }
    }

    #[test]
    fn rates_grow_geometrically_and_end_at_max() {
        let p = StepPlan {
            start: 1000.0,
            factor: 2.0,
            max: 6000.0,
        };
        assert_eq!(p.rates(), vec![1000.0, 2000.0, 4000.0, 6000.0]);
        let exact = StepPlan {
            start: 1000.0,
            factor: 2.0,
            max: 4000.0,
        };
        assert_eq!(exact.rates(), vec![1000.0, 2000.0, 4000.0]);
        let bad = StepPlan {
            start: 1000.0,
            factor: 1.0,
            max: 4000.0,
        };
        assert!(bad.rates().is_empty());
    }

    #[test]
    fn bisection_halves_the_gap_towards_the_verdicts() {
        let mut b = Bisection {
            sustained: 11_391.0,
            knee: 17_086.0,
        };
        assert_eq!(b.next(), Some(14_239.0));
        b.record(14_239.0, true);
        assert_eq!(b.next(), Some(15_663.0));
        b.record(15_663.0, false);
        assert_eq!(b.knee, 15_663.0);
        assert_eq!(b.next(), Some(14_951.0));
        let closed = Bisection {
            sustained: 100.0,
            knee: 101.0,
        };
        assert_eq!(closed.next(), None);
    }

    #[test]
    fn the_knee_is_latency_errors_or_shortfall() {
        let b = KneeBound::default();
        assert_eq!(b.judge(&step(1000.0, 999.0, 0, 3)), Verdict::Sustained);
        assert!(
            matches!(b.judge(&step(1000.0, 999.0, 0, 80)), Verdict::Knee(w) if w.contains("p99"))
        );
        assert!(
            matches!(b.judge(&step(1000.0, 999.0, 2, 3)), Verdict::Knee(w) if w.contains("errors"))
        );
        assert!(
            matches!(b.judge(&step(1000.0, 800.0, 0, 3)), Verdict::Knee(w) if w.contains("offered"))
        );
    }
}
