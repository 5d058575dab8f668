//! End to end over MQTT: `ha-device-client` devices (through the data
//! generator, and directly) against the ingest's MQTT listener over TLS,
//! on an in-memory queue. Every acknowledged reading is on the queue, and
//! a reading resent after a lost PUBACK is stored once.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ha_core::http::{ServeConfig, load_tls};
use ha_core::ingest::{DeviceKeys, IngestConfig, IngestService, MqttConfig, MqttListener};
use ha_core::queue::{MemoryQueue, OutgoingMessage, Queue, QueueError, Subscription};
use ha_core::store::{MemoryStore, Store};
use ha_core::wire::{Envelope, Metric, Reading, Timestamp};
use ha_device_client::{BufferLimits, Client, ClientConfig, Event, MemoryBuffer, RetryPolicy};
use reference_apps::demo_tls::DemoTls;
use reference_apps::generator::{self, FleetStats, GeneratorConfig, Transport};

const KEY: &[u8] = b"mqtt-device-e2e-key-0123456789abcdef";

/// Starts ingest (HTTP and MQTT over TLS) on `queue`; returns the MQTT
/// address and the CA the devices trust.
async fn ingest(queue: Arc<dyn Queue>) -> (SocketAddr, Vec<u8>) {
    let tls = DemoTls::generate().unwrap();
    let server_tls = load_tls(tls.cert_pem.as_bytes(), tls.key_pem.as_bytes()).unwrap();
    let service = IngestService::new(
        queue,
        IngestConfig {
            keys: Some(DeviceKeys::from_keys(vec![KEY.to_vec()]).unwrap()),
            ..IngestConfig::default()
        },
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = MqttListener::new(mqtt, Some(server_tls.clone()), MqttConfig::default()).unwrap();
    let addr = mqtt.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = service
            .run_with_mqtt(
                http,
                Some(server_tls),
                Some(mqtt),
                std::future::pending(),
                &ServeConfig::default(),
            )
            .await;
    });
    (addr, tls.ca_pem.into_bytes())
}

/// Every reading on the queue, in queue order.
async fn queued(queue: &dyn Queue) -> Vec<Reading> {
    let mut out = Vec::new();
    for p in 0..queue.partitions() {
        let n = queue.depth(p).await.unwrap();
        if n == 0 {
            continue;
        }
        let mut sub = queue.subscribe(p, u16::MAX).await.unwrap();
        for _ in 0..n {
            let d = sub.next().await.unwrap();
            out.extend(Envelope::decode(&d.payload).unwrap().readings);
            d.ack().await.unwrap();
        }
    }
    out
}

#[tokio::test]
async fn a_fleet_over_mqtt_is_queued_exactly_once() {
    let queue = Arc::new(MemoryQueue::with_partitions(4));
    let (addr, ca) = ingest(queue.clone()).await;
    let config = GeneratorConfig {
        url: format!("mqtts://localhost:{}", addr.port()),
        transport: Transport::Mqtt,
        devices: 20,
        interval: Duration::from_millis(50),
        readings_per_device: Some(5),
        keys: Some(DeviceKeys::from_keys(vec![KEY.to_vec()]).unwrap()),
        ca_pem: Some(ca),
        ..GeneratorConfig::default()
    };
    let report = generator::run(
        config,
        Arc::new(FleetStats::default()),
        std::future::pending(),
    )
    .await;
    assert!(
        report.devices.iter().all(|d| d.error.is_none()),
        "{:?}",
        report.devices[0].error
    );
    assert_eq!(
        report.total(|c| c.acknowledged),
        100,
        "{}",
        report.summary()
    );
    let readings = queued(queue.as_ref()).await;
    let unique: BTreeSet<(String, u64)> = readings
        .iter()
        .map(|r| (r.device_id.clone(), r.seq))
        .collect();
    assert_eq!((readings.len(), unique.len()), (100, 100));
}

/// A queue whose first publish is stored at once but confirmed only after
/// `delay`: the device's PUBACK comes too late, so it resends.
struct LateConfirm {
    inner: MemoryQueue,
    delay: Duration,
    publishes: AtomicUsize,
}

#[async_trait]
impl Queue for LateConfirm {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }
    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        self.inner.publish(messages).await?;
        if self.publishes.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(self.delay).await;
        }
        Ok(())
    }
    async fn subscribe(&self, p: u32, prefetch: u16) -> Result<Box<dyn Subscription>, QueueError> {
        self.inner.subscribe(p, prefetch).await
    }
    async fn depth(&self, p: u32) -> Result<u64, QueueError> {
        self.inner.depth(p).await
    }
}

#[tokio::test]
async fn a_reading_resent_after_a_late_puback_is_stored_once() {
    let queue = Arc::new(LateConfirm {
        inner: MemoryQueue::with_partitions(1),
        delay: Duration::from_millis(800),
        publishes: AtomicUsize::new(0),
    });
    let (addr, ca) = ingest(queue.clone()).await;
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let device = "dev-00007";
    let token = DeviceKeys::from_keys(vec![KEY.to_vec()])
        .unwrap()
        .token(device);
    let config = ClientConfig::new(format!("mqtts://localhost:{}", addr.port()), device, token)
        .with_ca_pem(ca)
        .with_request_timeout(Duration::from_millis(300))
        .with_retry_policy(
            RetryPolicy::linear(Duration::from_millis(50), Duration::from_millis(200), 20).unwrap(),
        )
        .with_batch(5, 1 << 20)
        .with_pacing(Duration::from_millis(1))
        .with_event_callback(move |e| sink.lock().unwrap().push(e.clone()));
    let mut client = Client::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap();
    for seq in 0..20 {
        client
            .push(Reading {
                device_id: device.into(),
                seq,
                ts: Timestamp::now(),
                metrics: vec![Metric::new("pulse", 70.0)],
            })
            .unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!(report.acknowledged, 20);
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Retry { .. })),
        "the first batch's PUBACK came after the request timeout"
    );
    // The first batch is on the queue more than once; the store keeps one.
    let readings = queued(queue.as_ref()).await;
    assert!(readings.len() > 20, "{} readings queued", readings.len());
    let store = MemoryStore::new();
    let outcome = store.write(&readings, &[]).await.unwrap();
    assert_eq!(store.reading_rows(), 20, "{outcome:?}");
}
