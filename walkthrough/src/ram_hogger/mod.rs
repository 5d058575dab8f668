//! `ram-hogger`: allocates memory and writes to every page of it, so the
//! resident set really grows, for the memory-limit and OOM-kill demos.
//!
//! It grows by `step` every `step_interval` until it holds `total`, then
//! holds it until shut down. Allocation is in 1 MiB blocks, each filled
//! with a non-zero byte (zero pages could stay shared and not count).
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `ok` |
//! | `GET /metrics` | `ha_ram_hogger_allocated_bytes` (held now), `ha_ram_hogger_target_bytes`, `ha_ram_hogger_resident_bytes` (the process's RSS from `/proc/self/status`, when readable) |

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;

/// One mebibyte: the unit of every size here.
pub const MIB: u64 = 1 << 20;
/// The size above which the hogger refuses to start without `--i-know` when
/// the machine's memory size is unknown.
pub const FALLBACK_LIMIT_MIB: u64 = 16 * 1024;

/// Settings of [`run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamHogConfig {
    /// What to hold in the end, in MiB.
    pub total_mib: u64,
    /// Growth per step, in MiB (capped at `total_mib`).
    pub step_mib: u64,
    /// Pause between steps.
    pub step_interval: Duration,
    /// Allow more than the machine has (`--i-know`).
    pub allow_absurd: bool,
}

impl RamHogConfig {
    /// Checks the settings against the machine's memory (`MemTotal` in
    /// bytes, when known); the message names the bad one.
    pub fn validate(&self, mem_total: Option<u64>) -> Result<(), String> {
        if self.total_mib == 0 {
            return Err("megabytes must be at least 1".into());
        }
        if self.step_mib == 0 {
            return Err("step-megabytes must be at least 1".into());
        }
        let limit_mib = mem_total.map_or(FALLBACK_LIMIT_MIB, |b| b / MIB);
        if self.total_mib > limit_mib && !self.allow_absurd {
            return Err(format!(
                "{} MiB is more than {} ({limit_mib} MiB); pass --i-know to try anyway",
                self.total_mib,
                if mem_total.is_some() {
                    "this machine's memory"
                } else {
                    "the limit for a machine of unknown size"
                }
            ));
        }
        if self
            .total_mib
            .checked_mul(MIB)
            .is_none_or(|b| usize::try_from(b).is_err())
        {
            return Err(format!("{} MiB cannot be addressed here", self.total_mib));
        }
        Ok(())
    }

    /// The sizes of the steps, in MiB: `step_mib` each, the last one smaller.
    pub fn steps(&self) -> impl Iterator<Item = u64> + use<> {
        let (total, step) = (
            self.total_mib,
            self.step_mib.clamp(1, self.total_mib.max(1)),
        );
        (0..total.div_ceil(step)).map(move |i| step.min(total - i * step))
    }
}

/// What [`run`] reports, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct RamStats {
    allocated: AtomicU64,
    target: AtomicU64,
}

impl RamStats {
    /// Bytes allocated and written so far.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "# HELP ha_ram_hogger_allocated_bytes Memory allocated and written to.\n\
             # TYPE ha_ram_hogger_allocated_bytes gauge\n\
             ha_ram_hogger_allocated_bytes {}\n\
             # HELP ha_ram_hogger_target_bytes Memory it will hold once grown.\n\
             # TYPE ha_ram_hogger_target_bytes gauge\n\
             ha_ram_hogger_target_bytes {}\n",
            self.allocated_bytes(),
            self.target.load(Ordering::Relaxed),
        );
        if let Some(rss) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| status_kib(&s, "VmRSS:"))
        {
            let _ = write!(
                out,
                "# HELP ha_ram_hogger_resident_bytes Resident set size of the process.\n\
                 # TYPE ha_ram_hogger_resident_bytes gauge\n\
                 ha_ram_hogger_resident_bytes {}\n",
                rss * 1024
            );
        }
        out
    }
}

/// A `kB` value of a `/proc/<pid>/status` or `/proc/meminfo` line, e.g.
/// `VmRSS:     1234 kB` → 1234.
pub fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`).
pub fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    status_kib(&text, "MemTotal:").map(|kib| kib * 1024)
}

/// Grows to `config.total_mib` step by step, then holds the memory until
/// `shutdown` resolves; frees it and returns. An allocation the allocator
/// refuses ends the growth (logged); what was allocated is still held.
pub async fn run(config: RamHogConfig, stats: Arc<RamStats>, shutdown: impl Future<Output = ()>) {
    stats
        .target
        .store(config.total_mib * MIB, Ordering::Relaxed);
    let hold = async {
        let mut held: Vec<Box<[u8]>> = Vec::new();
        for (i, step) in config.steps().enumerate() {
            if i > 0 {
                tokio::time::sleep(config.step_interval).await;
            }
            let blocks = tokio::task::spawn_blocking(move || allocate(step)).await;
            match blocks {
                Ok(Ok(blocks)) => {
                    held.extend(blocks);
                    stats
                        .allocated
                        .store(held.len() as u64 * MIB, Ordering::Relaxed);
                    tracing::info!(allocated_mib = held.len(), "Grew.");
                }
                Ok(Err((blocks, e))) => {
                    held.extend(blocks);
                    stats
                        .allocated
                        .store(held.len() as u64 * MIB, Ordering::Relaxed);
                    tracing::error!(allocated_mib = held.len(), error = %e, "Allocation refused; holding what I have.");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Allocation task failed.");
                    break;
                }
            }
        }
        tracing::info!(allocated_mib = held.len(), "Holding memory until shutdown.");
        std::future::pending::<()>().await;
        drop(held);
    };
    tokio::select! {
        () = hold => {}
        () = shutdown => {}
    }
    stats.allocated.store(0, Ordering::Relaxed);
}

type Blocks = Vec<Box<[u8]>>;

/// `mib` blocks of 1 MiB, every byte written; on refusal, the blocks made
/// so far and the error.
fn allocate(mib: u64) -> Result<Blocks, (Blocks, std::collections::TryReserveError)> {
    let mut blocks = Vec::new();
    for _ in 0..mib {
        let mut block: Vec<u8> = Vec::new();
        if let Err(e) = block.try_reserve_exact(MIB as usize) {
            return Err((blocks, e));
        }
        block.resize(MIB as usize, 0xa5);
        blocks.push(block.into_boxed_slice());
    }
    Ok(blocks)
}

/// `/healthz` and `/metrics` over `stats`.
pub fn router(stats: Arc<RamStats>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(move || async move { stats.render() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(total_mib: u64, step_mib: u64) -> RamHogConfig {
        RamHogConfig {
            total_mib,
            step_mib,
            step_interval: Duration::from_millis(10),
            allow_absurd: false,
        }
    }

    #[test]
    fn steps_add_up_to_the_total() {
        assert_eq!(config(10, 3).steps().collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert_eq!(config(10, 10).steps().collect::<Vec<_>>(), [10]);
        assert_eq!(config(10, 50).steps().collect::<Vec<_>>(), [10]);
        assert_eq!(config(1, 1).steps().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn refuses_zero_and_absurd_sizes_unless_told() {
        let gib = 1 << 30;
        assert_eq!(config(512, 64).validate(Some(gib)), Ok(()));
        assert!(config(0, 1).validate(Some(gib)).is_err());
        assert!(config(1, 0).validate(Some(gib)).is_err());
        let err = config(2048, 64).validate(Some(gib)).unwrap_err();
        assert!(err.contains("--i-know"), "{err}");
        let mut told = config(2048, 64);
        told.allow_absurd = true;
        assert_eq!(told.validate(Some(gib)), Ok(()));
        assert!(config(FALLBACK_LIMIT_MIB + 1, 64).validate(None).is_err());
        let mut huge = config(u64::MAX, 1);
        huge.allow_absurd = true;
        assert!(huge.validate(None).is_err());
    }

    #[test]
    fn reads_kib_lines() {
        let meminfo = "MemTotal:       16310452 kB\nMemFree:  1 kB\n";
        assert_eq!(status_kib(meminfo, "MemTotal:"), Some(16_310_452));
        assert_eq!(status_kib(meminfo, "VmRSS:"), None);
        assert!(mem_total().is_some());
    }

    #[tokio::test]
    async fn grows_to_the_total_and_frees_on_shutdown() {
        let stats = Arc::new(RamStats::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(config(8, 3), stats.clone(), async {
            let _ = rx.await;
        }));
        let t0 = std::time::Instant::now();
        while stats.allocated_bytes() < 8 * MIB {
            assert!(t0.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let text = stats.render();
        assert!(
            text.contains(&format!("ha_ram_hogger_allocated_bytes {}\n", 8 * MIB)),
            "{text}"
        );
        assert!(text.contains("ha_ram_hogger_resident_bytes "), "{text}");
        tx.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(stats.allocated_bytes(), 0);
    }
}
