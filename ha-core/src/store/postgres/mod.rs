//! PostgreSQL / CockroachDB backend of the [`Store`] contract (feature
//! `postgres`), via tokio-postgres.
//!
//! - **One round trip per batch**: readings and anomalies go in one
//!   statement (`unnest` of column arrays into multi-row
//!   `INSERT ... ON CONFLICT DO NOTHING`), which is also one implicit
//!   transaction: both land or neither does. Rows go in key order. A
//!   fenced write checks its epoch in the same statement. Measured against
//!   raw binary COPY by the `store_write` bench (docs/queue-and-store.md).
//! - **Pool**: `pool_size` connections, each shared by concurrent callers
//!   (tokio-postgres pipelines queries on one connection), reconnected
//!   lazily when lost. Each connection's driver runs as a tokio task.
//! - **Retries**: serialization failures (SQLSTATE 40001, CockroachDB's
//!   normal answer to contention), deadlocks and lost connections are
//!   retried a few times with backoff; past that the error is
//!   [`StoreError::Unavailable`] and the caller keeps its work for later.
//! - **Schema**: [`PostgresStore::migrate`] applies versioned migrations
//!   safely from several replicas at once; optionally inside a dedicated
//!   schema ([`PostgresConfig::schema`]).
//! - **Portability**: no `LISTEN/NOTIFY`, temporary tables, advisory locks,
//!   `SERIAL` or `COPY`; row-value comparisons, `unnest`, data-modifying
//!   CTEs and window functions are supported by both databases.
//!
//! # TLS
//!
//! rustls with the ring provider (no OpenSSL), set by `sslmode` in the URL
//! and [`PostgresConfig::ca_file`]:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | - |
//! | `prefer` (default) | when the server offers it | against the CA file if one is set, else not |
//! | `require` | yes | against the CA file if one is set, else not |
//! | `verify-ca` | yes | chain against the CA file (needed) |
//! | `verify-full` | yes | chain against the CA file (needed) and the host name |
//!
//! Production uses `verify-full` (CockroachDB's and CloudNativePG's
//! certificates name the service); unverified encryption stops passive
//! listeners only.

mod classify;
mod config;
mod migrate;
mod pool;
mod roles;
mod rows;
mod sql;
mod tls;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

pub use config::{PostgresConfig, PostgresConfigError, SslMode};
pub use migrate::{LATEST_VERSION, MIGRATIONS, Migration};
pub use roles::Roles;

use super::{
    Anomaly, AnomalyQuery, DeviceStatus, EpochRecord, Fence, Page, ReadingQuery, SeqGap, Store,
    StoreError, StoredValue, WriteOutcome,
};
use crate::wire::{Reading, Timestamp};
use pool::Pool;
use rows::{WriteColumns, anomaly_of, seq_bound, seq_of, stored_value_of};

/// PostgreSQL / CockroachDB store: see the [module docs](self).
pub struct PostgresStore {
    pool: Pool,
}

impl PostgresStore {
    /// A store for `config`. Connects lazily; call [`migrate`](Self::migrate)
    /// (or [`check_schema`](Self::check_schema)) to fail fast.
    ///
    /// Errors: [`StoreError::Config`] for invalid settings.
    pub fn new(config: PostgresConfig) -> Result<Self, StoreError> {
        Ok(PostgresStore {
            pool: Pool::new(config)?,
        })
    }

    /// Applies missing migrations and returns the versions applied now.
    /// Safe to run from several replicas at once.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let mut client = self.pool.connect().await?;
        migrate::run(&mut client, self.pool.config().schema.as_deref()).await
    }

    /// Creates the writer and read-only roles if missing and grants them on
    /// the store's tables (run by an owner after [`migrate`](Self::migrate);
    /// again after each new migration). Idempotent.
    ///
    /// Errors: [`StoreError::InvalidQuery`] for a role name outside
    /// `[a-z0-9_]`; a database error whose [`kind`](StoreError::kind) is
    /// `Denied` when this connection's role may not create roles or grant.
    pub async fn grant_roles(&self, roles: &Roles) -> Result<(), StoreError> {
        let client = self.pool.connect().await?;
        roles::grant(&client, self.pool.config().schema.as_deref(), roles).await
    }

    /// Fails with [`StoreError::Schema`] unless the schema is at the version
    /// this build needs.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let client = self.pool.connect().await?;
        let version = migrate::current_version(&client).await?;
        if version < LATEST_VERSION {
            return Err(StoreError::Schema(format!(
                "schema version {version}, this build needs {LATEST_VERSION}: run `ha-admin migrate`"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn write(
        &self,
        readings: &[Reading],
        anomalies: &[Anomaly],
    ) -> Result<WriteOutcome, StoreError> {
        let cols = WriteColumns::build(readings, anomalies)?;
        if cols.r_device.is_empty() && cols.a_device.is_empty() {
            return Ok(WriteOutcome {
                duplicates: cols.in_batch_duplicates,
                conflicts: cols.in_batch_conflicts,
                ..WriteOutcome::default()
            });
        }
        let params = cols.params();
        let row = self
            .pool
            .run(|c| {
                let params = &params;
                async move { c.client.query_one(&c.write, params).await }
            })
            .await?;
        let inserted = row.get::<_, i64>(0) as u64;
        let conflicts = row.get::<_, i64>(1) as u64;
        let unique = cols.r_device.len() as u64;
        Ok(WriteOutcome {
            inserted,
            duplicates: unique.saturating_sub(inserted + conflicts) + cols.in_batch_duplicates,
            conflicts: conflicts + cols.in_batch_conflicts,
            anomalies_inserted: row.get::<_, i64>(2) as u64,
        })
    }

    async fn recent_values(
        &self,
        device_id: &str,
        metric: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, f64)>, StoreError> {
        if before_seq == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let upto = seq_bound(before_seq - 1);
        let limit = i64::from(limit);
        let rows = self
            .pool
            .run(|c| async move {
                c.client
                    .query(&c.recent, &[&device_id, &metric, &upto, &limit])
                    .await
            })
            .await?;
        Ok(rows.iter().map(|r| (seq_of(r, 0), r.get(1))).collect())
    }

    async fn anomalies(&self, query: &AnomalyQuery) -> Result<Page<Anomaly>, StoreError> {
        let limit = query.effective_limit();
        let sql = sql::anomaly_sql(
            query.device_id.is_some(),
            query.metric.is_some(),
            query.from.is_some(),
            query.to.is_some(),
            query.after.is_some(),
        );
        let from = query.from.map(SystemTime::from);
        let to = query.to.map(SystemTime::from);
        let after = query.after.as_ref().map(|c| {
            (
                SystemTime::from(c.ts),
                c.device_id.clone(),
                seq_bound(c.seq),
                c.metric.clone(),
            )
        });
        // One more than asked tells whether there is a next page.
        let fetch = i64::from(limit) + 1;
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(d) = &query.device_id {
            params.push(d);
        }
        if let Some(m) = &query.metric {
            params.push(m);
        }
        if let Some(f) = &from {
            params.push(f);
        }
        if let Some(t) = &to {
            params.push(t);
        }
        if let Some((ts, d, s, m)) = &after {
            params.extend([ts as &(dyn ToSql + Sync), d, s, m]);
        }
        params.push(&fetch);
        let rows = self
            .pool
            .run(|c| {
                let (sql, params) = (&sql, &params);
                async move { c.client.query(sql.as_str(), params).await }
            })
            .await?;
        let mut items: Vec<Anomaly> = rows.iter().map(anomaly_of).collect();
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(Anomaly::cursor)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn readings(&self, query: &ReadingQuery) -> Result<Vec<StoredValue>, StoreError> {
        let sql = sql::readings_sql(query.metric.is_some());
        let from = SystemTime::from(query.from);
        let to = SystemTime::from(query.to);
        let limit = i64::from(query.limit);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&query.device_id, &from, &to];
        if let Some(m) = &query.metric {
            params.push(m);
        }
        params.push(&limit);
        let rows = self
            .pool
            .run(|c| {
                let (sql, params) = (&sql, &params);
                async move { c.client.query(sql.as_str(), params).await }
            })
            .await?;
        Ok(rows.iter().map(stored_value_of).collect())
    }

    async fn device_status(&self, device_id: &str) -> Result<Option<DeviceStatus>, StoreError> {
        let row = self
            .pool
            .run(|c| async move { c.client.query_one(sql::DEVICE_STATUS, &[&device_id]).await })
            .await?;
        let last_seen: Option<SystemTime> = row.get(0);
        let last_seq: Option<i64> = row.get(1);
        Ok(match (last_seen, last_seq) {
            (Some(ts), Some(seq)) => Some(DeviceStatus {
                device_id: device_id.to_owned(),
                last_seen: Timestamp::from(ts),
                last_seq: u64::try_from(seq).unwrap_or(0),
            }),
            _ => None,
        })
    }

    async fn seq_gaps(
        &self,
        device_id: &str,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<SeqGap>, StoreError> {
        let (from, to, limit) = (seq_bound(from_seq), seq_bound(to_seq), i64::from(limit));
        let rows = self
            .pool
            .run(|c| async move {
                c.client
                    .query(sql::SEQ_GAPS, &[&device_id, &from, &to, &limit])
                    .await
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| SeqGap {
                from: seq_of(r, 0),
                to: seq_of(r, 1),
            })
            .collect())
    }

    async fn delete_readings_before(
        &self,
        cutoff: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let cutoff = SystemTime::from(cutoff);
        let batch = i64::from(batch);
        self.pool
            .run(|c| async move {
                c.client
                    .execute(sql::DELETE_BEFORE, &[&cutoff, &batch])
                    .await
            })
            .await
    }

    async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let rows = self
            .pool
            .run(|c| async move {
                if rand_percent() == 0 {
                    // Now and then, drop leases that expired long ago.
                    c.client.execute(sql::FORGET_EXPIRED, &[&group]).await?;
                }
                c.client
                    .query(sql::HEARTBEAT, &[&group, &member, &ttl_ms])
                    .await
            })
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn leave(&self, group: &str, member: &str) -> Result<(), StoreError> {
        self.pool
            .run(|c| async move { c.client.execute(sql::LEAVE, &[&group, &member]).await })
            .await
            .map(|_| ())
    }

    async fn claim_partition(
        &self,
        group: &str,
        partition: u32,
        owner: &str,
    ) -> Result<Fence, StoreError> {
        let part = i64::from(partition);
        let row = self
            .pool
            .run(|c| async move {
                c.client
                    .query_one(sql::CLAIM, &[&group, &part, &owner])
                    .await
            })
            .await?;
        Ok(Fence {
            group: group.to_owned(),
            partition,
            epoch: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            owner: owner.to_owned(),
        })
    }

    async fn write_fenced(
        &self,
        fence: &Fence,
        readings: &[Reading],
        anomalies: &[Anomaly],
    ) -> Result<WriteOutcome, StoreError> {
        let cols = WriteColumns::build(readings, anomalies)?;
        let (part, epoch) = (
            i64::from(fence.partition),
            i64::try_from(fence.epoch).unwrap_or(i64::MAX),
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = cols.params().to_vec();
        params.extend([
            &fence.group as &(dyn ToSql + Sync),
            &part,
            &epoch,
            &fence.owner,
        ]);
        let row = self
            .pool
            .run(|c| {
                let params = &params;
                async move { c.client.query_one(&c.write_fenced, params).await }
            })
            .await?;
        if row.get::<_, i64>(3) == 0 {
            return Err(StoreError::Fenced(format!(
                "partition {} epoch {} of {} was superseded",
                fence.partition, fence.epoch, fence.owner
            )));
        }
        let inserted = row.get::<_, i64>(0) as u64;
        let conflicts = row.get::<_, i64>(1) as u64;
        let unique = cols.r_device.len() as u64;
        Ok(WriteOutcome {
            inserted,
            duplicates: unique.saturating_sub(inserted + conflicts) + cols.in_batch_duplicates,
            conflicts: conflicts + cols.in_batch_conflicts,
            anomalies_inserted: row.get::<_, i64>(2) as u64,
        })
    }

    async fn partition_epochs(&self, group: &str) -> Result<Vec<EpochRecord>, StoreError> {
        let rows = self
            .pool
            .run(|c| async move { c.client.query(sql::PARTITION_EPOCHS, &[&group]).await })
            .await?;
        Ok(rows
            .iter()
            .map(|r| EpochRecord {
                partition: u32::try_from(r.get::<_, i64>(0)).unwrap_or(u32::MAX),
                epoch: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                owner: r.get(2),
                claimed_at: Timestamp::from(r.get::<_, SystemTime>(3)),
                superseded_at: timestamp(r.get(4)),
                first_commit_at: timestamp(r.get(5)),
                last_commit_at: timestamp(r.get(6)),
                batches: u64::try_from(r.get::<_, i64>(7)).unwrap_or(0),
            })
            .collect())
    }
}

fn timestamp(t: Option<SystemTime>) -> Option<Timestamp> {
    t.map(Timestamp::from)
}

/// A cheap 0..100 value from the clock, for occasional housekeeping.
fn rand_percent() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros() % 100)
}
