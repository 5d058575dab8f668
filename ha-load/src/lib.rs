//! # ha-load
//!
//! The load harness. It starts (or targets) the real pipeline —
//! ingest over HTTPS with device auth, RabbitMQ quorum queues, the
//! analyzer, PostgreSQL — offers a stepped, open-loop load until the knee,
//! and measures, in the same run on the same servers, the baselines the
//! pipeline is judged against (raw lapin publish and consume, raw COPY, the
//! naive axum-publish-await composition). [`report`] turns the results into
//! `docs/performance.md` and its SVG plot.
//!
//! ```no_run
//! // `ha-load report`: rewrite docs/performance.{md,svg} from a run's results.
//! let json = std::fs::read("docs/performance.json")?;
//! let results: ha_load::RunResults = serde_json::from_slice(&json)?;
//! ha_load::write_docs(&results, std::path::Path::new("docs"), None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```text
//! scripts/perf            # servers, release build, full run, docs/performance.md
//! scripts/perf --quick    # short steps (CI)
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`driver`] | open-loop HTTPS load driver (devices × rate, latency from due time) |
//! | [`mqtt`] | the driver's MQTT transport: QoS 1 sessions, one device each |
//! | [`closed_loop`] | the closed-loop driver: `wrk` with a thousand devices' tokens |
//! | [`plan`] | the offered rates and the knee (pure) |
//! | [`histogram`] | latency histogram |
//! | [`baseline`] | raw lapin publish/consume, raw binary COPY |
//! | [`naive`] | the naive composition's router |
//! | [`procfs`] | CPU seconds and RSS per component from /proc |
//! | [`run`](mod@run) | one harness run: pipeline start-up, probes, steps, baselines, connections |
//! | [`results`], [`report`] | what was measured; the markdown and the SVG |

pub mod baseline;
pub mod closed_loop;
pub mod driver;
pub mod histogram;
pub mod http1;
pub mod mqtt;
pub mod naive;
pub mod plan;
pub mod process;
pub mod procfs;
pub mod report;
pub mod results;
pub mod run;

pub use histogram::LatencyHistogram;
pub use results::RunResults;
pub use run::{LoadConfig, run};

/// Writes `performance.md`, `performance.svg` and `performance.json` into
/// `dir`, and the headline into `readme` between its markers when given.
pub fn write_docs(
    results: &RunResults,
    dir: &std::path::Path,
    readme: Option<&std::path::Path>,
) -> std::io::Result<()> {
    if let Some(path) = readme {
        let text = std::fs::read_to_string(path)?;
        match report::with_headline(&text, results) {
            Some(updated) => std::fs::write(path, updated)?,
            None => {
                return Err(std::io::Error::other(format!(
                    "{} has no <!-- perf-headline --> markers",
                    path.display()
                )));
            }
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("performance.md"), report::markdown(results))?;
    std::fs::write(dir.join("performance.svg"), report::svg(results))?;
    let json = serde_json::to_string_pretty(results).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("performance.json"), json + "\n")
}
