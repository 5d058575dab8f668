//! The capacity model: CPU-seconds per reading of each component, from the
//! highest sustained end-to-end step of the same run, scaled to a fleet.

use std::fmt::Write as _;

use super::rate;
use crate::results::{RunResults, StepRow};

/// The fleet the model is sized for: 1 M devices, one reading per 10 s.
pub const FLEET_DEVICES: f64 = 1_000_000.0;
/// Seconds between a device's readings.
pub const FLEET_INTERVAL_S: f64 = 10.0;
/// The share of a core a component may use before it is counted full
/// (headroom for bursts, rebalancing and failover).
pub const BUSY: f64 = 0.7;

/// CPU-seconds per stored reading of one component.
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    /// Component name as the harness measured it.
    pub component: String,
    /// CPU-seconds per reading.
    pub cpu_per_reading: f64,
}

impl Cost {
    /// Cores this component needs for `readings_per_sec` at [`BUSY`].
    pub fn cores_for(&self, readings_per_sec: f64) -> f64 {
        self.cpu_per_reading * readings_per_sec / BUSY
    }
}

/// The step the model is taken from: the highest sustained step of the
/// end-to-end run whose readings were stored as fast as acknowledged.
pub fn model_step(r: &RunResults) -> Option<&StepRow> {
    r.ours
        .iter()
        .take_while(|s| s.sustained())
        .filter(|s| !s.cpu.is_empty() && s.seconds > 0.0 && s.acked_rps > 0.0)
        .filter(|s| s.stored_rps.is_some_and(|st| st >= 0.9 * s.acked_rps))
        .max_by(|a, b| a.acked_rps.total_cmp(&b.acked_rps))
}

/// Per-component cost at `step` (the load driver left out: it is not part
/// of a deployment).
pub fn costs(step: &StepRow) -> Vec<Cost> {
    let readings = step.acked_rps * step.seconds;
    let mut costs: Vec<Cost> = step
        .cpu
        .iter()
        .filter(|(name, _)| name != "ha-load")
        .map(|(name, cpu)| Cost {
            component: name.clone(),
            cpu_per_reading: cpu / readings,
        })
        .collect();
    costs.sort_by(|a, b| b.cpu_per_reading.total_cmp(&a.cpu_per_reading));
    costs
}

/// The "Capacity model" section.
pub fn capacity_section(md: &mut String, r: &RunResults) {
    let _ = writeln!(md, "## Capacity model\n");
    let Some(step) = model_step(r) else {
        let _ = writeln!(
            md,
            "Not computed: no sustained end-to-end step with CPU samples and the store keeping up.\n"
        );
        return;
    };
    let fleet_rate = FLEET_DEVICES / FLEET_INTERVAL_S;
    let _ = writeln!(
        md,
        "CPU-seconds per reading of each component at the highest sustained end-to-end step of this run ({} readings/s offered, one reading per request, analyzer storing), scaled to **{} devices at one reading per {} s = {} readings/s**, each component counted full at {:.0} % of a core. Everything here shared 2 cores, so per-reading costs include contention; treat the cores as an upper estimate.\n",
        rate(step.offered_rps),
        rate(FLEET_DEVICES),
        FLEET_INTERVAL_S,
        rate(fleet_rate),
        BUSY * 100.0
    );
    let _ = writeln!(
        md,
        "| component | CPU-µs per reading | cores for {} readings/s |\n|---|---|---|",
        rate(fleet_rate)
    );
    let costs = costs(step);
    let mut total = 0.0;
    for c in &costs {
        let cores = c.cores_for(fleet_rate);
        total += cores;
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} |",
            c.component,
            c.cpu_per_reading * 1e6,
            cores
        );
    }
    let _ = writeln!(md, "| **all** | | **{total:.1}** |\n");
    if let Some(first) = costs.first() {
        let _ = writeln!(
            md,
            "The largest consumer is **{}** ({:.1} cores). ",
            first.component,
            first.cores_for(fleet_rate)
        );
    }
    if let Some(publish) = r.raw_publish.map(|p| p.per_second()).filter(|p| *p > 0.0) {
        let _ = writeln!(
            md,
            "RabbitMQ: a quorum queue's leader is one Erlang process, so one partition carries at most what one queue took in this run's raw publish ({} msg/s); at one reading per message (the worst case: group commit packs more under load) {} readings/s needs at least **{} partitions**, spread over the nodes' cores.",
            rate(publish),
            rate(fleet_rate),
            (fleet_rate / publish).ceil()
        );
    }
    if let Some(a) = step.ingest.filter(|a| a.messages > 0 && step.seconds > 0.0) {
        let rabbit = step
            .cpu
            .iter()
            .find(|(name, _)| name == "rabbitmq")
            .map(|(_, cpu)| *cpu);
        let _ = writeln!(
            md,
            "At that step ingest published {} queue messages/s, {:.1} readings each (group commit){}: RabbitMQ's work grows with messages, not readings, so its cores above are an upper estimate wherever load packs messages fuller.",
            rate(a.messages as f64 / step.seconds),
            a.readings as f64 / a.messages as f64,
            rabbit.map_or(String::new(), |cpu| format!(
                "; RabbitMQ used {:.0} CPU-µs per message",
                cpu / a.messages as f64 * 1e6
            ))
        );
    }
    if let Some(copy) = r.raw_copy.map(|c| c.per_second()).filter(|c| *c > 0.0) {
        let _ = writeln!(
            md,
            "PostgreSQL: raw binary COPY took {} rows/s here ({}), so {} readings/s is {:.1}× one node's ceiling on this disk{}",
            rate(copy),
            if r.postgres_durability.is_empty() {
                "durability not recorded".to_owned()
            } else {
                r.postgres_durability.clone()
            },
            rate(fleet_rate),
            fleet_rate / copy,
            if fleet_rate / copy >= 0.5 {
                ": the database's writes are the first bottleneck a fleet this size meets (ingest and the analyzer scale out by replicas); it needs a faster disk, more readings per commit, or CockroachDB's spread writes."
            } else {
                ", within reach of one node."
            }
        );
    }
    super::scaling::scaling_section(md, r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Rate;

    fn step(acked: f64, stored: f64, verdict: &str, cpu: &[(&str, f64)]) -> StepRow {
        StepRow {
            offered_rps: acked,
            acked_rps: acked,
            stored_rps: Some(stored),
            seconds: 10.0,
            verdict: verdict.into(),
            cpu: cpu.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            ..StepRow::default()
        }
    }

    #[test]
    fn costs_come_from_the_highest_sustained_step_that_stored() {
        let r = RunResults {
            ours: vec![
                step(1_000.0, 1_000.0, "sustained", &[("ingest", 1.0)]),
                // Sustained, but the store fell behind: not a model step.
                step(4_000.0, 2_000.0, "sustained", &[("ingest", 3.0)]),
                step(
                    2_000.0,
                    2_000.0,
                    "sustained",
                    &[("ingest", 1.5), ("ha-load", 9.0), ("analyzer", 3.0)],
                ),
                step(8_000.0, 8_000.0, "p99 900 ms > 50 ms", &[("ingest", 9.0)]),
            ],
            raw_publish: Some(Rate {
                items: 200_000,
                seconds: 10.0,
            }),
            raw_copy: Some(Rate {
                items: 400_000,
                seconds: 10.0,
            }),
            ..RunResults::default()
        };
        let s = model_step(&r).unwrap();
        assert_eq!(s.acked_rps, 2_000.0);
        let c = costs(s);
        assert_eq!(c.len(), 2, "the driver is left out");
        // 3 CPU-s over 20,000 readings = 150 µs; at 100k/s and 70 %: 21.4 cores.
        assert_eq!(c[0].component, "analyzer");
        assert!((c[0].cpu_per_reading - 150e-6).abs() < 1e-12);
        assert!((c[0].cores_for(100_000.0) - 150e-6 * 100_000.0 / 0.7).abs() < 1e-9);
        let mut md = String::new();
        capacity_section(&mut md, &r);
        assert!(md.contains("| analyzer | 150.0 | 21.4 |"), "{md}");
        assert!(md.contains("at least **5 partitions**"), "{md}");
        assert!(md.contains("2.5× one node's ceiling"), "{md}");
    }

    #[test]
    fn rabbitmqs_cost_is_also_given_per_message() {
        let mut model = step(2_000.0, 2_000.0, "sustained", &[("rabbitmq", 2.0)]);
        model.ingest = Some(crate::results::IngestAccount {
            messages: 4_000,
            readings: 20_000,
            confirm_ms: 2.0,
            ack_wait_ms: 3.0,
        });
        let r = RunResults {
            ours: vec![model],
            ..RunResults::default()
        };
        let mut md = String::new();
        capacity_section(&mut md, &r);
        // 4,000 messages over 10 s; 2 CPU-s / 4,000 messages = 500 µs.
        assert!(
            md.contains("published 400 queue messages/s, 5.0 readings each"),
            "{md}"
        );
        assert!(md.contains("500 CPU-µs per message"), "{md}");
    }
}
