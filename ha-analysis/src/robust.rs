//! The robust detector: median and MAD of the baseline.
//!
//! `score = (x − median) / (1.4826 × MAD)`; 1.4826 makes the MAD estimate σ
//! for normal data, so the same threshold `z` means about the same
//! false-alarm rate as the z-score detector. One huge outlier in the
//! baseline moves the median by at most one rank and the MAD barely, so it
//! cannot mask the next anomaly (it would inflate the standard deviation).
//!
//! Same recent set, minimum history and zero-spread rule as the z-score
//! detector: a MAD of 0 (more than half the baseline equal) is no verdict.
//!
//! Cost per reading: O(log W) search plus an O(W) memmove to insert and
//! remove one value in the sorted baseline, O(log W) for median and MAD —
//! against O(W log W) to re-sort the window. Memory: the ring of `W` values
//! plus the sorted baseline of `W − k`, about twice the z-score detector.

use crate::config::Resolved;
use crate::sorted_baseline::SortedBaseline;
use crate::window::Window;
use crate::{AnalysisError, DetectorConfig, DetectorKind, Verdict, WindowDetector};

/// Scales the MAD to estimate σ of normal data (≈ 1 / Φ⁻¹(3/4)).
pub const MAD_SCALE: f64 = 1.4826;

/// Per-series state of the median/MAD detector.
#[derive(Debug, Clone)]
pub(crate) struct MadState {
    window: Window,
    baseline: SortedBaseline,
}

impl MadState {
    pub(crate) fn new(config: &Resolved) -> Self {
        Self {
            window: Window::new(config.window),
            baseline: SortedBaseline::new(config.baseline_capacity()),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.window.heap_bytes() + self.baseline.heap_bytes()
    }

    /// Feeds a finite value into the window without judging it.
    pub(crate) fn push(&mut self, config: &Resolved, value: f64) {
        if let Some(leaving) = self.window.push(value) {
            self.baseline.remove(leaving);
        }
        if self.window.len() > config.recent {
            self.baseline.insert(self.window.back(config.recent));
        }
    }

    /// Feeds a finite value and judges it against the baseline.
    pub(crate) fn observe(&mut self, config: &Resolved, value: f64) -> Verdict {
        self.push(config, value);
        if self.baseline.len() < config.min_history {
            return Verdict::NONE;
        }
        let median = self.baseline.median();
        let spread = MAD_SCALE * self.baseline.mad(median);
        if !(spread > 0.0 && spread.is_finite()) {
            return Verdict::NONE;
        }
        Verdict::from_score((value - median) / spread, config.z)
    }
}

/// Median/MAD detector for a single series; see the module docs.
///
/// ```
/// use ha_analysis::{DetectorConfig, MadDetector, WindowDetector};
///
/// let config = DetectorConfig { window: 20, recent: 1, min_history: 10, ..Default::default() };
/// let mut detector = MadDetector::new(&config)?;
/// for i in 0..30 {
///     detector.observe(10.0 + f64::from(i % 5) * 0.1)?;
/// }
/// detector.observe(1e6)?; // a huge outlier enters the baseline...
/// assert!(detector.observe(20.0)?.is_anomaly); // ...and masks nothing
/// # Ok::<(), ha_analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MadDetector {
    config: Resolved,
    state: MadState,
}

impl MadDetector {
    /// Validates `config` (its `kind` is ignored) and allocates the buffers.
    pub fn new(config: &DetectorConfig) -> Result<Self, AnalysisError> {
        let config = Resolved {
            kind: DetectorKind::Mad,
            ..config.resolve()?
        };
        Ok(Self {
            state: MadState::new(&config),
            config,
        })
    }
}

impl WindowDetector for MadDetector {
    fn observe(&mut self, value: f64) -> Result<Verdict, AnalysisError> {
        let value = crate::error::check_finite(value)?;
        Ok(self.state.observe(&self.config, value))
    }

    fn threshold(&self) -> f64 {
        self.config.z
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ZScoreDetector;

    fn config() -> DetectorConfig {
        DetectorConfig {
            window: 8,
            recent: 2,
            min_history: 4,
            false_alarm: Some(0.01),
            ..DetectorConfig::default()
        }
    }

    /// The golden example's dev-a series: the spike at seq 9 still inflates
    /// the z-score baseline when the dip at seq 14 is judged (score −2.9,
    /// barely over z = 2.58); the MAD score is unaffected and far larger.
    #[test]
    fn outlier_in_baseline_does_not_mask_the_next_one() {
        let series = [
            10.0, 10.5, 9.8, 10.2, 10.1, 9.9, 10.3, 10.0, 25.0, 10.2, 9.7, 10.1, 10.4, -5.0,
        ];
        let mut mad = MadDetector::new(&config()).unwrap();
        let mut zscore = ZScoreDetector::new(&config()).unwrap();
        let mut last = (Verdict::NONE, Verdict::NONE);
        for x in series {
            last = (mad.observe(x).unwrap(), zscore.observe(x).unwrap());
        }
        assert!(last.0.is_anomaly);
        assert!(last.0.score.unwrap() < -20.0, "{:?}", last.0);
        assert!(last.1.score.unwrap() > -3.0, "{:?}", last.1);
    }

    #[test]
    fn majority_equal_baseline_has_zero_spread() {
        let mut mad = MadDetector::new(&config()).unwrap();
        for x in [1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 50.0] {
            assert_eq!(mad.observe(x).unwrap(), Verdict::NONE);
        }
    }

    #[test]
    fn huge_values_do_not_panic() {
        let mut mad = MadDetector::new(&config()).unwrap();
        for x in [f64::MAX, -f64::MAX, 1e308, -1e308, 0.0, 1.0, -0.0, 5.0, 6.0] {
            assert!(mad.observe(x).unwrap().anomaly_score().is_finite());
        }
    }
}
