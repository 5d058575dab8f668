//! The backlog drain, and 1 → 2 replicas: ingest alone with a second
//! `ingest-api` beside the first, then two analyzers draining what the two
//! took in — the scaling figures of the capacity model, measured in the
//! same run as the one-replica ones.

use std::time::Duration;

use super::account;
use super::pipeline::{Pipeline, components, free_port, ingest_args, run_prefix};
use super::probes::{Probes, StoreCounter};
use super::steps::stepped;
use super::{LoadConfig, fleet, log};
use crate::baseline::Rate;
use crate::driver::Driver;
use crate::http1::Endpoint;
use crate::process::Spawned;
use crate::procfs::{self, Component};
use crate::results::{Replicas, RunResults};

/// Waits (at most 120 s) until `backlog` readings of `prefix` are stored;
/// the rate runs from the first stored reading to the last, so the
/// analyzers' start-up is not counted as drain throughput. With
/// `analyzers` given, it runs from when each of them holds a share of the
/// partitions instead: before that one replica drains alone.
pub(super) async fn drain(
    s: &StoreCounter,
    prefix: &str,
    backlog: u64,
    analyzers: &[Endpoint],
    notes: &mut Vec<String>,
) -> Rate {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    // (when, stored then): the first stored reading; the first poll with
    // every analyzer holding partitions.
    let mut first: Option<(tokio::time::Instant, u64)> = None;
    let mut balanced: Option<(tokio::time::Instant, u64)> = None;
    let mut stored = 0;
    while tokio::time::Instant::now() < deadline {
        stored = s.count(prefix).await;
        if first.is_none() && stored > 0 {
            first = Some((tokio::time::Instant::now(), stored));
        }
        if first.is_some() && balanced.is_none() && all_own_partitions(analyzers).await {
            balanced = Some((tokio::time::Instant::now(), stored));
        }
        if stored >= backlog {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if balanced.is_none() && first.is_some() {
        notes.push(format!(
            "Drain ({prefix}): the {} analyzers had not all taken a share of the partitions before the backlog was stored; the rate is from the first stored reading.",
            analyzers.len()
        ));
    }
    let (t_first, n_first) = balanced
        .or(first)
        .unwrap_or((tokio::time::Instant::now(), 0));
    let secs = t_first.elapsed().as_secs_f64();
    let drained = stored.saturating_sub(n_first);
    log(format!(
        "Drain: {stored} of {backlog} stored; {drained} in {secs:.2} s after the first{} = {:.0} readings/s.",
        if analyzers.is_empty() {
            ""
        } else {
            " with every analyzer holding partitions"
        },
        drained as f64 / secs.max(1e-9)
    ));
    if stored < backlog {
        notes.push(format!(
            "Drain ({prefix}): only {stored} of {backlog} readings stored within 120 s."
        ));
    }
    Rate {
        items: drained,
        seconds: secs,
    }
}

/// Whether every analyzer says (`ha_analyzer_owned_partitions` on its
/// `/metrics`) that it holds at least one partition; true for none.
async fn all_own_partitions(analyzers: &[Endpoint]) -> bool {
    for a in analyzers {
        let owned = account::scrape(a)
            .await
            .and_then(|text| account::value(&text, "ha_analyzer_owned_partitions"));
        if owned.is_none_or(|n| n < 1.0) {
            return false;
        }
    }
    true
}

/// Two ingest replicas (analyzer stopped), the ingest-only steps again;
/// then two analyzers drain the backlog. Leaves one analyzer running in
/// `p`, as it found it.
pub(super) async fn two_replicas(
    config: &LoadConfig,
    p: &mut Pipeline,
    s: &StoreCounter,
    results: &mut RunResults,
) -> Result<(), String> {
    if let Some(a) = p.analyzer.take() {
        a.stop(Duration::from_secs(20)).await;
    }
    let mut second = Spawned::start(
        "ingest-api-2",
        &config.bin_dir.join("ingest-api"),
        &ingest_args(config, p, free_port()?),
        config.work_dir.join("ingest-api-2.log"),
    )?;
    let addr = second.listening(Duration::from_secs(30)).await?;
    let endpoints = vec![
        Endpoint::parse(&p.url, Some(&p.ca_pem))?,
        Endpoint::parse(&format!("https://{addr}"), Some(&p.ca_pem))?,
    ];
    let prefix = run_prefix("r");
    let mut driver = Driver::connect_spread(endpoints, fleet(config, &p.keys, &prefix), 1)
        .await
        .map_err(|e| format!("connecting the driver to two ingest replicas: {e}"))?;
    let mut measured = components(config, p, None);
    measured.insert(
        1,
        Component {
            name: second.name.clone(),
            pid: second.pid(),
            tree: true,
        },
    );
    let probes = Probes {
        store: None,
        queue: None,
        partitions: config.partitions,
        components: measured,
        ingest: None,
    };
    log("Two ingest replicas (analyzer stopped): the ingest-only steps again…");
    super::probes::checkpoint(s, &mut results.notes).await;
    let (ingest_two, backlog) =
        stepped("ingest-only ×2", &mut driver, config, &probes, &prefix, 0).await;
    drop(driver);
    second.stop(Duration::from_secs(10)).await;

    log(format!(
        "Drain: {backlog} readings queued; starting two analyzers."
    ));
    let mut first = p.spawn_analyzer(config)?;
    let mut other = p.spawn_analyzer(config)?;
    let analyzers = [
        Endpoint::parse(
            &format!("http://{}", first.listening(Duration::from_secs(30)).await?),
            None,
        )?,
        Endpoint::parse(
            &format!("http://{}", other.listening(Duration::from_secs(30)).await?),
            None,
        )?,
    ];
    let both: Vec<Component> = [&first, &other]
        .iter()
        .map(|a| Component {
            name: a.name.clone(),
            pid: a.pid(),
            tree: true,
        })
        .collect();
    let before = procfs::sample(&both);
    let rate = drain(s, &prefix, backlog, &analyzers, &mut results.notes).await;
    let after = procfs::sample(&both);
    other.stop(Duration::from_secs(20)).await;
    p.analyzer = Some(first);
    results.replicas = Some(Replicas {
        ingest_two,
        drain_two: Some(rate),
        drain_two_cpu: before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64())
            .collect(),
    });
    Ok(())
}
