//! The same-run baselines: the naive composition (same driver, steps and
//! connections as ours), raw lapin publish and consume, raw binary COPY.

use std::path::PathBuf;
use std::time::Duration;

use super::pipeline::{Pipeline, run_prefix};
use super::probes::Probes;
use super::steps::stepped;
use super::{LoadConfig, fleet, log};
use crate::baseline;
use crate::closed_loop::{self, ClosedLoop};
use crate::driver::Driver;
use crate::http1::Endpoint;
use crate::process::Spawned;
use crate::procfs::Component;
use crate::results::{RunResults, StepRow};

pub(super) async fn baselines(
    config: &LoadConfig,
    p: &Pipeline,
    tls: &(PathBuf, PathBuf),
    results: &mut RunResults,
) {
    // The naive composition, same driver, same steps, same connections.
    if tls.0.as_os_str().is_empty() {
        results
            .notes
            .push("Naive composition not run: the harness targeted a running pipeline without its TLS key.".into());
    } else {
        match naive(config, p, tls).await {
            Ok((rows, closed)) => {
                results.naive = rows;
                match closed {
                    Ok(c) => results.closed_naive = Some(c),
                    Err(e) => results.notes.push(format!(
                        "Closed loop against the naive composition failed: {e}"
                    )),
                }
            }
            Err(e) => results.notes.push(format!("Naive composition failed: {e}")),
        }
    }
    log("Raw lapin publish, confirms pipelined (window 256, 2 channels)…");
    match baseline::raw_publish(&config.amqp_url, "perf.raw", config.step, 256, 2).await {
        Ok(r) => {
            log(format!("Raw publish: {:.0} msg/s.", r.per_second()));
            results.raw_publish = Some(r);
            log("Raw consume, prefetch 1000, `multiple` ack every 500…");
            match baseline::raw_consume(&config.amqp_url, "perf.raw", r.items).await {
                Ok(c) => {
                    log(format!("Raw consume: {:.0} msg/s.", c.per_second()));
                    results.raw_consume = Some(c);
                }
                Err(e) => results.notes.push(format!("Raw consume failed: {e}")),
            }
        }
        Err(e) => results.notes.push(format!("Raw publish failed: {e}")),
    }
    log("Raw binary COPY into PostgreSQL, 500 rows per COPY…");
    match baseline::raw_copy(&config.postgres_url, config.step, 500).await {
        Ok(r) => {
            log(format!("Raw COPY: {:.0} rows/s.", r.per_second()));
            results.raw_copy = Some(r);
        }
        Err(e) => results.notes.push(format!("Raw COPY failed: {e}")),
    }
}

pub(super) async fn naive(
    config: &LoadConfig,
    p: &Pipeline,
    tls: &(PathBuf, PathBuf),
) -> Result<(Vec<StepRow>, Result<ClosedLoop, String>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut server = Spawned::start(
        "naive",
        &exe,
        &[
            "naive-server".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--amqp-url".into(),
            config.amqp_url.clone(),
            "--tls-cert".into(),
            tls.0.display().to_string(),
            "--tls-key".into(),
            tls.1.display().to_string(),
        ],
        config.work_dir.join("naive.log"),
    )?;
    let addr = server.listening(Duration::from_secs(30)).await?;
    let endpoint = Endpoint::parse(&format!("https://{addr}"), Some(&p.ca_pem))?;
    let prefix = run_prefix("n");
    let mut driver = Driver::connect(endpoint, fleet(config, &p.keys, &prefix), 1)
        .await
        .map_err(|e| format!("connecting to the naive server: {e}"))?;
    let warm = driver
        .step(200.0, 1, Duration::from_secs(2), |_, _, _| {})
        .await;
    let mut comps = vec![Component {
        name: "naive".into(),
        pid: server.pid(),
        tree: true,
    }];
    comps.extend(config.components.iter().cloned());
    comps.push(Component {
        name: "ha-load".into(),
        pid: std::process::id(),
        // Its children are the other components.
        tree: false,
    });
    let probes = Probes {
        store: None,
        queue: None,
        partitions: 0,
        components: comps,
        ingest: None,
    };
    let (rows, _) = stepped(
        "naive",
        &mut driver,
        config,
        &probes,
        &prefix,
        warm.acked_readings,
    )
    .await;
    drop(driver);
    log("Closed loop (wrk) against the naive composition…");
    let closed = closed_loop::run(
        &format!("https://{addr}"),
        &p.keys,
        &run_prefix("m"),
        &super::wrk_config(config),
        &config.work_dir,
    )
    .await;
    if let Ok(c) = &closed {
        log(format!(
            "Closed loop, naive: {:.0} req/s ({} non-2xx), p99 {:.1} ms.",
            c.requests_per_sec, c.non_2xx, c.p99_ms
        ));
    }
    server.stop(Duration::from_secs(5)).await;
    // Drop what the naive server queued (nobody consumes it).
    if let Ok(conn) =
        lapin::Connection::connect(&config.amqp_url, lapin::ConnectionProperties::default()).await
        && let Ok(ch) = conn.create_channel().await
    {
        let _ = ch
            .queue_delete(crate::naive::NAIVE_QUEUE.into(), Default::default())
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(0, "done".into())).await;
    }
    Ok((rows, closed))
}
