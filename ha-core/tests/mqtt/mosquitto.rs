//! `mosquitto_pub` (Debian `mosquitto-clients`) as the independent client
//! against an in-process ingest whose broker can be switched off: while
//! the broker cannot confirm, no PUBACK is sent; the client's own resend
//! after the disconnect is acknowledged once the broker is back, and the
//! reading is queued once.

use std::sync::Arc;
use std::time::Duration;

use ha_core::ingest::{IngestConfig, MqttConfig};
use ha_core::queue::MemoryQueue;
use ha_test_support::mosquitto::{self, LIMIT, finish, output};

use super::{body, metric, queued, start, token};

/// Starts `mosquitto_pub` publishing `line` with QoS 1 as dev-1.
fn mosquitto_pub(port: u16, version: &str, line: &str) -> std::process::Child {
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-V",
        version,
        "-q",
        "1",
        "-d",
        "-u",
        "dev-1",
        "-P",
        &token("dev-1"),
        "-t",
        "readings/dev-1",
        "-i",
        "fw-1",
        "-l",
    ]
    .map(String::from);
    mosquitto::spawn_pub(&args, &[line.to_owned()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_gets_no_puback_while_the_broker_is_down_and_its_resend_is_stored_once() {
    if !mosquitto::installed(&["mosquitto_pub"]) {
        return;
    }
    let queue = Arc::new(MemoryQueue::with_partitions(4));
    let svc = start(
        queue.clone(),
        IngestConfig::default(),
        MqttConfig::default(),
    )
    .await;
    let port = svc.mqtt.port();
    let reading = body("dev-1", 1);
    queue.set_available(false);

    // 5.0: DISCONNECT 0x89 (137) instead of a PUBACK; mosquitto_pub, a
    // command-line tool, then gives up (a device would resend).
    let (_, text) = finish(mosquitto_pub(port, "mqttv5", &reading), LIMIT).await;
    assert!(text.contains("Received DISCONNECT (137)"), "{text}");
    assert!(!text.contains("received PUBACK"), "{text}");

    // 3.1.1: the connection closes instead of a PUBACK; mosquitto_pub
    // reconnects and resends by itself, refused again while the broker is
    // down, acknowledged once it is back.
    let mut child = mosquitto_pub(port, "mqttv311", &reading);
    let unacked = r#"ha_ingest_mqtt_publishes_total{qos="1",outcome="unacknowledged"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metric(svc.http, unacked).await < 3.0 {
        assert!(tokio::time::Instant::now() < deadline, "no resend refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(status) = child.try_wait().unwrap() {
        panic!(
            "mosquitto_pub ended ({status}) without its PUBACK: {}",
            output(&mut child)
        );
    }
    queue.set_available(true);
    let (ok, text) = finish(child, LIMIT).await;
    assert!(ok, "{text}");
    assert_eq!(text.matches("received PUBACK").count(), 1, "{text}");
    assert!(
        text.matches("sending PUBLISH").count() >= 2,
        "resent: {text}"
    );
    // Queued once: the refused attempts left nothing behind.
    assert_eq!(queued(queue.as_ref()).await, [("dev-1".to_owned(), 1)]);
    svc.stop().await;
}
