//! docs/performance.md and its SVG plot, written from [`RunResults`].
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | number formatting, the headline (also quoted in the README) |
//! | [`markdown`](fn@markdown) (`markdown.rs`) | the document's text and tables |
//! | [`svg`](fn@svg) (`svg.rs`) | the plot |
//! | `capacity.rs` | CPU-seconds per reading per component, scaled to a fleet |
//! | `fsync.rs` | the fsync ceiling: fdatasync/s × readings per commit |
//! | `latency.rs` | the latency target: p99 at 7,500 offered, repeated, two placements |
//! | `mqtt.rs` | MQTT beside HTTPS: rates and memory per idle session |
//! | `scaling.rs` | 1 → 2 replicas of ingest and of the analyzer |

mod capacity;
mod fsync;
mod latency;
mod markdown;
mod mqtt;
mod scaling;
mod svg;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use crate::results::{RunResults, StepRow};

pub use markdown::markdown;
pub use svg::svg;

/// Targets of the performance issue (2-core machine).
const TARGET_STORED: f64 = 15_000.0;
const TARGET_P99_MS: f64 = 10.0;
const TARGET_DRAIN: f64 = 50_000.0;
const TARGET_INGEST_CONN: f64 = 16.0 * 1024.0;
const TARGET_GENERATOR_DEVICE: f64 = 32.0 * 1024.0;

fn rate(v: f64) -> String {
    if v >= 100.0 {
        let n = v.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{v:.1}")
    }
}

fn opt_rate(v: Option<f64>) -> String {
    v.map_or_else(|| "not measured".into(), rate)
}

fn ratio(ours: Option<f64>, base: Option<f64>) -> String {
    match (ours, base) {
        (Some(o), Some(b)) if b > 0.0 => format!("{:.2}×", o / b),
        _ => "n/a".into(),
    }
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// The best sustained rate as text; when even the first step failed,
/// "< first offered".
fn sustained_text(steps: &[StepRow]) -> String {
    match (RunResults::max_sustained(steps), steps.first()) {
        (Some(v), _) => rate(v),
        (None, Some(first)) => format!("< {} (knee at the first step)", rate(first.offered_rps)),
        (None, None) => "not measured".into(),
    }
}

/// ours / baseline; a lower bound when the baseline failed its first step.
fn ingest_ratio(ours: &[StepRow], naive: &[StepRow]) -> (String, Option<f64>) {
    let o = RunResults::max_sustained(ours);
    match (o, RunResults::max_sustained(naive), naive.first()) {
        (Some(o), Some(n), _) if n > 0.0 => (format!("{:.2}×", o / n), Some(o / n)),
        (Some(o), None, Some(first)) if first.offered_rps > 0.0 => {
            let x = o / first.offered_rps;
            (format!("> {x:.2}×"), Some(x))
        }
        _ => ("n/a".into(), None),
    }
}

/// Our steps to compare with the naive composition: ingest alone when
/// measured (neither has a consumer running), else the end-to-end steps.
fn like_for_like(r: &RunResults) -> &[StepRow] {
    if r.ingest_only.is_empty() {
        &r.ours
    } else {
        &r.ingest_only
    }
}

/// Closed loop: our successful requests per second over the naive
/// composition's, both under `wrk` in the same run.
fn closed_ratio(r: &RunResults) -> Option<f64> {
    let (ours, naive) = (r.closed_ours.as_ref()?, r.closed_naive.as_ref()?);
    (naive.ok_per_sec() > 0.0).then(|| ours.ok_per_sec() / naive.ok_per_sec())
}

/// The smaller of the open-loop and closed-loop advantages over the naive
/// composition, with both named: what the headline quotes.
fn conservative_ratio(r: &RunResults) -> String {
    let (open_text, open) = ingest_ratio(like_for_like(r), &r.naive);
    let Some(closed) = closed_ratio(r) else {
        return format!("{open_text} (open-loop driver; closed loop not measured)");
    };
    let smaller = open.map_or(closed, |o| o.min(closed));
    format!(
        "{smaller:.2}× (the smaller of two drivers: open-loop stepped {open_text}, closed-loop wrk {closed:.2}×)"
    )
}

/// The headline sentence (also quoted in the README).
pub fn headline(r: &RunResults) -> String {
    let ratio = conservative_ratio(r);
    let mut h = format!(
        "On {} cores ({}), everything co-located, ingest over HTTPS with device auth and broker confirms sustained **{} readings/s at one reading per request** (p99 ≤ {} ms; analyzer stopped, like the baseline) = **{}** the naive axum-publish-await composition measured in the same run ({} req/s); with the analyzer storing into PostgreSQL at the same time, **{} readings/s** end to end",
        r.machine.cores,
        r.machine.model,
        sustained_text(like_for_like(r)),
        r.p99_bound_ms,
        ratio,
        sustained_text(&r.naive),
        sustained_text(&r.ours)
    );
    if let Some(b) = &r.batched {
        let _ = write!(
            h,
            "; batched ({} readings per request): {} readings/s acknowledged",
            b.batch,
            rate(b.acked_rps)
        );
    }
    if r.stored_total > r.acked_total {
        // More rows than acknowledgements: requests the driver gave up on
        // in an overloaded step were still accepted and stored.
        let _ = write!(
            h,
            "; all {} acknowledged readings stored ({} rows in all: requests the driver gave up on at the knee were still accepted){}.",
            rate(r.acked_total as f64),
            rate(r.stored_total as f64),
            if r.quick { " (quick run)" } else { "" }
        );
    } else {
        let _ = write!(
            h,
            "; {} of {} acknowledged readings stored{}.",
            rate(r.stored_total as f64),
            rate(r.acked_total as f64),
            if r.quick { " (quick run)" } else { "" }
        );
    }
    h
}

/// Replaces the text between `<!-- perf-headline -->` and
/// `<!-- /perf-headline -->` in `readme`; `None` when the markers are absent.
pub fn with_headline(readme: &str, r: &RunResults) -> Option<String> {
    const OPEN: &str = "<!-- perf-headline -->";
    const CLOSE: &str = "<!-- /perf-headline -->";
    let a = readme.find(OPEN)? + OPEN.len();
    let b = a + readme[a..].find(CLOSE)?;
    Some(format!(
        "{}\n{} ([docs/performance.md](docs/performance.md), `{}`, {})\n{}",
        &readme[..a],
        headline(r),
        r.command,
        r.started.get(..10).unwrap_or(&r.started),
        &readme[b..]
    ))
}

/// The sustained one-reading step whose offered rate is nearest `rate`.
fn step_near(steps: &[StepRow], rate: f64) -> Option<&StepRow> {
    steps.iter().filter(|s| s.batch == 1).min_by(|a, b| {
        (a.offered_rps - rate)
            .abs()
            .total_cmp(&(b.offered_rps - rate).abs())
    })
}

/// Highest stored rate among sustained steps before the first knee.
fn max_stored(steps: &[StepRow]) -> Option<f64> {
    let mut best: Option<f64> = None;
    for s in steps {
        if !s.sustained() {
            break;
        }
        if let Some(v) = s.stored_rps {
            best = Some(best.map_or(v, |b: f64| b.max(v)));
        }
    }
    best
}
