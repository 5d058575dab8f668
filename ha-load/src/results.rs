//! What a run measured, in one serialisable value: the doc and the plot
//! are written from it (and can be rewritten from its JSON).

use serde::{Deserialize, Serialize};

use super::baseline::Rate;
use super::closed_loop::ClosedLoop;

/// The machine the run was on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// Online CPUs.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub model: String,
    /// Kernel release.
    pub kernel: String,
    /// MemTotal, bytes.
    pub memory: u64,
}

impl Machine {
    /// Reads /proc.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|k| k.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024;
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            model,
            kernel,
            memory,
        }
    }
}

/// One load step.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepRow {
    /// Offered requests per second.
    pub offered_rps: f64,
    /// Readings per request.
    pub batch: usize,
    /// Distinct devices the requests cycled through.
    pub devices: usize,
    /// Acknowledged readings per second.
    pub acked_rps: f64,
    /// Stored readings per second over the step (plus its drain); `None`
    /// when the target has no store (the naive composition).
    pub stored_rps: Option<f64>,
    /// Ack latency quantiles, milliseconds.
    pub p50_ms: f64,
    /// p99.
    pub p99_ms: f64,
    /// p99.9.
    pub p999_ms: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed or could not be sent.
    pub errors: u64,
    /// Messages ready in the partition queues at the end of the step.
    pub queue_depth: Option<u64>,
    /// Acknowledged but not yet stored readings at the end of the step.
    pub backlog: Option<i64>,
    /// CPU seconds per component during the step.
    pub cpu: Vec<(String, f64)>,
    /// RSS per component at the end of the step, bytes.
    pub rss: Vec<(String, u64)>,
    /// `sustained` or why not.
    pub verdict: String,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Step length, seconds.
    pub seconds: f64,
    /// Transactions committed in the database during the step, the
    /// harness's own queries excluded (PostgreSQL's `pg_stat_database`).
    #[serde(default)]
    pub commits: Option<u64>,
    /// WAL flushes to disk during the step (`pg_stat_wal.wal_sync`).
    #[serde(default)]
    pub wal_syncs: Option<u64>,
    /// Ingest's own account of the step (its `/metrics`), when it could be
    /// read: where a request's time went besides the network and the CPU
    /// queue.
    #[serde(default)]
    pub ingest: Option<IngestAccount>,
}

/// What ingest's `/metrics` counted during one step.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IngestAccount {
    /// Queue messages published (group commit packs concurrent requests).
    pub messages: u64,
    /// Readings in them.
    pub readings: u64,
    /// Mean publish-to-confirm latency of a message, milliseconds.
    pub confirm_ms: f64,
    /// Mean time a request waited for the confirm of its readings (its
    /// message's confirm plus any wait for a publish slot), milliseconds.
    pub ack_wait_ms: f64,
}

impl StepRow {
    /// Whether the step was within the bounds.
    pub fn sustained(&self) -> bool {
        self.verdict.starts_with("sustained")
    }

    /// Readings stored per committed transaction during the step.
    pub fn readings_per_commit(&self) -> Option<f64> {
        let stored = self.stored_rps? * self.seconds;
        let commits = self.commits.filter(|c| *c > 0)?;
        Some(stored / commits as f64)
    }

    /// Readings stored per WAL flush during the step: per commit that
    /// waited for the disk (read-only transactions flush nothing; commits
    /// arriving together share one flush).
    pub fn readings_per_flush(&self) -> Option<f64> {
        let stored = self.stored_rps? * self.seconds;
        let flushes = self.wal_syncs.filter(|c| *c > 0)?;
        Some(stored / flushes as f64)
    }
}

/// What the disk under PostgreSQL takes: the fsync ceiling's first factor.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FsyncProbe {
    /// PostgreSQL's `data_directory`.
    pub data_directory: String,
    /// Its file system (`stat -f -c %T`).
    pub fs_type: String,
    /// `pg_test_fsync`'s fdatasync figure, one 8 kB write per sync, ops/s.
    pub fdatasync_per_s: f64,
    /// The command run.
    pub tool: String,
}

/// Memory per connection.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Connections {
    /// Persistent TLS connections held by the ingest process at the
    /// measurement.
    pub connections: usize,
    /// What was asked for.
    pub attempted: usize,
    /// Generator processes the devices were split over.
    pub generators: usize,
    /// Ingest RSS before the devices connected / after, bytes.
    pub ingest_rss_before: u64,
    /// After.
    pub ingest_rss_after: u64,
    /// Generator RSS with `small_devices` connected devices, bytes.
    pub generator_rss_small: u64,
    /// Devices of that small run.
    pub small_devices: usize,
    /// Mean RSS of the big generators, bytes.
    pub generator_rss_big: u64,
    /// Devices per big generator.
    pub devices_per_generator: usize,
    /// The hard open-file limit that capped the run.
    pub fd_hard_limit: u64,
}

impl Connections {
    /// Ingest bytes per connected device.
    pub fn ingest_per_connection(&self) -> f64 {
        self.ingest_rss_after.saturating_sub(self.ingest_rss_before) as f64
            / self.connections.max(1) as f64
    }
    /// Generator bytes per simulated device.
    pub fn generator_per_device(&self) -> f64 {
        self.generator_rss_big
            .saturating_sub(self.generator_rss_small) as f64
            / self
                .devices_per_generator
                .saturating_sub(self.small_devices)
                .max(1) as f64
    }
}

/// Analyzer memory per (device, metric) window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Windows {
    /// New windows (devices × 1 metric).
    pub windows: u64,
    /// Readings each received (≥ the window size fills it).
    pub readings_per_window: u64,
    /// Analyzer RSS before / after, bytes.
    pub rss_before: u64,
    /// After.
    pub rss_after: u64,
}

impl Windows {
    /// Bytes per window.
    pub fn per_window(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.windows.max(1) as f64
    }
}

/// The latency target in one placement of the processes on the cores:
/// every repeat's step and the medians over them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyPlacement {
    /// `everything sharing 2 cores`, `driver on core 0, …`.
    pub name: String,
    /// One step per repeat.
    pub runs: Vec<StepRow>,
    /// Median of the repeats' p99, milliseconds.
    pub median_p99_ms: f64,
    /// Median of the repeats' acknowledged readings/s.
    pub median_acked_rps: f64,
    /// Why the placement could not be fully applied (pinning, renicing).
    pub pin_error: Option<String>,
    /// A placement beyond the two (sharing, driver pinned apart):
    /// shown, but not what the target is judged on.
    #[serde(default)]
    pub extra: bool,
}

impl LatencyPlacement {
    /// The placement's medians from its repeats.
    pub fn from_runs(name: String, runs: Vec<StepRow>, pin_error: Option<String>) -> Self {
        let median = |f: fn(&StepRow) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        LatencyPlacement {
            median_p99_ms: median(|r| r.p99_ms),
            median_acked_rps: median(|r| r.acked_rps),
            name,
            runs,
            pin_error,
            extra: false,
        }
    }
}

/// The latency target (p99 at a fixed offered rate, analyzer storing),
/// in each placement.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyTarget {
    /// Offered readings/s, one per request.
    pub rate: f64,
    /// The bound on the median p99, milliseconds.
    pub bound_ms: f64,
    /// Everything sharing the cores; the driver pinned apart.
    pub placements: Vec<LatencyPlacement>,
}

/// Two replicas where the rest of the run has one: the capacity model's
/// scaling figures, measured beside the one-replica ones of the same run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Replicas {
    /// Ingest alone (analyzer stopped) with two `ingest-api` processes,
    /// the driver's connections split between them: the same steps as
    /// [`RunResults::ingest_only`].
    pub ingest_two: Vec<StepRow>,
    /// Two analyzers draining the backlog those steps built, as
    /// [`RunResults::drain`] has one drain its backlog.
    pub drain_two: Option<Rate>,
    /// CPU seconds each of the two analyzers used during that drain (both
    /// took part, or the figure is one analyzer's).
    pub drain_two_cpu: Vec<f64>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResults {
    /// The machine.
    pub machine: Machine,
    /// When the run started (RFC 3339).
    pub started: String,
    /// `--quick` (short steps).
    pub quick: bool,
    /// The command that produced this.
    pub command: String,
    /// Step length, seconds.
    pub step_seconds: f64,
    /// Knee: p99 bound, milliseconds.
    pub p99_bound_ms: f64,
    /// Keep-alive connections of the driver (same for ours and naive).
    pub connections: usize,
    /// Our pipeline, one reading per request.
    pub ours: Vec<StepRow>,
    /// Our ingest alone (analyzer stopped), like the naive composition.
    #[serde(default)]
    pub ingest_only: Vec<StepRow>,
    /// Our pipeline over MQTT (QoS 1, one reading per PUBLISH, one session
    /// per driver connection), analyzer storing: the same driver and steps
    /// as `ours`, right after it.
    #[serde(default)]
    pub mqtt: Vec<StepRow>,
    /// The naive composition, same driver, same steps.
    pub naive: Vec<StepRow>,
    /// Our pipeline, batched requests.
    pub batched: Option<StepRow>,
    /// Raw lapin, confirms pipelined (messages/s).
    pub raw_publish: Option<Rate>,
    /// Raw consume, `multiple` acks.
    pub raw_consume: Option<Rate>,
    /// Raw binary COPY, rows.
    pub raw_copy: Option<Rate>,
    /// The analyzer draining a backlog (readings).
    pub drain: Option<Rate>,
    /// 1 → 2 replicas of ingest and of the analyzer.
    #[serde(default)]
    pub replicas: Option<Replicas>,
    /// Readings acknowledged over the whole run (one-reading steps).
    pub acked_total: u64,
    /// Of them, found in the store at the end.
    pub stored_total: u64,
    /// Connection memory, HTTPS keep-alive connections.
    pub conns: Option<Connections>,
    /// Connection memory, MQTT sessions over TLS.
    #[serde(default)]
    pub conns_mqtt: Option<Connections>,
    /// Window memory.
    pub windows: Option<Windows>,
    /// Load average (1, 5, 15 min) when the run started: other work on
    /// the machine competes for its cores.
    #[serde(default)]
    pub load_average_start: String,
    /// And when it ended.
    #[serde(default)]
    pub load_average_end: String,
    /// The closed-loop driver against our ingest alone (analyzer stopped,
    /// like the naive composition, which has no consumer).
    #[serde(default)]
    pub closed_ours: Option<ClosedLoop>,
    /// The closed-loop driver against the naive composition.
    #[serde(default)]
    pub closed_naive: Option<ClosedLoop>,
    /// The database's durability settings during the run, as it reported
    /// them (`fsync=on, synchronous_commit=on`).
    #[serde(default)]
    pub postgres_durability: String,
    /// fdatasync/s on the data directory's file system (fsync=on runs).
    #[serde(default)]
    pub fsync: Option<FsyncProbe>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
    /// The latency target's repeats in each placement.
    #[serde(default)]
    pub latency_target: Option<LatencyTarget>,
}

impl RunResults {
    /// Highest acknowledged rate (readings/s) of a sustained step before
    /// the first knee.
    pub fn max_sustained(steps: &[StepRow]) -> Option<f64> {
        let mut best: Option<f64> = None;
        for s in steps {
            if !s.sustained() {
                break;
            }
            best = Some(best.map_or(s.acked_rps, |b: f64| b.max(s.acked_rps)));
        }
        best
    }
}
