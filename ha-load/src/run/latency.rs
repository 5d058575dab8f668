//! The latency target: one step at a fixed offered rate (7,500 readings/s,
//! one per request), analyzer storing, repeated, in two placements —
//! everything sharing every core, and the driver pinned to one core with
//! the services (ingest, analyzer, RabbitMQ, PostgreSQL) on the others —
//! reporting each placement's median p99.
//!
//! Pinning uses `taskset -a -p` (util-linux) on every thread of every
//! process of the services' trees and of this process; the affinities are
//! restored to every core afterwards, whatever happened.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use super::probes::Probes;
use super::steps::{Offer, measured_step};
use super::{LoadConfig, log};
use crate::driver::Driver;
use crate::procfs;
use crate::results::{LatencyPlacement, LatencyTarget};

/// The rate: readings/s offered, one per request.
pub const TARGET_RATE: f64 = 7_500.0;

/// The bound on p99, milliseconds.
pub const TARGET_P99_MS: f64 = 10.0;

/// Runs the latency target: `repeats` steps per placement, each after the
/// analyzer stored what came before (so a repeat does not pay for the
/// last one's backlog). Returns it and the readings acknowledged in all.
pub(super) async fn latency_target(
    config: &LoadConfig,
    driver: &mut Driver,
    probes: &Probes<'_>,
    prefix: &str,
    repeats: usize,
    acked_before: u64,
) -> (LatencyTarget, u64) {
    let mut acked = acked_before;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut target = LatencyTarget {
        rate: TARGET_RATE,
        bound_ms: TARGET_P99_MS,
        placements: Vec::new(),
    };
    for pinned in [false, true] {
        if pinned && cores < 2 {
            log("Latency target: one core only, no pinned placement.");
            continue;
        }
        let name = if pinned {
            format!("driver on core 0, services on cores 1–{}", cores - 1)
        } else {
            format!("everything sharing {cores} cores")
        };
        let services: Vec<u32> = probes
            .components
            .iter()
            .filter(|c| c.pid != std::process::id())
            .map(|c| c.pid)
            .collect();
        let pin_note = if pinned {
            pin(&services, std::process::id(), cores).err()
        } else {
            None
        };
        let mut runs = Vec::new();
        for i in 0..repeats {
            if let Some(s) = probes.store {
                s.wait_for(prefix, acked, Duration::from_secs(30)).await;
            }
            let (row, a) = measured_step(
                &format!("latency target ({name}) {}/{repeats}", i + 1),
                driver,
                Offer {
                    rate: TARGET_RATE,
                    batch: 1,
                    duration: config.step,
                },
                &config.bound,
                probes,
                prefix,
                acked,
            )
            .await;
            acked = a;
            runs.push(row);
        }
        if pinned {
            unpin(&services, std::process::id(), cores);
        }
        let placement = LatencyPlacement::from_runs(name, runs, pin_note);
        log(format!(
            "Latency target, {}: median p99 {:.1} ms, median acked {:.0} readings/s.",
            placement.name, placement.median_p99_ms, placement.median_acked_rps
        ));
        target.placements.push(placement);
    }
    (target, acked)
}

/// Every pid of `roots`' process trees (processes only: `taskset -a`
/// covers their threads).
fn trees(roots: &[u32]) -> Vec<u32> {
    let parents: HashMap<u32, u32> = procfs::parents();
    let mut out = Vec::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if out.contains(&pid) {
            continue;
        }
        out.push(pid);
        stack.extend(
            parents
                .iter()
                .filter(|(_, parent)| **parent == pid)
                .map(|(child, _)| *child),
        );
    }
    out
}

fn taskset(cpus: &str, pid: u32) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -a -p -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The driver (this process) on core 0, the services' trees on the rest.
/// A process that exits meanwhile is skipped; any other failure is
/// returned (and the step runs unpinned in part: the report says so).
fn pin(services: &[u32], me: u32, cores: usize) -> Result<(), String> {
    let rest = format!("1-{}", cores - 1);
    let mut first_error = None;
    for pid in trees(services) {
        if let Err(e) = taskset(&rest, pid)
            && std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = taskset("0", me) {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}

/// Every process back on every core.
fn unpin(services: &[u32], me: u32, cores: usize) {
    let all = format!("0-{}", cores - 1);
    for pid in trees(services).into_iter().chain([me]) {
        let _ = taskset(&all, pid);
    }
}
