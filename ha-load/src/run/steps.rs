//! One measured step (rates, latency, stored rate, depth, CPU and RSS per
//! component) and the stepped load until the knee.

use std::time::Duration;

use super::account;
use super::probes::{Probes, queue_depth, quiet};
use super::{LoadConfig, log};
use crate::driver::{Driver, StepStats};
use crate::plan::{Bisection, KneeBound, StepOutcome, Verdict, ms};
use crate::procfs;
use crate::results::StepRow;

pub(super) fn row(stats: &StepStats, devices: usize, verdict: &Verdict) -> StepRow {
    StepRow {
        offered_rps: stats.offered_rps,
        batch: stats.batch,
        devices,
        acked_rps: stats.acked_readings_per_s(),
        p50_ms: ms(stats.latency.quantile(0.5)),
        p99_ms: ms(stats.latency.quantile(0.99)),
        p999_ms: ms(stats.latency.quantile(0.999)),
        requests: stats.requests,
        errors: stats.errors,
        verdict: match verdict {
            Verdict::Sustained => "sustained".into(),
            Verdict::Knee(why) => why.clone(),
        },
        first_error: stats.first_error.clone(),
        seconds: stats.duration.as_secs_f64(),
        ..StepRow::default()
    }
}

/// What one step offers.
#[derive(Clone, Copy)]
pub(super) struct Offer {
    pub(super) rate: f64,
    pub(super) batch: usize,
    pub(super) duration: Duration,
}

/// Runs one step and fills its row: rates, latency, stored rate, depth,
/// CPU and RSS per component.
pub(super) async fn measured_step(
    label: &str,
    driver: &mut Driver,
    offer: Offer,
    bound: &KneeBound,
    probes: &Probes<'_>,
    prefix: &str,
    acked_before: u64,
) -> (StepRow, u64) {
    let Offer {
        rate,
        batch,
        duration,
    } = offer;
    let cpu_before = procfs::sample(&probes.components);
    let stored_before = match probes.store {
        Some(s) => Some(s.count(prefix).await),
        None => None,
    };
    let commits_before = match probes.store {
        Some(s) => s.commit_counters().await,
        None => (None, None),
    };
    let ingest_before = match probes.ingest {
        Some(e) => account::read(e).await,
        None => None,
    };
    let t0 = tokio::time::Instant::now();
    log(format!(
        "{label}: offering {rate:.0} req/s × {batch} reading(s) over {} devices for {:.0} s…",
        driver.devices(),
        duration.as_secs_f64()
    ));
    let expected = (rate * duration.as_secs_f64()) as u64;
    let stats = driver
        .step(rate, batch, duration, |t, acked, errors| {
            eprintln!(
                "[ha-load]   {label} {:>4.1} s: {acked}/{expected} acknowledged, {errors} errors",
                t.as_secs_f64()
            );
        })
        .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_after = procfs::sample(&probes.components);
    let outcome = StepOutcome {
        offered: rate * batch as f64,
        acked: stats.acked_readings_per_s(),
        errors: stats.errors,
        requests: stats.requests,
        p99: stats.latency.quantile(0.99),
    };
    let verdict = bound.judge(&outcome);
    let mut r = row(&stats, driver.devices(), &verdict);
    // The window the CPU figures cover (the step and its answers).
    r.seconds = elapsed;
    let acked_after = acked_before + stats.acked_readings;
    if let (Some(s), Some(before)) = (probes.store, stored_before) {
        let now = s.count(prefix).await;
        r.stored_rps = Some(now.saturating_sub(before) as f64 / elapsed.max(1e-9));
        r.backlog = Some(acked_after as i64 - now as i64);
        let (commits, syncs) = s.commit_counters().await;
        let delta = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b?));
        r.commits = delta(commits, commits_before.0);
        r.wal_syncs = delta(syncs, commits_before.1);
    }
    if let Some(q) = probes.queue {
        r.queue_depth = queue_depth(q, probes.partitions).await;
    }
    if let (Some(e), Some(before)) = (probes.ingest, ingest_before) {
        r.ingest = account::read(e).await.map(|after| after.since(&before));
    }
    r.cpu = probes
        .components
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|(c, (b, a))| (c.name.clone(), a.cpu.saturating_sub(b.cpu).as_secs_f64()))
        .collect();
    r.rss = probes
        .components
        .iter()
        .zip(&cpu_after)
        .map(|(c, a)| (c.name.clone(), a.rss))
        .collect();
    log(format!(
        "{label}: offered {:.0} readings/s → acked {:.0}/s, stored {}, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} errors{} — {}",
        outcome.offered,
        r.acked_rps,
        r.stored_rps.map_or("—".into(), |s| format!("{s:.0}/s")),
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        r.errors,
        r.first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})")),
        r.verdict
    ));
    (r, acked_after)
}

/// Tries of one rate before it counts as the knee.
const TRIES: usize = 3;

/// Steps between the last sustained rate and the knee, each halving the
/// gap: the plan's factor (×1.5) alone would leave the knee a third wide.
const REFINE: usize = 2;

/// Runs the stepped load until the knee, then narrows the knee down by
/// bisection; returns the rows (by offered rate, so every sustained row
/// comes before the first knee) and the readings acknowledged.
pub(super) async fn stepped(
    label: &str,
    driver: &mut Driver,
    config: &LoadConfig,
    probes: &Probes<'_>,
    prefix: &str,
    acked_before: u64,
) -> (Vec<StepRow>, u64) {
    let settle = catch_up(config);
    match quiet(&probes.components, settle).await {
        Some(t) => log(format!(
            "{label}: the measured processes were quiet after {:.0} s.",
            t.as_secs_f64()
        )),
        None => log(format!(
            "{label}: the measured processes still used over a quarter of a core after {} s; starting anyway.",
            settle.as_secs()
        )),
    }
    let mut rows: Vec<StepRow> = Vec::new();
    let mut acked = acked_before;
    let mut knee = None;
    for rate in config.plan.rates() {
        let (r, a) = judged_step(label, driver, config, probes, prefix, rate, acked).await;
        acked = a;
        let sustained = r.sustained();
        rows.push(r);
        if !sustained {
            log(format!("{label}: knee reached at {rate:.0} req/s."));
            knee = Some(rate);
            break;
        }
    }
    let last_sustained = rows.iter().rfind(|r| r.sustained()).map(|r| r.offered_rps);
    if let (Some(sustained), Some(knee)) = (last_sustained, knee) {
        let mut search = Bisection { sustained, knee };
        for _ in 0..REFINE {
            let Some(rate) = search.next() else { break };
            log(format!(
                "{label}: narrowing the knee between {:.0} and {:.0} req/s.",
                search.sustained, search.knee
            ));
            let (r, a) = judged_step(label, driver, config, probes, prefix, rate, acked).await;
            acked = a;
            search.record(rate, r.sustained());
            rows.push(r);
        }
    }
    rows.sort_by(|a, b| a.offered_rps.total_cmp(&b.offered_rps));
    (rows, acked)
}

/// One rate, tried up to [`TRIES`] times: a stall of the shared machine
/// (its disk's write-back stalls every fsync, the broker's included, for a
/// few hundred ms now and then) can fail a step; a knee is TRIES failures
/// in a row. Before each try and afterwards the analyzer gets time to
/// catch up ([`catch_up`]), so a step starts from an empty queue.
async fn judged_step(
    label: &str,
    driver: &mut Driver,
    config: &LoadConfig,
    probes: &Probes<'_>,
    prefix: &str,
    rate: f64,
    acked_before: u64,
) -> (StepRow, u64) {
    let offer = Offer {
        rate,
        batch: 1,
        duration: config.step,
    };
    let (mut r, mut acked) = measured_step(
        label,
        driver,
        offer,
        &config.bound,
        probes,
        prefix,
        acked_before,
    )
    .await;
    let mut failed = Vec::new();
    while !r.sustained() && failed.len() + 1 < TRIES {
        failed.push(r.verdict.clone());
        log(format!(
            "{label}: repeating the step to rule out a transient stall ({} of {} tries failed).",
            failed.len(),
            TRIES
        ));
        if let Some(s) = probes.store {
            s.wait_for(prefix, acked, catch_up(config)).await;
        }
        let (again, a) =
            measured_step(label, driver, offer, &config.bound, probes, prefix, acked).await;
        acked = a;
        r = again;
    }
    if r.sustained() && !failed.is_empty() {
        r.verdict = format!(
            "sustained on try {} (before: {})",
            failed.len() + 1,
            failed.join("; ")
        );
    }
    if let Some(s) = probes.store {
        s.wait_for(prefix, acked, catch_up(config)).await;
    }
    (r, acked)
}

/// How long the analyzer may take to store what a step left behind before
/// the next step starts: an overloaded step leaves a backlog whose drain
/// would otherwise take the cores from the next one (a first run's
/// bisection steps failed on the knee's backlog, not on their own rate).
fn catch_up(config: &LoadConfig) -> std::time::Duration {
    config.step * 6
}
