//! Errors of the wire model: why a body or a reading was refused.

use std::fmt;

/// The rule a well-formed reading or body broke. Each rule has a stable
/// machine-readable [`code`](Rule::code) used in HTTP error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The body holds no readings.
    NoReadings,
    /// The body holds more than [`MAX_READINGS`](super::MAX_READINGS) readings.
    TooManyReadings,
    /// `device_id` is empty or longer than 64 bytes.
    DeviceIdLength,
    /// `device_id` holds a character outside `[A-Za-z0-9._:-]`.
    DeviceIdCharset,
    /// `seq` is greater than 2^63 − 1.
    SeqRange,
    /// `ts` is not RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fff]Z`).
    TsFormat,
    /// `ts` has an offset other than `Z` / `+00:00`.
    TsNotUtc,
    /// `ts` is more than [`MAX_FUTURE_SKEW`](super::MAX_FUTURE_SKEW) ahead of the server clock.
    TsInFuture,
    /// `ts` is older than the ingest's maximum reading age (`--max-reading-age`,
    /// 30 days by default): it would fall to the next retention run.
    TsTooOld,
    /// `metrics` is empty.
    NoMetrics,
    /// `metrics` has more than [`MAX_METRICS`](super::MAX_METRICS) entries.
    TooManyMetrics,
    /// A metric name is empty, longer than 64 bytes, or outside `[A-Za-z0-9_.-]`.
    MetricName,
    /// A metric value is NaN or infinite.
    NonFiniteValue,
}

impl Rule {
    /// The stable code of this rule, as used in the `error` field of HTTP
    /// error bodies.
    pub fn code(self) -> &'static str {
        match self {
            Rule::NoReadings => "no_readings",
            Rule::TooManyReadings => "too_many_readings",
            Rule::DeviceIdLength => "device_id_length",
            Rule::DeviceIdCharset => "device_id_charset",
            Rule::SeqRange => "seq_out_of_range",
            Rule::TsFormat => "ts_format",
            Rule::TsNotUtc => "ts_not_utc",
            Rule::TsInFuture => "ts_in_future",
            Rule::TsTooOld => "ts_too_old",
            Rule::NoMetrics => "no_metrics",
            Rule::TooManyMetrics => "too_many_metrics",
            Rule::MetricName => "metric_name",
            Rule::NonFiniteValue => "non_finite_value",
        }
    }

    /// Every rule, in declaration order.
    pub const ALL: [Rule; 13] = [
        Rule::NoReadings,
        Rule::TooManyReadings,
        Rule::DeviceIdLength,
        Rule::DeviceIdCharset,
        Rule::SeqRange,
        Rule::TsFormat,
        Rule::TsNotUtc,
        Rule::TsInFuture,
        Rule::TsTooOld,
        Rule::NoMetrics,
        Rule::TooManyMetrics,
        Rule::MetricName,
        Rule::NonFiniteValue,
    ];

    /// The rule whose [`code`](Rule::code) is `code`, if any: lets clients
    /// act on a server's answer without matching strings.
    pub fn from_code(code: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Whether the reading was refused for its clock (`ts_in_future`,
    /// `ts_too_old`) rather than for being malformed: the same reading may be
    /// welcome once the device's clock is fixed.
    pub fn is_clock(self) -> bool {
        matches!(self, Rule::TsInFuture | Rule::TsTooOld)
    }

    /// A human-readable statement of the rule.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::NoReadings => "the body must hold at least one reading",
            Rule::TooManyReadings => "the body may hold at most 1000 readings",
            Rule::DeviceIdLength => "device_id must be 1 to 64 characters long",
            Rule::DeviceIdCharset => "device_id may only contain [A-Za-z0-9._:-]",
            Rule::SeqRange => "seq must be at most 9223372036854775807 (2^63 - 1)",
            Rule::TsFormat => "ts must be an RFC 3339 timestamp such as 2026-11-26T12:00:00Z",
            Rule::TsNotUtc => "ts must be in UTC (offset Z or +00:00)",
            Rule::TsInFuture => "ts must not be more than 5 minutes in the future",
            Rule::TsTooOld => "ts must not be older than the server's maximum reading age",
            Rule::NoMetrics => "a reading must carry at least one metric",
            Rule::TooManyMetrics => "a reading may carry at most 32 metrics",
            Rule::MetricName => "metric names must be 1 to 64 characters of [A-Za-z0-9_.-]",
            Rule::NonFiniteValue => "metric values must be finite numbers",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A well-formed body or reading that breaks a [`Rule`] (HTTP 422).
///
/// Names the reading (`index` in the body, when there is a body) and the
/// field (`device_id`, `seq`, `ts`, `metrics`, `metrics.<name>`, `readings`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {rule}", self.location())]
pub struct ValidationError {
    /// Position of the reading in the body's `readings` array, if any.
    pub index: Option<usize>,
    /// The offending field.
    pub field: String,
    /// The rule that was broken.
    pub rule: Rule,
}

impl ValidationError {
    pub(crate) fn new(index: Option<usize>, field: impl Into<String>, rule: Rule) -> Self {
        ValidationError {
            index,
            field: field.into(),
            rule,
        }
    }

    fn location(&self) -> String {
        match self.index {
            Some(i) => format!("readings[{i}].{}", self.field),
            None => self.field.clone(),
        }
    }
}

/// Why an ingest body was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is larger than [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES) (HTTP 413).
    #[error("body is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Size of the body in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Not UTF-8 JSON of the expected shape: syntax errors, wrong types
    /// (including negative or fractional `seq`, strings for numbers), missing
    /// or unknown fields, a repeated metric name, a number out of `f64`
    /// range (HTTP 400).
    #[error("malformed body{}: {message}", field.as_deref().map(|f| format!(" at {f}")).unwrap_or_default())]
    Malformed {
        /// What the parser found.
        message: String,
        /// JSON path of the offending value, e.g. `readings[2].seq`, when known.
        field: Option<String>,
        /// Position of the reading in `readings`, when the error is inside one.
        index: Option<usize>,
    },
    /// Well-formed, but a reading breaks a rule (HTTP 422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

#[cfg(test)]
mod tests {
    use super::Rule;

    #[test]
    fn every_code_parses_back_to_its_rule() {
        for rule in Rule::ALL {
            assert_eq!(Rule::from_code(rule.code()), Some(rule));
        }
        assert_eq!(Rule::from_code("no_such_rule"), None);
        let clock: Vec<_> = Rule::ALL.into_iter().filter(|r| r.is_clock()).collect();
        assert_eq!(clock, [Rule::TsInFuture, Rule::TsTooOld]);
    }
}
