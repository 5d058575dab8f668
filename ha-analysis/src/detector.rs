//! The single-series detector contract.

use crate::error::AnalysisError;
use crate::verdict::Verdict;

/// A detector judging one series, value after value.
///
/// `observe` feeds the value (it becomes part of the window) and returns the
/// verdict on it. A non-finite value is rejected with
/// [`AnalysisError::NonFiniteValue`] and leaves the state unchanged.
pub trait WindowDetector {
    /// Feeds `value` and judges it.
    fn observe(&mut self, value: f64) -> Result<Verdict, AnalysisError>;

    /// The threshold on `|score|` above which a reading is an anomaly.
    fn threshold(&self) -> f64;
}
