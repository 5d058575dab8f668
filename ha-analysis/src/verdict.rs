//! What a detector says about one reading.

use statrs::function::erf::erfc;

/// The judgement of one fed reading.
///
/// `score` is `None` when no verdict could be given (baseline shorter than
/// `min_history`, zero spread, or statistics overflowing `f64`); then
/// [`anomaly_score`](Self::anomaly_score) is 0 and `is_anomaly` false.
///
/// The anomaly score is a method, not a field: its `erfc` and logarithm cost as much as
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

    /// `L / (1 + L)` with `L = −log10(p)`, `p = 2(1 − Φ(|score|))` the
    /// two-sided tail probability of the score: in [0, 1), 0 without a
    /// verdict or at `score = 0`, strictly increasing in `|score|`.
    ///
    /// `L` is "the number of nines": p = 1e-4 (the default threshold,
    /// |z| ≈ 3.89) gives 0.8, |z| = 8 gives 0.94, |z| = 50 gives 0.998.
    /// Unlike `1 − p` (the formula before this release), it does not round
    /// to exactly 1 for |z| > 8.3, so scores of heavy-tailed series still
    /// rank.
    pub fn anomaly_score(&self) -> f64 {
        match self.score {
            Some(score) => {
                let nines = -log10_two_sided_tail(score.abs());
                (nines / (1.0 + nines)).clamp(0.0, 1.0)
            }
            None => 0.0,
        }
    }

    /// True when a score was computed.
    pub fn has_score(&self) -> bool {
        self.score.is_some()
    }
}

/// Largest `x` for which `erfc(x)` is computed directly; above it the
/// asymptotic series (far below `f64`'s smallest normal there, so `erfc`
/// itself would round to 0).
const ERFC_DIRECT_MAX: f64 = 26.0;

/// `log10(2(1 − Φ(z)))` for `z ≥ 0`, finite for every finite `z`.
fn log10_two_sided_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let ln_tail = if x <= ERFC_DIRECT_MAX {
        erfc(x).ln()
    } else {
        // erfc(x) = e^(−x²) / (x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + …);
        // at x = 26 the next term is ~2e-13 of the sum.
        let r = 1.0 / (2.0 * x * x);
        let series = 1.0 - r * (1.0 - 3.0 * r * (1.0 - 5.0 * r * (1.0 - 7.0 * r)));
        -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
    };
    ln_tail / std::f64::consts::LN_10
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `L / (1 + L)`, `L = −log10 p`, at known tail probabilities.
    fn expected(p: f64) -> f64 {
        let nines = -p.log10();
        nines / (1.0 + nines)
    }

    #[test]
    fn anomaly_score_is_the_nines_of_the_two_sided_p_value() {
        // p = 0.451151 (|z| = 0.7535), 1e-4 (z = 3.8906), 1.2442e-15 (z = 8).
        let cases = [
            (-0.753_496_522_451, 0.451_151_600_244),
            (3.890_591_886_413_094, 1e-4),
            (8.0, 1.244_192_114_854_357e-15),
        ];
        for (z, p) in cases {
            let v = Verdict::from_score(z, 2.0);
            let got = v.anomaly_score();
            assert!((got - expected(p)).abs() < 1e-9, "z {z}: {got}");
        }
        assert_eq!(Verdict::from_score(0.0, 2.0).anomaly_score(), 0.0);
        assert_eq!(Verdict::NONE.anomaly_score(), 0.0);
    }

    #[test]
    fn asymptotic_tail_joins_the_direct_one() {
        let x = ERFC_DIRECT_MAX;
        let z = x * std::f64::consts::SQRT_2;
        let direct = log10_two_sided_tail(z);
        let above = log10_two_sided_tail(z * (1.0 + 1e-15));
        assert!(above <= direct, "{direct} {above}");
        assert!((direct - above).abs() < 1e-10, "{direct} {above}");
        // log10 erfc(30) = −392.590 970 8 (series summed to 11 terms elsewhere).
        let far = log10_two_sided_tail(30.0 * std::f64::consts::SQRT_2);
        assert!((far - (-392.590_970_8)).abs() < 1e-6, "{far}");
    }

    #[test]
    fn heavy_tails_no_longer_tie_at_one() {
        let scores: Vec<f64> = [8.3, 9.0, 20.0, 50.0, 57.578, 1e3, 1e6]
            .iter()
            .map(|&z| Verdict::from_score(z, 2.0).anomaly_score())
            .collect();
        for pair in scores.windows(2) {
            assert!(pair[0] < pair[1] && pair[1] < 1.0, "{scores:?}");
        }
    }

    #[test]
    fn non_finite_score_is_no_verdict() {
        assert_eq!(Verdict::from_score(f64::INFINITY, 2.0), Verdict::NONE);
        assert_eq!(Verdict::from_score(f64::NAN, 2.0), Verdict::NONE);
    }

    proptest::proptest! {
        /// Monotone in |score| everywhere, strictly so (and below 1) for
        /// scores that differ by more than a part in 1e9 up to |z| = 1e4.
        #[test]
        fn anomaly_score_ranks_and_never_saturates(
            a in 0.0f64..1e4,
            b in 0.0f64..1e4,
            sign in proptest::bool::ANY,
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let signed = if sign { -hi } else { hi };
            let s_lo = Verdict::from_score(lo, 2.0).anomaly_score();
            let s_hi = Verdict::from_score(signed, 2.0).anomaly_score();
            proptest::prop_assert!((0.0..1.0).contains(&s_lo) && s_hi < 1.0);
            proptest::prop_assert!(s_lo <= s_hi, "{lo} -> {s_lo}, {hi} -> {s_hi}");
            if hi - lo > 1e-9 * hi.max(1.0) && hi <= 50.0 {
                proptest::prop_assert!(s_lo < s_hi, "{lo} -> {s_lo}, {hi} -> {s_hi}");
            }
        }

        /// Around the switch to the asymptotic series, neighbouring scores
        /// never decrease.
        #[test]
        fn no_step_down_at_the_series_switch(offset in -1e-6f64..1e-6) {
            let z = ERFC_DIRECT_MAX * std::f64::consts::SQRT_2 + offset;
            let here = Verdict::from_score(z, 2.0).anomaly_score();
            let next = Verdict::from_score(z + 1e-9, 2.0).anomaly_score();
            proptest::prop_assert!(here <= next, "{z}: {here} > {next}");
        }
    }
}
