//! The latency target: one step at a fixed offered rate (7,500 readings/s,
//! one per request), analyzer storing, repeated, in three placements —
//! everything sharing every core; the driver pinned to one core with the
//! services (ingest, analyzer, RabbitMQ, PostgreSQL) on the others; and
//! everything sharing with the store path (analyzer, PostgreSQL) at a
//! lower CPU priority — reporting each placement's median p99.
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
    let services: Vec<u32> = probes
        .components
        .iter()
        .filter(|c| c.pid != std::process::id())
        .map(|c| c.pid)
        .collect();
    // The store path: nothing a device waits for passes through it.
    let store_path: Vec<u32> = probes
        .components
        .iter()
        .filter(|c| c.name == "analyzer" || c.name == "postgres")
        .map(|c| c.pid)
        .collect();
    for placement in [Placement::Sharing, Placement::Pinned, Placement::StoreNiced] {
        if placement == Placement::Pinned && cores < 2 {
            log("Latency target: one core only, no pinned placement.");
            continue;
        }
        let name = match placement {
            Placement::Sharing => format!("everything sharing {cores} cores"),
            Placement::Pinned => format!("driver on core 0, services on cores 1–{}", cores - 1),
            Placement::StoreNiced => format!(
                "everything sharing {cores} cores, analyzer and PostgreSQL at nice {STORE_NICE}"
            ),
        };
        let pin_note = match placement {
            Placement::Sharing => None,
            Placement::Pinned => pin(&services, std::process::id(), cores).err(),
            Placement::StoreNiced => renice(&store_path, STORE_NICE).err(),
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
        match placement {
            Placement::Sharing => {}
            Placement::Pinned => unpin(&services, std::process::id(), cores),
            Placement::StoreNiced => {
                let _ = renice(&store_path, 0);
            }
        }
        let placement = LatencyPlacement {
            extra: placement == Placement::StoreNiced,
            ..LatencyPlacement::from_runs(name, runs, pin_note)
        };
        log(format!(
            "Latency target, {}: median p99 {:.1} ms, median acked {:.0} readings/s.",
            placement.name, placement.median_p99_ms, placement.median_acked_rps
        ));
        target.placements.push(placement);
    }
    (target, acked)
}

/// Where the processes run during a placement's repeats.
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    /// Every process on every core, as in the rest of the run.
    Sharing,
    /// The driver on core 0, the services on the others.
    Pinned,
    /// Every core shared, the store path (analyzer, PostgreSQL) at a lower
    /// CPU priority: acknowledging a reading waits for ingest and RabbitMQ
    /// only, storing it is decoupled by the queue.
    StoreNiced,
}

/// The store path's nice value in [`Placement::StoreNiced`].
const STORE_NICE: i32 = 10;

/// Sets the nice value of every thread of every process of `roots`' trees
/// (`setpriority` on Linux is per thread); new PostgreSQL backends inherit
/// their postmaster's.
fn renice(roots: &[u32], nice: i32) -> Result<(), String> {
    let mut threads = Vec::new();
    for pid in trees(roots) {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            threads.extend(
                tasks
                    .flatten()
                    .map(|t| t.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    if threads.is_empty() {
        return Err("no analyzer or PostgreSQL process to renice".into());
    }
    let out = Command::new("renice")
        .args(["-n", &nice.to_string(), "-p"])
        .args(&threads)
        .output()
        .map_err(|e| format!("renice: {e}"))?;
    // A thread that exited meanwhile fails alone; the roots must be set.
    match roots
        .iter()
        .find(|pid| nice_of(**pid).is_some_and(|n| n != nice))
    {
        None => Ok(()),
        Some(pid) => Err(format!(
            "renice -n {nice} left pid {pid} at {:?}: {}",
            nice_of(*pid),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// The nice value of `pid`; `None` when it is gone.
fn nice_of(pid: u32) -> Option<i32> {
    nice_field(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 19 of a /proc/PID/stat line.
fn nice_field(stat: &str) -> Option<i32> {
    // Fields after the command (which may hold spaces and parentheses)
    // start at field 3.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19 - 3)?.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nice_value_is_field_19_whatever_the_command_name() {
        let stat = "4242 (postgres: a (b) c) S 1 4242 4242 0 -1 4194560 120 0 0 0 3 1 0 0 30 10 1 0 123 1000 10";
        assert_eq!(nice_field(stat), Some(10));
        assert_eq!(nice_field("4242 (x) S 1 2"), None);
        assert_eq!(
            nice_of(std::process::id()).map(|n| (-20..=19).contains(&n)),
            Some(true)
        );
    }
}
