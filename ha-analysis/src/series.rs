//! One series inside a [`SeriesSet`](crate::SeriesSet): `seq` bookkeeping,
//! the idle stamp, and the detector state.

use crate::config::Resolved;
use crate::state::DetectorState;
use crate::{AnalysisError, DetectorKind, Verdict};

/// A series' state; the config is passed in by the owning container.
#[derive(Debug, Clone)]
pub(crate) struct SeriesState {
    /// Newest `seq` fed, `None` before the first reading.
    last_seq: Option<u64>,
    /// The container's tick when this series was last fed or warm-started.
    last_touched: u64,
    detector: DetectorState,
}

impl SeriesState {
    pub(crate) fn new(config: &Resolved, tick: u64) -> Self {
        Self {
            last_seq: None,
            last_touched: tick,
            detector: DetectorState::new(config),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.detector.heap_bytes()
    }

    /// What [`heap_bytes`](Self::heap_bytes) is for every series of `config`.
    pub(crate) fn new_heap_bytes(config: &Resolved) -> usize {
        let floats = match config.kind {
            DetectorKind::ZScore => config.window,
            DetectorKind::Mad => config.window + config.baseline_capacity(),
            DetectorKind::Kestrel => {
                return crate::kestrel::KestrelState::new_heap_bytes(config);
            }
        };
        floats * std::mem::size_of::<f64>()
    }

    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    pub(crate) fn last_touched(&self) -> u64 {
        self.last_touched
    }

    /// Feeds a finite value if `seq` is newer than every `seq` fed so far;
    /// `None` means "not fed".
    pub(crate) fn feed(
        &mut self,
        config: &Resolved,
        tick: u64,
        seq: u64,
        value: f64,
    ) -> Option<Verdict> {
        if self.last_seq.is_some_and(|last| seq <= last) {
            return None;
        }
        self.last_seq = Some(seq);
        self.last_touched = tick;
        Some(self.detector.observe(config, value))
    }

    /// A fresh series holding `history` (strictly increasing `seq`, finite
    /// values), or the first problem found.
    pub(crate) fn from_history(
        config: &Resolved,
        tick: u64,
        history: impl IntoIterator<Item = (u64, f64)>,
    ) -> Result<(Self, usize), AnalysisError> {
        let mut series = Self::new(config, tick);
        let mut count = 0;
        for (seq, value) in history {
            let value = crate::error::check_finite(value)?;
            if let Some(previous) = series.last_seq.filter(|&last| seq <= last) {
                return Err(AnalysisError::HistoryOutOfOrder { seq, previous });
            }
            series.last_seq = Some(seq);
            series.detector.push(config, value);
            count += 1;
        }
        Ok((series, count))
    }
}
