//! `cpu-stresser`: burns CPU so that a HorizontalPodAutoscaler has
//! something to scale on.
//!
//! Each of `threads` OS threads runs a duty cycle: in every `period`
//! (100 ms) it spins for `load × period` and sleeps for the rest, until
//! `duration` has passed or it is stopped. The spinning time is counted
//! for `/metrics`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `ok` |
//! | `GET /metrics` | `ha_cpu_stresser_busy_seconds_total` (wall-clock seconds spent spinning, all threads), `ha_cpu_stresser_threads` (threads burning now), `ha_cpu_stresser_load` (target fraction per thread) |

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;

/// Most threads accepted: more than any node has cores is a typo.
pub const MAX_THREADS: usize = 1024;

/// Settings of a [`CpuStress`].
#[derive(Clone, Debug, PartialEq)]
pub struct CpuStressConfig {
    /// Burning threads.
    pub threads: usize,
    /// Fraction of each period a thread spins, 0 to 1.
    pub load: f64,
    /// How long to burn; `None`: until stopped.
    pub duration: Option<Duration>,
    /// The duty-cycle period.
    pub period: Duration,
}

impl Default for CpuStressConfig {
    fn default() -> Self {
        CpuStressConfig {
            threads: 1,
            load: 1.0,
            duration: None,
            period: Duration::from_millis(100),
        }
    }
}

impl CpuStressConfig {
    /// Checks the settings; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return Err(format!("threads must be 1 to {MAX_THREADS}"));
        }
        if !(0.0..=1.0).contains(&self.load) {
            return Err("load must be a fraction from 0 to 1".into());
        }
        if self.period.is_zero() {
            return Err("period must be positive".into());
        }
        Ok(())
    }

    /// The spinning part of each period.
    pub fn busy_slice(&self) -> Duration {
        self.period.mul_f64(self.load.clamp(0.0, 1.0))
    }
}

/// What the burning threads report, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct CpuStats {
    busy_nanos: AtomicU64,
    running: AtomicUsize,
    load: AtomicU64,
}

impl CpuStats {
    /// Wall-clock seconds spent spinning, summed over threads.
    pub fn busy_seconds(&self) -> f64 {
        self.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Threads burning right now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "# HELP ha_cpu_stresser_busy_seconds Wall-clock seconds spent spinning, all threads.\n\
             # TYPE ha_cpu_stresser_busy_seconds counter\n\
             ha_cpu_stresser_busy_seconds_total {}\n\
             # HELP ha_cpu_stresser_threads Threads burning now.\n\
             # TYPE ha_cpu_stresser_threads gauge\n\
             ha_cpu_stresser_threads {}\n\
             # HELP ha_cpu_stresser_load Target busy fraction per thread.\n\
             # TYPE ha_cpu_stresser_load gauge\n\
             ha_cpu_stresser_load {}\n",
            self.busy_seconds(),
            self.running(),
            f64::from_bits(self.load.load(Ordering::Relaxed)),
        );
        out
    }
}

/// Running burner threads; [`stop`](CpuStress::stop) them, or they end by
/// themselves after the configured duration.
#[derive(Debug)]
pub struct CpuStress {
    stats: Arc<CpuStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuStress {
    /// Starts the threads. The caller owns them: call
    /// [`stop`](CpuStress::stop) before exiting.
    ///
    /// Errors: the invalid setting, or a thread that could not be spawned.
    pub fn start(config: &CpuStressConfig) -> Result<CpuStress, String> {
        config.validate()?;
        let stats = Arc::new(CpuStats::default());
        stats.load.store(config.load.to_bits(), Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = config.duration.map(|d| Instant::now() + d);
        let mut stress = CpuStress {
            stats,
            stop,
            threads: Vec::with_capacity(config.threads),
        };
        for i in 0..config.threads {
            let (stats, stop) = (stress.stats.clone(), stress.stop.clone());
            let (slice, period) = (config.busy_slice(), config.period);
            stats.running.fetch_add(1, Ordering::Relaxed);
            let spawned = std::thread::Builder::new()
                .name(format!("burn-{i}"))
                .spawn(move || burn(slice, period, deadline, &stop, &stats));
            match spawned {
                Ok(handle) => stress.threads.push(handle),
                Err(e) => {
                    stress.stats.running.fetch_sub(1, Ordering::Relaxed);
                    stress.stop();
                    return Err(format!("cannot start thread {i}: {e}"));
                }
            }
        }
        Ok(stress)
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> Arc<CpuStats> {
        self.stats.clone()
    }

    /// Tells every thread to stop (they do within one period), without
    /// waiting: for a shutdown future.
    pub fn halt(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops every thread (within one period) and waits for them.
    pub fn stop(self) {
        self.halt();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn burn(
    slice: Duration,
    period: Duration,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    stats: &CpuStats,
) {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let start = Instant::now();
        let busy_until = start + slice;
        while Instant::now() < busy_until {
            for _ in 0..1000 {
                x = std::hint::black_box(
                    x.wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407),
                );
            }
        }
        let busy = start.elapsed();
        stats.busy_nanos.fetch_add(
            u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let rest = period.saturating_sub(busy);
        if !rest.is_zero() {
            std::thread::sleep(rest);
        }
    }
    stats.running.fetch_sub(1, Ordering::Relaxed);
}

/// `/healthz` and `/metrics` over `stats`.
pub fn router(stats: Arc<CpuStats>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(move || async move { stats.render() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_computes_the_slice() {
        let c = CpuStressConfig {
            load: 0.25,
            ..CpuStressConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.busy_slice(), Duration::from_millis(25));
        for bad in [
            CpuStressConfig {
                threads: 0,
                ..CpuStressConfig::default()
            },
            CpuStressConfig {
                threads: MAX_THREADS + 1,
                ..CpuStressConfig::default()
            },
            CpuStressConfig {
                load: 1.01,
                ..CpuStressConfig::default()
            },
            CpuStressConfig {
                load: f64::NAN,
                ..CpuStressConfig::default()
            },
            CpuStressConfig {
                period: Duration::ZERO,
                ..CpuStressConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn burns_for_the_duration_then_stops_by_itself() {
        let stress = CpuStress::start(&CpuStressConfig {
            threads: 2,
            load: 0.3,
            duration: Some(Duration::from_millis(250)),
            period: Duration::from_millis(50),
        })
        .unwrap();
        let stats = stress.stats();
        let t0 = Instant::now();
        while stats.running() > 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "threads did not end"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // 2 threads x 5 periods x 15 ms, give or take a period each.
        let busy = stats.busy_seconds();
        assert!((0.05..=0.5).contains(&busy), "busy {busy}");
        stress.stop();
        let text = stats.render();
        assert!(
            text.contains("ha_cpu_stresser_busy_seconds_total "),
            "{text}"
        );
        assert!(text.contains("ha_cpu_stresser_threads 0\n"), "{text}");
        assert!(text.contains("ha_cpu_stresser_load 0.3\n"), "{text}");
    }

    #[test]
    fn zero_load_never_spins_and_stop_returns() {
        let stress = CpuStress::start(&CpuStressConfig {
            load: 0.0,
            ..CpuStressConfig::default()
        })
        .unwrap();
        let stats = stress.stats();
        std::thread::sleep(Duration::from_millis(150));
        stress.stop();
        assert!(stats.busy_seconds() < 0.01, "{}", stats.busy_seconds());
    }
}
