//! Detector configuration: window size, recent set, minimum history,
//! threshold and detector kind.

use std::fmt;
use std::str::FromStr;

use statrs::distribution::{ContinuousCDF, Normal};

use crate::AnalysisError;

/// Default margin in σ beyond the previous range for a Kestrel breakout:
/// the best of 0.1 … 3 on the tuning corpus (SKAB; docs/detection.md).
pub const KESTREL_MARGIN: f64 = 0.3;

/// Two-sided false-alarm probability used when neither
/// [`DetectorConfig::false_alarm`] nor [`DetectorConfig::z`] is set.
pub const DEFAULT_FALSE_ALARM: f64 = 1e-4;

/// Largest accepted [`DetectorConfig::window`]: keeps per-series memory
/// bounded (8 MiB) and indices in `u32`.
pub const MAX_WINDOW: usize = 1 << 20;

/// Which statistic judges a reading against its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DetectorKind {
    /// Mean and sample standard deviation of the baseline; O(1) per reading.
    #[default]
    ZScore,
    /// Median and MAD (scaled by 1.4826) of the baseline; one outlier in the
    /// baseline cannot mask the next one. O(W) memmove per reading, no sort.
    Mad,
    /// Breakout of the previous range by a margin in σ, first reading of a
    /// breakout only (see the `kestrel` module). O(1) amortised.
    Kestrel,
}

impl DetectorKind {
    /// Every detector, the recommended one first.
    pub const ALL: [Self; 3] = [Self::Kestrel, Self::ZScore, Self::Mad];

    /// The name used on command lines: `zscore` or `mad`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZScore => "zscore",
            Self::Mad => "mad",
            Self::Kestrel => "kestrel",
        }
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DetectorKind {
    type Err = AnalysisError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zscore" => Ok(Self::ZScore),
            "mad" => Ok(Self::Mad),
            "kestrel" => Ok(Self::Kestrel),
            other => Err(AnalysisError::config(
                "kind",
                format!("must be `kestrel`, `zscore` or `mad`, got `{other}`"),
            )),
        }
    }
}

/// How a series is judged. Plain data: set the fields, then
/// [`validate`](Self::validate) (every constructor in this crate does).
///
/// The window is the newest `window` fed values including the one being
/// judged; the newest `recent` of them are left out of the baseline, the
/// other (up to `window - recent`) form the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// `W`: values kept per series, including the recent set. Default 200.
    pub window: usize,
    /// `k`: newest values left out of the baseline (the reading judged is
    /// one of them when `k ≥ 1`). Default 3.
    pub recent: usize,
    /// Fewest baseline values needed for a verdict. Default 30.
    pub min_history: usize,
    /// Two-sided false-alarm probability `p` in (0, 1); the threshold is
    /// `z = Φ⁻¹(1 − p/2)`. `None` with `z` also `None` means
    /// [`DEFAULT_FALSE_ALARM`]. Setting both is an error.
    pub false_alarm: Option<f64>,
    /// The threshold on `|score|` given directly (> 0), instead of `p`.
    pub z: Option<f64>,
    /// The statistic. Default [`DetectorKind::ZScore`].
    pub kind: DetectorKind,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window: 200,
            recent: 3,
            min_history: 30,
            false_alarm: None,
            z: None,
            kind: DetectorKind::ZScore,
        }
    }
}

impl DetectorConfig {
    /// Checks every field; the error names the first bad one.
    ///
    /// Rules: `window ≥ recent + 2`, `window ≤` [`MAX_WINDOW`],
    /// `2 ≤ min_history ≤ window − recent` (otherwise no verdict could ever
    /// be given), `false_alarm` in (0, 1), `z` finite and > 0, not both.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        self.resolve().map(|_| ())
    }

    /// The threshold on `|score|` this config stands for.
    pub fn z_threshold(&self) -> Result<f64, AnalysisError> {
        self.resolve().map(|r| r.z)
    }

    pub(crate) fn resolve(&self) -> Result<Resolved, AnalysisError> {
        if self.window > MAX_WINDOW {
            return Err(AnalysisError::config(
                "window",
                format!("must be at most {MAX_WINDOW}, got {}", self.window),
            ));
        }
        if self.window < self.recent.saturating_add(2) {
            return Err(AnalysisError::config(
                "window",
                format!(
                    "must be at least recent + 2 = {}, got {}",
                    self.recent.saturating_add(2),
                    self.window
                ),
            ));
        }
        if self.min_history < 2 {
            return Err(AnalysisError::config(
                "min_history",
                format!("must be at least 2, got {}", self.min_history),
            ));
        }
        let baseline = self.window - self.recent;
        if self.min_history > baseline {
            return Err(AnalysisError::config(
                "min_history",
                format!(
                    "must be at most window - recent = {baseline}, got {}",
                    self.min_history
                ),
            ));
        }
        let z = match (self.false_alarm, self.z) {
            (Some(_), Some(_)) => {
                return Err(AnalysisError::config(
                    "false_alarm",
                    "and `z` are both set; give one",
                ));
            }
            (None, Some(z)) if z.is_finite() && z > 0.0 => z,
            (None, Some(z)) => {
                return Err(AnalysisError::config(
                    "z",
                    format!("must be finite and > 0, got {z}"),
                ));
            }
            (p, None) => z_from_false_alarm(p.unwrap_or(DEFAULT_FALSE_ALARM))?,
        };
        let default_z = z_from_false_alarm(DEFAULT_FALSE_ALARM)?;
        Ok(Resolved {
            window: self.window,
            recent: self.recent,
            min_history: self.min_history,
            z,
            kestrel_margin: (KESTREL_MARGIN + (z - default_z)).max(0.1),
            kind: self.kind,
        })
    }
}

/// `z = Φ⁻¹(1 − p/2)`, computed as `−Φ⁻¹(p/2)`: the same number, without
/// rounding `1 − p/2` to 1 for tiny `p`.
fn z_from_false_alarm(p: f64) -> Result<f64, AnalysisError> {
    if !(p > 0.0 && p < 1.0) {
        return Err(AnalysisError::config(
            "false_alarm",
            format!("must be in (0, 1), got {p}"),
        ));
    }
    let normal = Normal::standard();
    let z = -normal.inverse_cdf(p / 2.0);
    if z.is_finite() && z > 0.0 {
        Ok(z)
    } else {
        Err(AnalysisError::config(
            "false_alarm",
            format!("{p} gives no finite threshold"),
        ))
    }
}

/// A validated config with the threshold worked out; shared by every series
/// of a container, so it is not stored per series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) window: usize,
    pub(crate) recent: usize,
    pub(crate) min_history: usize,
    pub(crate) z: f64,
    /// Kestrel's margin: [`KESTREL_MARGIN`] moved by `z`'s distance from the
    /// default threshold.
    pub(crate) kestrel_margin: f64,
    pub(crate) kind: DetectorKind,
}

impl Resolved {
    pub(crate) fn baseline_capacity(&self) -> usize {
        self.window - self.recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_threshold_is_the_documented_z() {
        let z = DetectorConfig::default().z_threshold().unwrap();
        assert!((z - 3.890_591_886_413_094).abs() < 1e-9, "{z}");
    }

    #[test]
    fn p_one_percent() {
        let config = DetectorConfig {
            false_alarm: Some(0.01),
            ..DetectorConfig::default()
        };
        let z = config.z_threshold().unwrap();
        assert!((z - 2.575_829_303_548_901).abs() < 1e-9, "{z}");
    }

    #[test]
    fn rejects_bad_fields() {
        let bad = [
            DetectorConfig {
                window: 4,
                recent: 3,
                ..DetectorConfig::default()
            },
            DetectorConfig {
                min_history: 1,
                ..DetectorConfig::default()
            },
            DetectorConfig {
                min_history: 198,
                ..DetectorConfig::default()
            },
            DetectorConfig {
                false_alarm: Some(0.0),
                ..DetectorConfig::default()
            },
            DetectorConfig {
                false_alarm: Some(1.0),
                ..DetectorConfig::default()
            },
            DetectorConfig {
                false_alarm: Some(f64::NAN),
                ..DetectorConfig::default()
            },
            DetectorConfig {
                z: Some(-1.0),
                ..DetectorConfig::default()
            },
            DetectorConfig {
                z: Some(f64::INFINITY),
                ..DetectorConfig::default()
            },
            DetectorConfig {
                z: Some(3.0),
                false_alarm: Some(0.01),
                ..DetectorConfig::default()
            },
            DetectorConfig {
                window: usize::MAX,
                ..DetectorConfig::default()
            },
            DetectorConfig {
                recent: usize::MAX,
                ..DetectorConfig::default()
            },
        ];
        for config in bad {
            let err = config.validate().unwrap_err();
            assert!(err.is_invalid_config(), "{config:?}: {err}");
        }
    }

    #[test]
    fn accepts_edge_values() {
        let config = DetectorConfig {
            window: 2,
            recent: 0,
            min_history: 2,
            z: Some(1.0),
            ..DetectorConfig::default()
        };
        config.validate().unwrap();
        let tiny_p = DetectorConfig {
            false_alarm: Some(1e-300),
            ..DetectorConfig::default()
        };
        assert!(tiny_p.z_threshold().unwrap() > 30.0);
    }

    #[test]
    fn kestrel_margin_follows_the_threshold() {
        let margin = |config: DetectorConfig| config.resolve().unwrap().kestrel_margin;
        assert_eq!(margin(DetectorConfig::default()), crate::KESTREL_MARGIN);
        let stricter = margin(DetectorConfig {
            z: Some(5.0),
            ..DetectorConfig::default()
        });
        assert!((stricter - (crate::KESTREL_MARGIN + 5.0 - 3.890_591_886_413_094)).abs() < 1e-9);
        let floor = margin(DetectorConfig {
            false_alarm: Some(0.5),
            ..DetectorConfig::default()
        });
        assert_eq!(floor, 0.1);
    }

    #[test]
    fn kind_round_trips() {
        for kind in DetectorKind::ALL {
            assert_eq!(kind.as_str().parse::<DetectorKind>().unwrap(), kind);
        }
        assert!("median".parse::<DetectorKind>().is_err());
    }
}
