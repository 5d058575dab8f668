//! `cargo run -p ha-core --features server --example alerts_ui_fixture`
//!
//! The alerts API and web UI on `127.0.0.1:<free port>` over an in-memory
//! store seeded with two hours of readings of four devices and a few known
//! anomalies: the fixture of the browser test (`scripts/browser-test`), and
//! a quick way to look at the UI.
//!
//! It prints, one per line on stdout: `URL <url>`, `TOKEN <token>`, one
//! `ANOMALY <device> <seq> <metric>` per seeded anomaly, then `READY`. Each
//! line `insert` on stdin stores a new anomaly (with its reading, timestamped
//! now) and prints `INSERTED <device> <seq> <metric>`; end of stdin stops
//! the server. The token is `HA_FIXTURE_TOKEN` when set, else random.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use ha_core::alerts::{AlertsConfig, AlertsService};
use ha_core::store::{Anomaly, MemoryStore, Store};
use ha_core::wire::{Metric, Reading, Timestamp};

const DEVICES: [&str; 4] = ["icu-bed-01", "icu-bed-02", "icu-bed-03", "ward-7-wrist-12"];
const INTERVAL_SECS: u64 = 15;
const HISTORY_SECS: u64 = 2 * 3600;

/// Deterministic noise in [-1, 1) (an LCG), so every run shows the same data.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

fn anomaly(device: &str, seq: u64, metric: &str, ts: Timestamp, value: f64, z: f64) -> Anomaly {
    Anomaly {
        device_id: device.into(),
        seq,
        metric: metric.into(),
        ts,
        value,
        score: z,
        // Not a real p-value: a plausible, varied confidence for the demo.
        anomaly_score: 1.0 - (-z.abs() / 2.0).exp(),
        detector: "zscore".into(),
    }
}

/// Two hours of pulse and SpO2 per device, with spikes (and their
/// anomalies) at fixed positions.
fn seed() -> (Vec<Reading>, Vec<Anomaly>) {
    let now = Timestamp::now();
    let steps = HISTORY_SECS / INTERVAL_SECS;
    let mut noise = Noise(42);
    let (mut readings, mut anomalies) = (Vec::new(), Vec::new());
    for (d, device) in DEVICES.iter().enumerate() {
        let base = 64.0 + 6.0 * d as f64;
        for seq in 0..steps {
            let ts = now.saturating_sub(Duration::from_secs((steps - seq) * INTERVAL_SECS));
            let wave = (seq as f64 / 40.0 + d as f64).sin() * 3.0;
            let mut pulse = base + wave + noise.next() * 1.5;
            let mut spo2 = 97.0 + noise.next() * 0.6;
            // Spikes of every device at its own positions.
            let at = |k: u64| seq == (steps / 5) * k + 7 * d as u64;
            if at(1) || at(3) || (d == 1 && at(4)) {
                pulse += 58.0 + 4.0 * d as f64;
                let z = 5.5 + 2.5 * d as f64 + seq as f64 % 3.0;
                anomalies.push(anomaly(device, seq, "pulse", ts, pulse, z));
            }
            if d == 2 && at(2) {
                spo2 -= 11.0;
                anomalies.push(anomaly(device, seq, "spo2", ts, spo2, -9.4));
            }
            readings.push(Reading {
                device_id: (*device).into(),
                seq,
                ts,
                metrics: vec![Metric::new("pulse", pulse), Metric::new("spo2", spo2)],
            });
        }
    }
    (readings, anomalies)
}

fn token() -> String {
    std::env::var("HA_FIXTURE_TOKEN").unwrap_or_else(|_| {
        let s = RandomState::new();
        format!("{:016x}{:016x}", s.hash_one(1u8), s.hash_one(2u8))
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let (readings, anomalies) = seed();
    store.write(&readings, &anomalies).await?;
    let token = token();
    let service = AlertsService::new(
        Arc::new(store.clone()),
        AlertsConfig {
            api_token: Some(token.clone()),
            stream_poll: Duration::from_millis(250),
            ..AlertsConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("URL http://{}/", listener.local_addr()?);
    println!("TOKEN {token}");
    for a in &anomalies {
        println!("ANOMALY {} {} {}", a.device_id, a.seq, a.metric);
    }
    println!("READY");

    // stdin is read on a plain thread: one message per line, then EOF.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let drainer = service.clone();
    let commands = async move {
        let mut next_seq = HISTORY_SECS / INTERVAL_SECS;
        while let Some(line) = rx.recv().await {
            if line.trim() != "insert" {
                eprintln!("unknown command {line:?}; expected `insert`");
                continue;
            }
            let (device, ts, value) = (DEVICES[1], Timestamp::now(), 163.0);
            let reading = Reading {
                device_id: device.into(),
                seq: next_seq,
                ts,
                metrics: vec![Metric::new("pulse", value), Metric::new("spo2", 96.5)],
            };
            let a = anomaly(device, next_seq, "pulse", ts, value, 14.3);
            match store.write(&[reading], &[a]).await {
                Ok(_) => println!("INSERTED {device} {next_seq} pulse"),
                Err(e) => eprintln!("insert failed: {e}"),
            }
            next_seq += 1;
        }
        drainer.drain();
    };
    ha_core::http::serve(
        listener,
        service.router(),
        None,
        commands,
        Duration::from_secs(2),
    )
    .await?;
    Ok(())
}
