//! Connection memory: a fresh ingest process, generators holding one TLS
//! connection per device (HTTPS keep-alive or an MQTT session); RSS and
//! open descriptors before and after.

use std::net::IpAddr;
use std::time::Duration;

use super::pipeline::{Pipeline, free_port, ingest_args, run_prefix};
use super::{LoadConfig, log};
use crate::driver::Transport;
use crate::process::Spawned;
use crate::procfs;
use crate::results::Connections;

pub(super) async fn connections(
    config: &LoadConfig,
    p: &Pipeline,
    transport: Transport,
) -> Result<Connections, String> {
    let (label, kind) = match transport {
        Transport::Http => ("HTTPS", "c"),
        Transport::Mqtt => ("MQTT", "q"),
    };
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .and_then(|x| x.split_whitespace().nth(4).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mqtt = free_port()?;
    let name = format!("ingest-conns-{kind}");
    let mut ingest = Spawned::start(
        &name,
        &config.bin_dir.join("ingest-api"),
        &ingest_args(config, p, mqtt),
        config.work_dir.join(format!("{name}.log")),
    )?;
    let addr = ingest.listening(Duration::from_secs(30)).await?;
    let url = match transport {
        Transport::Http => format!("https://{addr}"),
        Transport::Mqtt => format!("mqtts://{mqtt}"),
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = ingest.pid();
    let ingest_rss_before = procfs::rss(pid);
    let fds_before = procfs::open_fds(pid);
    let generator = |name: &str, devices: usize, addrs: &[IpAddr], i: usize| {
        let mut args = vec![
            "--url".into(),
            url.clone(),
            "--transport".into(),
            match transport {
                Transport::Http => "https".into(),
                Transport::Mqtt => "mqtt".into(),
            },
            "--ca-cert".into(),
            config.work_dir.join("ca.pem").display().to_string(),
            "--device-key-file".into(),
            p.key_file.display().to_string(),
            "--devices".into(),
            devices.to_string(),
            "--interval".into(),
            "10s".into(),
            "--device-prefix".into(),
            format!("{}{i}-", run_prefix(kind)),
            "--log".into(),
            "warn".into(),
        ];
        if !addrs.is_empty() {
            args.push("--source-addrs".into());
            args.push(
                addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let name = format!("{name}-{kind}");
        Spawned::start(
            &name,
            &config.bin_dir.join("data-generator"),
            &args,
            config.work_dir.join(format!("{name}.log")),
        )
    };
    // A small fleet first: the generator's own footprint.
    let small_devices = 100;
    let small = generator("generator-small", small_devices, &[], 0)?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let generator_rss_small = procfs::rss(small.pid());
    small.stop(Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let n = config.devices_per_generator;
    let mut gens = Vec::new();
    for g in 0..config.generators {
        // ~28k ports per source address: two addresses per generator.
        let addrs: Vec<IpAddr> = (0..2)
            .map(|k| IpAddr::from([127, 0, 0, (2 + g * 2 + k) as u8]))
            .collect();
        gens.push(generator(&format!("generator-{g}"), n, &addrs, g + 1)?);
    }
    let attempted = n * config.generators;
    log(format!(
        "Connections ({label}): {} generators × {n} devices connecting (one reading / 10 s each)…",
        config.generators
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut held;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        held = procfs::open_fds(pid).saturating_sub(fds_before);
        log(format!(
            "Connections ({label}): ingest holds {held} of {attempted}."
        ));
        if held >= attempted || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    // Let every device send at least once, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    held = procfs::open_fds(pid).saturating_sub(fds_before);
    let ingest_rss_after = procfs::rss(pid);
    let big: Vec<u64> = gens.iter().map(|g| procfs::rss(g.pid())).collect();
    let generator_rss_big = big.iter().sum::<u64>() / big.len().max(1) as u64;
    for g in gens {
        g.stop(Duration::from_secs(15)).await;
    }
    ingest.stop(Duration::from_secs(10)).await;
    Ok(Connections {
        connections: held,
        attempted,
        generators: config.generators,
        ingest_rss_before,
        ingest_rss_after,
        generator_rss_small,
        small_devices,
        generator_rss_big,
        devices_per_generator: n,
        fd_hard_limit: hard,
    })
}
