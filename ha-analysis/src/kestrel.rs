//! Kestrel: a breakout detector. A reading is judged by how far it falls
//! *outside the range* of the values before it, in units of their standard
//! deviation, and only the first reading of a breakout is flagged.
//!
//! Why: on real series the costly mistakes of a z-score are (1) heavy
//! tails — a series whose normal life has many 5σ readings gets flagged all
//! the time — and (2) repeats — a level shift or a burst is flagged on each
//! of its readings. A new extreme of the recent range is rare whatever the
//! distribution (for exchangeable values, 1 in `W` per side), so requiring
//! one, by a margin, calibrates the alarm rate on heavy tails; and flagging
//! only when the previous reading was not itself a breakout reports an
//! event once, at its start (where the NAB-style score rewards it most).
//! The published leaders on NAB gain much of their lead the same two ways
//! (a learned normal range, and suppressing repeats after a detection);
//! this design gets both from the window alone, so it stays exact under
//! warm start.
//!
//! ## Definition
//!
//! With `x` the newest reading and `R` the `W − 2` readings before it
//! (fewer while the series is young):
//!
//! - `e = (x − max R) / sd(R)` when `x > max R`, `(x − min R) / sd(R)`
//!   when `x < min R`, else 0 — the **score** (signed breakout in σ);
//! - a verdict needs `|R| ≥ min_history` and `sd(R) > 0`;
//! - *beyond* when `|e| > m` (the margin, [`KESTREL_MARGIN`](crate::KESTREL_MARGIN) σ unless `z`
//!   or `false_alarm` is configured: then `m = z − 3`, floored at 0.1);
//! - **anomaly** when beyond and the previous reading was not beyond.
//!
//! The verdict on `x` depends on the newest `W` readings only, so a series
//! rebuilt from the `W` newest stored values (warm start) gives exactly the
//! verdicts of one that never stopped.
//!
//! ## Cost
//!
//! Per reading: one ring write, compensated sums (as the z-score) and two
//! monotonic deques for max and min (amortised O(1): each value enters and
//! leaves each deque once). Heap per series: `8·W` (ring) + `2·4·W`
//! (deques of ring positions) bytes, allocated up front.

use std::collections::VecDeque;

use crate::Verdict;
use crate::config::Resolved;
use crate::moments::ShiftedMoments;
use crate::window::Window;

/// Per-series state.
#[derive(Debug, Clone)]
pub(crate) struct KestrelState {
    window: Window,
    reference: ShiftedMoments,
    /// Ring positions of a decreasing (max) and increasing (min) run of the
    /// reference values; front = the extreme.
    maxima: VecDeque<u32>,
    minima: VecDeque<u32>,
    /// Position of the newest value (wrapping; ages need only `W` < 2³²).
    position: u32,
    /// Values pushed so far, saturating at `W`.
    seen: u32,
    previous_beyond: bool,
}

impl KestrelState {
    pub(crate) fn new(config: &Resolved) -> Self {
        Self {
            window: Window::new(config.window),
            reference: ShiftedMoments::default(),
            maxima: VecDeque::with_capacity(config.window),
            minima: VecDeque::with_capacity(config.window),
            position: 0,
            seen: 0,
            previous_beyond: false,
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.window.heap_bytes()
            + (self.maxima.capacity() + self.minima.capacity()) * std::mem::size_of::<u32>()
    }

    pub(crate) fn new_heap_bytes(config: &Resolved) -> usize {
        config.window * (std::mem::size_of::<f64>() + 2 * std::mem::size_of::<u32>())
    }

    /// The largest reference set: `W − 2` (validation keeps `W ≥ 2`).
    fn capacity(config: &Resolved) -> usize {
        config.window.saturating_sub(2).max(1)
    }

    /// The value at ring position `position`, which must be in the window.
    fn at(&self, position: u32) -> f64 {
        self.window
            .back(self.position.wrapping_sub(position) as usize)
    }

    /// Feeds a finite value (warm start): the same work as `observe`, since
    /// the next verdict depends on whether this reading was beyond.
    pub(crate) fn push(&mut self, config: &Resolved, value: f64) {
        self.observe(config, value);
    }

    pub(crate) fn observe(&mut self, config: &Resolved, value: f64) -> Verdict {
        let capacity = Self::capacity(config);
        self.window.push(value);
        self.position = self.position.wrapping_add(1);
        self.seen = self.seen.saturating_add(1);
        if self.seen >= 2 {
            // The previous reading joins the reference set...
            let entering_at = self.position.wrapping_sub(1);
            let entering = self.window.back(1);
            self.reference.add(entering);
            while self.maxima.back().is_some_and(|&p| self.at(p) <= entering) {
                self.maxima.pop_back();
            }
            self.maxima.push_back(entering_at);
            while self.minima.back().is_some_and(|&p| self.at(p) >= entering) {
                self.minima.pop_back();
            }
            self.minima.push_back(entering_at);
            // ...and the one `capacity` older than it leaves.
            if self.reference.count() > capacity {
                let leaving_at = entering_at.wrapping_sub(capacity as u32);
                let leaving = self.window.back(capacity + 1);
                self.reference.remove(leaving);
                if self.maxima.front() == Some(&leaving_at) {
                    self.maxima.pop_front();
                }
                if self.minima.front() == Some(&leaving_at) {
                    self.minima.pop_front();
                }
            }
        }
        let verdict = self.judge(config, value);
        let beyond = verdict.is_anomaly;
        let fresh = beyond && !self.previous_beyond;
        self.previous_beyond = beyond;
        Verdict {
            is_anomaly: fresh,
            ..verdict
        }
    }

    /// The verdict before repeat suppression (`is_anomaly` = beyond).
    fn judge(&mut self, config: &Resolved, value: f64) -> Verdict {
        let n = self.reference.count();
        if n < config.min_history.max(2) {
            return Verdict::NONE;
        }
        let (Some(&hi), Some(&lo)) = (self.maxima.front(), self.minima.front()) else {
            return Verdict::NONE;
        };
        let (max, min) = (self.at(hi), self.at(lo));
        if max <= min {
            return Verdict::NONE;
        }
        let window = &self.window;
        // The reference set is the `n` values just before the newest.
        let (_, variance) = self.reference.mean_variance(|| window.before_newest(n));
        if !(variance.is_finite() && variance > 0.0) {
            return Verdict::NONE;
        }
        let sd = variance.sqrt();
        let breakout = if value > max {
            (value - max) / sd
        } else if value < min {
            (value - min) / sd
        } else {
            0.0
        };
        Verdict::from_score(breakout, config.kestrel_margin)
    }
}

#[cfg(test)]
mod tests {
    use crate::{DetectorConfig, DetectorKind, SeriesSet, Verdict};

    fn config(window: usize) -> DetectorConfig {
        DetectorConfig {
            window,
            min_history: 10,
            kind: DetectorKind::Kestrel,
            ..DetectorConfig::default()
        }
    }

    fn noise(i: u64) -> f64 {
        // A fixed, irregular pattern in [-1, 1]: no RNG needed.
        ((i.wrapping_mul(2_654_435_761) % 1000) as f64 / 500.0) - 1.0
    }

    #[test]
    fn a_level_shift_is_flagged_at_its_start_and_rarely_after() {
        let mut set = SeriesSet::new(&config(50)).unwrap();
        let mut flagged = Vec::new();
        for i in 0..200u64 {
            let value = noise(i) + if i >= 120 { 10.0 } else { 0.0 };
            let verdict = set.feed((), i, value).unwrap().unwrap();
            if verdict.is_anomaly {
                flagged.push(i);
            }
        }
        // Only a reading that is beyond while its predecessor was not can
        // be flagged: the shifted readings that set a new maximum by the
        // margin again (here one) are the only repeats.
        assert_eq!(flagged.first(), Some(&120), "{flagged:?}");
        assert!(flagged.len() <= 2, "{flagged:?}");
    }

    #[test]
    fn values_inside_the_range_score_zero_and_a_flat_reference_is_no_verdict() {
        let mut set = SeriesSet::new(&config(50)).unwrap();
        for i in 0..60u64 {
            set.feed((), i, noise(i)).unwrap();
        }
        let inside = set.feed((), 60, 0.0).unwrap().unwrap();
        assert_eq!((inside.score, inside.is_anomaly), (Some(0.0), false));
        let below = set.feed((), 61, -5.0).unwrap().unwrap();
        assert!(below.is_anomaly && below.score.unwrap() < 0.0);
        let mut flat = SeriesSet::new(&config(50)).unwrap();
        for i in 0..60u64 {
            assert_eq!(flat.feed((), i, 1.0).unwrap(), Some(Verdict::NONE));
        }
    }

    /// Verdicts depend on the newest `W` readings only: a series rebuilt
    /// from them gives the verdicts of one that never stopped (scores equal
    /// up to the rounding of the running sums, as for the z-score).
    #[test]
    fn warm_start_from_the_window_is_exact() {
        let window = 40;
        let values: Vec<f64> = (0..600u64)
            .map(|i| noise(i) * (1.0 + (i / 97) as f64) + if i % 53 == 0 { 8.0 } else { 0.0 })
            .collect();
        let mut fed = SeriesSet::new(&config(window)).unwrap();
        let mut flags = 0;
        for (i, &v) in values.iter().enumerate() {
            flags += usize::from(fed.feed((), i as u64, v).unwrap().unwrap().is_anomaly);
        }
        assert!(flags > 3, "the test series must have anomalies: {flags}");
        for cut in [45, 100, 233, 400] {
            let mut warm = SeriesSet::new(&config(window)).unwrap();
            let history = (cut - window..cut).map(|i| (i as u64, values[i]));
            warm.warm_start((), history).unwrap();
            let mut cold = SeriesSet::new(&config(window)).unwrap();
            for (i, &v) in values.iter().enumerate() {
                let a = cold.feed((), i as u64, v).unwrap();
                if i >= cut {
                    let (a, b) = (a.unwrap(), warm.feed((), i as u64, v).unwrap().unwrap());
                    assert_eq!(a.is_anomaly, b.is_anomaly, "cut {cut}, reading {i}");
                    let (x, y) = (a.score.unwrap(), b.score.unwrap());
                    assert!(
                        (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                        "cut {cut}, reading {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn heap_bytes_are_as_stated() {
        let mut set: SeriesSet<u64> = SeriesSet::new(&config(200)).unwrap();
        for i in 0..1000u64 {
            set.feed(1, i, noise(i) + (i % 7) as f64).unwrap();
        }
        // Buffers are allocated full-size up front and never grow.
        let stated = set.memory_per_series();
        let before = set.memory_bytes();
        for i in 1000..5000u64 {
            set.feed(1, i, noise(i) * (i % 13) as f64).unwrap();
        }
        assert_eq!(set.memory_bytes(), before);
        assert!(stated < 200 * 16 + 256, "{stated}");
    }
}
