//! In-memory [`Store`] with the same semantics as the database backends.
//! Nothing survives the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    Anomaly, AnomalyQuery, DeviceStatus, EpochRecord, Fence, Page, ReadingQuery, SeqGap, Store,
    StoreError, StoredValue, WriteOutcome,
};
use crate::wire::{Reading, Timestamp};

type Key = (String, u64, String);

/// In-memory store: see the [module docs](self). Cheap to clone; clones
/// share the data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Tables>>,
    failure: Arc<Mutex<Option<WriteFailure>>>,
}

/// A failure [`MemoryStore::set_write_failure`] injects into writes, for
/// testing how callers handle each class of error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFailure {
    /// `true`: [`StoreError::Invalid`] (permanent, like SQLSTATE class 22);
    /// `false`: [`StoreError::Unavailable`] (transient, like a lost
    /// connection).
    pub permanent: bool,
    /// Only writes holding a reading of this device fail; `None`: every
    /// write.
    pub device_id: Option<String>,
}

#[derive(Default)]
struct Tables {
    readings: BTreeMap<Key, (Timestamp, f64)>,
    anomalies: HashMap<Key, Anomaly>,
    /// `(ts, device_id, seq, metric)`: the anomalies listing order.
    anomaly_order: BTreeSet<(Timestamp, String, u64, String)>,
    /// `(group, member)` → lease expiry.
    members: BTreeMap<(String, String), tokio::time::Instant>,
    /// `(group, partition, epoch)` → the epoch's record.
    epochs: BTreeMap<(String, u32, u64), EpochRecord>,
}

impl Tables {
    /// The rows of a validated batch; see [`Store::write`].
    fn write_rows(&mut self, readings: &[Reading], anomalies: &[Anomaly]) -> WriteOutcome {
        let mut out = WriteOutcome::default();
        for r in readings {
            for m in &r.metrics {
                let key = (r.device_id.clone(), r.seq, m.name.clone());
                match self.readings.get(&key) {
                    None => {
                        self.readings.insert(key, (r.ts, m.value));
                        out.inserted += 1;
                    }
                    Some(&(ts, v)) if ts == r.ts && v == m.value => out.duplicates += 1,
                    Some(_) => out.conflicts += 1,
                }
            }
        }
        for a in anomalies {
            let key = (a.device_id.clone(), a.seq, a.metric.clone());
            if !self.anomalies.contains_key(&key) {
                self.anomaly_order
                    .insert((a.ts, a.device_id.clone(), a.seq, a.metric.clone()));
                self.anomalies.insert(key, a.clone());
                out.anomalies_inserted += 1;
            }
        }
        out
    }

    /// The current epoch of a partition, if claimed.
    fn current_epoch(&mut self, group: &str, partition: u32) -> Option<&mut EpochRecord> {
        let lo = (group.to_owned(), partition, 0);
        let hi = (group.to_owned(), partition, u64::MAX);
        self.epochs
            .range_mut(lo..=hi)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.superseded_at.is_none())
    }
}

fn check_seqs(readings: &[Reading]) -> Result<(), StoreError> {
    for r in readings {
        if r.seq > crate::wire::MAX_SEQ {
            return Err(StoreError::Invalid(format!("seq {} out of range", r.seq)));
        }
    }
    Ok(())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes matching writes fail (nothing of them is stored) until called
    /// again with `None`.
    pub fn set_write_failure(&self, failure: Option<WriteFailure>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }

    fn injected_failure(&self, readings: &[Reading]) -> Option<StoreError> {
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        let f = failure.as_ref()?;
        let hit = match &f.device_id {
            None => true,
            Some(d) => readings.iter().any(|r| &r.device_id == d),
        };
        match (hit, f.permanent) {
            (false, _) => None,
            (true, true) => Some(StoreError::Invalid("injected permanent failure".into())),
            (true, false) => Some(StoreError::Unavailable("injected transient failure".into())),
        }
    }

    /// Number of stored metric rows.
    pub fn reading_rows(&self) -> usize {
        self.tables().readings.len()
    }

    /// Number of stored anomalies.
    pub fn anomaly_rows(&self) -> usize {
        self.tables().anomalies.len()
    }
}

fn device_range(device_id: &str) -> (Bound<Key>, Bound<Key>) {
    (
        Bound::Included((device_id.to_owned(), 0, String::new())),
        Bound::Included((device_id.to_owned(), u64::MAX, "\u{10ffff}".to_owned())),
    )
}

fn recent_in(
    t: &Tables,
    device_id: &str,
    metric: &str,
    before_seq: u64,
    limit: u32,
) -> Vec<(u64, f64)> {
    let (lo, _) = device_range(device_id);
    let hi = Bound::Excluded((device_id.to_owned(), before_seq, String::new()));
    let mut out: Vec<(u64, f64)> = t
        .readings
        .range((lo, hi))
        .rev()
        .filter(|((_, _, m), _)| m == metric)
        .take(limit as usize)
        .map(|((_, seq, _), (_, v))| (*seq, *v))
        .collect();
    out.reverse();
    out
}

#[async_trait]
impl Store for MemoryStore {
    async fn write(
        &self,
        readings: &[Reading],
        anomalies: &[Anomaly],
    ) -> Result<WriteOutcome, StoreError> {
        if let Some(e) = self.injected_failure(readings) {
            return Err(e);
        }
        check_seqs(readings)?;
        Ok(self.tables().write_rows(readings, anomalies))
    }

    async fn recent_values(
        &self,
        device_id: &str,
        metric: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, f64)>, StoreError> {
        Ok(recent_in(
            &self.tables(),
            device_id,
            metric,
            before_seq,
            limit,
        ))
    }

    async fn recent_values_many(
        &self,
        series: &[(String, String, u64)],
        limit: u32,
    ) -> Result<Vec<Vec<(u64, f64)>>, StoreError> {
        let t = self.tables();
        Ok(series
            .iter()
            .map(|(device, metric, before)| recent_in(&t, device, metric, *before, limit))
            .collect())
    }

    async fn anomalies(&self, query: &AnomalyQuery) -> Result<Page<Anomaly>, StoreError> {
        let t = self.tables();
        let limit = query.effective_limit() as usize;
        let upper = match &query.after {
            Some(c) => Bound::Excluded((c.ts, c.device_id.clone(), c.seq, c.metric.clone())),
            None => Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut more = false;
        for (_, device_id, seq, metric) in t.anomaly_order.range((Bound::Unbounded, upper)).rev() {
            let Some(a) = t.anomalies.get(&(device_id.clone(), *seq, metric.clone())) else {
                continue;
            };
            if !query.matches(a) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(a.clone());
        }
        let next = if more {
            items.last().map(Anomaly::cursor)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn readings(&self, query: &ReadingQuery) -> Result<Vec<StoredValue>, StoreError> {
        let t = self.tables();
        let mut out: Vec<StoredValue> = t
            .readings
            .range(device_range(&query.device_id))
            .filter(|((_, _, m), (ts, _))| {
                *ts >= query.from
                    && *ts < query.to
                    && query.metric.as_ref().is_none_or(|want| want == m)
            })
            .map(|((_, seq, metric), (ts, value))| StoredValue {
                seq: *seq,
                ts: *ts,
                metric: metric.clone(),
                value: *value,
            })
            .collect();
        out.sort_by(|a, b| (a.ts, a.seq, &a.metric).cmp(&(b.ts, b.seq, &b.metric)));
        out.truncate(query.limit as usize);
        Ok(out)
    }

    async fn device_status(&self, device_id: &str) -> Result<Option<DeviceStatus>, StoreError> {
        let t = self.tables();
        let mut status: Option<DeviceStatus> = None;
        for ((_, seq, _), (ts, _)) in t.readings.range(device_range(device_id)) {
            let s = status.get_or_insert_with(|| DeviceStatus {
                device_id: device_id.to_owned(),
                last_seen: *ts,
                last_seq: *seq,
            });
            s.last_seen = s.last_seen.max(*ts);
            s.last_seq = s.last_seq.max(*seq);
        }
        Ok(status)
    }

    async fn seq_gaps(
        &self,
        device_id: &str,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<SeqGap>, StoreError> {
        let t = self.tables();
        let mut gaps = Vec::new();
        let mut prev: Option<u64> = None;
        for ((_, seq, _), _) in t.readings.range(device_range(device_id)) {
            if *seq < from_seq || *seq > to_seq || prev == Some(*seq) {
                continue;
            }
            if let Some(p) = prev
                && *seq > p + 1
            {
                if gaps.len() == limit as usize {
                    break;
                }
                gaps.push(SeqGap {
                    from: p + 1,
                    to: seq - 1,
                });
            }
            prev = Some(*seq);
        }
        Ok(gaps)
    }

    async fn delete_readings_before(
        &self,
        cutoff: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let mut t = self.tables();
        let doomed: Vec<Key> = t
            .readings
            .iter()
            .filter(|(_, (ts, _))| *ts < cutoff)
            .take(batch as usize)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            t.readings.remove(k);
        }
        Ok(doomed.len() as u64)
    }

    async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        ttl: std::time::Duration,
    ) -> Result<Vec<String>, StoreError> {
        let mut t = self.tables();
        let now = tokio::time::Instant::now();
        t.members
            .insert((group.to_owned(), member.to_owned()), now + ttl);
        t.members.retain(|_, expires| *expires > now);
        Ok(t.members
            .keys()
            .filter(|(g, _)| g == group)
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn leave(&self, group: &str, member: &str) -> Result<(), StoreError> {
        self.tables()
            .members
            .remove(&(group.to_owned(), member.to_owned()));
        Ok(())
    }

    async fn claim_partition(
        &self,
        group: &str,
        partition: u32,
        owner: &str,
    ) -> Result<Fence, StoreError> {
        let mut t = self.tables();
        let now = Timestamp::now();
        let lo = (group.to_owned(), partition, 0);
        let hi = (group.to_owned(), partition, u64::MAX);
        let newest = t.epochs.range(lo..=hi).next_back().map_or(0, |(k, _)| k.2);
        if let Some(current) = t.current_epoch(group, partition) {
            current.superseded_at = Some(now);
        }
        let epoch = newest + 1;
        t.epochs.insert(
            (group.to_owned(), partition, epoch),
            EpochRecord {
                partition,
                epoch,
                owner: owner.to_owned(),
                claimed_at: now,
                superseded_at: None,
                first_commit_at: None,
                last_commit_at: None,
                batches: 0,
            },
        );
        Ok(Fence {
            group: group.to_owned(),
            partition,
            epoch,
            owner: owner.to_owned(),
        })
    }

    async fn write_fenced(
        &self,
        fence: &Fence,
        readings: &[Reading],
        anomalies: &[Anomaly],
    ) -> Result<WriteOutcome, StoreError> {
        if let Some(e) = self.injected_failure(readings) {
            return Err(e);
        }
        check_seqs(readings)?;
        let mut t = self.tables();
        let now = Timestamp::now();
        match t.current_epoch(&fence.group, fence.partition) {
            Some(r) if r.epoch == fence.epoch && r.owner == fence.owner => {
                r.batches += 1;
                r.first_commit_at.get_or_insert(now);
                r.last_commit_at = Some(now);
            }
            _ => {
                return Err(StoreError::Fenced(format!(
                    "partition {} epoch {} of {} was superseded",
                    fence.partition, fence.epoch, fence.owner
                )));
            }
        }
        Ok(t.write_rows(readings, anomalies))
    }

    async fn partition_epochs(&self, group: &str) -> Result<Vec<EpochRecord>, StoreError> {
        Ok(self
            .tables()
            .epochs
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|(_, r)| r.clone())
            .collect())
    }
}
