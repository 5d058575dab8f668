//! # reference-apps
//!
//! The logic behind ha-pipeline's reference binaries, one module per app,
//! so that each can be tested in-process; `src/bin/` holds thin `main`s.
//!
//! | binary | module | job |
//! |---|---|---|
//! | `ha-detect` | [`detect`] | run the anomaly detector offline over a CSV of readings |
//! | `ingest-api` | `src/bin/ingest-api.rs` over `ha_core::ingest` | devices post readings; 202 after the broker confirmed |
//! | `analyzer` | `src/bin/analyzer.rs` over `ha_core::analyzer` | store, detect, ack; replicas share the partitions |
//! | `alerts-api` | `src/bin/alerts-api.rs` over `ha_core::alerts` | anomalies API, live stream and web UI for operators |
//! | `data-generator` | [`generator`] | emulates a fleet of devices through `ha-device-client` |
//! | `ha-admin` | `src/bin/ha-admin.rs`, [`admin`] | schema migrations, device tokens, seq gaps, dead-letter queue |
//! | `ha-load` | [`load`] | load harness: stepped load to the knee, same-run baselines, docs/performance.md |
//! | `hello` | [`hello`] | walkthrough app: greets, shows its host and user, a log file on a volume |
//! | `cpu-stresser` | [`cpu_stresser`] | walkthrough app: burns CPU for the autoscaler demo |
//! | `ram-hogger` | [`ram_hogger`] | walkthrough app: grows its resident memory for the memory-limit demo |
//!
//! [`service`] holds what the services share: flags common to all, logging,
//! shutdown signals, the configuration exit code 64.
//!
//! ```no_run
//! // cargo run --release --bin ha-detect -- --emit all readings.csv
//! use reference_apps::detect::{DetectOptions, run};
//!
//! let options = DetectOptions::default();
//! let input = std::io::Cursor::new("device_id,seq,ts,metric,value\n");
//! let summary = run(&options, input, std::io::stdout().lock())?;
//! println!("{} rows read", summary.rows);
//! # Ok::<(), reference_apps::detect::DetectError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod admin;
pub mod cpu_stresser;
pub mod demo_tls;
pub mod detect;
pub mod generator;
pub mod hello;
pub mod load;
pub mod ram_hogger;
pub mod service;
