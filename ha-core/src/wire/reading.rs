//! A reading and the ingest body that carries readings.

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{ParseError, Rule, ValidationError};
use super::timestamp::{Timestamp, TimestampError};
use super::{
    MAX_BODY_BYTES, MAX_DEVICE_ID_LEN, MAX_FUTURE_SKEW, MAX_METRIC_NAME_LEN, MAX_METRICS,
    MAX_READINGS, MAX_SEQ,
};

/// One named value of a reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The metric's name, e.g. `pulse`.
    pub name: String,
    /// The value; finite in a valid reading.
    pub value: f64,
}

impl Metric {
    /// A metric `name` with `value`.
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Metric {
            name: name.into(),
            value,
        }
    }
}

/// One reading of one device: the unit the pipeline stores, keyed by
/// `(device_id, seq)`; each of its metrics is stored under
/// `(device_id, seq, metric)`.
///
/// On the wire, `metrics` is a JSON object: `{"pulse": 72.5, "spo2": 98}`.
/// A name repeated in that object is refused, never silently overwritten.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// The device, 1–64 characters of `[A-Za-z0-9._:-]`.
    pub device_id: String,
    /// Per-device sequence number assigned by the device, 0 ..= 2^63 − 1.
    pub seq: u64,
    /// When the device took the reading.
    pub ts: Timestamp,
    /// 1–32 named finite values.
    #[serde(
        serialize_with = "serialize_metrics",
        deserialize_with = "deserialize_metrics"
    )]
    pub metrics: Vec<Metric>,
}

impl Reading {
    /// Checks every rule of the wire model except the future-timestamp bound,
    /// which needs a clock: see [`Reading::validate_at`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_device_id(&self.device_id)
            .map_err(|r| ValidationError::new(None, "device_id", r))?;
        if self.seq > MAX_SEQ {
            return Err(ValidationError::new(None, "seq", Rule::SeqRange));
        }
        if self.metrics.is_empty() {
            return Err(ValidationError::new(None, "metrics", Rule::NoMetrics));
        }
        if self.metrics.len() > MAX_METRICS {
            return Err(ValidationError::new(None, "metrics", Rule::TooManyMetrics));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            if !valid_metric_name(&m.name) {
                return Err(ValidationError::new(None, "metrics", Rule::MetricName));
            }
            if self.metrics[..i].iter().any(|o| o.name == m.name) {
                return Err(ValidationError::new(None, "metrics", Rule::MetricName));
            }
            if !m.value.is_finite() {
                return Err(ValidationError::new(
                    None,
                    format!("metrics.{}", m.name),
                    Rule::NonFiniteValue,
                ));
            }
        }
        Ok(())
    }

    /// [`Reading::validate`] plus: `ts` is not more than
    /// [`MAX_FUTURE_SKEW`] after `now`.
    pub fn validate_at(&self, now: Timestamp) -> Result<(), ValidationError> {
        self.validate_in(now, Duration::MAX)
    }

    /// [`Reading::validate_at`] plus: `ts` is not older than `max_age`
    /// before `now` ([`Rule::TsTooOld`]).
    pub fn validate_in(&self, now: Timestamp, max_age: Duration) -> Result<(), ValidationError> {
        self.validate()?;
        if self.ts > now.saturating_add(MAX_FUTURE_SKEW) {
            return Err(ValidationError::new(None, "ts", Rule::TsInFuture));
        }
        if self.ts < now.saturating_sub(max_age) {
            return Err(ValidationError::new(None, "ts", Rule::TsTooOld));
        }
        Ok(())
    }

    /// The value of the metric `name`, if the reading has it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

fn validate_device_id(id: &str) -> Result<(), Rule> {
    if id.is_empty() || id.len() > MAX_DEVICE_ID_LEN {
        return Err(Rule::DeviceIdLength);
    }
    if !id
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
    {
        return Err(Rule::DeviceIdCharset);
    }
    Ok(())
}

/// Whether `id` is a valid device id (1–64 characters of `[A-Za-z0-9._:-]`).
pub fn is_valid_device_id(id: &str) -> bool {
    validate_device_id(id).is_ok()
}

fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_METRIC_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn serialize_metrics<S: Serializer>(metrics: &[Metric], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(metrics.len()))?;
    for m in metrics {
        map.serialize_entry(&m.name, &m.value)?;
    }
    map.end()
}

fn deserialize_metrics<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Metric>, D::Error> {
    let metrics = d.deserialize_map(MetricsVisitor)?;
    if metrics.overflow {
        return Err(de::Error::custom(format_args!(
            "a reading may carry at most {MAX_METRICS} metrics"
        )));
    }
    Ok(metrics.kept)
}

/// The metrics of a reading as parsed: at most [`MAX_METRICS`] kept, and
/// whether the object held more. Past the limit the remaining entries are
/// skipped without being stored or compared, so the work stays linear in
/// the body whatever a client sends (a repeated-name check over 80,000
/// names would otherwise be quadratic).
#[derive(Debug, Default)]
struct ParsedMetrics {
    kept: Vec<Metric>,
    overflow: bool,
}

impl<'de> Deserialize<'de> for ParsedMetrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MetricsVisitor)
    }
}

struct MetricsVisitor;

impl<'de> Visitor<'de> for MetricsVisitor {
    type Value = ParsedMetrics;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of metric names to numbers")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = ParsedMetrics {
            kept: Vec::with_capacity(map.size_hint().unwrap_or(4).min(MAX_METRICS)),
            overflow: false,
        };
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if out.kept.len() == MAX_METRICS {
                // The count rule is a 422 decided in validation; here, skip
                // the rest (values must still be numbers for the JSON to be
                // well-formed, but nothing more is kept or compared).
                out.overflow = true;
                map.next_value::<f64>()?;
                continue;
            }
            // At most MAX_METRICS names are kept, so this stays cheap.
            if out.kept.iter().any(|m| m.name == name) {
                return Err(de::Error::custom(format_args!(
                    "metric `{}` appears more than once",
                    Shortened(&name)
                )));
            }
            let value: f64 = map.next_value()?;
            out.kept.push(Metric {
                name: name.into_owned(),
                value,
            });
        }
        Ok(out)
    }
}

/// A client-supplied string in an error message, cut to 64 characters so
/// that a 1 MiB name does not come back in a 1 MiB error body.
struct Shortened<'a>(&'a str);

impl fmt::Display for Shortened<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(64) {
            Some((cut, _)) => write!(f, "{}...", &self.0[..cut]),
            None => f.write_str(self.0),
        }
    }
}

/// The `readings` array of a body: at most [`MAX_READINGS`] kept; past it
/// the rest is skipped (still checked to be JSON) and only counted, so a
/// body of 20,000 tiny readings costs no more than its bytes.
#[derive(Debug, Default)]
struct ParsedReadings {
    kept: Vec<RawReading>,
    overflow: bool,
}

impl<'de> Deserialize<'de> for ParsedReadings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ReadingsVisitor;

        impl<'de> Visitor<'de> for ReadingsVisitor {
            type Value = ParsedReadings;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of readings")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = ParsedReadings {
                    kept: Vec::with_capacity(seq.size_hint().unwrap_or(1).min(MAX_READINGS)),
                    overflow: false,
                };
                loop {
                    if out.kept.len() == MAX_READINGS {
                        if seq.next_element::<de::IgnoredAny>()?.is_none() {
                            break;
                        }
                        out.overflow = true;
                    } else {
                        match seq.next_element::<RawReading>()? {
                            Some(r) => out.kept.push(r),
                            None => break,
                        }
                    }
                }
                Ok(out)
            }
        }

        d.deserialize_seq(ReadingsVisitor)
    }
}

/// The body of `POST /v1/readings`: `{"readings":[ ... ]}`, 1–1000 readings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IngestBody {
    /// The readings, in the order the device sent them.
    pub readings: Vec<Reading>,
}

/// An ingest body of the right shape, not yet checked against the rules.
///
/// Ingest checks ownership (every reading belongs to the authenticated
/// device, 403) between the shape (400) and the rules (422); this type is
/// that middle step. `ts` is still text, so that a malformed timestamp is a
/// rule violation (422), not a shape error (400).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UncheckedBody {
    readings: ParsedReadings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReading {
    device_id: String,
    seq: u64,
    ts: String,
    metrics: ParsedMetrics,
}

impl UncheckedBody {
    /// Parses the shape of a body. Errors: [`ParseError::TooLarge`],
    /// [`ParseError::Malformed`].
    pub fn parse(body: &[u8]) -> Result<UncheckedBody, ParseError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(ParseError::TooLarge {
                size: body.len(),
                limit: MAX_BODY_BYTES,
            });
        }
        // Path tracking costs on every field; bodies are almost always
        // well-formed, so it runs only to describe a failure (the parse is
        // deterministic: the second one fails at the same place).
        let mut de = serde_json::Deserializer::from_slice(body);
        let raw = match UncheckedBody::deserialize(&mut de) {
            Ok(raw) => raw,
            Err(_) => {
                let mut de = serde_json::Deserializer::from_slice(body);
                return Err(
                    match serde_path_to_error::deserialize::<_, UncheckedBody>(&mut de) {
                        Err(e) => malformed(e),
                        // Unreachable in practice; still an honest 400.
                        Ok(_) => ParseError::Malformed {
                            message: "malformed body".to_owned(),
                            field: None,
                            index: None,
                        },
                    },
                );
            }
        };
        de.end().map_err(|e| ParseError::Malformed {
            message: e.to_string(),
            field: None,
            index: None,
        })?;
        Ok(raw)
    }

    /// The device id of each reading, in body order.
    pub fn device_ids(&self) -> impl Iterator<Item = &str> {
        self.readings.kept.iter().map(|r| r.device_id.as_str())
    }

    /// Checks every rule, with `now` as the server clock for the
    /// future-timestamp bound; the error names the first offending reading.
    pub fn validate(self, now: Timestamp) -> Result<IngestBody, ValidationError> {
        self.validate_in(now, Duration::MAX)
    }

    /// [`UncheckedBody::validate`] plus the age bound: a reading whose `ts`
    /// is older than `max_age` before `now` breaks [`Rule::TsTooOld`].
    pub fn validate_in(
        self,
        now: Timestamp,
        max_age: Duration,
    ) -> Result<IngestBody, ValidationError> {
        if self.readings.kept.is_empty() {
            return Err(ValidationError::new(None, "readings", Rule::NoReadings));
        }
        if self.readings.overflow {
            return Err(ValidationError::new(
                None,
                "readings",
                Rule::TooManyReadings,
            ));
        }
        let mut readings = Vec::with_capacity(self.readings.kept.len());
        for (i, r) in self.readings.kept.into_iter().enumerate() {
            if r.metrics.overflow {
                return Err(ValidationError::new(
                    Some(i),
                    "metrics",
                    Rule::TooManyMetrics,
                ));
            }
            let ts = Timestamp::parse(&r.ts).map_err(|e| {
                let rule = match e {
                    TimestampError::NotUtc => Rule::TsNotUtc,
                    _ => Rule::TsFormat,
                };
                ValidationError::new(Some(i), "ts", rule)
            })?;
            let reading = Reading {
                device_id: r.device_id,
                seq: r.seq,
                ts,
                metrics: r.metrics.kept,
            };
            reading.validate_in(now, max_age).map_err(|mut e| {
                e.index = Some(i);
                e
            })?;
            readings.push(reading);
        }
        Ok(IngestBody { readings })
    }
}

impl IngestBody {
    /// Parses and validates an ingest body against every wire rule, with
    /// `now` as the server clock for the future-timestamp bound.
    ///
    /// Never panics, whatever the input. Errors:
    /// [`ParseError::TooLarge`] over 1 MiB, [`ParseError::Malformed`] for
    /// JSON of the wrong shape (with the JSON path when known),
    /// [`ParseError::Invalid`] for the first reading that breaks a rule.
    pub fn parse(body: &[u8], now: Timestamp) -> Result<IngestBody, ParseError> {
        Ok(UncheckedBody::parse(body)?.validate(now)?)
    }
}

fn malformed(e: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let path = e.path().to_string();
    let index = e.path().iter().find_map(|seg| match seg {
        serde_path_to_error::Segment::Seq { index } => Some(*index),
        _ => None,
    });
    let inner = e.into_inner();
    let field = match path.as_str() {
        "." | "" => None,
        p => Some(p.to_owned()),
    };
    ParseError::Malformed {
        message: inner.to_string(),
        field,
        index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse("2026-11-26T12:00:00Z").unwrap()
    }

    fn parse(s: &str) -> Result<IngestBody, ParseError> {
        IngestBody::parse(s.as_bytes(), now())
    }

    fn rule_of(r: Result<IngestBody, ParseError>) -> (Option<usize>, String, Rule) {
        match r {
            Err(ParseError::Invalid(e)) => (e.index, e.field, e.rule),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn reading(device: &str, seq: u64, ts: &str, metrics: &str) -> String {
        format!(r#"{{"device_id":"{device}","seq":{seq},"ts":"{ts}","metrics":{metrics}}}"#)
    }

    const TS: &str = "2026-11-26T11:59:00Z";

    #[test]
    fn parses_the_documented_example() {
        let body = r#"{"readings":[{"device_id":"dev-00001","seq":17,"ts":"2026-11-26T12:00:00Z","metrics":{"pulse":72.5}}]}"#;
        let b = parse(body).unwrap();
        assert_eq!(b.readings.len(), 1);
        let r = &b.readings[0];
        assert_eq!(r.device_id, "dev-00001");
        assert_eq!(r.seq, 17);
        assert_eq!(r.metric("pulse"), Some(72.5));
        // Serialising gives the same wire form back.
        assert_eq!(serde_json::to_string(&b).unwrap(), body);
    }

    #[test]
    fn shape_errors_are_malformed_with_a_path() {
        let cases = [
            ("not json", None),
            ("", None),
            ("{}", None),
            (r#"{"readings":[],"extra":1}"#, None),
            (
                &format!(
                    r#"{{"readings":[{}]}} trailing"#,
                    reading("d", 1, TS, r#"{"a":1}"#)
                ),
                None,
            ),
            (
                r#"{"readings":[{"device_id":"d","seq":-1,"ts":"x","metrics":{"a":1}}]}"#,
                Some(0),
            ),
            (
                r#"{"readings":[{"device_id":"d","seq":1.5,"ts":"x","metrics":{"a":1}}]}"#,
                Some(0),
            ),
            (
                r#"{"readings":[{"device_id":"d","seq":1,"ts":"x","metrics":{"a":"NaN"}}]}"#,
                Some(0),
            ),
            (
                r#"{"readings":[{"device_id":"d","seq":1,"ts":"x","metrics":{"a":1e400}}]}"#,
                Some(0),
            ),
            (
                r#"{"readings":[{"device_id":"d","seq":1,"ts":"x","metrics":{"a":1,"a":2}}]}"#,
                Some(0),
            ),
            (
                r#"{"readings":[{"device_id":"d","seq":1,"ts":"x","metrics":{"a":1},"z":0}]}"#,
                Some(0),
            ),
            (
                r#"{"readings":[{"device_id":"d","seq":1,"metrics":{"a":1}}]}"#,
                Some(0),
            ),
            (
                r#"{"readings":[{"device_id":"d","seq":18446744073709551616,"ts":"x","metrics":{"a":1}}]}"#,
                Some(0),
            ),
        ];
        for (body, want_index) in cases {
            match parse(body) {
                Err(ParseError::Malformed { index, .. }) => assert_eq!(index, want_index, "{body}"),
                other => panic!("{body}: expected malformed, got {other:?}"),
            }
        }
        // Non-UTF-8 bytes.
        assert!(matches!(
            IngestBody::parse(b"{\"readings\":[\xff]}", now()),
            Err(ParseError::Malformed { .. })
        ));
    }

    #[test]
    fn malformed_error_names_the_field() {
        let body = format!(
            r#"{{"readings":[{},{{"device_id":"d","seq":"7","ts":"x","metrics":{{"a":1}}}}]}}"#,
            reading("d", 1, TS, r#"{"a":1}"#)
        );
        match parse(&body) {
            Err(ParseError::Malformed { field, index, .. }) => {
                assert_eq!(field.as_deref(), Some("readings[1].seq"));
                assert_eq!(index, Some(1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rule_violations_name_index_field_and_rule() {
        let ok = reading("dev-1", 1, TS, r#"{"a":1}"#);
        let body = |second: String| format!(r#"{{"readings":[{ok},{second}]}}"#);
        let long = "x".repeat(65);
        let cases = [
            (
                reading("", 1, TS, r#"{"a":1}"#),
                "device_id",
                Rule::DeviceIdLength,
            ),
            (
                reading(&long, 1, TS, r#"{"a":1}"#),
                "device_id",
                Rule::DeviceIdLength,
            ),
            (
                reading("dev 1", 1, TS, r#"{"a":1}"#),
                "device_id",
                Rule::DeviceIdCharset,
            ),
            (
                reading("dev/1", 1, TS, r#"{"a":1}"#),
                "device_id",
                Rule::DeviceIdCharset,
            ),
            (
                reading("d", 1u64 << 63, TS, r#"{"a":1}"#),
                "seq",
                Rule::SeqRange,
            ),
            (
                reading("d", 1, "yesterday", r#"{"a":1}"#),
                "ts",
                Rule::TsFormat,
            ),
            (
                reading("d", 1, "2026-11-26T12:00:00+01:00", r#"{"a":1}"#),
                "ts",
                Rule::TsNotUtc,
            ),
            (
                reading("d", 1, "2026-11-26T12:05:01Z", r#"{"a":1}"#),
                "ts",
                Rule::TsInFuture,
            ),
            (reading("d", 1, TS, "{}"), "metrics", Rule::NoMetrics),
            (
                reading("d", 1, TS, r#"{"a b":1}"#),
                "metrics",
                Rule::MetricName,
            ),
            (
                reading("d", 1, TS, &format!(r#"{{"{}":1}}"#, "m".repeat(65))),
                "metrics",
                Rule::MetricName,
            ),
        ];
        for (second, field, rule) in cases {
            assert_eq!(
                rule_of(parse(&body(second.clone()))),
                (Some(1), field.to_owned(), rule),
                "{second}"
            );
        }
        let many: Vec<String> = (0..33).map(|i| format!(r#""m{i}":1"#)).collect();
        let r = reading("d", 1, TS, &format!("{{{}}}", many.join(",")));
        assert_eq!(rule_of(parse(&body(r))).2, Rule::TooManyMetrics);
        // Exactly at the limits is fine.
        let max_seq = reading(
            &"x".repeat(64),
            (1u64 << 63) - 1,
            "2026-11-26T12:05:00Z",
            r#"{"a":1}"#,
        );
        assert!(parse(&body(max_seq)).is_ok());
    }

    #[test]
    fn limits_are_enforced_while_parsing() {
        // 80,000 distinct names in one reading: only 32 are kept, the rest
        // skipped; the answer is the count rule (422), not a shape error.
        let names: Vec<String> = (0..80_000).map(|i| format!("\"m{i}\":1")).collect();
        let body = format!(
            r#"{{"readings":[{{"device_id":"d","seq":1,"ts":"{TS}","metrics":{{{}}}}}]}}"#,
            names.join(",")
        );
        let unchecked = UncheckedBody::parse(body.as_bytes()).unwrap();
        assert_eq!(unchecked.readings.kept[0].metrics.kept.len(), MAX_METRICS);
        assert_eq!(
            rule_of(parse(&body)),
            (Some(0), "metrics".into(), Rule::TooManyMetrics)
        );
        // Past the limit values must still be numbers: the JSON is checked.
        let bad = format!(
            r#"{{"readings":[{{"device_id":"d","seq":1,"ts":"{TS}","metrics":{{{},"x":"y"}}}}]}}"#,
            names[..40].join(",")
        );
        assert!(matches!(parse(&bad), Err(ParseError::Malformed { .. })));
        // 5,000 readings: 1,000 kept, the rest only counted.
        let one = reading("d", 1, TS, r#"{"a":1}"#);
        let body = format!(r#"{{"readings":[{}]}}"#, vec![one; 5_000].join(","));
        let unchecked = UncheckedBody::parse(body.as_bytes()).unwrap();
        assert_eq!(unchecked.readings.kept.len(), MAX_READINGS);
        assert_eq!(
            rule_of(parse(&body)),
            (None, "readings".into(), Rule::TooManyReadings)
        );
        // A repeated name in the error message is cut short.
        let long = "n".repeat(10_000);
        let body = format!(
            r#"{{"readings":[{{"device_id":"d","seq":1,"ts":"{TS}","metrics":{{"{long}":1,"{long}":2}}}}]}}"#
        );
        match parse(&body) {
            Err(ParseError::Malformed { message, .. }) => {
                assert!(message.len() < 300, "{} bytes", message.len())
            }
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn too_old_and_future_timestamps_have_their_own_rules() {
        let day = Duration::from_secs(86_400);
        let at = |ts: &str| {
            let body = format!(r#"{{"readings":[{}]}}"#, reading("d", 1, ts, r#"{"a":1}"#));
            UncheckedBody::parse(body.as_bytes())
                .unwrap()
                .validate_in(now(), 30 * day)
        };
        assert!(at("2026-10-28T12:00:01Z").is_ok(), "just inside 30 days");
        let err = at("1971-01-01T00:00:00Z").unwrap_err();
        assert_eq!((err.index, err.rule), (Some(0), Rule::TsTooOld));
        let err = at("2026-11-26T12:06:00Z").unwrap_err();
        assert_eq!(err.rule, Rule::TsInFuture);
        // Without an age bound (the queue's decoder, old callers) it passes.
        let body = format!(
            r#"{{"readings":[{}]}}"#,
            reading("d", 1, "1971-01-01T00:00:00Z", r#"{"a":1}"#)
        );
        assert!(parse(&body).is_ok());
    }

    #[test]
    fn reading_count_limits() {
        assert_eq!(rule_of(parse(r#"{"readings":[]}"#)).2, Rule::NoReadings);
        let one = reading("d", 1, TS, r#"{"a":1}"#);
        let body = |n: usize| format!(r#"{{"readings":[{}]}}"#, vec![one.clone(); n].join(","));
        assert_eq!(parse(&body(1000)).unwrap().readings.len(), 1000);
        assert_eq!(rule_of(parse(&body(1001))).2, Rule::TooManyReadings);
    }

    #[test]
    fn oversized_body_is_refused_before_parsing() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(
            IngestBody::parse(&big, now()),
            Err(ParseError::TooLarge { .. })
        ));
    }

    #[test]
    fn validate_catches_what_json_cannot_carry() {
        let mut r = Reading {
            device_id: "d".into(),
            seq: 1,
            ts: now(),
            metrics: vec![Metric::new("a", f64::NAN)],
        };
        assert_eq!(r.validate().unwrap_err().rule, Rule::NonFiniteValue);
        r.metrics = vec![Metric::new("a", 1.0), Metric::new("a", 2.0)];
        assert_eq!(r.validate().unwrap_err().rule, Rule::MetricName);
        r.metrics = vec![Metric::new("a", f64::INFINITY)];
        assert_eq!(r.validate().unwrap_err().field, "metrics.a");
    }

    #[test]
    fn never_panics_on_truncated_or_mutated_input() {
        let body = format!(
            r#"{{"readings":[{},{}]}}"#,
            reading("dev-1", 1, TS, r#"{"a":1.5,"b":-2e3}"#),
            reading("dev-1", 2, TS, r#"{"a":0}"#)
        );
        let bytes = body.as_bytes();
        for cut in 0..bytes.len() {
            let _ = IngestBody::parse(&bytes[..cut], now());
            let mut mutated = bytes.to_vec();
            for b in [
                b'"', b'{', b'}', b'[', b']', b'0', b'-', b'.', b'e', 0xff, b'\\',
            ] {
                mutated[cut] = b;
                let _ = IngestBody::parse(&mutated, now());
            }
        }
    }
}
