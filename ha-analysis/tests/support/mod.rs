//! Shared by the integration tests and the benches: a seeded normal
//! generator and an independent, naive implementation of the detector
//! contract (recompute the whole baseline for every reading).
#![allow(dead_code)]

/// SplitMix64 with Box–Muller: deterministic, no dependencies.
pub struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let radius = (-2.0 * self.uniform().ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * self.uniform();
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n
    }
}

/// The contract's parameters, spelled out again on purpose.
#[derive(Clone, Copy, Debug)]
pub struct Contract {
    pub window: usize,
    pub recent: usize,
    pub min_history: usize,
    pub z: f64,
    pub robust: bool,
}

/// `(score, is_anomaly)` for the newest value of `fed`, by the book.
pub fn naive_verdict(fed: &[f64], contract: Contract) -> Option<(f64, bool)> {
    let start = fed.len().saturating_sub(contract.window);
    let end = fed.len().checked_sub(contract.recent)?;
    if end <= start {
        return None;
    }
    let baseline = &fed[start..end];
    let x = *fed.last()?;
    if baseline.len() < contract.min_history {
        return None;
    }
    let (centre, spread) = if contract.robust {
        let median = median_of(baseline.to_vec());
        let mad = median_of(baseline.iter().map(|b| (b - median).abs()).collect());
        (median, 1.4826 * mad)
    } else {
        if baseline.iter().all(|&b| b == baseline[0]) {
            return None;
        }
        // Two-pass around the first value, with the (Σd)²/n correction.
        let n = baseline.len() as f64;
        let first = baseline[0];
        let mean = first + baseline.iter().map(|b| b - first).sum::<f64>() / n;
        let s1: f64 = baseline.iter().map(|b| b - mean).sum();
        let s2: f64 = baseline.iter().map(|b| (b - mean) * (b - mean)).sum();
        (mean, ((s2 - s1 * s1 / n) / (n - 1.0)).sqrt())
    };
    if spread.is_nan() || spread <= 0.0 {
        return None;
    }
    let score = (x - centre) / spread;
    Some((score, score.abs() > contract.z))
}

/// Naive verdicts for a whole series (each value fed once, in order).
pub fn naive_series(values: &[f64], contract: Contract) -> Vec<Option<(f64, bool)>> {
    (1..=values.len())
        .map(|end| naive_verdict(&values[..end], contract))
        .collect()
}

fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * values[n / 2 - 1] + 0.5 * values[n / 2]
    }
}
