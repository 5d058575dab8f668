//! The connection pool and the retry loop every operation runs in.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, Statement};

use super::classify::{Retry, classify, classify_after, retry};
use super::config::{PostgresConfig, PostgresConfigError};
use super::sql;
use super::tls::{MakeRustls, client_config};
use crate::store::StoreError;

/// One connection with its prepared statements.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) write: Statement,
    pub(super) write_fenced: Statement,
    pub(super) recent: Statement,
}

/// `pool_size` lazily (re)connected slots, handed out round-robin.
pub(super) struct Pool {
    config: PostgresConfig,
    connect: tokio_postgres::Config,
    tls: MakeRustls,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl Pool {
    /// A pool for `config` (validated here, the CA file read); connects
    /// nothing yet.
    pub(super) fn new(config: PostgresConfig) -> Result<Self, PostgresConfigError> {
        config.validate()?;
        let target = config.target()?;
        let client_cert = target
            .client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let tls = MakeRustls(client_config(
            target.ssl_mode,
            target.ca_file.as_deref(),
            client_cert,
        )?);
        let slots = (0..config.pool_size).map(|_| Mutex::new(None)).collect();
        Ok(Pool {
            config,
            connect: target.connect,
            tls,
            slots,
            next: AtomicUsize::new(0),
        })
    }

    pub(super) fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// A new connection outside the pool, its `search_path` set.
    pub(super) async fn connect(&self) -> Result<Client, StoreError> {
        let connecting = self.connect.connect(self.tls.clone());
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
        let client = self.connect().await?;
        let write = client
            .prepare(&sql::write_sql(false))
            .await
            .map_err(classify)?;
        let write_fenced = client
            .prepare(&sql::write_sql(true))
            .await
            .map_err(classify)?;
        let recent = client.prepare(sql::RECENT_VALUES).await.map_err(classify)?;
        Ok(Conn {
            client,
            write,
            write_fenced,
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
    pub(super) async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
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
            let e = match op(conn.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let how = retry(&e);
            if how == Retry::Reconnect {
                self.drop_conn(i, &conn).await;
            }
            if how == Retry::No || attempt >= self.config.attempts {
                return Err(classify_after(e, attempt));
            }
            tracing::debug!(error = %e, attempt, "Retrying a database operation.");
            tokio::time::sleep(retry_delay(attempt)).await;
        }
    }
}

/// 25 ms, 50 ms, 100 ms, ... capped at 1 s.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(25u64 << attempt.min(6)).min(Duration::from_secs(1))
}
