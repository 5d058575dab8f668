//! Deterministic pseudo-random readings: a pulse around 72 with noise, and
//! spikes far outside it.

/// xorshift64* with Box–Muller normals: small, seeded, good enough for
/// synthetic telemetry (not for cryptography).
pub(super) struct Signal {
    state: u64,
}

/// Standard deviation of the pulse noise.
pub(super) const NOISE: f64 = 2.0;
/// A spike's distance from the mean, in standard deviations (≥ 10σ).
pub(super) const SPIKE_SIGMAS: f64 = 20.0;

impl Signal {
    pub(super) fn new(seed: u64) -> Self {
        Signal { state: seed | 1 }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.uniform() < p
    }

    /// A pulse reading; with `spike`, 20σ above the mean.
    pub(super) fn pulse(&mut self, spike: bool) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let value = 72.0 + NOISE * normal.clamp(-4.0, 4.0);
        if spike {
            72.0 + SPIKE_SIGMAS * NOISE
        } else {
            value
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_seeded_and_spikes_stand_out() {
        let a: Vec<f64> = {
            let mut s = Signal::new(7);
            (0..100).map(|_| s.pulse(false)).collect()
        };
        let b: Vec<f64> = {
            let mut s = Signal::new(7);
            (0..100).map(|_| s.pulse(false)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (64.0..=80.0).contains(v)));
        let mean = a.iter().sum::<f64>() / 100.0;
        assert!((mean - 72.0).abs() < 1.0, "{mean}");
        assert_eq!(Signal::new(1).pulse(true), 112.0);
        let mut s = Signal::new(3);
        let hits = (0..10_000).filter(|_| s.chance(0.1)).count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert!(!Signal::new(3).chance(0.0));
    }
}
