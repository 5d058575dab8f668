//! Drills at load: the knee of the drills' own topology (3 RabbitMQ nodes,
//! haproxy, 2 ingest replicas, the analyzer, the in-process fleet; debug
//! binaries as the drills run them), measured once per `scripts/faults`
//! run, and a fleet that offers a share of it while a drill injects its
//! fault.
//!
//! The knee is the highest stepped rate the fleet had acknowledged (≥ 95 %
//! of what it offered, nothing given up): past it the devices fall behind
//! and batch what they hold. A drill at load then offers [`SHARE`] of it
//! from [`DEVICES`] devices reporting in waves (every device at the same
//! instants, as a fleet reporting on the clock does) and fires into a
//! wave: hundreds of sends open at the fault instead of the seed fleet's
//! handful.

use std::path::PathBuf;
use std::time::Duration;

use reference_apps::generator::GeneratorConfig;
use tokio::time::Instant;

use crate::pipeline::{Env, Load, Options, Pipeline};

/// Devices of the knee steps and of the drills at load.
pub const DEVICES: usize = 1000;

/// Share of the knee a drill at load offers: above the 50 %, with
/// room for the step between the knee and the first rate not sustained.
pub const SHARE: f64 = 0.6;

/// Offered readings/s per step, each 1.5× the last.
const RATES: [f64; 10] = [
    250.0, 375.0, 500.0, 750.0, 1_125.0, 1_688.0, 2_531.0, 3_797.0, 5_695.0, 8_543.0,
];

/// A step: time for the fleet to settle, then the measured window.
const SETTLE: Duration = Duration::from_secs(3);
const WINDOW: Duration = Duration::from_secs(6);

/// The knee of this run.
#[derive(Clone, Copy, Debug)]
pub struct Knee {
    /// Highest offered rate sustained (readings/s).
    pub offered: f64,
    /// What was acknowledged in that step (readings/s).
    pub acked: f64,
}

/// The knee file of this run, beside the results file (`scripts/faults`
/// empties both at its start; every drill at load of the run reads it).
fn knee_file(env: &Env) -> PathBuf {
    env.results.with_file_name("knee.txt")
}

/// The knee of this run: read back, or measured now on a pipeline of its
/// own (and recorded for the next drill at load).
pub async fn knee(env: &Env) -> Knee {
    let path = knee_file(env);
    if let Some(knee) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| parse(&text))
    {
        eprintln!("[at_load] knee of this run: {knee:?} ({})", path.display());
        return knee;
    }
    let knee = measure(env).await;
    std::fs::write(&path, format!("{} {}\n", knee.offered, knee.acked)).expect("knee file");
    knee
}

fn parse(text: &str) -> Option<Knee> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    let (Some(Ok(offered)), Some(Ok(acked))) = (it.next(), it.next()) else {
        return None;
    };
    Some(Knee { offered, acked })
}

/// Steps the offered rate up until the fleet falls behind.
async fn measure(env: &Env) -> Knee {
    let p = Pipeline::start(env, "knee", Options::default()).await;
    let mut knee = None;
    let mut steps: Vec<String> = Vec::new();
    for (step, &rate) in RATES.iter().enumerate() {
        let mut config = fleet_at(&p, rate);
        // One reading per request: a device that falls behind must show it
        // as unacknowledged readings, not hide it in bigger batches.
        config.batch = 1;
        config.record_sends = false;
        config.anomaly_rate = 0.0;
        config.start_seq = step as u64 * 1_000_000;
        let load = p.start_load(config);
        tokio::time::sleep(SETTLE).await;
        let (acked, gave_up) = window(&load, WINDOW).await;
        let open = load.open_sends();
        load.finish().await;
        let sustained = acked >= 0.95 * rate && gave_up == 0;
        let verdict = if sustained {
            "sustained"
        } else {
            "fell behind"
        };
        eprintln!(
            "[at_load] knee step offered={rate:.0}/s acked={acked:.0}/s open_sends={open} gave_up={gave_up} {verdict}"
        );
        steps.push(format!(
            "{rate:.0}/s offered, {acked:.0}/s acknowledged, {open} sends open: {verdict}"
        ));
        // A machine too busy for even the first step still gets drills at
        // load: at that step, the most it was offered (the line says it
        // fell behind), rather than a failed test that measured only speed.
        if sustained || knee.is_none() {
            knee = Some(Knee {
                offered: rate,
                acked,
            });
        }
        if !sustained {
            break;
        }
    }
    p.finish();
    let log = env.results.with_file_name("knee-steps.txt");
    std::fs::write(&log, steps.join("\n") + "\n").expect("knee steps file");
    knee.expect("RATES is not empty")
}

/// Acknowledged readings/s over `span`, and sends given up meanwhile.
async fn window(load: &Load, span: Duration) -> (f64, u64) {
    let (_, acked0, _, gave_up0) = load.stats.snapshot();
    let t0 = Instant::now();
    tokio::time::sleep(span).await;
    let (_, acked1, _, gave_up1) = load.stats.snapshot();
    let rate = (acked1 - acked0) as f64 / t0.elapsed().as_secs_f64();
    (rate, gave_up1 - gave_up0)
}

/// The drill fleet (spikes, send records) from [`DEVICES`] devices
/// offering `rate` readings/s between them.
fn fleet_at(p: &Pipeline, rate: f64) -> GeneratorConfig {
    GeneratorConfig {
        devices: DEVICES,
        interval: Duration::from_secs_f64(DEVICES as f64 / rate),
        ..p.fleet()
    }
}

/// The fleet of a drill: the seed's, or [`SHARE`] of the knee.
pub fn fleet(p: &Pipeline, knee: Option<Knee>) -> GeneratorConfig {
    match knee {
        // Waves: every device reports at the same instants, so hundreds of
        // sends are open at once while the average stays at SHARE.
        Some(k) => GeneratorConfig {
            synchronized: true,
            ..fleet_at(p, SHARE * k.offered)
        },
        None => p.fleet(),
    }
}

/// After the warm-up (and three more waves), what the drill's result line
/// says of its load:
/// nothing for the seed fleet; the knee, the offered and acknowledged
/// rates and their share of the knee at load.
pub async fn figures(load: &Load, knee: Option<Knee>) -> Vec<(&'static str, String)> {
    let Some(k) = knee else {
        return Vec::new();
    };
    let offered = SHARE * k.offered;
    // Three waves at least: a window shorter than that sees one wave more
    // or less and misreads the rate.
    let span = Duration::from_secs_f64((3.0 * DEVICES as f64 / offered).max(2.0));
    let (acked, _) = window(load, span).await;
    vec![
        ("knee_rate", format!("{:.0}", k.offered)),
        ("offered_rate", format!("{offered:.0}")),
        ("acked_rate", format!("{acked:.0}")),
        ("load_pct", format!("{:.0}", 100.0 * acked / k.offered)),
    ]
}

/// Open sends across the fleet a drill at load waits for before it fires:
/// it fires into a wave.
const WAVE: u64 = 200;

/// At load, waits (up to 10 s) until a wave of the fleet is under way —
/// [`WAVE`] sends or more open — and notes how many (`fleet_open_sends`);
/// the drill then fires as soon as its victim holds work. Nothing for the
/// seed fleet.
pub async fn wave(load: &Load, knee: Option<Knee>, extra: &mut Vec<(&'static str, String)>) {
    if knee.is_none() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let open = loop {
        let open = load.open_sends();
        if open >= WAVE {
            break open;
        }
        assert!(
            Instant::now() < deadline,
            "no wave of {WAVE} open sends in 10 s (the fleet at load reports in waves)"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    extra.push(("fleet_open_sends", open.to_string()));
}
