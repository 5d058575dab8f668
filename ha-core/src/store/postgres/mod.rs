//! PostgreSQL / CockroachDB backend of the [`Store`] contract (feature
//! `postgres`), via tokio-postgres.
//!
//! - **One round trip per batch**: readings and anomalies go in one
//!   statement (`unnest` of column arrays into multi-row
//!   `INSERT ... ON CONFLICT DO NOTHING`), which is also one implicit
//!   transaction: both land or neither does.
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

mod migrate;
mod sql;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

pub use migrate::{LATEST_VERSION, MIGRATIONS, Migration};

use super::{
    Anomaly, AnomalyQuery, DeviceStatus, Page, ReadingQuery, SeqGap, Store, StoreError,
    StoredValue, WriteOutcome,
};
use crate::wire::{MAX_SEQ, Reading, Timestamp};

/// Settings of a [`PostgresStore`].
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (key-value strings work
    /// too). TLS is not supported yet: use a local connection or a sidecar.
    pub url: String,
    /// Put the tables in this schema (created by [`PostgresStore::migrate`])
    /// instead of the default `search_path`. Lowercase letters, digits, `_`.
    pub schema: Option<String>,
    /// Connections kept open, each shared by concurrent queries.
    pub pool_size: usize,
    /// Bound on establishing one connection.
    pub connect_timeout: Duration,
    /// Attempts for one operation on transient errors (first try included).
    pub attempts: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            schema: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            attempts: 4,
        }
    }
}

impl PostgresConfig {
    /// Checks the settings; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.pool_size == 0 {
            return Err("pool_size must be at least 1".into());
        }
        if self.attempts == 0 {
            return Err("attempts must be at least 1".into());
        }
        if let Some(s) = &self.schema {
            let ok = !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
                && !s.as_bytes()[0].is_ascii_digit();
            if !ok {
                return Err(format!(
                    "schema `{s}` must be 1-63 characters of [a-z0-9_], not starting with a digit"
                ));
            }
        }
        Ok(())
    }
}

/// PostgreSQL / CockroachDB store: see the [module docs](self).
pub struct PostgresStore {
    config: PostgresConfig,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

/// One connection with its prepared statements.
struct Conn {
    client: Client,
    write: Statement,
    recent: Statement,
}

/// Maps a database error to the contract's error kinds by SQLSTATE class.
pub(super) fn classify(e: tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        return StoreError::Unavailable(e.to_string());
    };
    let msg = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned());
    match &code.code()[..2] {
        // Data exceptions and integrity violations: this data never fits.
        "22" | "23" => StoreError::Invalid(format!("{msg} (SQLSTATE {})", code.code())),
        // Undefined table/column: the schema is not migrated.
        "42" => StoreError::Schema(format!("{msg} (SQLSTATE {})", code.code())),
        _ => StoreError::Unavailable(format!("{msg} (SQLSTATE {})", code.code())),
    }
}

/// Whether an error is worth retrying at once, and whether the connection
/// it came from should be replaced.
fn retry_kind(e: &tokio_postgres::Error) -> Option<bool> {
    if e.is_closed() {
        return Some(true);
    }
    match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => Some(false),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => Some(false),
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => Some(true),
        None => Some(true),
        _ => None,
    }
}

fn seq_param(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Invalid(format!("seq {seq} is above 2^63-1")))
}

/// Clamps a bound to the stored seq range.
fn seq_bound(seq: u64) -> i64 {
    i64::try_from(seq.min(MAX_SEQ)).unwrap_or(i64::MAX)
}

fn seq_of(row: &Row, i: usize) -> u64 {
    u64::try_from(row.get::<_, i64>(i)).unwrap_or(0)
}

fn anomaly_of(row: &Row) -> Anomaly {
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

/// Builds the anomalies query for the filters that are set; parameters are
/// appended to `params` in placeholder order.
fn anomaly_sql(device: bool, metric: bool, from: bool, to: bool, after: bool) -> String {
    let mut conds = Vec::new();
    let mut n = 0;
    let mut p = || {
        n += 1;
        format!("${n}")
    };
    if device {
        conds.push(format!("device_id = {}", p()));
    }
    if metric {
        conds.push(format!("metric = {}", p()));
    }
    if from {
        conds.push(format!("ts >= {}", p()));
    }
    if to {
        conds.push(format!("ts < {}", p()));
    }
    if after {
        let (a, b, c, d) = (p(), p(), p(), p());
        conds.push(format!(
            "(ts, device_id, seq, metric) < ({a}, {b}, {c}, {d})"
        ));
    }
    let limit = p();
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    format!(
        "SELECT {} FROM anomalies {filter} ORDER BY ts DESC, device_id DESC, seq DESC, metric DESC LIMIT {limit}",
        sql::ANOMALY_COLUMNS
    )
}

/// Every shape of the dynamically built queries, for the portability test.
#[cfg(test)]
fn all_query_shapes() -> Vec<String> {
    let mut out = Vec::new();
    for bits in 0..32u8 {
        let b = |i: u8| bits & (1 << i) != 0;
        out.push(anomaly_sql(b(0), b(1), b(2), b(3), b(4)));
    }
    out.push(readings_sql(false));
    out.push(readings_sql(true));
    out
}

fn readings_sql(metric: bool) -> String {
    let (m, limit) = if metric {
        ("AND metric = $4", "$5")
    } else {
        ("", "$4")
    };
    format!(
        "SELECT seq, ts, metric, value FROM readings \
         WHERE device_id = $1 AND ts >= $2 AND ts < $3 {m} \
         ORDER BY ts, seq, metric LIMIT {limit}"
    )
}

impl PostgresStore {
    /// A store for `config`. Connects lazily; call [`migrate`](Self::migrate)
    /// (or [`check_schema`](Self::check_schema)) to fail fast.
    pub fn new(config: PostgresConfig) -> Result<Self, StoreError> {
        config.validate().map_err(StoreError::InvalidQuery)?;
        let slots = (0..config.pool_size).map(|_| Mutex::new(None)).collect();
        Ok(PostgresStore {
            config,
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// Applies missing migrations and returns the versions applied now.
    /// Safe to run from several replicas at once.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let mut client = self.raw_connect().await?;
        migrate::run(&mut client, self.config.schema.as_deref()).await
    }

    /// Fails with [`StoreError::Schema`] unless the schema is at the version
    /// this build needs.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let client = self.raw_connect().await?;
        let version = migrate::current_version(&client).await?;
        if version < LATEST_VERSION {
            return Err(StoreError::Schema(format!(
                "schema version {version}, this build needs {LATEST_VERSION}: run `ha-admin migrate`"
            )));
        }
        Ok(())
    }

    async fn raw_connect(&self) -> Result<Client, StoreError> {
        let connecting = tokio_postgres::connect(&self.config.url, NoTls);
        let (client, connection) = tokio::time::timeout(self.config.connect_timeout, connecting)
            .await
            .map_err(|_| StoreError::Unavailable("connecting to the database timed out".into()))?
            .map_err(classify)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "Database connection ended.");
            }
        });
        if let Some(schema) = &self.config.schema {
            client
                .batch_execute(&format!("SET search_path TO \"{schema}\""))
                .await
                .map_err(classify)?;
        }
        Ok(client)
    }

    async fn connect_slot(&self) -> Result<Conn, StoreError> {
        let client = self.raw_connect().await?;
        let write = client.prepare(sql::WRITE).await.map_err(classify)?;
        let recent = client.prepare(sql::RECENT_VALUES).await.map_err(classify)?;
        Ok(Conn {
            client,
            write,
            recent,
        })
    }

    /// A connection from the pool (round-robin), connecting if needed.
    async fn conn(&self) -> Result<(usize, Arc<Conn>), StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok((i, c.clone()));
        }
        let c = Arc::new(self.connect_slot().await?);
        *slot = Some(c.clone());
        Ok((i, c))
    }

    async fn drop_conn(&self, i: usize, conn: &Arc<Conn>) {
        let mut slot = self.slots[i].lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    /// Runs `op` on a pooled connection, retrying transient failures.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (i, conn) = match self.conn().await {
                Ok(c) => c,
                Err(e) if e.is_transient() && attempt < self.config.attempts => {
                    tokio::time::sleep(retry_delay(attempt)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match op(conn.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => match retry_kind(&e) {
                    Some(replace) if attempt < self.config.attempts => {
                        if replace {
                            self.drop_conn(i, &conn).await;
                        }
                        tracing::debug!(error = %e, attempt, "Retrying a database operation.");
                        tokio::time::sleep(retry_delay(attempt)).await;
                    }
                    Some(replace) => {
                        if replace {
                            self.drop_conn(i, &conn).await;
                        }
                        return Err(StoreError::Unavailable(format!(
                            "gave up after {attempt} attempts: {e}"
                        )));
                    }
                    None => return Err(classify(e)),
                },
            }
        }
    }
}

/// 25 ms, 50 ms, 100 ms, ... capped at 1 s.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(25u64 << attempt.min(6)).min(Duration::from_secs(1))
}

/// Column arrays of the write statement, with in-batch duplicates removed
/// (the first copy wins) and counted.
#[derive(Default)]
struct WriteColumns {
    r_device: Vec<String>,
    r_seq: Vec<i64>,
    r_metric: Vec<String>,
    r_ts: Vec<SystemTime>,
    r_value: Vec<f64>,
    a_device: Vec<String>,
    a_seq: Vec<i64>,
    a_metric: Vec<String>,
    a_ts: Vec<SystemTime>,
    a_value: Vec<f64>,
    a_score: Vec<f64>,
    a_anomaly_score: Vec<f64>,
    a_detector: Vec<String>,
    in_batch_duplicates: u64,
    in_batch_conflicts: u64,
}

impl WriteColumns {
    fn build(readings: &[Reading], anomalies: &[Anomaly]) -> Result<Self, StoreError> {
        use std::collections::HashMap;
        let mut c = WriteColumns::default();
        let mut seen: HashMap<(&str, u64, &str), (Timestamp, f64)> = HashMap::new();
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
                        c.r_device.push(r.device_id.clone());
                        c.r_seq.push(seq);
                        c.r_metric.push(m.name.clone());
                        c.r_ts.push(r.ts.into());
                        c.r_value.push(m.value);
                    }
                }
            }
        }
        let mut seen_anomalies = std::collections::HashSet::new();
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

    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
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
        let sql = anomaly_sql(
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
        let sql = readings_sql(query.metric.is_some());
        let from = SystemTime::from(query.from);
        let to = SystemTime::from(query.to);
        let limit = i64::from(query.limit);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&query.device_id, &from, &to];
        if let Some(m) = &query.metric {
            params.push(m);
        }
        params.push(&limit);
        let rows = self
            .run(|c| {
                let (sql, params) = (&sql, &params);
                async move { c.client.query(sql.as_str(), params).await }
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredValue {
                seq: seq_of(r, 0),
                ts: Timestamp::from(r.get::<_, SystemTime>(1)),
                metric: r.get(2),
                value: r.get(3),
            })
            .collect())
    }

    async fn device_status(&self, device_id: &str) -> Result<Option<DeviceStatus>, StoreError> {
        let row = self
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
        self.run(|c| async move {
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
        self.run(|c| async move { c.client.execute(sql::LEAVE, &[&group, &member]).await })
            .await
            .map(|_| ())
    }
}

/// A cheap 0..100 value from the clock, for occasional housekeeping.
fn rand_percent() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros() % 100)
}
