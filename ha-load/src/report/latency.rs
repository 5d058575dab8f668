//! The latency target: p99 at 7,500 readings/s offered with the analyzer
//! storing, the median of three repeats, in two placements of the
//! processes on the cores.

use std::fmt::Write as _;

use super::*;
use crate::results::LatencyTarget;

/// The row of the targets table: from the repeats when the run made them,
/// else from the stepped step nearest the rate.
pub(super) fn target_row(md: &mut String, r: &RunResults) {
    let Some(t) = r
        .latency_target
        .as_ref()
        .filter(|t| !t.placements.is_empty())
    else {
        let near = step_near(&r.ours, TARGET_STORED / 2.0);
        let _ = writeln!(
            md,
            "| p99 ack latency ≤ 10 ms at 7,500 readings/s | {} | {} |",
            near.map_or("not measured".into(), |s| format!(
                "{:.1} ms at {} offered",
                s.p99_ms,
                rate(s.offered_rps)
            )),
            met(near.map(|s| s.p99_ms <= TARGET_P99_MS))
        );
        return;
    };
    let measured = t
        .placements
        .iter()
        .map(|p| format!("{:.1} ms ({})", p.median_p99_ms, p.name))
        .collect::<Vec<_>>()
        .join("; ");
    let _ = writeln!(
        md,
        "| p99 ack latency ≤ {:.0} ms at {} readings/s (analyzer storing, median of {}) | {measured} | {} |",
        t.bound_ms,
        rate(t.rate),
        repeats(t),
        met(Some(
            t.placements
                .iter()
                .filter(|p| !p.extra)
                .all(|p| p.median_p99_ms <= t.bound_ms)
        ))
    );
}

fn repeats(t: &LatencyTarget) -> usize {
    t.placements.first().map_or(0, |p| p.runs.len())
}

/// The section: every repeat of every placement.
pub(super) fn section(md: &mut String, r: &RunResults) {
    let Some(t) = &r.latency_target else {
        return;
    };
    let _ = writeln!(
        md,
        "\n## Latency at {} readings/s offered\n\nOne reading per request, the analyzer storing (PostgreSQL `{}`), {} step(s) of {:.0} s per placement, each after the analyzer had stored what came before. *Sharing*: every process on every core, as in the rest of the run. *Pinned*: the load driver (`ha-load`) on core 0, ingest, the analyzer, RabbitMQ and PostgreSQL (with every process and thread of theirs) on the other cores, by `taskset -a -p`. The ingest columns are its own `/metrics` over each repeat: a message's mean publish-to-confirm latency, a request's mean wait for the confirm of its readings (its message's confirm plus any wait for a publish slot), and readings per queue message; the rest of a request's latency is TLS, HTTP, the handler and waiting for a core. *Store path niced* (shown beside, not what the target is judged on): every core shared, the analyzer and PostgreSQL (every thread and process of theirs) at nice 10 by `renice`, restored after — a device waits for ingest and RabbitMQ only, the store is behind the queue, and a deployment that co-locates them can say so to the scheduler.\n",
        rate(t.rate),
        if r.postgres_durability.is_empty() {
            "durability not reported"
        } else {
            r.postgres_durability.as_str()
        },
        repeats(t),
        r.step_seconds
    );
    let _ = writeln!(
        md,
        "| placement | p99 ms per repeat | median p99 ms | median p50 ms | ingest: mean confirm / ack wait ms | readings per message | median acked readings/s | stored readings/s per repeat | errors | |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in &t.placements {
        let each =
            |f: &dyn Fn(&StepRow) -> String| p.runs.iter().map(f).collect::<Vec<_>>().join(", ");
        let account = account(p);
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
            p.name,
            each(&|s| format!("{:.1}", s.p99_ms)),
            p.median_p99_ms,
            median(p.runs.iter().map(|s| s.p50_ms)),
            account.map_or("—".into(), |(c, w, _)| format!("{c:.2} / {w:.2}")),
            account.map_or("—".into(), |(_, _, m)| format!("{m:.1}")),
            rate(p.median_acked_rps),
            each(&|s| s.stored_rps.map_or("—".into(), rate)),
            p.runs.iter().map(|s| s.errors).sum::<u64>(),
            met(Some(p.median_p99_ms <= t.bound_ms))
        );
        if let Some(e) = &p.pin_error {
            let _ = writeln!(md, "\nPlacement incomplete: {e}.");
        }
    }
    let _ = writeln!(md);
}

/// The median of `values` (NaN when there are none).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Medians over a placement's repeats of ingest's own account: mean
/// confirm latency, mean ack wait (ms), readings per queue message.
fn account(p: &crate::results::LatencyPlacement) -> Option<(f64, f64, f64)> {
    let accounts: Vec<_> = p.runs.iter().filter_map(|s| s.ingest).collect();
    if accounts.is_empty() {
        return None;
    }
    Some((
        median(accounts.iter().map(|a| a.confirm_ms)),
        median(accounts.iter().map(|a| a.ack_wait_ms)),
        median(
            accounts
                .iter()
                .map(|a| a.readings as f64 / a.messages.max(1) as f64),
        ),
    ))
}
