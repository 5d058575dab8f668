//! Conversions between the store's types and SQL parameters and rows.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::store::{Anomaly, StoreError, StoredValue};
use crate::wire::{MAX_SEQ, Reading, Timestamp};

/// A seq as a parameter; refused above the column's range.
pub(super) fn seq_param(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Invalid(format!("seq {seq} is above 2^63-1")))
}

/// Clamps a bound to the stored seq range.
pub(super) fn seq_bound(seq: u64) -> i64 {
    i64::try_from(seq.min(MAX_SEQ)).unwrap_or(i64::MAX)
}

/// A seq column; never negative as written by this store.
pub(super) fn seq_of(row: &Row, i: usize) -> u64 {
    u64::try_from(row.get::<_, i64>(i)).unwrap_or(0)
}

/// A row of [`ANOMALY_COLUMNS`](super::sql::ANOMALY_COLUMNS).
pub(super) fn anomaly_of(row: &Row) -> Anomaly {
    Anomaly {
        device_id: row.get(0),
        seq: seq_of(row, 1),
        metric: row.get(2),
        ts: Timestamp::from(row.get::<_, SystemTime>(3)),
        value: row.get(4),
        score: row.get(5),
        anomaly_score: row.get(6),
        detector: row.get(7),
    }
}

/// A row of [`readings_sql`](super::sql::readings_sql).
pub(super) fn stored_value_of(row: &Row) -> StoredValue {
    StoredValue {
        seq: seq_of(row, 0),
        ts: Timestamp::from(row.get::<_, SystemTime>(1)),
        metric: row.get(2),
        value: row.get(3),
    }
}

/// Column arrays of the write statement, with in-batch duplicates removed
/// (the first copy wins) and counted.
#[derive(Default)]
pub(super) struct WriteColumns {
    pub(super) r_device: Vec<String>,
    r_seq: Vec<i64>,
    r_metric: Vec<String>,
    r_ts: Vec<SystemTime>,
    r_value: Vec<f64>,
    pub(super) a_device: Vec<String>,
    a_seq: Vec<i64>,
    a_metric: Vec<String>,
    a_ts: Vec<SystemTime>,
    a_value: Vec<f64>,
    a_score: Vec<f64>,
    a_anomaly_score: Vec<f64>,
    a_detector: Vec<String>,
    pub(super) in_batch_duplicates: u64,
    pub(super) in_batch_conflicts: u64,
}

impl WriteColumns {
    pub(super) fn build(readings: &[Reading], anomalies: &[Anomaly]) -> Result<Self, StoreError> {
        let mut c = WriteColumns::default();
        let mut seen: HashMap<(&str, u64, &str), (Timestamp, f64)> = HashMap::new();
        let mut rows: Vec<(&str, i64, &str, Timestamp, f64)> = Vec::new();
        for r in readings {
            let seq = seq_param(r.seq)?;
            for m in &r.metrics {
                if !m.value.is_finite() {
                    return Err(StoreError::Invalid(format!(
                        "{}/{}/{}: value {} is not finite",
                        r.device_id, r.seq, m.name, m.value
                    )));
                }
                match seen.get(&(r.device_id.as_str(), r.seq, m.name.as_str())) {
                    Some(&(ts, v)) if ts == r.ts && v == m.value => c.in_batch_duplicates += 1,
                    Some(_) => c.in_batch_conflicts += 1,
                    None => {
                        seen.insert((&r.device_id, r.seq, &m.name), (r.ts, m.value));
                        rows.push((&r.device_id, seq, &m.name, r.ts, m.value));
                    }
                }
            }
        }
        // In key order, each index insert lands next to the previous one
        // (hot pages), and concurrent writers take row locks in one order.
        rows.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        for (device, seq, metric, ts, value) in rows {
            c.r_device.push(device.to_owned());
            c.r_seq.push(seq);
            c.r_metric.push(metric.to_owned());
            c.r_ts.push(ts.into());
            c.r_value.push(value);
        }
        let mut seen_anomalies = HashSet::new();
        for a in anomalies {
            if !seen_anomalies.insert((a.device_id.as_str(), a.seq, a.metric.as_str())) {
                continue;
            }
            c.a_device.push(a.device_id.clone());
            c.a_seq.push(seq_param(a.seq)?);
            c.a_metric.push(a.metric.clone());
            c.a_ts.push(a.ts.into());
            c.a_value.push(a.value);
            c.a_score.push(a.score);
            c.a_anomaly_score.push(a.anomaly_score);
            c.a_detector.push(a.detector.clone());
        }
        Ok(c)
    }

    /// The parameters of [`write_sql`](super::sql::write_sql), in placeholder order.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.r_device,
            &self.r_seq,
            &self.r_metric,
            &self.r_ts,
            &self.r_value,
            &self.a_device,
            &self.a_seq,
            &self.a_metric,
            &self.a_ts,
            &self.a_value,
            &self.a_score,
            &self.a_anomaly_score,
            &self.a_detector,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Metric;

    fn reading(device: &str, seq: u64, metrics: &[(&str, f64)]) -> Reading {
        Reading {
            device_id: device.into(),
            seq,
            ts: Timestamp::from_unix_micros(1_795_694_400_000_000 + seq as i64),
            metrics: metrics.iter().map(|(n, v)| Metric::new(*n, *v)).collect(),
        }
    }

    #[test]
    fn rows_go_in_key_order_and_the_first_copy_wins() {
        let batch = [
            reading("b", 2, &[("x", 1.0)]),
            reading("a", 10, &[("y", 2.0), ("x", 3.0)]),
            reading("b", 1, &[("x", 4.0)]),
            reading("a", 9, &[("x", 5.0)]),
            reading("b", 2, &[("x", 6.0)]),
            reading("b", 1, &[("x", 4.0)]),
        ];
        let c = WriteColumns::build(&batch, &[]).expect("valid batch");
        let keys: Vec<(&str, i64, &str)> = (0..c.r_device.len())
            .map(|i| (c.r_device[i].as_str(), c.r_seq[i], c.r_metric[i].as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("a", 9, "x"),
                ("a", 10, "x"),
                ("a", 10, "y"),
                ("b", 1, "x"),
                ("b", 2, "x")
            ]
        );
        assert_eq!(c.r_value, [5.0, 3.0, 2.0, 4.0, 1.0]);
        assert_eq!((c.in_batch_duplicates, c.in_batch_conflicts), (1, 1));
    }
}
