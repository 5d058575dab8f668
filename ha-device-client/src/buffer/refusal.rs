//! [`ClockRefusal`]: the server's clock rules, as the buffer's holding
//! areas are keyed.

use ha_core::wire::Rule;

/// Why the server refused a reading's time stamp: the clock rules of the
/// wire model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClockRefusal {
    /// `ts_in_future`: `ts` is ahead of the server's clock (plus its
    /// tolerance). Retried later.
    InFuture,
    /// `ts_too_old`: `ts` is older than the server's maximum reading age.
    /// Held for the application.
    TooOld,
}

impl ClockRefusal {
    /// Both refusals.
    pub const ALL: [ClockRefusal; 2] = [ClockRefusal::InFuture, ClockRefusal::TooOld];

    /// The refusal a server error code names, if it is a clock rule.
    pub fn from_code(code: &str) -> Option<Self> {
        match Rule::from_code(code).filter(|r| r.is_clock())? {
            Rule::TsInFuture => Some(ClockRefusal::InFuture),
            Rule::TsTooOld => Some(ClockRefusal::TooOld),
            _ => None,
        }
    }

    /// The wire rule.
    pub fn rule(self) -> Rule {
        match self {
            ClockRefusal::InFuture => Rule::TsInFuture,
            ClockRefusal::TooOld => Rule::TsTooOld,
        }
    }

    /// The server's error code (`ts_in_future`, `ts_too_old`).
    pub fn code(self) -> &'static str {
        self.rule().code()
    }
}

impl std::fmt::Display for ClockRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}
