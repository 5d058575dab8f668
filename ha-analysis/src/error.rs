//! The one error type of this crate.

/// Everything that can go wrong in `ha-analysis`.
///
/// Input problems (a non-finite value, warm-start history out of order) and
/// configuration problems are the caller's to fix; nothing here is transient,
/// so there is no point in retrying the same call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    /// A [`DetectorConfig`](crate::DetectorConfig) field is out of range or
    /// two fields contradict each other.
    #[error("invalid detector config: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field (or the first of two contradicting ones).
        field: &'static str,
        /// What is wrong with it, as a sentence fragment.
        reason: String,
    },
    /// A reading's value is NaN or infinite; it was not fed.
    #[error("value {value} is not finite")]
    NonFiniteValue {
        /// The rejected value.
        value: f64,
    },
    /// Warm-start history must be in strictly increasing `seq` order.
    #[error("warm-start history out of order: seq {seq} after seq {previous}")]
    HistoryOutOfOrder {
        /// The offending `seq`.
        seq: u64,
        /// The `seq` before it.
        previous: u64,
    },
}

impl AnalysisError {
    /// True for configuration errors (fix the config, not the data).
    pub fn is_invalid_config(&self) -> bool {
        matches!(self, Self::InvalidConfig { .. })
    }

    /// True for errors caused by one reading or one history batch; the
    /// detector state is unchanged and later input is still accepted.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::NonFiniteValue { .. } | Self::HistoryOutOfOrder { .. }
        )
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}

/// Rejects NaN and ±inf before they reach any state.
pub(crate) fn check_finite(value: f64) -> Result<f64, AnalysisError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(AnalysisError::NonFiniteValue { value })
    }
}
