//! The measurement behind the choice of running sums in `moments.rs`:
//! sliding-window variance by plain sums, sums shifted by the first value,
//! shifted Neumaier-compensated sums, and the library (shifted compensated
//! sums re-centred when they drift), each against the naive two-pass
//! recompute. Prints a table; asserts only on the library.
//!
//! `cargo test --release -p ha-analysis --test stability_measurement -- --nocapture`
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use ha_analysis::{DetectorConfig, WindowDetector, ZScoreDetector};
use support::{Contract, Rng, naive_verdict};

const WINDOW: usize = 200;
const RECENT: usize = 3;

/// A sliding-sum z-score without re-centring; `compensated` picks Neumaier.
struct SlidingSums {
    shift: Option<f64>,
    compensated: bool,
    s1: (f64, f64),
    s2: (f64, f64),
}

fn add(pair: &mut (f64, f64), term: f64, compensated: bool) {
    if !compensated {
        pair.0 += term;
        return;
    }
    let t = pair.0 + term;
    pair.1 += if pair.0.abs() >= term.abs() {
        (pair.0 - t) + term
    } else {
        (term - t) + pair.0
    };
    pair.0 = t;
}

impl SlidingSums {
    fn score(&mut self, values: &[f64]) -> Option<f64> {
        // Baseline = values[len-W .. len-k]; slide by one reading.
        let n = values.len();
        let shift = *self.shift.get_or_insert(values[0]);
        let entering = n.checked_sub(RECENT + 1).map(|i| values[i]);
        let leaving = n.checked_sub(WINDOW + 1).map(|i| values[i]);
        for (value, sign) in [(entering, 1.0), (leaving, -1.0)] {
            if let Some(v) = value {
                let d = v - shift;
                add(&mut self.s1, sign * d, self.compensated);
                add(&mut self.s2, sign * d * d, self.compensated);
            }
        }
        let count = (n.saturating_sub(RECENT)).min(WINDOW - RECENT) as f64;
        if count < 30.0 {
            return None;
        }
        let (s1, s2) = (self.s1.0 + self.s1.1, self.s2.0 + self.s2.1);
        let var = (s2 - s1 * s1 / count) / (count - 1.0);
        let mean = shift + s1 / count;
        Some((values[n - 1] - mean) / var.max(0.0).sqrt())
    }
}

/// Judges the newest of the values given (all values so far).
type Scorer = Box<dyn FnMut(&[f64]) -> Option<f64>>;

fn scenario(name: &str, values: &[f64]) -> f64 {
    let z = DetectorConfig::default().z_threshold().unwrap();
    let contract = Contract {
        window: WINDOW,
        recent: RECENT,
        min_history: 30,
        z,
        robust: false,
    };
    let naive: Vec<Option<(f64, bool)>> = (1..=values.len())
        .map(|end| naive_verdict(&values[end.saturating_sub(WINDOW)..end], contract))
        .collect();
    let mut variants: Vec<(&str, Scorer)> = Vec::new();
    for (label, shift, compensated) in [
        ("plain sums", Some(0.0), false),
        ("shifted sums", None, false),
        ("shifted + Neumaier", None, true),
    ] {
        let mut sums = SlidingSums {
            shift,
            compensated,
            s1: (0.0, 0.0),
            s2: (0.0, 0.0),
        };
        variants.push((label, Box::new(move |v: &[f64]| sums.score(v))));
    }
    let mut library = ZScoreDetector::new(&DetectorConfig::default()).unwrap();
    variants.push((
        "library (re-centred)",
        Box::new(move |v: &[f64]| library.observe(v[v.len() - 1]).unwrap().score),
    ));
    let mut library_error = 0.0;
    for (label, mut score) in variants {
        let (mut worst, mut flips) = (0.0f64, 0usize);
        for end in 1..=values.len() {
            let got = score(&values[..end]);
            if let (Some(g), Some((w, anomaly))) = (got, naive[end - 1]) {
                let error = (g - w).abs() / w.abs().max(1.0);
                worst = if error.is_nan() {
                    f64::INFINITY
                } else {
                    worst.max(error)
                };
                flips += usize::from((g.abs() > z) != anomaly);
            }
        }
        println!(
            "{name:<34} {label:<22} worst rel. score error {worst:9.2e}, verdict flips {flips}"
        );
        if label.starts_with("library") {
            library_error = worst;
        }
    }
    library_error
}

#[test]
fn measure_running_sum_variants() {
    let mut rng = Rng::new(42);
    let noise: Vec<f64> = (0..50_000).map(|_| rng.normal()).collect();
    let around_1e9: Vec<f64> = noise.iter().map(|n| 1e9 + 1e-3 * n).collect();
    let with_spikes: Vec<f64> = around_1e9
        .iter()
        .enumerate()
        .map(|(i, &x)| if i % 1000 == 500 { x + 1e6 } else { x })
        .collect();
    let level_shift: Vec<f64> = noise
        .iter()
        .enumerate()
        .map(|(i, &n)| if i < 1000 { n } else { 1e9 + 1e-3 * n })
        .collect();
    let mut worst = 0.0f64;
    worst = worst.max(scenario("1e9 + 1e-3 noise", &around_1e9));
    worst = worst.max(scenario("1e9 + 1e-3 noise, spikes of 1e6", &with_spikes));
    worst = worst.max(scenario("N(0,1), then 1e9 + 1e-3 noise", &level_shift));
    assert!(worst < 1e-9, "{worst}");
}
