//! The per-kind state a container keeps for each series: one enum, so a
//! series set of any detector kind stores its series inline.

use crate::config::{DetectorKind, Resolved};
use crate::kestrel::KestrelState;
use crate::robust::MadState;
use crate::verdict::Verdict;
use crate::zscore::ZScoreState;

/// The state of one series, whichever the detector kind.
#[derive(Debug, Clone)]
pub(crate) enum DetectorState {
    ZScore(ZScoreState),
    Mad(MadState),
    Kestrel(KestrelState),
}

impl DetectorState {
    pub(crate) fn new(config: &Resolved) -> Self {
        match config.kind {
            DetectorKind::ZScore => Self::ZScore(ZScoreState::new(config)),
            DetectorKind::Mad => Self::Mad(MadState::new(config)),
            DetectorKind::Kestrel => Self::Kestrel(KestrelState::new(config)),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Self::ZScore(state) => state.heap_bytes(),
            Self::Mad(state) => state.heap_bytes(),
            Self::Kestrel(state) => state.heap_bytes(),
        }
    }

    /// `value` must be finite.
    pub(crate) fn push(&mut self, config: &Resolved, value: f64) {
        match self {
            Self::ZScore(state) => state.push(config, value),
            Self::Mad(state) => state.push(config, value),
            Self::Kestrel(state) => state.push(config, value),
        }
    }

    /// `value` must be finite.
    pub(crate) fn observe(&mut self, config: &Resolved, value: f64) -> Verdict {
        match self {
            Self::ZScore(state) => state.observe(config, value),
            Self::Mad(state) => state.observe(config, value),
            Self::Kestrel(state) => state.observe(config, value),
        }
    }
}
