//! The open-loop load driver: offers `rate` requests per second for a
//! step, whatever the server's answers, over a fixed set of keep-alive
//! connections; each request is for the next device of the fleet (so the
//! load is `devices × per-device rate`) with that device's next seq and
//! its HTTP Basic credentials. Latency runs from the moment a request was
//! *due*, not from when it could be sent, so a slow server cannot hide
//! its queueing (no coordinated omission).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use ha_core::ingest::DeviceKeys;
use ha_core::wire::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::LatencyHistogram;
use super::http1::{Connection, Endpoint};

/// Settings of the driver.
#[derive(Clone)]
pub struct DriverConfig {
    /// Keep-alive connections (= most requests in flight).
    pub connections: usize,
    /// Distinct devices the requests cycle through.
    pub devices: usize,
    /// Device ids are `<prefix><index>`; make it unique per run so the
    /// store's idempotency never hides a reading.
    pub device_prefix: String,
    /// Derives the devices' tokens; `None` sends no credentials.
    pub keys: Option<DeviceKeys>,
    /// Request path.
    pub path: String,
    /// A request not answered in this long is an error.
    pub request_timeout: Duration,
    /// Requests waiting per connection before the driver counts a request
    /// as "could not be sent" (the server is far behind).
    pub queue_per_connection: usize,
    /// HTTP/1.1 requests, or MQTT QoS 1 publishes (then each connection is
    /// one device's session and `devices` is `connections`).
    pub transport: Transport,
}

/// How the driver's readings travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// `POST /v1/readings`, one request at a time per connection.
    #[default]
    Http,
    /// MQTT 3.1.1 sessions, one device each, QoS 1 (see [`crate::mqtt`]).
    Mqtt,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            connections: 256,
            devices: 10_000,
            device_prefix: "load-".into(),
            keys: None,
            path: "/v1/readings".into(),
            request_timeout: Duration::from_secs(10),
            queue_per_connection: 64,
            transport: Transport::Http,
        }
    }
}

/// What one step measured.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// Offered requests per second.
    pub offered_rps: f64,
    /// Readings per request.
    pub batch: usize,
    /// Length of the step (dispatching).
    pub duration: Duration,
    /// Requests dispatched.
    pub requests: u64,
    /// 2xx answers.
    pub acked_requests: u64,
    /// Readings in 2xx answers.
    pub acked_readings: u64,
    /// Non-2xx answers, I/O errors, timeouts, and requests that could not
    /// be queued.
    pub errors: u64,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
    /// Ack latency, from due time to answer.
    pub latency: LatencyHistogram,
}

impl StepStats {
    /// Acknowledged readings per second over the step.
    pub fn acked_readings_per_s(&self) -> f64 {
        self.acked_readings as f64 / self.duration.as_secs_f64().max(1e-9)
    }
    /// Acknowledged requests per second over the step.
    pub fn acked_requests_per_s(&self) -> f64 {
        self.acked_requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

/// What the workers of one step report into.
#[derive(Default)]
pub(crate) struct Collector {
    pub(crate) latency: std::sync::Mutex<LatencyHistogram>,
    pub(crate) acked_requests: AtomicU64,
    pub(crate) acked_readings: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) done: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Collector {
    pub(crate) fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock()
            && f.is_none()
        {
            *f = Some(e);
        }
    }
}

/// One request (HTTP) or PUBLISH (MQTT) to send.
pub(crate) struct Job {
    device: usize,
    seq: u64,
    pub(crate) batch: usize,
    pub(crate) due: Instant,
    pub(crate) collector: Arc<Collector>,
}

struct Device {
    id: String,
    authorization: String,
}

/// A running driver: its connections stay open between steps.
pub struct Driver {
    workers: Vec<mpsc::Sender<Job>>,
    seqs: Vec<u64>,
    next_device: usize,
    next_worker: usize,
    config: DriverConfig,
}

impl Driver {
    /// Opens `connections` connections to `endpoint` and starts one worker
    /// per connection.
    pub async fn connect(
        endpoint: Endpoint,
        config: DriverConfig,
        first_seq: u64,
    ) -> std::io::Result<Driver> {
        if config.transport == Transport::Mqtt {
            return Driver::connect_mqtt(endpoint, config, first_seq).await;
        }
        Driver::connect_spread(vec![endpoint], config, first_seq).await
    }

    /// Like [`connect`](Self::connect) over HTTP, the connections spread
    /// round-robin over `endpoints` (replicas of one service); requests go
    /// to the connections in turn, so each replica gets its share.
    pub async fn connect_spread(
        endpoints: Vec<Endpoint>,
        config: DriverConfig,
        first_seq: u64,
    ) -> std::io::Result<Driver> {
        if endpoints.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no endpoint to connect to",
            ));
        }
        let devices: Arc<Vec<Device>> = Arc::new(
            (0..config.devices.max(1))
                .map(|i| {
                    let id = format!("{}{i:05}", config.device_prefix);
                    let token = config
                        .keys
                        .as_ref()
                        .map(|k| k.token(&id))
                        .unwrap_or_default();
                    let basic =
                        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{token}"));
                    Device {
                        id,
                        authorization: format!("Basic {basic}"),
                    }
                })
                .collect(),
        );
        let endpoints: Vec<Arc<Endpoint>> = endpoints.into_iter().map(Arc::new).collect();
        let mut workers = Vec::with_capacity(config.connections);
        for i in 0..config.connections.max(1) {
            let endpoint = &endpoints[i % endpoints.len()];
            let conn = endpoint.connect(None).await?;
            let (tx, rx) = mpsc::channel(config.queue_per_connection.max(1));
            tokio::spawn(worker(
                endpoint.clone(),
                conn,
                rx,
                devices.clone(),
                config.path.clone(),
                endpoint.addr.to_string(),
                config.request_timeout,
            ));
            workers.push(tx);
        }
        Ok(Driver {
            workers,
            seqs: vec![first_seq; config.devices.max(1)],
            next_device: 0,
            next_worker: 0,
            config,
        })
    }

    /// One MQTT session per connection, each its own device's.
    async fn connect_mqtt(
        endpoint: Endpoint,
        mut config: DriverConfig,
        first_seq: u64,
    ) -> std::io::Result<Driver> {
        config.devices = config.connections.max(1);
        let endpoint = Arc::new(endpoint);
        let mut workers = Vec::with_capacity(config.devices);
        for i in 0..config.devices {
            let id = format!("{}{i:05}", config.device_prefix);
            let token = config
                .keys
                .as_ref()
                .map(|k| k.token(&id))
                .unwrap_or_default();
            let conn = crate::mqtt::connect(&endpoint, &id, &token).await?;
            let (tx, rx) = mpsc::channel(config.queue_per_connection.max(1));
            tokio::spawn(crate::mqtt::worker(
                endpoint.clone(),
                conn,
                rx,
                (id, token),
                first_seq,
                config.request_timeout,
            ));
            workers.push(tx);
        }
        Ok(Driver {
            workers,
            seqs: vec![first_seq; config.devices],
            next_device: 0,
            next_worker: 0,
            config,
        })
    }

    /// Devices the driver cycles through.
    pub fn devices(&self) -> usize {
        self.seqs.len()
    }

    /// Offers `rate` requests per second of `batch` readings each for
    /// `duration`, then waits for the answers (at most the request
    /// timeout). `progress` is called about once a second with the
    /// requests acknowledged so far.
    pub async fn step(
        &mut self,
        rate: f64,
        batch: usize,
        duration: Duration,
        mut progress: impl FnMut(Duration, u64, u64),
    ) -> StepStats {
        let collector = Arc::new(Collector::default());
        let start = Instant::now();
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let mut sent = 0u64;
        let mut not_queued = 0u64;
        let mut last_progress = start;
        while sent < total {
            let now = Instant::now();
            let due_count = (((now - start).as_secs_f64() * rate) as u64 + 1).min(total);
            while sent < due_count {
                let due = start + Duration::from_secs_f64(sent as f64 / rate);
                let device = self.next_device;
                self.next_device = (self.next_device + 1) % self.seqs.len();
                let seq = self.seqs[device];
                self.seqs[device] += batch as u64;
                let mut job = Job {
                    device,
                    seq,
                    batch,
                    due,
                    collector: collector.clone(),
                };
                let mut queued = false;
                for _ in 0..self.workers.len() {
                    let w = self.next_worker;
                    self.next_worker = (self.next_worker + 1) % self.workers.len();
                    match self.workers[w].try_send(job) {
                        Ok(()) => {
                            queued = true;
                            break;
                        }
                        Err(mpsc::error::TrySendError::Full(j))
                        | Err(mpsc::error::TrySendError::Closed(j)) => job = j,
                    }
                }
                if !queued {
                    not_queued += 1;
                    collector.error("the driver's queues are full (server far behind)".into());
                    collector.done.fetch_add(1, Ordering::Relaxed);
                }
                sent += 1;
            }
            if now - last_progress >= Duration::from_secs(1) {
                last_progress = now;
                progress(
                    now - start,
                    collector.acked_requests.load(Ordering::Relaxed),
                    collector.errors.load(Ordering::Relaxed),
                );
            }
            let next = start + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(next.max(Instant::now() + Duration::from_micros(200))).await;
        }
        let dispatched = start.elapsed().max(duration);
        let wait_until = Instant::now() + self.config.request_timeout + Duration::from_secs(1);
        while collector.done.load(Ordering::Relaxed) < sent && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let unanswered = sent.saturating_sub(collector.done.load(Ordering::Relaxed));
        if unanswered > 0 {
            collector.error(format!("{unanswered} requests still unanswered"));
            collector
                .errors
                .fetch_add(unanswered - 1, Ordering::Relaxed);
        }
        let _ = not_queued;
        let latency = collector
            .latency
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        let first_error = collector.first_error.lock().ok().and_then(|f| f.clone());
        StepStats {
            offered_rps: rate,
            batch,
            duration: dispatched,
            requests: sent,
            acked_requests: collector.acked_requests.load(Ordering::Relaxed),
            acked_readings: collector.acked_readings.load(Ordering::Relaxed),
            errors: collector.errors.load(Ordering::Relaxed),
            first_error,
            latency,
        }
    }
}

async fn worker(
    endpoint: Arc<Endpoint>,
    conn: Connection,
    mut jobs: mpsc::Receiver<Job>,
    devices: Arc<Vec<Device>>,
    path: String,
    host: String,
    timeout: Duration,
) {
    let mut conn = Some(conn);
    let mut head = String::with_capacity(256);
    let mut body = String::with_capacity(256);
    while let Some(job) = jobs.recv().await {
        let device = &devices[job.device];
        body.clear();
        write_body(&mut body, &device.id, job.seq, job.batch, Timestamp::now());
        head.clear();
        let _ = write!(
            head,
            "POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            device.authorization,
            body.len()
        );
        let c = &job.collector;
        let result = tokio::time::timeout(timeout, async {
            if conn.is_none() {
                conn = Some(endpoint.connect(None).await?);
            }
            match conn.as_mut() {
                Some(k) => k.exchange(head.as_bytes(), body.as_bytes()).await,
                None => Err(std::io::ErrorKind::NotConnected.into()),
            }
        })
        .await;
        match result {
            Ok(Ok((status, _))) if (200..300).contains(&status) => {
                let latency = job.due.elapsed();
                if let Ok(mut h) = c.latency.lock() {
                    h.record(latency);
                }
                c.acked_requests.fetch_add(1, Ordering::Relaxed);
                c.acked_readings
                    .fetch_add(job.batch as u64, Ordering::Relaxed);
            }
            Ok(Ok((status, answer))) => {
                c.error(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                ));
            }
            Ok(Err(e)) => {
                conn = None;
                c.error(format!("I/O: {e}"));
            }
            Err(_) => {
                conn = None;
                c.error("timed out".into());
            }
        }
        c.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// The JSON body of one request: `batch` readings of one device from `seq`.
pub fn write_body(out: &mut String, device: &str, seq: u64, batch: usize, ts: Timestamp) {
    out.push_str("{\"readings\":[");
    for i in 0..batch as u64 {
        if i > 0 {
            out.push(',');
        }
        let s = seq + i;
        // A plausible pulse, varying so the detector has work to do.
        let pulse = 60.0 + (s % 17) as f64 * 0.5;
        let _ = write!(
            out,
            "{{\"device_id\":\"{device}\",\"seq\":{s},\"ts\":\"{ts}\",\"metrics\":{{\"pulse\":{pulse:.1}}}}}"
        );
    }
    out.push_str("]}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_as_the_wire_format() {
        let mut body = String::new();
        let ts = Timestamp::now();
        write_body(&mut body, "load-00001", 7, 3, ts);
        let parsed = ha_core::wire::IngestBody::parse(body.as_bytes(), ts).unwrap();
        assert_eq!(parsed.readings.len(), 3);
        assert_eq!(parsed.readings[2].seq, 9);
        assert_eq!(parsed.readings[0].metric("pulse"), Some(63.5));
    }
}
