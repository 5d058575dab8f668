//! Durable storage of readings and anomalies: the [`Store`] contract and its
//! backends.
//!
//! Every metric of a reading is a row keyed `(device_id, seq, metric)`. The
//! first write of a key wins; a later copy with the same values is a
//! *duplicate* (a device resend or a broker redelivery), one with different
//! values a *conflict*, counted and never applied. Anomalies are keyed the
//! same way and written in the same transaction as their readings, so an
//! analyzer that crashes mid-batch and sees the batch again creates no
//! duplicate rows.
//!
//! | backend | for |
//! |---|---|
//! | [`MemoryStore`] | the embedded demo and fast tests; same semantics |
//! | `PostgresStore` (feature `postgres`) | PostgreSQL 15+ and CockroachDB |

mod error;
mod memory;
mod ownership;
mod types;

#[cfg(feature = "postgres")]
pub mod postgres;

use async_trait::async_trait;

use crate::wire::{Reading, Timestamp};

pub use error::{StoreError, StoreErrorKind};
pub use memory::{MemoryStore, WriteFailure};
pub use ownership::{EpochRecord, Fence, Overlap, find_overlaps};
pub use types::{
    Anomaly, AnomalyCursor, AnomalyQuery, DeviceStatus, Page, ReadingQuery, SeqGap, StoredValue,
    WriteOutcome,
};

/// Durable, idempotent storage: see the [module docs](self).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes `readings` and `anomalies` atomically and idempotently.
    ///
    /// `Ok` means every row is durable (committed); the counts say how many
    /// metric rows were new, duplicates or conflicts, and how many anomalies
    /// were new. Either everything is written or nothing is.
    ///
    /// Errors: [`StoreError::Unavailable`] (connection lost, database
    /// restarting; transient), [`StoreError::Invalid`] for values the store
    /// cannot hold (the batch can never succeed).
    async fn write(
        &self,
        readings: &[Reading],
        anomalies: &[Anomaly],
    ) -> Result<WriteOutcome, StoreError>;

    /// The newest `limit` values of the series `(device_id, metric)` with a
    /// `seq` below `before_seq`, in ascending `seq` order: the history an
    /// analyzer rebuilds a detector window from.
    async fn recent_values(
        &self,
        device_id: &str,
        metric: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, f64)>, StoreError>;

    /// [`recent_values`](Self::recent_values) for many series at once:
    /// entry `i` of the result is the history of `series[i]`
    /// (`(device_id, metric, before_seq)`), each at most `limit` values.
    /// Analyzers warm-start every new series of a batch with one call.
    ///
    /// The default runs the single-series query for each, a few at a time;
    /// backends override it with one round trip.
    async fn recent_values_many(
        &self,
        series: &[(String, String, u64)],
        limit: u32,
    ) -> Result<Vec<Vec<(u64, f64)>>, StoreError> {
        let mut out = Vec::with_capacity(series.len());
        for chunk in series.chunks(4) {
            let mut queries = Vec::with_capacity(chunk.len());
            for (device, metric, before) in chunk {
                queries.push(self.recent_values(device, metric, *before, limit));
            }
            for history in futures_util::future::join_all(queries).await {
                out.push(history?);
            }
        }
        Ok(out)
    }

    /// One page of anomalies matching `query`, newest first (by `ts`, then
    /// device, seq, metric, all descending). Pagination is keyset-based:
    /// following [`Page::next`] never repeats or skips an anomaly, even while
    /// new ones are inserted.
    ///
    /// Errors: [`StoreError::InvalidQuery`] for a malformed cursor.
    async fn anomalies(&self, query: &AnomalyQuery) -> Result<Page<Anomaly>, StoreError>;

    /// A device's stored values with `from <= ts < to`, ordered by `ts`,
    /// `seq`, metric; at most `query.limit` rows.
    async fn readings(&self, query: &ReadingQuery) -> Result<Vec<StoredValue>, StoreError>;

    /// When a device was last heard from, or `None` if it has no readings.
    async fn device_status(&self, device_id: &str) -> Result<Option<DeviceStatus>, StoreError>;

    /// Missing `seq` ranges of a device between its stored readings with
    /// `from_seq <= seq <= to_seq`, in ascending order, at most `limit`.
    async fn seq_gaps(
        &self,
        device_id: &str,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<SeqGap>, StoreError>;

    /// Deletes at most `batch` readings rows with `ts < cutoff` and returns
    /// how many it deleted; call again until it returns less than `batch`.
    /// Bounded batches keep transactions short on a large table.
    async fn delete_readings_before(
        &self,
        cutoff: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError>;

    /// Records that `member` of `group` is alive for the next `ttl`, and
    /// returns the live members of the group (including `member`), sorted.
    ///
    /// Expiry is judged by the store's clock, so members on hosts with
    /// skewed clocks agree. Analyzers use this to split partitions among
    /// themselves (see the analyzer module).
    async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        ttl: std::time::Duration,
    ) -> Result<Vec<String>, StoreError>;

    /// Removes `member` from `group` at once (graceful shutdown), so the
    /// others take over its work without waiting for its lease to expire.
    async fn leave(&self, group: &str, member: &str) -> Result<(), StoreError>;

    /// Claims `partition` for `owner` in `group`: a new epoch (one more than
    /// the newest) becomes current and the previous one is superseded, so
    /// its owner's next [`write_fenced`](Self::write_fenced) is refused.
    /// A claim waits for a fenced write of the previous epoch that is
    /// committing at that moment, so reads after the claim see it.
    async fn claim_partition(
        &self,
        group: &str,
        partition: u32,
        owner: &str,
    ) -> Result<Fence, StoreError>;

    /// [`write`](Self::write), in the same transaction checking that
    /// `fence` is still the partition's current epoch and recording the
    /// commit against it (see [`EpochRecord`]).
    ///
    /// Errors: [`StoreError::Fenced`] (nothing written) when a newer claim
    /// superseded `fence`; otherwise as [`write`](Self::write).
    async fn write_fenced(
        &self,
        fence: &Fence,
        readings: &[Reading],
        anomalies: &[Anomaly],
    ) -> Result<WriteOutcome, StoreError>;

    /// Every ownership epoch of `group`'s partitions, by partition and
    /// epoch: the record [`find_overlaps`] audits.
    async fn partition_epochs(&self, group: &str) -> Result<Vec<EpochRecord>, StoreError>;
}
