//! The report's text and plot from hand-made results.

use super::svg::nice;
use super::*;
use crate::baseline::Rate;

fn step(offered: f64, acked: f64, p99: f64, verdict: &str) -> StepRow {
    StepRow {
        offered_rps: offered,
        batch: 1,
        acked_rps: acked,
        stored_rps: Some(acked),
        p99_ms: p99,
        verdict: verdict.into(),
        ..StepRow::default()
    }
}

fn results() -> RunResults {
    RunResults {
        started: "2026-11-26T19:00:00Z".into(),
        command: "scripts/perf".into(),
        p99_bound_ms: 50.0,
        ours: vec![
            step(1000.0, 1000.0, 2.0, "sustained"),
            step(8000.0, 7990.0, 6.0, "sustained"),
            step(16000.0, 9000.0, 900.0, "p99 900 ms > 50 ms"),
            step(32000.0, 31000.0, 5.0, "sustained"),
        ],
        naive: vec![
            step(1000.0, 1000.0, 3.0, "sustained"),
            step(8000.0, 4000.0, 2000.0, "p99"),
        ],
        raw_publish: Some(Rate {
            items: 500_000,
            seconds: 10.0,
        }),
        acked_total: 100,
        stored_total: 100,
        ..RunResults::default()
    }
}

#[test]
fn max_sustained_stops_at_the_first_knee() {
    let r = results();
    assert_eq!(RunResults::max_sustained(&r.ours), Some(7990.0));
    assert_eq!(RunResults::max_sustained(&r.naive), Some(1000.0));
    assert_eq!(RunResults::max_sustained(&r.ours[2..]), None);
}

#[test]
fn the_doc_carries_the_ratios_and_the_verdicts() {
    let md = markdown(&results());
    assert!(md.contains("**7,990 readings/s**"), "{md}");
    assert!(md.contains("7.99×"), "ours/naive ratio missing:\n{md}");
    // 7990 / 50000 msg/s.
    assert!(
        md.contains("0.16×"),
        "ours/raw publish ratio missing:\n{md}"
    );
    assert!(md.contains("| 6.0 ms at 8,000 offered | met |"), "{md}");
    assert!(md.contains("0 lost"), "{md}");
    assert!(md.contains("(performance.svg)"));
    assert!(!md.contains("NaN") && !md.contains("inf"));
}

#[test]
fn the_plot_is_well_formed_svg_with_both_series() {
    let svg = svg(&results());
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 4);
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
    let opens = svg.matches("<text").count();
    assert_eq!(opens, svg.matches("</text>").count());
}

#[test]
fn a_baseline_failing_its_first_step_gives_a_lower_bound() {
    let mut r = results();
    r.naive = vec![step(1000.0, 1000.0, 300.0, "p99")];
    let md = markdown(&r);
    assert!(md.contains("> 7.99×"), "{md}");
    assert!(md.contains("< 1,000 (knee at the first step)"), "{md}");
}

#[test]
fn the_readme_headline_is_replaced_between_the_markers_only() {
    let readme = "# x\n<!-- perf-headline -->\nold figures\n<!-- /perf-headline -->\ntail\n";
    let out = with_headline(readme, &results()).unwrap();
    assert!(out.starts_with("# x\n<!-- perf-headline -->\n"));
    assert!(out.ends_with("<!-- /perf-headline -->\ntail\n"));
    assert!(!out.contains("old figures"));
    assert!(
        out.contains("7,990 readings/s at one reading per request"),
        "{out}"
    );
    assert_eq!(with_headline("no markers", &results()), None);
}

#[test]
fn ingest_alone_is_the_like_for_like_ratio() {
    let mut r = results();
    r.ingest_only = vec![
        step(1000.0, 1000.0, 2.0, "sustained"),
        step(16000.0, 15990.0, 9.0, "sustained"),
        step(32000.0, 20000.0, 300.0, "p99"),
    ];
    let md = markdown(&r);
    assert!(md.contains("= **15.99×**"), "{md}");
    assert!(headline(&r).contains("**15,990 readings/s at one reading per request**"));
    assert_eq!(svg(&r).matches("<polyline").count(), 6);
}

#[test]
fn numbers_format_for_people() {
    assert_eq!(rate(15_234.4), "15,234");
    assert_eq!(rate(1_000_000.0), "1,000,000");
    assert_eq!(rate(12.34), "12.3");
    assert_eq!(nice(7990.0), 10_000.0);
    assert_eq!(nice(1500.0), 2000.0);
}

#[test]
fn the_headline_quotes_the_smaller_of_the_two_drivers() {
    use crate::closed_loop::ClosedLoop;
    let closed = |rps: f64, non_2xx: u64| ClosedLoop {
        driver: "wrk -t2 -c64, 1000 devices, 20 s".into(),
        requests_per_sec: rps,
        requests: (rps * 20.0) as u64,
        non_2xx,
        ..ClosedLoop::default()
    };
    let mut r = results();
    // Open loop: 7.99×. Closed loop: 11,300 / 10,000 = 1.13× (the naive
    // server's 2xx only: 10% of its answers were errors).
    r.closed_ours = Some(closed(11_300.0, 0));
    r.closed_naive = Some(closed(11_111.2, 22_222));
    let h = headline(&r);
    assert!(
        h.contains(
            "1.13× (the smaller of two drivers: open-loop stepped 7.99×, closed-loop wrk 1.13×)"
        ),
        "{h}"
    );
    let md = markdown(&r);
    assert!(
        md.contains("## Two drivers") && md.contains("| naive composition | 10,000 |"),
        "{md}"
    );
    r.closed_naive = None;
    assert!(headline(&r).contains("7.99× (open-loop driver; closed loop not measured)"));
}

#[test]
fn mqtt_sits_beside_https_in_the_targets_and_its_section() {
    use crate::results::Connections;
    let conns = |after: u64| Connections {
        connections: 1000,
        attempted: 1000,
        generators: 1,
        ingest_rss_before: 10 << 20,
        ingest_rss_after: (10 << 20) + after,
        small_devices: 100,
        devices_per_generator: 1000,
        ..Connections::default()
    };
    let mut r = results();
    let without = markdown(&r);
    assert!(!without.contains("MQTT"), "{without}");
    r.mqtt = vec![
        step(1000.0, 1000.0, 3.0, "sustained"),
        step(8000.0, 3995.0, 8.0, "sustained"),
        step(16000.0, 5000.0, 700.0, "p99"),
    ];
    // 12 KiB and 20 KiB per connection.
    r.conns = Some(conns(12 * 1024 * 1000));
    r.conns_mqtt = Some(conns(20 * 1024 * 1000));
    let md = markdown(&r);
    // 3,995 / 7,990 readings/s.
    assert!(
        md.contains("| 3,995 MQTT vs 7,990 HTTPS = 0.50× | — |"),
        "{md}"
    );
    assert!(
        md.contains("| ≤ 16 KiB RSS per idle MQTT session in ingest | 20.0 KiB (at 1,000 sessions; HTTPS: 12.0 KiB) | **missed** |"),
        "{md}"
    );
    assert!(md.contains("## MQTT beside HTTPS"));
    assert!(
        md.contains("| 12.0 KiB (at 1,000) | 20.0 KiB (at 1,000) | 1.67× |"),
        "{md}"
    );
    // p99: both at 8,000 offered (6 ms HTTPS, 8 ms MQTT).
    assert!(
        md.contains("| 6.0 ms at 8,000 | 8.0 ms at 8,000 | 1.33× |"),
        "{md}"
    );
    assert!(md.contains("- **Over MQTT**"));
    assert!(md.contains("### Ours over MQTT"));
    assert!(!md.contains("NaN") && !md.contains("inf"));
    // Without an MQTT step at HTTPS's rate, no latency ratio.
    r.mqtt.remove(1);
    assert!(markdown(&r).contains("| n/a (different steps) |"));
}

#[test]
fn the_fsync_ceiling_judges_the_best_stored_step_by_its_own_commits() {
    use crate::results::FsyncProbe;
    let mut r = results();
    let without = markdown(&r);
    assert!(!without.contains("fsync ceiling"), "{without}");
    r.fsync = Some(FsyncProbe {
        data_directory: "/srv/pg/data".into(),
        fs_type: "ext2/ext3".into(),
        fdatasync_per_s: 1000.0,
        tool: "pg_test_fsync -s 2".into(),
    });
    // 7,990/s for 10 s over 5,000 WAL flushes: 15.98 per flush, ceiling
    // 15,980; per commit (8,000 of them, read-only ones included) 9.99.
    r.ours[0].seconds = 10.0;
    r.ours[0].commits = Some(500);
    r.ours[1].seconds = 10.0;
    r.ours[1].commits = Some(8000);
    r.ours[1].wal_syncs = Some(5000);
    r.batched = Some(StepRow {
        offered_rps: 600.0,
        batch: 50,
        acked_rps: 30_000.0,
        stored_rps: Some(12_000.0),
        verdict: "sustained".into(),
        ..StepRow::default()
    });
    let md = markdown(&r);
    assert!(
        md.contains("| 7,990 / 15,980 = **0.50** of the ceiling (1,000 fdatasync/s on ext2/ext3 × 16.0 readings per WAL flush at 8,000 offered), 0 lost | met |"),
        "{md}"
    );
    assert!(
        md.contains("batched requests of 50 readings | 12,000 readings/s stored"),
        "{md}"
    );
    assert!(md.contains("## The fsync ceiling"));
    assert!(
        md.contains("| 8,000 | 1 | 7,990 | 800 | 10.0 | 500 | 16.0 | 15,980 | 0.50× | sustained |"),
        "{md}"
    );
    // Without flush counts there is no ceiling to judge against.
    r.ours[1].wal_syncs = None;
    assert!(
        markdown(&r)
            .contains("no sustained end-to-end step with WAL flush counts | not measured |")
    );
    assert!(!md.contains("NaN") && !md.contains("inf"));
}

#[test]
fn the_latency_target_is_judged_on_each_placements_median() {
    use crate::results::{LatencyPlacement, LatencyTarget};
    let shared = LatencyPlacement::from_runs(
        "everything sharing 2 cores".into(),
        vec![
            step(7500.0, 7400.0, 30.0, "sustained"),
            step(7500.0, 7500.0, 9.0, "sustained"),
            step(7500.0, 7300.0, 12.0, "sustained"),
        ],
        None,
    );
    // The median, not the best or the worst repeat.
    assert_eq!(shared.median_p99_ms, 12.0);
    assert_eq!(shared.median_acked_rps, 7400.0);
    let pinned = LatencyPlacement::from_runs(
        "driver on core 0, services on cores 1–1".into(),
        vec![
            step(7500.0, 7500.0, 8.0, "sustained"),
            step(7500.0, 7500.0, 9.5, "sustained"),
            step(7500.0, 7500.0, 40.0, "sustained"),
        ],
        Some("taskset -a -p -c 1-1 42: no such process".into()),
    );
    let mut r = results();
    r.latency_target = Some(LatencyTarget {
        rate: 7500.0,
        bound_ms: 10.0,
        placements: vec![shared, pinned],
    });
    let md = markdown(&r);
    let row = md
        .lines()
        .find(|l| {
            l.starts_with(
                "| p99 ack latency ≤ 10 ms at 7,500 readings/s (analyzer storing, median of 3)",
            )
        })
        .unwrap_or_else(|| panic!("no target row:\n{md}"));
    assert!(
        row.contains("12.0 ms (everything sharing 2 cores)"),
        "{row}"
    );
    assert!(row.contains("9.5 ms (driver on core 0"), "{row}");
    // One placement over the bound: the target is missed.
    assert!(row.ends_with("| **missed** |"), "{row}");
    assert!(
        md.contains("## Latency at 7,500 readings/s offered"),
        "{md}"
    );
    assert!(md.contains("| 30.0, 9.0, 12.0 | 12.0 |"), "{md}");
    assert!(md.contains("Placement incomplete: taskset"), "{md}");
}

#[test]
fn the_stored_target_is_judged_over_mqtt_too() {
    let mut r = results();
    r.mqtt = vec![
        step(11000.0, 11000.0, 20.0, "sustained"),
        step(17000.0, 16990.0, 30.0, "sustained"),
        step(25000.0, 20000.0, 900.0, "p99 900 ms > 50 ms"),
    ];
    let md = markdown(&r);
    let row = md
        .lines()
        .find(|l| l.starts_with("| … the same over MQTT"))
        .unwrap_or_else(|| panic!("no MQTT stored row:\n{md}"));
    assert!(row.contains("16,990 readings/s, 0 lost"), "{row}");
    assert!(row.ends_with("| met |"), "{row}");
}

#[test]
fn an_extra_placement_is_shown_but_not_judged_and_ingest_accounts_for_its_part() {
    use crate::results::{IngestAccount, LatencyPlacement, LatencyTarget};
    let with_account = |p99: f64, confirm_ms: f64| StepRow {
        ingest: Some(IngestAccount {
            messages: 1_000,
            readings: 7_500,
            confirm_ms,
            ack_wait_ms: confirm_ms * 1.5,
        }),
        ..step(7500.0, 7500.0, p99, "sustained")
    };
    let within = |name: &str| {
        LatencyPlacement::from_runs(
            name.into(),
            (0..3).map(|i| with_account(8.0, 2.0 + i as f64)).collect(),
            None,
        )
    };
    let niced = LatencyPlacement {
        extra: true,
        ..LatencyPlacement::from_runs(
            "everything sharing 2 cores, analyzer and PostgreSQL at nice 10".into(),
            (0..3).map(|_| with_account(25.0, 1.0)).collect(),
            None,
        )
    };
    let mut r = results();
    r.latency_target = Some(LatencyTarget {
        rate: 7500.0,
        bound_ms: 10.0,
        placements: vec![
            within("everything sharing 2 cores"),
            within("pinned"),
            niced,
        ],
    });
    let md = markdown(&r);
    let row = md
        .lines()
        .find(|l| l.starts_with("| p99 ack latency ≤ 10 ms"))
        .unwrap_or_else(|| panic!("no target row:\n{md}"));
    // The extra placement (25 ms) does not fail the two (8 ms).
    assert!(row.ends_with("| met |"), "{row}");
    // Medians of the repeats' accounts: confirm 3.00, wait 4.50, 7.5 readings per message.
    assert!(md.contains("| 3.00 / 4.50 | 7.5 |"), "{md}");
    assert!(md.contains("| 1.00 / 1.50 | 7.5 |"), "{md}");
}

#[test]
fn what_a_step_over_the_latency_bound_stored_is_shown_as_context() {
    let mut r = results();
    r.ours = vec![
        step(11000.0, 11000.0, 20.0, "sustained"),
        step(14000.0, 14000.0, 180.0, "p99 180 ms > 50 ms"),
        step(17000.0, 16990.0, 64.5, "p99 64.5 ms > 50 ms"),
        // Errors: not a throughput figure, however much it stored.
        StepRow {
            errors: 10,
            ..step(25000.0, 24000.0, 900.0, "p99 900 ms > 50 ms")
        },
    ];
    let md = markdown(&r);
    let row = md
        .lines()
        .find(|l| l.starts_with("| (context) … stored in a step over the latency bound"))
        .unwrap_or_else(|| panic!("no context row:\n{md}"));
    assert!(
        row.contains("16,990 readings/s stored at 17,000 offered, p99 64.5 ms"),
        "{row}"
    );
    // The target itself is still judged on sustained steps only.
    assert!(md.contains("| 11,000 readings/s, "), "{md}");
}
