//! What a step measures besides the driver: stored readings (PostgreSQL)
//! and queue depth (RabbitMQ).

use std::time::Duration;

use ha_core::queue::Queue;
use ha_core::queue::amqp::AmqpQueue;

use crate::http1::Endpoint;
use crate::procfs::Component;

/// Stored readings of devices whose id starts with `prefix`.
pub(super) struct StoreCounter {
    client: tokio_postgres::Client,
    /// Transactions this counter ran (each query is one): subtracted from
    /// the database's commit count.
    own: std::sync::atomic::AtomicU64,
}

impl StoreCounter {
    pub(super) async fn connect(url: &str) -> Result<StoreCounter, String> {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("PostgreSQL: {e}"))?;
        tokio::spawn(conn);
        Ok(StoreCounter {
            client,
            own: Default::default(),
        })
    }

    async fn one_i64(&self, sql: &str) -> Option<i64> {
        self.own.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.client
            .query_one(sql, &[])
            .await
            .ok()
            .and_then(|row| row.try_get::<_, i64>(0).ok())
    }

    /// Runs `CHECKPOINT` (a superuser's command): the dirty pages of what
    /// was just stored are written now, not during the next series' steps.
    pub(super) async fn checkpoint(&self) -> Result<(), String> {
        self.own.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| format!("CHECKPOINT: {e}"))
    }

    /// (transactions committed in this database, not counting this
    /// counter's own; WAL syncs) so far. PostgreSQL flushes these
    /// statistics about once a second, so short windows are approximate.
    pub(super) async fn commit_counters(&self) -> (Option<u64>, Option<u64>) {
        let commits = self
            .one_i64("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            .await
            .map(|c| {
                (c.max(0) as u64)
                    .saturating_sub(self.own.load(std::sync::atomic::Ordering::Relaxed))
            });
        let syncs = self
            .one_i64("SELECT wal_sync FROM pg_stat_wal")
            .await
            .map(|c| c.max(0) as u64);
        (commits, syncs)
    }

    /// `SHOW data_directory` (needs a superuser or pg_read_all_settings).
    pub(super) async fn data_directory(&self) -> Option<String> {
        self.own.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.client
            .query_one("SHOW data_directory", &[])
            .await
            .ok()
            .map(|row| row.get::<_, String>(0))
    }

    /// The server's durability settings, e.g. `fsync=on,
    /// synchronous_commit=on`: what "stored" meant in this run.
    pub(super) async fn durability(&self) -> String {
        let mut settings = Vec::new();
        for name in ["fsync", "synchronous_commit"] {
            self.own.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let value = self
                .client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map(|row| row.get::<_, String>(0))
                .unwrap_or_else(|e| format!("unknown ({e})"));
            settings.push(format!("{name}={value}"));
        }
        settings.join(", ")
    }

    pub(super) async fn count(&self, prefix: &str) -> u64 {
        // Device ids are `<prefix><digits>`: a range on the key, not LIKE.
        let upper = format!("{prefix}\u{7f}");
        self.own.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.client
            .query_one(
                "SELECT count(*) FROM readings WHERE device_id >= $1 AND device_id < $2",
                &[&prefix, &upper],
            )
            .await
            .map(|row| row.get::<_, i64>(0).max(0) as u64)
            .unwrap_or(0)
    }

    /// Waits until `target` readings are stored (or `timeout`); returns the count.
    pub(super) async fn wait_for(&self, prefix: &str, target: u64, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.count(prefix).await;
            if n >= target || tokio::time::Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub(super) async fn queue_depth(q: &AmqpQueue, partitions: u32) -> Option<u64> {
    let mut total = 0;
    for p in 0..partitions {
        total += q.depth(p).await.ok()?;
    }
    Some(total)
}

/// What a measured step needs besides the driver.
pub(super) struct Probes<'a> {
    pub(super) store: Option<&'a StoreCounter>,
    pub(super) queue: Option<&'a AmqpQueue>,
    pub(super) partitions: u32,
    pub(super) components: Vec<Component>,
    /// Ingest's address, for its own account of each step (`/metrics`).
    pub(super) ingest: Option<&'a Endpoint>,
}

/// `CHECKPOINT` before a series that follows a large write to the store
/// (the drain, the storing steps): its write-back would otherwise stall
/// the next steps' fsyncs, the broker's included.
pub(super) async fn checkpoint(s: &StoreCounter, notes: &mut Vec<String>) {
    let started = std::time::Instant::now();
    match s.checkpoint().await {
        Ok(()) => super::log(format!(
            "PostgreSQL checkpoint before the next series: {:.1} s.",
            started.elapsed().as_secs_f64()
        )),
        Err(e) => notes.push(format!("Checkpoint before a series failed: {e}")),
    }
}

/// Waits (at most `limit`) until `components` together use under a
/// quarter of a core, and tasks waited on I/O under 5 % of the time
/// (`/proc/pressure/io`), for three seconds in a row: the start of a
/// series must not inherit the work the last one left behind (a drain's
/// millions of rows still being checkpointed stall every fsync, the
/// broker's included). Returns how long it waited, or `None` when the
/// machine was still busy at `limit`.
pub(super) async fn quiet(components: &[Component], limit: Duration) -> Option<Duration> {
    const WINDOW: Duration = Duration::from_secs(1);
    const BUSY_CORES: f64 = 0.25;
    const IO_STALLED: f64 = 0.05;
    let start = tokio::time::Instant::now();
    let mut calm = 0;
    let mut before = (crate::procfs::sample(components), io_stall());
    while start.elapsed() < limit {
        tokio::time::sleep(WINDOW).await;
        let after = (crate::procfs::sample(components), io_stall());
        let used: f64 = before
            .0
            .iter()
            .zip(&after.0)
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64())
            .sum();
        let stalled = after.1.saturating_sub(before.1).as_secs_f64();
        before = after;
        let window = WINDOW.as_secs_f64();
        calm = if used < BUSY_CORES * window && stalled < IO_STALLED * window {
            calm + 1
        } else {
            0
        };
        if calm >= 3 {
            return Some(start.elapsed());
        }
    }
    None
}

/// Time some task waited on I/O since boot (`/proc/pressure/io`); zero
/// where the kernel has no pressure stall information.
fn io_stall() -> Duration {
    std::fs::read_to_string("/proc/pressure/io")
        .ok()
        .and_then(|text| some_total(&text))
        .unwrap_or_default()
}

/// The `some` line's `total=` (microseconds) of a pressure file.
fn some_total(text: &str) -> Option<Duration> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let micros = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_io_stall_is_the_some_lines_total() {
        let text = "some avg10=0.70 avg60=2.91 avg300=4.06 total=4133103938\n\
                    full avg10=0.57 avg60=1.41 avg300=1.35 total=1802752089\n";
        assert_eq!(some_total(text), Some(Duration::from_micros(4_133_103_938)));
        assert_eq!(some_total("full avg10=0 total=5\n"), None);
        assert_eq!(some_total("some avg10=0 total=x\n"), None);
        assert_eq!(some_total(""), None);
    }
}
