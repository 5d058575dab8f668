//! Versioned schema migrations, safe when several replicas run them at once.
//!
//! Each migration runs in its own transaction that first claims its version
//! with `INSERT INTO schema_migrations ... ON CONFLICT DO NOTHING`. A second
//! replica claiming the same version blocks on that row until the first
//! commits, then sees the conflict and skips; if the first fails and rolls
//! back, the second applies it. Every statement is also `IF NOT EXISTS`, so
//! a half-applied manual run cannot wedge it. No advisory locks (CockroachDB
//! has none).

use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::classify::classify;
use crate::store::StoreError;

/// One schema change.
pub struct Migration {
    /// Version, increasing from 1.
    pub version: i64,
    /// What it does, stored in `schema_migrations`.
    pub name: &'static str,
    /// The statements, run in one transaction.
    pub sql: &'static str,
}

/// Every migration, in order. Append only: never edit a released one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "readings and anomalies",
        sql: "
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    seq INT8 NOT NULL,
    metric TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    value FLOAT8 NOT NULL,
    PRIMARY KEY (device_id, seq, metric)
);
-- A device's readings by time (alerts API chart), and its newest ts.
CREATE INDEX IF NOT EXISTS readings_device_ts ON readings (device_id, ts);
-- Retention: the oldest readings first.
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
CREATE TABLE IF NOT EXISTS anomalies (
    device_id TEXT NOT NULL,
    seq INT8 NOT NULL,
    metric TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    value FLOAT8 NOT NULL,
    score FLOAT8 NOT NULL,
    anomaly_score FLOAT8 NOT NULL,
    detector TEXT NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, seq, metric)
);
-- The anomalies listing, newest first, unfiltered / by device / by metric.
CREATE INDEX IF NOT EXISTS anomalies_ts ON anomalies (ts, device_id, seq, metric);
CREATE INDEX IF NOT EXISTS anomalies_device_ts ON anomalies (device_id, ts, seq, metric);
CREATE INDEX IF NOT EXISTS anomalies_metric_ts ON anomalies (metric, ts, device_id, seq);
",
    },
    Migration {
        version: 2,
        name: "group membership leases",
        sql: "
-- Analyzer replicas renew a lease here every second and split the queue
-- partitions among the live members.
CREATE TABLE IF NOT EXISTS group_members (
    grp TEXT NOT NULL,
    member TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (grp, member)
);
",
    },
    Migration {
        version: 3,
        name: "partition ownership epochs",
        sql: "
-- Each partition's current owner: claims and fenced writes lock this row,
-- so a claim and a write of the previous owner are serialized.
CREATE TABLE IF NOT EXISTS partition_owners (
    grp TEXT NOT NULL,
    part INT8 NOT NULL,
    epoch INT8 NOT NULL,
    owner TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (grp, part)
);
-- One row per claim; every committed batch is counted against its epoch
-- in the batch's own transaction. An epoch ends at the next one's claim.
CREATE TABLE IF NOT EXISTS partition_epochs (
    grp TEXT NOT NULL,
    part INT8 NOT NULL,
    epoch INT8 NOT NULL,
    owner TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL,
    first_commit_at TIMESTAMPTZ,
    last_commit_at TIMESTAMPTZ,
    batches INT8 NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, part, epoch)
);
",
    },
];

/// The newest schema version this build knows.
pub const LATEST_VERSION: i64 = 3;

/// Runs `sql`, retrying a few times when a concurrent replica created the
/// same object at the same moment (PostgreSQL reports a unique violation on
/// its catalog, or 42710 for the table's row type, for `CREATE ... IF NOT
/// EXISTS` races).
async fn create_racing(client: &Client, sql: &str) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match client.batch_execute(sql).await {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 5
                    && matches!(
                        e.code(),
                        Some(&SqlState::UNIQUE_VIOLATION)
                            | Some(&SqlState::DUPLICATE_TABLE)
                            | Some(&SqlState::DUPLICATE_SCHEMA)
                            | Some(&SqlState::DUPLICATE_OBJECT)
                    ) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(classify(e)),
        }
    }
}

/// Applies the missing migrations on `client` (whose `search_path` is set)
/// and returns the versions this call applied.
pub(super) async fn run(client: &mut Client, schema: Option<&str>) -> Result<Vec<i64>, StoreError> {
    if let Some(schema) = schema {
        create_racing(client, &format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).await?;
    }
    create_racing(
        client,
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INT8 PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let tx = client.transaction().await.map_err(classify)?;
        let claimed = tx
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
                &[&m.version, &m.name],
            )
            .await
            .map_err(classify)?;
        if claimed == 0 {
            tx.rollback().await.map_err(classify)?;
            continue;
        }
        tx.batch_execute(m.sql).await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "Applied schema migration."
        );
        applied.push(m.version);
    }
    Ok(applied)
}

/// The newest applied version, or 0 when the schema was never migrated.
pub(super) async fn current_version(client: &Client) -> Result<i64, StoreError> {
    match client
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
    {
        Ok(row) => Ok(row.get(0)),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(0),
        Err(e) => Err(classify(e)),
    }
}
