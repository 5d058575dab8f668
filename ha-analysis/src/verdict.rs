//! What a detector says about one reading.

use statrs::function::erf::erf;

/// The judgement of one fed reading.
///
/// `score` is `None` when no verdict could be given (baseline shorter than
/// `min_history`, zero spread, or statistics overflowing `f64`); then
/// [`anomaly_score`](Self::anomaly_score) is 0 and `is_anomaly` false.
///
/// The anomaly score is a method, not a field: its `erf` costs as much as
/// the rest of a z-score update, and most callers need it only for the few
/// readings they store or print.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Verdict {
    /// `(x − centre) / spread` of the baseline, when a verdict was given.
    pub score: Option<f64>,
    /// `|score| > z`.
    pub is_anomaly: bool,
}

impl Verdict {
    /// Fed, but no verdict.
    pub const NONE: Self = Self {
        score: None,
        is_anomaly: false,
    };

    /// A verdict for `score` against threshold `z`; a non-finite score (the
    /// statistics overflowed) gives [`Verdict::NONE`].
    pub(crate) fn from_score(score: f64, z: f64) -> Self {
        if !score.is_finite() {
            return Self::NONE;
        }
        Self {
            score: Some(score),
            is_anomaly: score.abs() > z,
        }
    }

    /// `2Φ(|score|) − 1`: one minus the two-sided p-value, in [0, 1]; 0
    /// without a verdict.
    pub fn anomaly_score(&self) -> f64 {
        match self.score {
            // 2Φ(s) − 1 = erf(s / √2), without cancellation near s = 0.
            // statrs' erf is good to ~1e-10 relative (worst near s ≈ 0.7),
            // ample for a score printed and compared at 1e-6.
            Some(score) => erf(score.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0),
            None => 0.0,
        }
    }

    /// True when a score was computed.
    pub fn has_score(&self) -> bool {
        self.score.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_score_matches_two_phi_minus_one() {
        let v = Verdict::from_score(-0.753_496_522_451, 2.0);
        assert!((v.anomaly_score() - 0.548_848_399_756).abs() < 1e-9);
        assert!(!v.is_anomaly);
        let v = Verdict::from_score(57.578, 2.0);
        assert_eq!(v.anomaly_score(), 1.0);
        assert!(v.is_anomaly);
    }

    #[test]
    fn non_finite_score_is_no_verdict() {
        assert_eq!(Verdict::from_score(f64::INFINITY, 2.0), Verdict::NONE);
        assert_eq!(Verdict::from_score(f64::NAN, 2.0), Verdict::NONE);
    }
}
