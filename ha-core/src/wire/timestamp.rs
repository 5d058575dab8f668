//! UTC timestamps in RFC 3339 form, stored as microseconds since the Unix epoch.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A point in time, UTC, with microsecond precision (what PostgreSQL and
/// CockroachDB keep in a `TIMESTAMPTZ`).
///
/// The wire form is RFC 3339 with a `Z` or `+00:00` offset, e.g.
/// `2026-11-26T12:00:00Z` or `2026-11-26T12:00:00.250+00:00`. Fractions of
/// up to nine digits are accepted; digits past the sixth are truncated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    micros: i64,
}

/// Why a string is not an accepted timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// Not of the form `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`, or a
    /// field out of its range (month 13, 30 February, hour 24, ...).
    #[error("not an RFC 3339 timestamp (expected YYYY-MM-DDTHH:MM:SS[.fff]Z)")]
    Format,
    /// A well-formed RFC 3339 timestamp whose offset is not UTC.
    #[error("timestamp offset must be UTC (`Z` or `+00:00`)")]
    NotUtc,
}

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp { micros: 0 };

    /// A timestamp `micros` microseconds after (or before, if negative) the epoch.
    pub const fn from_unix_micros(micros: i64) -> Self {
        Timestamp { micros }
    }

    /// Microseconds since the Unix epoch.
    pub const fn unix_micros(self) -> i64 {
        self.micros
    }

    /// The current time of the system clock.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// This timestamp moved later by `d` (saturating).
    pub fn saturating_add(self, d: Duration) -> Self {
        let add = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Timestamp {
            micros: self.micros.saturating_add(add),
        }
    }

    /// This timestamp moved earlier by `d` (saturating).
    pub fn saturating_sub(self, d: Duration) -> Self {
        let sub = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Timestamp {
            micros: self.micros.saturating_sub(sub),
        }
    }

    /// Parses the RFC 3339 wire form. Only UTC offsets are accepted.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(TimestampError::Format);
        }
        let year = digits(b, 0, 4)?;
        let month = digits(b, 5, 2)?;
        let day = digits(b, 8, 2)?;
        let hour = digits(b, 11, 2)?;
        let minute = digits(b, 14, 2)?;
        let second = digits(b, 17, 2)?;
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' {
            return Err(TimestampError::Format);
        }
        if b[16] != b':' {
            return Err(TimestampError::Format);
        }
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(TimestampError::Format);
        }
        let mut pos = 19;
        let mut fraction_micros = 0i64;
        if b[pos] == b'.' {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            let n = pos - start;
            if n == 0 || n > 9 {
                return Err(TimestampError::Format);
            }
            for i in 0..6 {
                let d = if i < n {
                    i64::from(b[start + i] - b'0')
                } else {
                    0
                };
                fraction_micros = fraction_micros * 10 + d;
            }
        }
        match &b[pos..] {
            b"Z" | b"z" | b"+00:00" => {}
            [b'+' | b'-', h1, h2, b':', m1, m2]
                if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
            {
                return Err(TimestampError::NotUtc);
            }
            _ => return Err(TimestampError::Format),
        }
        let days = days_from_civil(year, month, day);
        let secs = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second;
        Ok(Timestamp {
            micros: secs * MICROS_PER_SECOND + fraction_micros,
        })
    }
}

fn digits(b: &[u8], start: usize, len: usize) -> Result<i64, TimestampError> {
    let mut v = 0i64;
    for &c in &b[start..start + len] {
        if !c.is_ascii_digit() {
            return Err(TimestampError::Format);
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Ok(v)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    /// Formats as RFC 3339 UTC: `2026-11-26T12:00:00Z`, with a six-digit
    /// fraction only when the sub-second part is not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.micros.div_euclid(MICROS_PER_SECOND);
        let frac = self.micros.rem_euclid(MICROS_PER_SECOND);
        let days = secs.div_euclid(SECONDS_PER_DAY);
        let sod = secs.rem_euclid(SECONDS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60
        )?;
        if frac != 0 {
            write!(f, ".{frac:06}")?;
        }
        f.write_str("Z")
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Timestamp { micros }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.micros >= 0 {
            UNIX_EPOCH + Duration::from_micros(t.micros.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_micros(t.micros.unsigned_abs())
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_z_and_zero_offset() {
        let a = Timestamp::parse("2026-11-26T12:00:00Z").unwrap();
        let b = Timestamp::parse("2026-11-26T12:00:00+00:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.unix_micros(), 1_795_694_400_000_000);
    }

    #[test]
    fn fraction_is_kept_to_the_microsecond() {
        let t = Timestamp::parse("1970-01-01T00:00:01.123456789Z").unwrap();
        assert_eq!(t.unix_micros(), 1_123_456);
        let t = Timestamp::parse("1970-01-01T00:00:00.5Z").unwrap();
        assert_eq!(t.unix_micros(), 500_000);
    }

    #[test]
    fn rejects_other_offsets_and_bad_fields() {
        assert_eq!(
            Timestamp::parse("2026-11-26T12:00:00+01:00"),
            Err(TimestampError::NotUtc)
        );
        for bad in [
            "",
            "2026-11-26",
            "2026-11-26 12:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T12:00:60Z",
            "2026-11-26T12:00:00",
            "2026-11-26T12:00:00.Z",
            "2026-11-26T12:00:00.1234567890Z",
            "2026-11-26T12:00:00ZZ",
            "+026-11-26T12:00:00Z",
            "2026-11-26T12:00:00\u{e9}",
        ] {
            assert_eq!(Timestamp::parse(bad), Err(TimestampError::Format), "{bad}");
        }
        assert!(Timestamp::parse("2024-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "2026-11-26T12:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.000001Z",
            "2000-02-29T08:09:10.250000Z",
        ] {
            let t = Timestamp::parse(s).unwrap();
            assert_eq!(t.to_string(), s);
            assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }
    }

    #[test]
    fn system_time_round_trips() {
        let t = Timestamp::from_unix_micros(-1_500_000);
        assert_eq!(Timestamp::from(SystemTime::from(t)), t);
        let t = Timestamp::from_unix_micros(1_795_694_400_123_456);
        assert_eq!(Timestamp::from(SystemTime::from(t)), t);
    }
}
