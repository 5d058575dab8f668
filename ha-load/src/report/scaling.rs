//! 1 → 2 replicas of ingest and of the analyzer, beside the one-replica
//! figures of the same run: what the capacity model's "cost per reading
//! stays flat as replicas are added" is worth on this machine.

use std::fmt::Write as _;

use super::rate;
use crate::results::{RunResults, StepRow};

/// Ingest's CPU-seconds per acknowledged reading in `step` (every
/// `ingest-api*` process summed).
fn ingest_cost(step: &StepRow) -> Option<f64> {
    let cpu: f64 = step
        .cpu
        .iter()
        .filter(|(name, _)| name.starts_with("ingest-api"))
        .map(|(_, c)| c)
        .sum();
    let readings = step.acked_rps * step.seconds;
    (cpu > 0.0 && readings > 0.0).then(|| cpu / readings)
}

/// The highest offered rate sustained in both series, with its step in
/// each: the rate at which per-reading costs compare like for like.
fn common_step<'a>(one: &'a [StepRow], two: &'a [StepRow]) -> Option<(&'a StepRow, &'a StepRow)> {
    let sustained = |rows: &'a [StepRow]| rows.iter().take_while(|s| s.sustained());
    sustained(one)
        .filter_map(|a| {
            sustained(two)
                .find(|b| (b.offered_rps - a.offered_rps).abs() < 0.5)
                .map(|b| (a, b))
        })
        .max_by(|x, y| x.0.offered_rps.total_cmp(&y.0.offered_rps))
}

fn ratio(two: f64, one: f64) -> String {
    if one > 0.0 {
        format!("{:.2}×", two / one)
    } else {
        "—".into()
    }
}

/// One "one replica | two replicas | two / one" row of rates.
fn rates_row(md: &mut String, what: &str, one: Option<f64>, two: Option<f64>) {
    let fmt = |v: Option<f64>| v.map_or("—".to_owned(), rate);
    let _ = writeln!(
        md,
        "| {what} | {} | {} | {} |",
        fmt(one),
        fmt(two),
        ratio(two.unwrap_or(0.0), one.unwrap_or(0.0))
    );
}

/// The "1 → 2 replicas" part of the capacity model.
pub(super) fn scaling_section(md: &mut String, r: &RunResults) {
    let Some(two) = &r.replicas else {
        let _ = writeln!(
            md,
            "\n1 → 2 replicas: not measured in this run (see the notes); the model assumes cost per reading stays flat as replicas are added.\n"
        );
        return;
    };
    let _ = writeln!(
        md,
        "\n### 1 → 2 replicas\n\nThe ingest-only steps again with a second `ingest-api` beside the first (the driver's connections split between the two, analyzer stopped), then two analyzers draining the backlog those steps built (the rate counted from when each analyzer held a share of the partitions: before that one drains alone) — beside the one-replica figures of this run. Both replicas share the same 2 cores as everything else, so a second replica brings no cores here: the ratios show what running two costs, not the scale-out a second node would give.\n"
    );
    let _ = writeln!(
        md,
        "| | one replica | two replicas | two / one |\n|---|---|---|---|"
    );
    rates_row(
        md,
        "ingest alone, max sustained (readings/s)",
        RunResults::max_sustained(&r.ingest_only),
        RunResults::max_sustained(&two.ingest_two),
    );
    if let Some((a, b)) = common_step(&r.ingest_only, &two.ingest_two)
        && let (Some(ca), Some(cb)) = (ingest_cost(a), ingest_cost(b))
    {
        let _ = writeln!(
            md,
            "| ingest CPU-µs per reading at {} offered (both replicas summed) | {:.1} | {:.1} | {} |",
            rate(a.offered_rps),
            ca * 1e6,
            cb * 1e6,
            ratio(cb, ca)
        );
    }
    rates_row(
        md,
        "analyzer backlog drain (readings/s)",
        r.drain.map(|d| d.per_second()),
        two.drain_two.map(|d| d.per_second()),
    );
    if !two.drain_two_cpu.is_empty() {
        let each: Vec<String> = two
            .drain_two_cpu
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect();
        let _ = writeln!(
            md,
            "\nCPU seconds of each analyzer during the two-analyzer drain: {} (the partitions are balanced by lease, so both take part once the second has claimed its share).",
            each.join(", ")
        );
    }
    let _ = writeln!(md);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Rate;
    use crate::results::Replicas;

    fn step(offered: f64, verdict: &str, cpu: &[(&str, f64)]) -> StepRow {
        StepRow {
            offered_rps: offered,
            acked_rps: offered,
            seconds: 10.0,
            verdict: verdict.into(),
            cpu: cpu.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            ..StepRow::default()
        }
    }

    #[test]
    fn replicas_compare_at_the_highest_rate_both_sustained() {
        let r = RunResults {
            ingest_only: vec![
                step(1_000.0, "sustained", &[("ingest-api", 0.5)]),
                step(2_000.0, "sustained", &[("ingest-api", 0.8)]),
                step(3_000.0, "p99 60 ms > 50 ms", &[("ingest-api", 2.0)]),
            ],
            drain: Some(Rate {
                items: 80_000,
                seconds: 1.0,
            }),
            replicas: Some(Replicas {
                ingest_two: vec![
                    step(
                        1_000.0,
                        "sustained",
                        &[("ingest-api", 0.3), ("ingest-api-2", 0.3)],
                    ),
                    step(
                        2_000.0,
                        "sustained",
                        &[("ingest-api", 0.5), ("ingest-api-2", 0.5)],
                    ),
                    step(
                        3_000.0,
                        "sustained",
                        &[("ingest-api", 0.9), ("ingest-api-2", 0.9)],
                    ),
                    step(4_000.0, "p99 70 ms > 50 ms", &[("ingest-api", 2.0)]),
                ],
                drain_two: Some(Rate {
                    items: 100_000,
                    seconds: 1.0,
                }),
                drain_two_cpu: vec![1.5, 1.25],
            }),
            ..RunResults::default()
        };
        let mut md = String::new();
        scaling_section(&mut md, &r);
        assert!(
            md.contains("| ingest alone, max sustained (readings/s) | 2,000 | 3,000 | 1.50× |"),
            "{md}"
        );
        // At 2,000 offered: 0.8 s / 20,000 = 40 µs; 1.0 s / 20,000 = 50 µs.
        assert!(
            md.contains("at 2,000 offered (both replicas summed) | 40.0 | 50.0 | 1.25× |"),
            "{md}"
        );
        assert!(md.contains("| 80,000 | 100,000 | 1.25× |"), "{md}");
        assert!(md.contains("1.50, 1.25"), "{md}");
    }

    #[test]
    fn a_run_without_replicas_says_so() {
        let mut md = String::new();
        scaling_section(&mut md, &RunResults::default());
        assert!(md.contains("not measured"), "{md}");
    }
}
