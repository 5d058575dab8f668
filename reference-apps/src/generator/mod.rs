//! The data generator: emulates a fleet of devices, each sending one reading
//! per interval through `ha-device-client` (the seed's retry behaviour by
//! default), optionally with injected anomalies, and reports what the
//! server acknowledged.
//!
//! Each device is a task with its own client, started at a staggered
//! offset so the fleet's load is spread over the interval. A device keeps
//! sampling on schedule while a send is retrying (the readings wait in its
//! buffer and go out in the next batches), as a real device does during
//! an outage. By default each
//! device also has its own connection, like real devices; with
//! `connections > 0` the devices share a [`ConnectionPool`] of that many
//! (an emulator's multiplexing, so that 100k devices fit under an
//! open-file limit), each request still carrying its own device's
//! credentials and each device keeping its own retries and buffer.
//!
//! With [`Transport::Mqtt`] each device sends over its own MQTT 5 session
//! instead (`mqtts://` URL: one QoS 1 PUBLISH per batch to
//! `readings/<device id>`, user name = device id, password = its token),
//! with the same buffer, retries and events.

mod fleet;
mod report_file;
mod signal;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ha_core::ingest::DeviceKeys;
use ha_core::wire::{Metric, Reading, Timestamp};
use ha_device_client::{
    Buffer, Client, ClientConfig, ConnectionPool, Event, MemoryBuffer, PoolConfig, RetryPolicy,
};

pub use fleet::{DeviceReport, FleetStats, GeneratorReport, SendRecord};
pub use report_file::{Anchor, DeviceEntry, ReportFile, ReportFileError, SendEntry};
use signal::Signal;

/// How the devices send their readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// `POST /v1/readings` over HTTPS (`https://` URL, or `http://`).
    #[default]
    Https,
    /// MQTT 5 over TLS (`mqtts://` URL, or `mqtt://`), a session per device.
    Mqtt,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "https" | "http" => Ok(Transport::Https),
            "mqtt" | "mqtts" => Ok(Transport::Mqtt),
            other => Err(format!(
                "transport must be `https` or `mqtt`, not `{other}`"
            )),
        }
    }
}

/// Settings of a generator run.
#[derive(Clone)]
pub struct GeneratorConfig {
    /// The ingest API, e.g. `https://127.0.0.1:8443`, or its MQTT
    /// listener, e.g. `mqtts://127.0.0.1:8883`, per `transport`.
    pub url: String,
    /// HTTPS or MQTT; must match the URL's scheme.
    pub transport: Transport,
    /// Number of devices.
    pub devices: usize,
    /// Device ids are `<prefix><index, 5 digits>`.
    pub device_prefix: String,
    /// Time between two readings of one device.
    pub interval: Duration,
    /// Stop after this many readings per device.
    pub readings_per_device: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Probability that a reading (after `spike_after` readings) is a spike.
    pub anomaly_rate: f64,
    /// At most this many spikes per device.
    pub max_spikes_per_device: u32,
    /// Readings a device sends before it may spike (the detector's history).
    pub spike_after: u64,
    /// CA certificate (PEM) for an HTTPS URL.
    pub ca_pem: Option<Vec<u8>>,
    /// Derives each device's token; `None` sends an empty token (servers
    /// started with `--insecure-no-auth`).
    pub keys: Option<DeviceKeys>,
    /// The devices' retry policy (default: the seed's 1..10 s, 10 retries).
    pub retry: RetryPolicy,
    /// First seq of every device.
    pub start_seq: u64,
    /// Seed of the value generator (same seed, same readings).
    pub seed: u64,
    /// Source addresses to spread connections over (100k connections need
    /// several: ~28k ports per source address).
    pub local_addrs: Vec<IpAddr>,
    /// Most readings per request when a device catches up.
    pub batch: usize,
    /// Connections shared by all devices; 0: one connection per device.
    pub connections: usize,
    /// Keep a [`SendRecord`] of every send in the device reports (the
    /// failure drills measure failover from them).
    pub record_sends: bool,
    /// Every device ticks at the same instants (a fleet reporting on the
    /// clock: waves of requests); by default they are staggered over one
    /// interval.
    pub synchronized: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            url: "https://127.0.0.1:8443".into(),
            transport: Transport::Https,
            devices: 100,
            device_prefix: "dev-".into(),
            interval: Duration::from_secs(10),
            readings_per_device: None,
            duration: None,
            anomaly_rate: 0.0,
            max_spikes_per_device: u32::MAX,
            spike_after: 34,
            ca_pem: None,
            keys: None,
            retry: RetryPolicy::default(),
            start_seq: 0,
            seed: 1,
            local_addrs: Vec::new(),
            batch: 100,
            connections: 0,
            record_sends: false,
            synchronized: false,
        }
    }
}

impl GeneratorConfig {
    /// The id of device `i`.
    pub fn device_id(&self, i: usize) -> String {
        format!("{}{i:05}", self.device_prefix)
    }

    /// Checks the settings; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.devices == 0 {
            return Err("devices must be at least 1".into());
        }
        if self.interval.is_zero() {
            return Err("interval must be more than 0".into());
        }
        let mqtt_url = self.url.starts_with("mqtts://") || self.url.starts_with("mqtt://");
        match self.transport {
            Transport::Https if mqtt_url => {
                return Err(format!(
                    "{} is an MQTT URL: use the mqtt transport",
                    self.url
                ));
            }
            Transport::Mqtt if !mqtt_url => {
                return Err(format!(
                    "the mqtt transport needs an mqtts:// (or mqtt://) URL, not {}",
                    self.url
                ));
            }
            Transport::Mqtt if self.connections > 0 => {
                return Err(
                    "shared connections are HTTPS only: an MQTT session is one device's".into(),
                );
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.anomaly_rate) {
            return Err("anomaly rate must be within 0..=1".into());
        }
        if !ha_core::wire::is_valid_device_id(&self.device_id(self.devices - 1)) {
            return Err(format!(
                "device prefix `{}` makes invalid device ids",
                self.device_prefix
            ));
        }
        Ok(())
    }

    /// The pool the devices share, when `connections > 0`: the CA is
    /// parsed once, connections are spread over the source addresses.
    pub fn connection_pool(&self) -> Result<Option<ConnectionPool>, ha_device_client::Error> {
        if self.connections == 0 {
            return Ok(None);
        }
        let mut pool = PoolConfig::new(self.url.as_str(), self.connections)
            .with_local_addrs(self.local_addrs.iter().copied());
        if self.url.starts_with("http://") {
            pool = pool.with_plain_http();
        }
        if let Some(ca) = &self.ca_pem {
            pool = pool.with_ca_pem(ca.clone());
        }
        ConnectionPool::new(pool).map(Some)
    }
}

/// Runs the fleet until every device sent `readings_per_device`, the
/// `duration` elapsed, or `shutdown` resolves; then each device flushes what
/// it still holds (with its normal retries) and the report is returned.
pub async fn run(
    config: GeneratorConfig,
    stats: Arc<FleetStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> GeneratorReport {
    let pool = match config.connection_pool() {
        Ok(pool) => pool,
        Err(e) => {
            tracing::error!(error = %e, "Cannot create the connection pool.");
            let devices = (0..config.devices)
                .map(|i| DeviceReport {
                    error: Some(e.to_string()),
                    ..DeviceReport::new(&config.device_id(i))
                })
                .collect();
            return GeneratorReport::new(devices);
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = Arc::new(config);
    let mut tasks = tokio::task::JoinSet::new();
    // A fleet reporting in waves starts its first wave together, once every
    // device has had a second to set its client up.
    let first_wave = tokio::time::Instant::now() + Duration::from_secs(1);
    for i in 0..config.devices {
        tasks.spawn(device(
            config.clone(),
            pool.clone(),
            stats.clone(),
            i,
            stop_rx.clone(),
            first_wave,
        ));
    }
    let deadline = config.duration;
    tokio::spawn(async move {
        match deadline {
            Some(d) => {
                tokio::select! {
                    () = shutdown => {}
                    () = tokio::time::sleep(d) => {}
                }
            }
            None => shutdown.await,
        }
        let _ = stop_tx.send(true);
    });
    let mut devices = Vec::with_capacity(config.devices);
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            devices.push(r);
        }
    }
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    GeneratorReport::new(devices)
}

async fn device(
    config: Arc<GeneratorConfig>,
    pool: Option<ConnectionPool>,
    stats: Arc<FleetStats>,
    index: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
    first_wave: tokio::time::Instant,
) -> DeviceReport {
    let device_id = config.device_id(index);
    let mut report = DeviceReport::new(&device_id);
    let token = config
        .keys
        .as_ref()
        .map(|k| k.token(&device_id))
        .unwrap_or_default();
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut client_config =
        ClientConfig::new(config.url.as_str(), device_id.as_str(), token.as_str())
            .with_retry_policy(config.retry)
            .with_batch(config.batch, 512 * 1024)
            .with_jitter_seed(config.seed ^ index as u64)
            .with_event_callback(fleet::event_logger(
                device_id.clone(),
                stats.clone(),
                acked.clone(),
            ));
    if let Some(pool) = pool {
        client_config = client_config.with_connection_pool(pool);
    } else {
        if config.url.starts_with("http://") || config.url.starts_with("mqtt://") {
            client_config = client_config.with_plain_http();
        }
        if let Some(ca) = &config.ca_pem {
            client_config = client_config.with_ca_pem(ca.clone());
        }
        if !config.local_addrs.is_empty() {
            client_config =
                client_config.with_local_addr(config.local_addrs[index % config.local_addrs.len()]);
        }
    }
    let mut client = match Client::new(client_config, MemoryBuffer::default()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(device = %device_id, error = %e, "Cannot create the device client.");
            report.error = Some(e.to_string());
            return report;
        }
    };
    let mut sampler = Sampler {
        signal: Signal::new(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64),
        seq: config.start_seq,
    };
    // Stagger the fleet over one interval, unless it reports in waves.
    let start = if config.synchronized {
        first_wave.max(tokio::time::Instant::now())
    } else {
        tokio::time::Instant::now()
            + config
                .interval
                .mul_f64(index as f64 / config.devices as f64)
    };
    let mut tick = tokio::time::interval_at(start, config.interval);
    // A fleet reporting in waves stays on the clock: a device that missed
    // a tick waits for the next wave rather than drifting out of step.
    tick.set_missed_tick_behavior(if config.synchronized {
        tokio::time::MissedTickBehavior::Skip
    } else {
        tokio::time::MissedTickBehavior::Delay
    });
    let done = |report: &DeviceReport| {
        config
            .readings_per_device
            .is_some_and(|n| report.generated >= n)
    };
    // Readings sampled while a send (with its retries) was under way: a
    // device keeps measuring while the server is unreachable.
    let mut pending: Vec<Reading> = Vec::new();
    let mut stopped = false;
    while !stopped && (!done(&report) || !pending.is_empty()) {
        if pending.is_empty() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            pending.push(sampler.next(&config, &device_id, &mut report, &stats));
        }
        for reading in pending.drain(..) {
            if let Err(e) = client.push(reading) {
                tracing::warn!(device = %device_id, error = %e, "Reading not buffered.");
            }
        }
        // Errors are logged by the event callback; readings stay buffered.
        // Boxed: the flush future (connect, TLS, exchange) is large and
        // lives only while a flush runs, not in each idle device's task.
        let retried_before = client.counters().retried;
        let started = tokio::time::Instant::now();
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let ok = {
            let mut flush = Box::pin(client.flush());
            loop {
                tokio::select! {
                    r = &mut flush => break r.is_ok(),
                    _ = tick.tick(), if !stopped && !done(&report) => {
                        pending.push(sampler.next(&config, &device_id, &mut report, &stats));
                    }
                    _ = stop.changed(), if !stopped => stopped = true,
                }
            }
        };
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if config.record_sends {
            report.sends.push(SendRecord {
                started,
                finished: tokio::time::Instant::now(),
                retries: client.counters().retried - retried_before,
                ok,
            });
        }
    }
    for reading in pending.drain(..) {
        if let Err(e) = client.push(reading) {
            tracing::warn!(device = %device_id, error = %e, "Reading not buffered.");
        }
    }
    // Send what is left, with the normal retries.
    if !client.buffer().is_empty() {
        let _ = Box::pin(client.flush()).await;
    }
    report.finish(client.counters(), &acked);
    report
}

/// A device's value source and sequence numbers.
struct Sampler {
    signal: Signal,
    seq: u64,
}

impl Sampler {
    /// The device's next reading (a spike by the configured chance).
    fn next(
        &mut self,
        config: &GeneratorConfig,
        device_id: &str,
        report: &mut DeviceReport,
        stats: &FleetStats,
    ) -> Reading {
        let spike = report.generated >= config.spike_after
            && (report.spikes.len() as u32) < config.max_spikes_per_device
            && self.signal.chance(config.anomaly_rate);
        let value = self.signal.pulse(spike);
        if spike {
            report.spikes.push(self.seq);
        }
        let reading = Reading {
            device_id: device_id.to_owned(),
            seq: self.seq,
            ts: Timestamp::now(),
            metrics: vec![Metric::new("pulse", value)],
        };
        report.generated += 1;
        stats.generated();
        self.seq += 1;
        reading
    }
}

impl std::fmt::Debug for GeneratorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorConfig")
            .field("url", &self.url)
            .field("transport", &self.transport)
            .field("devices", &self.devices)
            .field("interval", &self.interval)
            .field("connections", &self.connections)
            .field("anomaly_rate", &self.anomaly_rate)
            .finish_non_exhaustive()
    }
}

/// Whether an event is worth a log line at info level.
fn is_notable(e: &Event) -> bool {
    !matches!(e, Event::Acknowledged { .. } | Event::Connected { .. })
}

#[cfg(test)]
mod tests {
    use ha_core::ingest::{IngestConfig, IngestService};
    use ha_core::queue::{MemoryQueue, Queue};

    use super::*;

    /// 300 devices over 3 shared connections against the real ingest
    /// router (per-device HMAC tokens checked) on an in-memory queue.
    #[tokio::test]
    async fn a_fleet_shares_a_few_connections_with_per_device_credentials() {
        let keys = DeviceKeys::from_keys(vec![b"test-key".to_vec()]).unwrap();
        let queue = Arc::new(MemoryQueue::with_partitions(4));
        let ingest = IngestService::new(
            queue.clone(),
            IngestConfig {
                keys: Some(keys.clone()),
                ..IngestConfig::default()
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(ha_core::http::serve(
            listener,
            ingest.router(),
            None,
            std::future::pending(),
            Duration::ZERO,
        ));
        let config = GeneratorConfig {
            url: format!("http://{addr}"),
            devices: 300,
            interval: Duration::from_millis(50),
            readings_per_device: Some(3),
            keys: Some(keys),
            connections: 3,
            ..GeneratorConfig::default()
        };
        let stats = Arc::new(FleetStats::default());
        let report = run(config, stats.clone(), std::future::pending()).await;
        assert!(report.devices.iter().all(|d| d.error.is_none()));
        assert_eq!(
            report.total(|c| c.acknowledged),
            900,
            "{}",
            report.summary()
        );
        assert_eq!(report.total(|c| c.retried), 0, "{}", report.summary());
        assert_eq!(stats.snapshot().1, 900);
        // Ingest coalesces concurrent requests into fewer messages: count
        // the readings, each (device, seq) exactly once.
        let mut readings = std::collections::BTreeSet::new();
        let mut total = 0;
        for p in 0..4 {
            let messages = queue.depth(p).await.unwrap();
            let mut sub = queue.subscribe(p, u16::MAX).await.unwrap();
            for _ in 0..messages {
                let d = sub.next().await.unwrap();
                for r in ha_core::wire::Envelope::decode(&d.payload)
                    .unwrap()
                    .readings
                {
                    total += 1;
                    readings.insert((r.device_id, r.seq));
                }
            }
        }
        assert_eq!((total, readings.len()), (900, 900));
    }

    #[tokio::test]
    async fn a_bad_pool_fails_every_device() {
        let config = GeneratorConfig {
            url: "https://127.0.0.1:1".into(),
            devices: 2,
            connections: 2,
            ..GeneratorConfig::default()
        };
        let report = run(config, Arc::default(), std::future::pending()).await;
        assert_eq!(report.devices.len(), 2);
        assert!(report.devices.iter().all(|d| d.error.is_some()));
    }

    #[test]
    fn the_transport_must_match_the_url() {
        let with = |transport, url: &str, connections| GeneratorConfig {
            transport,
            url: url.into(),
            connections,
            ..GeneratorConfig::default()
        };
        assert!(
            with(Transport::Mqtt, "mqtts://h:8883", 0)
                .validate()
                .is_ok()
        );
        assert!(with(Transport::Mqtt, "https://h", 0).validate().is_err());
        assert!(with(Transport::Https, "mqtts://h", 0).validate().is_err());
        assert!(with(Transport::Mqtt, "mqtts://h", 4).validate().is_err());
        assert_eq!("mqtt".parse::<Transport>(), Ok(Transport::Mqtt));
        assert!("amqp".parse::<Transport>().is_err());
    }
}
