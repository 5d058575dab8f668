//! Values passed to and returned by the [`Store`](super::Store).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::wire::Timestamp;

/// A reading's metric judged anomalous, keyed like readings by
/// `(device_id, seq, metric)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The device.
    pub device_id: String,
    /// The reading's sequence number.
    pub seq: u64,
    /// The metric judged anomalous.
    pub metric: String,
    /// The reading's timestamp.
    pub ts: Timestamp,
    /// The metric's value.
    pub value: f64,
    /// The detector's score, e.g. a z-score.
    pub score: f64,
    /// Strength of evidence in [0, 1): `L / (1 + L)`, `L = −log10 p` of the
    /// two-sided p-value (see `ha_analysis::Verdict::anomaly_score`; rows
    /// written by 0.1.0 hold `1 − p`).
    pub anomaly_score: f64,
    /// Which detector judged it, e.g. `zscore`.
    pub detector: String,
}

impl Anomaly {
    /// The anomaly's position in the anomalies order, for pagination.
    pub fn cursor(&self) -> AnomalyCursor {
        AnomalyCursor {
            ts: self.ts,
            device_id: self.device_id.clone(),
            seq: self.seq,
            metric: self.metric.clone(),
        }
    }
}

/// What a [`Store::write`](super::Store::write) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriteOutcome {
    /// Metric rows written for the first time.
    pub inserted: u64,
    /// Metric rows already stored with the same `ts` and value.
    pub duplicates: u64,
    /// Metric rows already stored with a different `ts` or value: the stored
    /// copy was kept.
    pub conflicts: u64,
    /// Anomalies written for the first time.
    pub anomalies_inserted: u64,
}

impl std::ops::AddAssign for WriteOutcome {
    fn add_assign(&mut self, o: WriteOutcome) {
        self.inserted += o.inserted;
        self.duplicates += o.duplicates;
        self.conflicts += o.conflicts;
        self.anomalies_inserted += o.anomalies_inserted;
    }
}

/// A position in the anomalies order `(ts, device_id, seq, metric)`
/// descending. Its text form (`Display`/`FromStr`) is what APIs hand out as
/// an opaque `cursor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnomalyCursor {
    /// Timestamp of the last anomaly seen.
    pub ts: Timestamp,
    /// Its device.
    pub device_id: String,
    /// Its seq.
    pub seq: u64,
    /// Its metric.
    pub metric: String,
}

impl fmt::Display for AnomalyCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Commas never occur in device ids or metric names.
        write!(
            f,
            "{},{},{},{}",
            self.ts.unix_micros(),
            self.seq,
            self.device_id,
            self.metric
        )
    }
}

impl FromStr for AnomalyCursor {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::InvalidQuery(format!("malformed cursor `{s}`"));
        let mut parts = s.splitn(4, ',');
        let ts = parts
            .next()
            .and_then(|p| p.parse::<i64>().ok())
            .ok_or_else(bad)?;
        let seq = parts
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(bad)?;
        let device_id = parts.next().ok_or_else(bad)?.to_owned();
        let metric = parts.next().ok_or_else(bad)?.to_owned();
        if metric.contains(',') || seq > crate::wire::MAX_SEQ {
            return Err(bad());
        }
        Ok(AnomalyCursor {
            ts: Timestamp::from_unix_micros(ts),
            device_id,
            seq,
            metric,
        })
    }
}

/// Filters and page position for [`Store::anomalies`](super::Store::anomalies).
#[derive(Clone, Debug, Default)]
pub struct AnomalyQuery {
    /// Only this device.
    pub device_id: Option<String>,
    /// Only this metric.
    pub metric: Option<String>,
    /// Only `ts >= from`.
    pub from: Option<Timestamp>,
    /// Only `ts < to`.
    pub to: Option<Timestamp>,
    /// Start after this position (from [`Page::next`]).
    pub after: Option<AnomalyCursor>,
    /// Page size, 1 ..= 1000 (0 is taken as 1, larger as 1000).
    pub limit: u32,
}

impl AnomalyQuery {
    /// The page size actually used.
    pub fn effective_limit(&self) -> u32 {
        self.limit.clamp(1, 1000)
    }

    /// Whether `a` passes the filters (not the cursor).
    pub(crate) fn matches(&self, a: &Anomaly) -> bool {
        self.device_id.as_ref().is_none_or(|d| *d == a.device_id)
            && self.metric.as_ref().is_none_or(|m| *m == a.metric)
            && self.from.is_none_or(|f| a.ts >= f)
            && self.to.is_none_or(|t| a.ts < t)
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    #[serde(serialize_with = "serialize_cursor")]
    pub next: Option<AnomalyCursor>,
}

fn serialize_cursor<S: serde::Serializer>(
    c: &Option<AnomalyCursor>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.collect_str(c),
        None => s.serialize_none(),
    }
}

/// A device's values in a time range: see
/// [`Store::readings`](super::Store::readings).
#[derive(Clone, Debug)]
pub struct ReadingQuery {
    /// The device.
    pub device_id: String,
    /// Only this metric, if set.
    pub metric: Option<String>,
    /// Only `ts >= from`.
    pub from: Timestamp,
    /// Only `ts < to`.
    pub to: Timestamp,
    /// Most rows returned.
    pub limit: u32,
}

/// One stored metric value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredValue {
    /// The reading's seq.
    pub seq: u64,
    /// The reading's timestamp.
    pub ts: Timestamp,
    /// The metric.
    pub metric: String,
    /// The value.
    pub value: f64,
}

/// Freshness of one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    /// The device.
    pub device_id: String,
    /// The newest reading timestamp stored.
    pub last_seen: Timestamp,
    /// The highest seq stored.
    pub last_seq: u64,
}

/// An inclusive range of missing sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SeqGap {
    /// First missing seq.
    pub from: u64,
    /// Last missing seq.
    pub to: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = AnomalyCursor {
            ts: Timestamp::from_unix_micros(-5),
            device_id: "dev:1.a-b".into(),
            seq: 42,
            metric: "heart.rate-1".into(),
        };
        assert_eq!(c.to_string().parse::<AnomalyCursor>().unwrap(), c);
        for bad in ["", "1", "1,2", "1,2,d", "x,2,d,m", "1,-2,d,m", "1,2,d,m,n"] {
            assert!(bad.parse::<AnomalyCursor>().is_err(), "{bad}");
        }
    }
}
