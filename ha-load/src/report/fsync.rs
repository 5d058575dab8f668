//! The fsync ceiling: with PostgreSQL fsyncing every commit, stored
//! readings/s cannot exceed the disk's fdatasync/s × the readings each
//! durable commit carries. The target is ≥ 15,000 readings/s stored, or,
//! when the disk makes that impossible, ≥ 0.5 of that ceiling.
//!
//! Readings per durable commit are counted per WAL flush
//! (`pg_stat_wal.wal_sync`), not per `xact_commit`: most of the analyzer's
//! transactions are read-only and flush nothing (a run counted more commits
//! than readings at 1,000 readings/s), and commits arriving together share
//! one flush, so the flushes are the fsyncs the disk paid for.

use std::fmt::Write as _;

use super::*;

/// The fraction of the ceiling the alternative target asks for.
const TARGET_CEILING_FRACTION: f64 = 0.5;

/// The sustained end-to-end step that stored the most, with its readings
/// per WAL flush and the ceiling they give: (step, readings/flush, ceiling).
pub(super) fn ceiling(r: &RunResults) -> Option<(&StepRow, f64, f64)> {
    let f = r.fsync.as_ref()?;
    let mut best: Option<&StepRow> = None;
    for s in &r.ours {
        if !s.sustained() {
            break;
        }
        if s.stored_rps.unwrap_or(0.0) > best.and_then(|b| b.stored_rps).unwrap_or(0.0) {
            best = Some(s);
        }
    }
    let step = best?;
    let per_flush = step.readings_per_flush()?;
    Some((step, per_flush, f.fdatasync_per_s * per_flush))
}

/// Rows of the targets table, after the 15,000 readings/s one.
pub(super) fn target_rows(md: &mut String, r: &RunResults, lost: u64) {
    if let Some(f) = &r.fsync {
        match ceiling(r) {
            Some((step, per_flush, c)) => {
                let stored = step.stored_rps.unwrap_or(0.0);
                let fraction = stored / c.max(1e-9);
                let _ = writeln!(
                    md,
                    "| … or, the disk allowing less, stored ≥ 0.5 × the fsync ceiling | {} / {} = **{fraction:.2}** of the ceiling ({} fdatasync/s on {} × {per_flush:.1} readings per WAL flush at {} offered), {} lost | {} |",
                    rate(stored),
                    rate(c),
                    rate(f.fdatasync_per_s),
                    f.fs_type,
                    rate(step.offered_rps),
                    lost,
                    met(Some(fraction >= TARGET_CEILING_FRACTION && lost == 0))
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "| … or stored ≥ 0.5 × the fsync ceiling | {} fdatasync/s on {}; no sustained end-to-end step with WAL flush counts | not measured |",
                    rate(f.fdatasync_per_s),
                    f.fs_type
                );
            }
        }
    }
    if let Some(b) = &r.batched {
        let _ = writeln!(
            md,
            "| (context) end-to-end stored, batched requests of {} readings | {} readings/s stored, {} acknowledged ({}) | — |",
            b.batch,
            opt_rate(b.stored_rps),
            rate(b.acked_rps),
            b.verdict.replace('|', "/")
        );
    }
}

/// The section: the probe, then commits and WAL flushes per step.
pub(super) fn section(md: &mut String, r: &RunResults) {
    let Some(f) = &r.fsync else {
        return;
    };
    let _ = writeln!(md, "## The fsync ceiling\n");
    let _ = writeln!(
        md,
        "PostgreSQL's data directory `{}` is on **{}**; `{}` measured **{} fdatasync/s** there (one 8 kB write per sync, what a commit's WAL flush is) before any load. With `fsync=on` each commit waits for such a flush, so stored readings/s ≤ fdatasync/s × readings per durable commit. Those are counted per WAL flush (`pg_stat_wal.wal_sync`): commits arriving together share one flush, and read-only transactions flush nothing — they are most of the database's commits (`pg_stat_database.xact_commit`, the harness's own queries excluded), shown beside. PostgreSQL publishes these counters about once a second, so a short step's figures are approximate.\n",
        f.data_directory,
        f.fs_type,
        f.tool,
        rate(f.fdatasync_per_s)
    );
    let _ = writeln!(
        md,
        "| offered req/s | readings/req | stored readings/s | commits/s | readings per commit | WAL flushes/s | readings per flush | ceiling readings/s | stored / ceiling | verdict |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for s in r.ours.iter().chain(r.batched.iter()) {
        let secs = s.seconds.max(1e-9);
        let per_commit = s.readings_per_commit();
        let per_flush = s.readings_per_flush();
        let c = per_flush.map(|p| p * f.fdatasync_per_s);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rate(s.offered_rps),
            s.batch,
            opt_rate(s.stored_rps),
            s.commits
                .map_or_else(|| "—".into(), |n| rate(n as f64 / secs)),
            per_commit.map_or_else(|| "—".into(), |p| format!("{p:.1}")),
            s.wal_syncs
                .map_or_else(|| "—".into(), |n| rate(n as f64 / secs)),
            per_flush.map_or_else(|| "—".into(), |p| format!("{p:.1}")),
            c.map_or_else(|| "—".into(), rate),
            ratio(s.stored_rps, c),
            s.verdict.replace('|', "/")
        );
    }
    let _ = writeln!(md);
}
