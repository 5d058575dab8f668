//! Known answers: injected spikes and a level shift are found; the
//! false-alarm rate on pure noise matches `p`; the keyed container agrees
//! with an independent naive implementation of the contract.
//!
//! `cargo test -p ha-analysis --test known_answers`
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use ha_analysis::{DetectorConfig, DetectorKind, SeriesSet, WindowDetector, ZScoreDetector};
use support::{Contract, Rng, naive_series};

fn flagged(detector: &mut impl WindowDetector, values: &[f64]) -> Vec<usize> {
    values
        .iter()
        .enumerate()
        .filter(|&(_, &x)| detector.observe(x).unwrap().is_anomaly)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn injected_spikes_are_found() {
    let mut rng = Rng::new(1);
    let spikes = [300, 777, 1500, 2222, 2900];
    let values: Vec<f64> = (0..3000)
        .map(|i| {
            let spike = if spikes.contains(&i) { 9.0 } else { 0.0 };
            20.0 + rng.normal() + if i % 2 == 0 { spike } else { -spike }
        })
        .collect();
    for kind in [DetectorKind::ZScore, DetectorKind::Mad] {
        let config = DetectorConfig {
            kind,
            ..DetectorConfig::default()
        };
        let found = match kind {
            DetectorKind::Mad => flagged(
                &mut ha_analysis::MadDetector::new(&config).unwrap(),
                &values,
            ),
            _ => flagged(&mut ZScoreDetector::new(&config).unwrap(), &values),
        };
        // Every spike, and at most a stray false alarm or two (p = 1e-4 per
        // reading, more while the baseline is short).
        assert!(
            spikes.iter().all(|s| found.contains(s)),
            "{kind}: {found:?}"
        );
        assert!(found.len() <= spikes.len() + 2, "{kind}: {found:?}");
    }
}

#[test]
fn level_shift_is_found() {
    let mut rng = Rng::new(2);
    let values: Vec<f64> = (0..1000)
        .map(|i| if i < 600 { 0.0 } else { 8.0 } + rng.normal())
        .collect();
    let mut detector = ZScoreDetector::new(&DetectorConfig::default()).unwrap();
    let found = flagged(&mut detector, &values);
    // The recent set keeps the first readings after the shift out of the
    // baseline, so the first few are all flagged.
    let near: Vec<usize> = found
        .into_iter()
        .filter(|i| (550..=602).contains(i))
        .collect();
    assert_eq!(near, [600, 601, 602]);
}

#[test]
fn false_alarm_rate_matches_p() {
    let mut rng = Rng::new(3);
    let config = DetectorConfig {
        false_alarm: Some(1e-2),
        ..DetectorConfig::default()
    };
    for kind in [DetectorKind::ZScore, DetectorKind::Mad] {
        let config = DetectorConfig {
            kind,
            ..config.clone()
        };
        let mut set: SeriesSet<u8> = SeriesSet::new(&config).unwrap();
        let mut count = 0usize;
        for seq in 0..100_000u64 {
            let verdict = set.feed(0, seq, rng.normal()).unwrap().unwrap();
            count += usize::from(verdict.is_anomaly);
        }
        let rate = count as f64 / 100_000.0;
        println!("{kind}: {count} flagged of 100,000 ({:.3} %)", rate * 100.0);
        assert!((0.007..=0.013).contains(&rate), "{kind}: rate {rate}");
    }
}

/// The landing check: ≥ 99.5 % agreement on the flagged set between the
/// keyed container and an independent naive implementation, on held-out
/// random series with injected anomalies.
#[test]
fn keyed_container_agrees_with_naive_contract() {
    let mut rng = Rng::new(4);
    for kind in [DetectorKind::ZScore, DetectorKind::Mad] {
        let config = DetectorConfig {
            window: 100,
            recent: 3,
            min_history: 20,
            false_alarm: Some(1e-3),
            kind,
            ..DetectorConfig::default()
        };
        let contract = Contract {
            window: 100,
            recent: 3,
            min_history: 20,
            z: config.z_threshold().unwrap(),
            robust: kind == DetectorKind::Mad,
        };
        let mut set: SeriesSet<(String, String)> = SeriesSet::new(&config).unwrap();
        let (mut both, mut only_one) = (0usize, 0usize);
        for device in 0..8 {
            let level = 1e3 * rng.normal();
            let scale = 10f64.powi(rng.below(7) as i32 - 3);
            let values: Vec<f64> = (0..5_000)
                .map(|i| {
                    let spike = if rng.uniform() < 0.01 {
                        6.0 + 10.0 * rng.uniform()
                    } else {
                        0.0
                    };
                    let shift = if i >= 2_500 { 20.0 } else { 0.0 };
                    level + scale * (rng.normal() + spike + shift)
                })
                .collect();
            let naive = naive_series(&values, contract);
            for (seq, (&x, want)) in values.iter().zip(naive).enumerate() {
                let key = (format!("dev-{device}"), "temp".to_string());
                let got = set.feed(key, seq as u64, x).unwrap().unwrap().is_anomaly;
                let want = want.is_some_and(|(_, anomaly)| anomaly);
                match (got, want) {
                    (true, true) => both += 1,
                    (false, false) => {}
                    _ => only_one += 1,
                }
            }
        }
        let agreement = both as f64 / (both + only_one) as f64;
        println!("{kind}: {both} flagged by both, {only_one} by one only");
        assert!(both > 100, "{kind}: too few anomalies to judge ({both})");
        assert!(agreement >= 0.995, "{kind}: agreement {agreement}");
    }
}
