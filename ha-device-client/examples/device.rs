//! A minimal firmware-style loop: one reading every N seconds, sent through
//! `ha-device-client`, every retry printed with its attempt number and delay.
//!
//! ```text
//! cargo run -p ha-device-client --example device -- \
//!     --url https://localhost:8443 --device-id dev-00001 --token <hex> --ca-file ca.pem
//! # the same over MQTT 5 (the ingest's MQTT listener; feature `mqtt`,
//! # on for the examples): one QoS 1 PUBLISH per batch to readings/dev-00001
//! cargo run -p ha-device-client --example device -- \
//!     --url mqtts://localhost:8883 --device-id dev-00001 --token <hex> --ca-file ca.pem
//! # against a closed port, to watch the default retry schedule:
//! cargo run -p ha-device-client --example device -- --url http://127.0.0.1:9 --plain-http
//! ```
//!
//! The URL's scheme picks the transport: `https://` (or `http://`) posts
//! to `/v1/readings`, `mqtts://` (or `mqtt://`) publishes over MQTT; the
//! buffer, retries and printed events are the same.
//!
//! Every flag has an environment variable: `HA_URL`, `HA_DEVICE_ID`,
//! `HA_TOKEN`, `HA_CA_FILE`, `HA_INTERVAL_SECS` (default 10),
//! `HA_BUFFER_FILE` (default: in-memory buffer), `HA_PLAIN_HTTP=1`.

use std::process::ExitCode;
use std::time::Duration;

use ha_core::wire::{Metric, Reading, Timestamp};
use ha_device_client::{
    Buffer, BufferLimits, Client, ClientConfig, Event, FileBuffer, MemoryBuffer,
};

struct Args {
    url: String,
    device_id: String,
    token: String,
    ca_file: Option<String>,
    interval: Duration,
    buffer_file: Option<String>,
    plain_http: bool,
}

fn parse_args() -> Result<Args, String> {
    let env = |k: &str| std::env::var(k).ok();
    let mut a = Args {
        url: env("HA_URL").unwrap_or_else(|| "https://localhost:8443".into()),
        device_id: env("HA_DEVICE_ID").unwrap_or_else(|| "dev-00001".into()),
        token: env("HA_TOKEN").unwrap_or_else(|| "00".into()),
        ca_file: env("HA_CA_FILE"),
        interval: Duration::from_secs(10),
        buffer_file: env("HA_BUFFER_FILE"),
        plain_http: env("HA_PLAIN_HTTP").is_some_and(|v| v == "1"),
    };
    let mut interval = env("HA_INTERVAL_SECS");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--device-id" => a.device_id = value()?,
            "--token" => a.token = value()?,
            "--ca-file" => a.ca_file = Some(value()?),
            "--interval" => interval = Some(value()?),
            "--buffer-file" => a.buffer_file = Some(value()?),
            "--plain-http" => a.plain_http = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if let Some(s) = interval {
        let secs: f64 = s.parse().map_err(|_| format!("bad interval {s}"))?;
        a.interval = Duration::try_from_secs_f64(secs).map_err(|_| format!("bad interval {s}"))?;
    }
    Ok(a)
}

fn on_event(e: &Event) {
    match e {
        Event::Retry {
            attempt,
            delay,
            cause,
        } => println!(
            "retry attempt={attempt} delay={}s cause={cause}",
            delay.as_secs_f64()
        ),
        Event::GaveUp { retries, cause } => {
            println!("gave up after {retries} retries ({cause}); readings stay buffered")
        }
        Event::Connected { peer } => println!("connected to {peer}"),
        Event::Acknowledged {
            count, last_seq, ..
        } => {
            println!("acknowledged {count} reading(s) up to seq {last_seq}")
        }
        other => println!("{other:?}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(why) => {
            eprintln!(
                "{why}\nusage: device [--url https://H:P | mqtts://H:P] [--device-id D] [--token T] [--ca-file F] [--interval SECS] [--buffer-file F] [--plain-http]"
            );
            return ExitCode::from(64);
        }
    };
    let mut config =
        ClientConfig::new(&args.url, &args.device_id, &args.token).with_event_callback(on_event);
    if let Some(ca) = &args.ca_file {
        config = config.with_ca_file(ca);
    }
    if args.plain_http {
        config = config.with_plain_http();
    }
    let result = match &args.buffer_file {
        Some(path) => match FileBuffer::open(path, BufferLimits::default()) {
            Ok(buffer) => run(config, buffer, &args).await,
            Err(e) => Err(e),
        },
        None => run(config, MemoryBuffer::new(BufferLimits::default()), &args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(64)
        }
    }
}

async fn run<B: Buffer>(
    config: ClientConfig,
    buffer: B,
    args: &Args,
) -> Result<(), ha_device_client::Error> {
    // `seq` must grow across reboots (the server keeps the first reading
    // of each `(device_id, seq)`): real firmware persists it; this example
    // starts from the clock in milliseconds, or after what an earlier run
    // left in the buffer.
    let clock = u64::try_from(Timestamp::now().unix_micros() / 1000).unwrap_or(0);
    let mut seq = buffer
        .peek(usize::MAX, usize::MAX)?
        .last()
        .map_or(clock, |r| clock.max(r.seq() + 1));
    let mut client = Client::new(config, buffer)?;
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let reading = Reading {
            device_id: args.device_id.clone(),
            seq,
            ts: Timestamp::now(),
            metrics: vec![Metric::new("pulse", 60.0 + (seq % 30) as f64)],
        };
        seq += 1;
        if let Err(e) = client.push(reading) {
            println!("not buffered: {e}");
        }
        if let Err(e) = client.flush().await {
            println!("send failed: {e}");
        }
        let c = client.counters();
        println!(
            "counters sent={} acknowledged={} retried={} buffered={} dropped={}",
            c.sent, c.acknowledged, c.retried, c.buffered, c.dropped
        );
    }
}
