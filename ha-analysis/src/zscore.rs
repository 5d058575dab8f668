//! The default detector: z-score of each reading against the baseline mean
//! and sample standard deviation, O(1) per reading.
//!
//! State per series: the ring of the newest `W` values, shifted compensated
//! sums of the baseline (see `moments.rs` for the stability argument) and a
//! count of adjacent unequal pairs in the baseline. That count is what
//! decides "zero spread" exactly: a constant baseline of 0.1s has a true
//! standard deviation of 0, but rounded sums could leave 1e-17 and turn the
//! next reading into a huge score. Baseline is constant ⇔ count = 0.

use crate::config::Resolved;
use crate::moments::ShiftedMoments;
use crate::window::Window;
use crate::{AnalysisError, DetectorConfig, DetectorKind, Verdict, WindowDetector};

/// Per-series state of the z-score detector; the config lives with the
/// owner (one copy per container, not per series).
#[derive(Debug, Clone)]
pub(crate) struct ZScoreState {
    window: Window,
    baseline: ShiftedMoments,
    /// Adjacent pairs `(b[i], b[i+1])` of the baseline with `b[i] != b[i+1]`.
    changes: u32,
}

impl ZScoreState {
    pub(crate) fn new(config: &Resolved) -> Self {
        Self {
            window: Window::new(config.window),
            baseline: ShiftedMoments::default(),
            changes: 0,
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.window.heap_bytes()
    }

    /// Feeds a finite value into the window without judging it (warm start).
    pub(crate) fn push(&mut self, config: &Resolved, value: f64) {
        if let Some(leaving) = self.window.push(value) {
            // The value pushed out of the window was the oldest of the
            // baseline; its successor is now the oldest of the window.
            if self.baseline.count() >= 2 && leaving != self.window.oldest() {
                self.changes -= 1;
            }
            self.baseline.remove(leaving);
        }
        let recent = config.recent;
        if self.window.len() > recent {
            let entering = self.window.back(recent);
            if self.baseline.count() >= 1 && entering != self.window.back(recent + 1) {
                self.changes += 1;
            }
            self.baseline.add(entering);
        }
    }

    /// Feeds a finite value and judges it against the baseline.
    pub(crate) fn observe(&mut self, config: &Resolved, value: f64) -> Verdict {
        self.push(config, value);
        let n = self.baseline.count();
        if n < config.min_history || self.changes == 0 {
            return Verdict::NONE;
        }
        let window = &self.window;
        let (mean, variance) = self.baseline.mean_variance(|| window.oldest_slices(n));
        if !variance.is_finite() || variance <= 0.0 {
            return Verdict::NONE;
        }
        Verdict::from_score((value - mean) / variance.sqrt(), config.z)
    }
}

/// Z-score detector for a single series (no `seq` bookkeeping: every value
/// given is fed). For many series keyed by device and metric use
/// [`SeriesSet`](crate::SeriesSet).
///
/// ```
/// use ha_analysis::{DetectorConfig, WindowDetector, ZScoreDetector};
///
/// let config = DetectorConfig { window: 20, recent: 1, min_history: 10, ..Default::default() };
/// let mut detector = ZScoreDetector::new(&config)?;
/// for i in 0..30 {
///     let verdict = detector.observe(10.0 + f64::from(i % 3) * 0.1)?;
///     assert!(!verdict.is_anomaly);
/// }
/// assert!(detector.observe(50.0)?.is_anomaly);
/// # Ok::<(), ha_analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ZScoreDetector {
    config: Resolved,
    state: ZScoreState,
}

impl ZScoreDetector {
    /// Validates `config` (its `kind` is ignored) and allocates the window.
    pub fn new(config: &DetectorConfig) -> Result<Self, AnalysisError> {
        let config = Resolved {
            kind: DetectorKind::ZScore,
            ..config.resolve()?
        };
        Ok(Self {
            state: ZScoreState::new(&config),
            config,
        })
    }
}

impl WindowDetector for ZScoreDetector {
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

    fn config(window: usize, recent: usize, min_history: usize) -> DetectorConfig {
        DetectorConfig {
            window,
            recent,
            min_history,
            false_alarm: Some(0.01),
            ..DetectorConfig::default()
        }
    }

    #[test]
    fn constant_baseline_gives_no_verdict_even_for_non_representable_values() {
        let mut detector = ZScoreDetector::new(&config(50, 2, 5)).unwrap();
        for _ in 0..100 {
            assert_eq!(detector.observe(0.1).unwrap(), Verdict::NONE);
        }
        // 0.3 enters the recent set only: the baseline is still constant.
        assert_eq!(detector.observe(0.3).unwrap(), Verdict::NONE);
    }

    #[test]
    fn short_history_gives_no_verdict() {
        let mut detector = ZScoreDetector::new(&config(10, 2, 4)).unwrap();
        for (i, x) in [1.0, 2.0, 3.0, 4.0, 5.0].into_iter().enumerate() {
            assert!(!detector.observe(x).unwrap().has_score(), "reading {i}");
        }
        assert!(detector.observe(6.0).unwrap().has_score());
    }

    #[test]
    fn recent_zero_includes_the_reading_in_its_baseline() {
        let mut detector = ZScoreDetector::new(&config(3, 0, 2)).unwrap();
        detector.observe(1.0).unwrap();
        let verdict = detector.observe(3.0).unwrap();
        // Baseline {1, 3}: mean 2, sd √2.
        let score = verdict.score.unwrap();
        assert!((score - 1.0 / 2f64.sqrt()).abs() < 1e-12, "{score}");
    }

    #[test]
    fn non_finite_is_an_error_and_changes_nothing() {
        let mut detector = ZScoreDetector::new(&config(10, 1, 3)).unwrap();
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = detector.observe(x).unwrap_err();
            assert!(err.is_invalid_input());
        }
        for x in [1.0, 2.0, 1.5] {
            detector.observe(x).unwrap();
        }
        assert!(detector.observe(1.2).unwrap().has_score());
    }

    #[test]
    fn huge_values_do_not_panic() {
        let mut detector = ZScoreDetector::new(&config(10, 1, 3)).unwrap();
        for x in [f64::MAX, -f64::MAX, 1e308, -1e308, 0.0, f64::MIN_POSITIVE] {
            let verdict = detector.observe(x).unwrap();
            assert!(verdict.anomaly_score().is_finite());
        }
    }
}
