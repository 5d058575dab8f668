//! Property tests: the incremental detectors give the verdicts of a naive
//! recompute of the baseline, over random series with large offsets,
//! spikes, level shifts and constant stretches.
//!
//! `cargo test -p ha-analysis --test incremental_vs_naive`

mod support;

use ha_analysis::{DetectorConfig, DetectorKind, MadDetector, WindowDetector, ZScoreDetector};
use proptest::prelude::*;
use support::{Contract, naive_series};

/// How a random series is built from unit noise.
#[derive(Debug, Clone)]
struct Shape {
    offset: f64,
    scale: f64,
    /// Round the noise to halves: long constant runs and ties.
    quantize: bool,
    shift_at: usize,
    shift_by: f64,
    spikes: Vec<(usize, f64)>,
    noise: Vec<f64>,
}

impl Shape {
    fn values(&self) -> Vec<f64> {
        let mut values: Vec<f64> = self
            .noise
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let n = if self.quantize {
                    (n * 2.0).round() / 2.0
                } else {
                    n
                };
                let level = if i >= self.shift_at {
                    self.shift_by
                } else {
                    0.0
                };
                self.offset + level + self.scale * n
            })
            .collect();
        for &(at, size) in &self.spikes {
            if let Some(v) = values.get_mut(at) {
                *v += size * self.scale;
            }
        }
        values
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop_oneof![Just(0.0), Just(1e3), Just(1e9), Just(-1e9), Just(1e12)],
        prop_oneof![Just(1e-3), Just(1.0), Just(1e3)],
        any::<bool>(),
        0usize..600,
        prop_oneof![Just(0.0), Just(1e6), Just(-1e9), Just(5.0)],
        prop::collection::vec((0usize..600, -1e4f64..1e4), 0..6),
        prop::collection::vec(-3.0f64..3.0, 1..600),
    )
        .prop_map(
            |(offset, scale, quantize, shift_at, shift_by, spikes, noise)| Shape {
                offset,
                scale,
                quantize,
                shift_at,
                shift_by,
                spikes,
                noise,
            },
        )
}

fn config() -> impl Strategy<Value = DetectorConfig> {
    (2usize..60, 0usize..5, 0.0f64..1.0).prop_map(|(extra, recent, history)| {
        let window = recent + 2 + extra;
        let baseline = window - recent;
        DetectorConfig {
            window,
            recent,
            min_history: 2 + (history * (baseline - 2) as f64) as usize,
            z: Some(3.0),
            ..DetectorConfig::default()
        }
    })
}

fn contract(config: &DetectorConfig, robust: bool) -> Contract {
    Contract {
        window: config.window,
        recent: config.recent,
        min_history: config.min_history,
        z: config.z.unwrap_or(f64::NAN),
        robust,
    }
}

/// Same verdict, or a score so close to the threshold that rounding may
/// legitimately tip it.
fn check(
    index: usize,
    got: ha_analysis::Verdict,
    want: Option<(f64, bool)>,
    z: f64,
    tolerance: f64,
) -> Result<(), TestCaseError> {
    match (got.score, want) {
        (None, None) => Ok(()),
        (Some(score), Some((expected, anomaly))) => {
            let error = (score - expected).abs() / expected.abs().max(1.0);
            prop_assert!(
                error <= tolerance,
                "reading {index}: score {score} vs naive {expected}"
            );
            if (expected.abs() - z).abs() > 1e-6 * z {
                prop_assert_eq!(got.is_anomaly, anomaly, "reading {}", index);
            }
            Ok(())
        }
        (got, want) => Err(TestCaseError::fail(format!(
            "reading {index}: verdict {got:?} vs naive {want:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn zscore_matches_naive_recompute(shape in shape(), config in config()) {
        let values = shape.values();
        let expected = naive_series(&values, contract(&config, false));
        let mut detector = ZScoreDetector::new(&config).unwrap();
        for (index, (&x, want)) in values.iter().zip(expected).enumerate() {
            let got = detector.observe(x).unwrap();
            check(index, got, want, 3.0, 1e-7)?;
        }
    }

    #[test]
    fn mad_matches_naive_recompute(shape in shape(), config in config()) {
        let values = shape.values();
        let config = DetectorConfig { kind: DetectorKind::Mad, ..config };
        let expected = naive_series(&values, contract(&config, true));
        let mut detector = MadDetector::new(&config).unwrap();
        for (index, (&x, want)) in values.iter().zip(expected).enumerate() {
            let got = detector.observe(x).unwrap();
            check(index, got, want, 3.0, 1e-12)?;
        }
    }
}

/// The case spelled out: around 1e9 with noise 1e-3, over many
/// window turnovers, every verdict equals the exact two-pass one.
#[test]
fn large_offset_small_noise_long_run() {
    let mut rng = support::Rng::new(7);
    let config = DetectorConfig::default();
    let z = config.z_threshold().unwrap();
    let contract = Contract {
        window: 200,
        recent: 3,
        min_history: 30,
        z,
        robust: false,
    };
    let mut detector = ZScoreDetector::new(&config).unwrap();
    let mut values = Vec::new();
    let mut worst: f64 = 0.0;
    for i in 0..20_000 {
        let spike = if i % 997 == 0 { 1e-2 } else { 0.0 };
        let x = 1e9 + 1e-3 * rng.normal() + spike;
        values.push(x);
        let got = detector.observe(x).unwrap();
        let tail = &values[values.len().saturating_sub(200)..];
        let want = support::naive_verdict(tail, contract);
        assert_eq!(got.score.is_some(), want.is_some(), "reading {i}");
        if let (Some(score), Some((expected, anomaly))) = (got.score, want) {
            worst = worst.max((score - expected).abs() / expected.abs().max(1.0));
            assert_eq!(got.is_anomaly, anomaly, "reading {i}");
        }
    }
    assert!(worst < 1e-9, "worst relative score error {worst}");
}
