//! What a drill measured, as the one result line the suite promises.

use std::io::Write;

use reference_apps::generator::GeneratorReport;
use tokio::time::Instant;

use crate::pipeline::{Audit, Env};

/// A send that took longer than this (without failing) met the fault: the
/// devices send every 200 ms and an undisturbed send takes a few ms.
const SLOW_SEND_MS: u128 = 300;

/// Sends that started more than this after the fault did not meet it (a
/// slow send later on is the machine's noise, not the fault's doing).
const FAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// Client-visible failover: for every device whose send met the fault (in
/// flight at the fault or started within 2 s of it, and failed, retried or
/// slow), the time from the fault to its first successful send after it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Failover {
    /// Devices whose send failed, was retried, or stalled after the fault.
    pub disturbed: usize,
    pub max_ms: u64,
    pub p99_ms: u64,
    /// Most retries one send needed.
    pub retries_max: u64,
    /// Sends after the fault that met an error (retried, or given up).
    pub failed_sends: u64,
}

impl Failover {
    /// From the devices' send records, for a fault at `at`.
    pub fn measure(report: &GeneratorReport, at: Instant) -> Failover {
        let mut times = Vec::new();
        let mut retries_max = 0;
        let mut failed_sends = 0;
        for device in &report.devices {
            let after: Vec<_> = device.sends.iter().filter(|s| s.finished >= at).collect();
            retries_max = retries_max.max(after.iter().map(|s| s.retries).max().unwrap_or(0));
            failed_sends += after.iter().filter(|s| s.retries > 0 || !s.ok).count() as u64;
            let disturbed = after.iter().find(|s| {
                s.started <= at + FAULT_WINDOW
                    && (s.retries > 0
                        || !s.ok
                        || (s.finished - s.started).as_millis() > SLOW_SEND_MS)
            });
            let Some(first) = disturbed else {
                continue;
            };
            let recovered = after
                .iter()
                .filter(|s| s.ok && s.finished >= first.finished)
                .map(|s| s.finished)
                .min();
            let Some(recovered) = recovered else {
                // Never recovered: the audit will show what it lost.
                times.push(u64::MAX);
                continue;
            };
            times.push((recovered - at).as_millis() as u64);
        }
        times.sort_unstable();
        let p99 = if times.is_empty() {
            0
        } else {
            times[((times.len() as f64 * 0.99).ceil() as usize).clamp(1, times.len()) - 1]
        };
        Failover {
            disturbed: times.len(),
            max_ms: times.last().copied().unwrap_or(0),
            p99_ms: p99,
            retries_max,
            failed_sends,
        }
    }
}

/// The longest time after `at` during which no send of any device was
/// acknowledged (the stall the fault caused).
pub fn stall_ms(report: &GeneratorReport, at: Instant) -> u64 {
    let mut acks: Vec<Instant> = report
        .devices
        .iter()
        .flat_map(|d| d.sends.iter())
        .filter(|s| s.ok && s.finished >= at)
        .map(|s| s.finished)
        .collect();
    acks.sort_unstable();
    let mut last = at;
    let mut longest = 0;
    for t in acks {
        longest = longest.max((t - last).as_millis() as u64);
        last = t;
    }
    longest
}

/// One drill's result.
pub struct Outcome {
    pub scenario: String,
    pub audit: Audit,
    pub in_flight_at_fault: u64,
    pub redeliveries: u64,
    pub failover: Failover,
    /// Scenario-specific figures, appended to the line as `key=value`.
    pub extra: Vec<(&'static str, String)>,
}

impl Outcome {
    pub fn line(&self) -> String {
        let a = &self.audit;
        let f = &self.failover;
        let mut line = format!(
            "scenario={} sent={} acked={} stored={} lost={} duplicates={} dead_lettered={} in_flight_at_fault={} redeliveries={} failover_max_ms={} failover_p99_ms={} retries_max={}",
            self.scenario,
            a.sent,
            a.acked,
            a.stored,
            a.lost,
            a.duplicates,
            a.dead_lettered,
            self.in_flight_at_fault,
            self.redeliveries,
            f.max_ms,
            f.p99_ms,
            f.retries_max,
        );
        line.push_str(&format!(
            " disturbed_devices={} failed_sends={}",
            f.disturbed, f.failed_sends
        ));
        line.push_str(&format!(" ownership_overlaps={}", a.ownership_overlaps));
        for (k, v) in &self.extra {
            line.push_str(&format!(" {k}={v}"));
        }
        line
    }

    /// Prints the line, appends it to the results file, then checks what
    /// every drill must show: nothing lost, nothing stored twice, nothing
    /// dead-lettered, no partition committed by two owners at once, every
    /// generated reading acknowledged in the end, and a fault that met work
    /// in flight.
    pub fn record_and_check(&self, env: &Env) {
        let line = self.line();
        println!("{line}");
        eprintln!("{line}");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&env.results)
            .expect("results file");
        writeln!(file, "{line}").expect("write results");
        let a = &self.audit;
        assert_eq!(a.lost, 0, "acknowledged readings lost: {line}");
        assert_eq!(a.duplicates, 0, "rows stored twice: {line}");
        assert_eq!(a.dead_lettered, 0, "valid readings dead-lettered: {line}");
        assert_eq!(
            a.ownership_overlaps, 0,
            "two analyzers committed for one partition at once: {line}"
        );
        assert_eq!(
            a.acked, a.sent,
            "readings never acknowledged (still buffered or given up): {line}"
        );
        assert_eq!(a.stored, a.acked, "{line}");
        assert!(
            self.in_flight_at_fault > 0,
            "the fault met no work in flight: {line}"
        );
    }
}
