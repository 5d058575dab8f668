//! The windowed score (NAB-style) and event precision/recall/F1 of one
//! detector's detections against labelled anomaly windows.
//!
//! Per series, readings before the probation end are not judged (the
//! detectors are still learning; NAB's 15 %). Inside a labelled window only
//! the first detection counts, rewarded `σ(y)`, `y = −(end − i + 1) / len`
//! its position from the window's end (−1 at the start: earlier scores
//! more), `σ(y) = 2 / (1 + e^(5y)) − 1`, so `σ(−1) ≈ 0.987` and a detection
//! on the last reading of the window ≈ 0. Each detection outside every
//! window costs 0.11, each window without a detection 1. Summed over a
//! corpus and normalised: no detections = 0, the first reading of every
//! window flagged and nothing else = 100.

/// A labelled window, as reading indices (both ends inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First index inside.
    pub start: usize,
    /// Last index inside.
    pub end: usize,
}

/// Cost of a detection outside every window.
pub const FALSE_POSITIVE_COST: f64 = 0.11;
/// Cost of a window without detection.
pub const MISS_COST: f64 = 1.0;
/// Share of each series, from its start, that is not judged.
pub const PROBATION: f64 = 0.15;

/// Counts and raw score of one detector on one or more series.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tally {
    /// Labelled windows.
    pub windows: usize,
    /// Windows with at least one detection.
    pub detected: usize,
    /// Detections outside every window (after probation).
    pub false_positives: usize,
    /// Σ rewards − costs.
    pub raw: f64,
    /// The raw score of flagging the first reading of every window only.
    pub perfect: f64,
}

/// Scaled sigmoid of the detection's relative position.
fn sigma(y: f64) -> f64 {
    2.0 / (1.0 + (5.0 * y).exp()) - 1.0
}

impl Tally {
    /// Scores `flags` (one per reading) against `windows` of a series of
    /// `flags.len()` readings.
    pub fn of_series(flags: &[bool], windows: &[Window]) -> Self {
        let probation = (flags.len() as f64 * PROBATION).floor() as usize;
        let inside = |i: usize| windows.iter().any(|w| w.start <= i && i <= w.end);
        let mut tally = Self {
            windows: windows.len(),
            ..Self::default()
        };
        for w in windows {
            let len = (w.end - w.start + 1) as f64;
            tally.perfect += sigma(-1.0);
            let first = (w.start.max(probation)..=w.end.min(flags.len().saturating_sub(1)))
                .find(|&i| flags[i]);
            match first {
                Some(i) => {
                    tally.detected += 1;
                    tally.raw += sigma(-((w.end - i + 1) as f64) / len);
                }
                None => tally.raw -= MISS_COST,
            }
        }
        tally.false_positives = (probation..flags.len())
            .filter(|&i| flags[i] && !inside(i))
            .count();
        tally.raw -= FALSE_POSITIVE_COST * tally.false_positives as f64;
        tally
    }

    /// Adds another series' tally.
    pub fn add(&mut self, other: &Self) {
        self.windows += other.windows;
        self.detected += other.detected;
        self.false_positives += other.false_positives;
        self.raw += other.raw;
        self.perfect += other.perfect;
    }

    /// 100 · (raw − null) / (perfect − null), null = −windows (nothing
    /// flagged); `None` without windows.
    pub fn normalised(&self) -> Option<f64> {
        let null = -(self.windows as f64) * MISS_COST;
        let span = self.perfect - null;
        (span > 0.0).then(|| 100.0 * (self.raw - null) / span)
    }

    /// Detected windows over all detections that count (detected windows
    /// plus false positives); `None` when nothing was detected.
    pub fn precision(&self) -> Option<f64> {
        let all = self.detected + self.false_positives;
        (all > 0).then(|| self.detected as f64 / all as f64)
    }

    /// Detected windows over windows.
    pub fn recall(&self) -> Option<f64> {
        (self.windows > 0).then(|| self.detected as f64 / self.windows as f64)
    }

    /// Harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self) -> Option<f64> {
        let (p, r) = (self.precision()?, self.recall()?);
        Some(if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(n: usize, at: &[usize]) -> Vec<bool> {
        (0..n).map(|i| at.contains(&i)).collect()
    }

    const W: [Window; 1] = [Window { start: 50, end: 59 }];

    #[test]
    fn nothing_flagged_is_zero_and_first_reading_is_100() {
        let none = Tally::of_series(&flags(100, &[]), &W);
        assert_eq!(none.normalised(), Some(0.0));
        assert_eq!((none.detected, none.false_positives), (0, 0));
        let perfect = Tally::of_series(&flags(100, &[50]), &W);
        assert!((perfect.normalised().unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(perfect.f1(), Some(1.0));
    }

    #[test]
    fn earlier_scores_more_and_only_the_first_counts() {
        let early = Tally::of_series(&flags(100, &[52, 53, 54]), &W);
        let late = Tally::of_series(&flags(100, &[58]), &W);
        assert!(early.raw > late.raw && late.raw > 0.0);
        assert_eq!(early.false_positives, 0);
        assert_eq!(early.detected, 1);
    }

    #[test]
    fn false_positives_cost_and_probation_is_ignored() {
        // 100 readings: probation is 0..15.
        let t = Tally::of_series(&flags(100, &[3, 20, 80]), &W);
        assert_eq!(t.false_positives, 2);
        assert!((t.raw - (-1.0 - 0.22)).abs() < 1e-12);
        assert!(t.normalised().unwrap() < 0.0);
        assert_eq!(t.precision(), Some(0.0));
        assert_eq!(t.f1(), Some(0.0));
    }

    #[test]
    fn corpus_sums() {
        let mut all = Tally::of_series(&flags(100, &[50]), &W);
        all.add(&Tally::of_series(&flags(100, &[]), &W));
        assert!((all.normalised().unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(all.recall(), Some(0.5));
    }
}
