//! # reference-apps
//!
//! The logic behind ha-pipeline's pipeline binaries, one module per app,
//! so that each can be tested in-process; `src/bin/` holds thin `main`s.
//! The load harness is the crate `ha-load`, the Kubernetes walkthrough
//! apps are the crate `walkthrough`.
//!
//! ```no_run
//! // The shape of every binary in src/bin/: flags (with the common ones),
//! // logging, a listener, serve until SIGTERM or Ctrl-C.
//! use std::net::SocketAddr;
//!
//! use clap::Parser;
//! use reference_apps::service::{self, CommonArgs};
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[arg(long, env = "HA_LISTEN", default_value = "127.0.0.1:8080")]
//!     listen: SocketAddr,
//!     #[command(flatten)]
//!     common: CommonArgs,
//! }
//!
//! # async fn example() -> std::io::Result<()> {
//! let args: Args = service::parse_args();
//! service::init_tracing(&args.common);
//! let listener = service::listen("example", args.listen).await?;
//! let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(service::shutdown_signal())
//!     .await
//! # }
//! ```
//!
//! | binary | module | job |
//! |---|---|---|
//! | `ha-detect` | [`detect`] | run the anomaly detector offline over a CSV of readings |
//! | `ingest-api` | `src/bin/ingest-api.rs` over `ha_core::ingest` | devices post readings; 202 after the broker confirmed |
//! | `analyzer` | `src/bin/analyzer.rs` over `ha_core::analyzer` | store, detect, ack; replicas share the partitions |
//! | `alerts-api` | `src/bin/alerts-api.rs` over `ha_core::alerts` | anomalies API, live stream and web UI for operators |
//! | `data-generator` | [`generator`] | emulates a fleet of devices through `ha-device-client` |
//! | `ha-admin` | `src/bin/ha-admin.rs`, [`admin`] | schema migrations, device tokens, seq gaps, dead-letter queue |
//!
//! [`service`] holds what the services share (`ha-load` and `walkthrough`
//! use it too): flags common to all, logging, shutdown signals, the
//! configuration exit code 64.
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

pub mod admin;
pub mod demo_tls;
pub mod detect;
pub mod generator;
pub mod service;
