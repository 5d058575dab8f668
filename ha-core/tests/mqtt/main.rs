//! The ingest's MQTT listener over real sockets, with a raw client built
//! on `mqtt-proto` (every reason code visible): PUBACK only after the
//! broker confirmed, no PUBACK while it cannot, the bad-input table (each
//! refusal specific, counted, nothing queued, the service still ready),
//! keep-alive, takeover, receive maximum and the drain.
//!
//! The third-party client (`mosquitto_pub` over TLS, real RabbitMQ and
//! PostgreSQL) is in `reference-apps/tests/mqtt_system.rs`.
#![cfg(feature = "mqtt")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use client::{Client, GatedQueue, Got, queued};
use ha_core::http::ServeConfig;
use ha_core::ingest::{
    DeviceKeys, IngestConfig, IngestService, MqttConfig, MqttListener, RateLimit, token_for,
};
use ha_core::queue::{MemoryQueue, Queue};
use ha_core::wire::Timestamp;
use mqtt_proto::{QoS, v3, v5};
use tokio::sync::oneshot;

const KEY: &[u8] = b"mqtt-test-key-0123456789abcdef0123";

struct Running {
    http: SocketAddr,
    mqtt: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        drop(self.stop.take());
        tokio::time::timeout(Duration::from_secs(20), self.done)
            .await
            .expect("the service stops within its drain")
            .unwrap();
    }
}

async fn start(queue: Arc<dyn Queue>, config: IngestConfig, mqtt: MqttConfig) -> Running {
    start_with(queue, config, mqtt, ServeConfig::default()).await
}

async fn start_with(
    queue: Arc<dyn Queue>,
    config: IngestConfig,
    mqtt: MqttConfig,
    serve: ServeConfig,
) -> Running {
    let service = IngestService::new(
        queue,
        IngestConfig {
            keys: Some(DeviceKeys::from_keys(vec![KEY.to_vec()]).unwrap()),
            ..config
        },
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = MqttListener::new(
        listener,
        None,
        MqttConfig {
            insecure_plaintext: true,
            ..mqtt
        },
    )
    .unwrap();
    let mqtt_addr = mqtt.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serve = ServeConfig {
        drain: Duration::from_secs(5),
        deregister_delay: Duration::ZERO,
        ..serve
    };
    let done = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        service
            .run_with_mqtt(http, None, Some(mqtt), shutdown, &serve)
            .await
            .unwrap();
    });
    Running {
        http: http_addr,
        mqtt: mqtt_addr,
        stop: Some(stop),
        done,
    }
}

fn token(device: &str) -> String {
    token_for(KEY, device)
}

fn body(device: &str, seq: u64) -> String {
    format!(
        r#"{{"readings":[{{"device_id":"{device}","seq":{seq},"ts":"{}","metrics":{{"pulse":72.5}}}}]}}"#,
        Timestamp::now()
    )
}

/// `GET path` on the HTTP side: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample line of `/metrics` starting with `prefix`.
async fn metric(addr: SocketAddr, prefix: &str) -> f64 {
    let (_, text) = get(addr, "/metrics").await;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn qos1_is_acknowledged_after_the_broker_confirmed_and_queued_once_per_publish() {
    let queue = GatedQueue::closed(4);
    let svc = start(
        queue.clone(),
        IngestConfig::default(),
        MqttConfig::default(),
    )
    .await;
    let (mut c, ack) = Client::connect5(svc.mqtt, "c1", "dev-1", &token("dev-1"), 30).await;
    assert_eq!(ack.reason_code, v5::ConnectReasonCode::Success);
    let p = &ack.properties;
    assert_eq!(p.receive_max, Some(32));
    assert_eq!(p.max_qos, Some(QoS::Level1));
    assert_eq!(
        p.max_packet_size,
        Some(ha_core::ingest::DEFAULT_MAX_PACKET_BYTES as u32)
    );
    assert_eq!(
        p.session_expiry_interval,
        Some(0),
        "sessions are never kept"
    );

    c.publish5(QoS::Level1, 1, "readings/dev-1", &body("dev-1", 1))
        .await;
    // The broker has not confirmed: no PUBACK, however long we wait here.
    assert!(matches!(
        c.recv5_within(Duration::from_millis(500)).await,
        Got::Silence
    ));
    queue.open();
    assert_eq!(c.puback5(1).await.0, 0x00);
    // A resend of the same seq is a new publish for ingest: the store's
    // (device_id, seq) key keeps it once (reference-apps' system test).
    c.publish5(QoS::Level1, 2, "readings/dev-1", &body("dev-1", 1))
        .await;
    c.publish5(QoS::Level1, 3, "readings/dev-1", &body("dev-1", 2))
        .await;
    assert_eq!(c.puback5(2).await.0, 0x00);
    assert_eq!(c.puback5(3).await.0, 0x00);
    let mut got = queued(&queue.inner).await;
    got.sort();
    assert_eq!(
        got,
        [
            ("dev-1".into(), 1),
            ("dev-1".into(), 1),
            ("dev-1".into(), 2)
        ]
    );
    assert_eq!(
        metric(svc.http, "ha_ingest_readings_accepted_total").await,
        3.0
    );
    assert_eq!(
        metric(
            svc.http,
            r#"ha_ingest_mqtt_publishes_total{qos="1",outcome="acked"}"#
        )
        .await,
        3.0
    );
    svc.stop().await;
}

#[tokio::test]
async fn with_the_broker_down_no_puback_is_sent_and_the_connection_ends() {
    let queue = Arc::new(MemoryQueue::with_partitions(4));
    let svc = start(
        queue.clone(),
        IngestConfig::default(),
        MqttConfig::default(),
    )
    .await;
    queue.set_available(false);
    // 5.0: DISCONNECT 0x89, never a PUBACK.
    let (mut c, _) = Client::connect5(svc.mqtt, "c1", "dev-1", &token("dev-1"), 30).await;
    c.publish5(QoS::Level1, 1, "readings/dev-1", &body("dev-1", 1))
        .await;
    assert_eq!(c.disconnect5().await, 0x89);
    // 3.1.1: the connection closes, never a PUBACK.
    let (mut c, ack) = Client::connect3(svc.mqtt, "dev-1", &token("dev-1")).await;
    assert_eq!(ack.code, v3::ConnectReturnCode::Accepted);
    c.publish3(1, "readings/dev-1", &body("dev-1", 1)).await;
    assert!(matches!(c.recv3().await, Got::Closed));
    assert_eq!(
        metric(
            svc.http,
            r#"ha_ingest_mqtt_publishes_total{qos="1",outcome="unacknowledged"}"#
        )
        .await,
        2.0
    );
    // Back up: the device resends and gets its PUBACK.
    queue.set_available(true);
    let (mut c, _) = Client::connect5(svc.mqtt, "c1", "dev-1", &token("dev-1"), 30).await;
    c.publish5(QoS::Level1, 1, "readings/dev-1", &body("dev-1", 1))
        .await;
    assert_eq!(c.puback5(1).await.0, 0x00);
    assert_eq!(queued(queue.as_ref()).await.len(), 1);
    svc.stop().await;
}

#[tokio::test]
async fn every_bad_input_gets_its_reason_code_is_counted_and_nothing_is_queued() {
    let queue = Arc::new(MemoryQueue::with_partitions(4));
    let config = IngestConfig {
        // Each refused payload below costs its device one token (as a
        // refused HTTP body does), the admitted one another: then empty.
        rate_limit: Some(RateLimit {
            per_second: 0.001,
            burst: 5.0,
        }),
        ..IngestConfig::default()
    };
    let svc = start(queue.clone(), config, MqttConfig::default()).await;
    let addr = svc.mqtt;
    let dev = "dev-1";
    let tok = token(dev);

    // CONNECT refusals.
    let (_, ack) = Client::connect5(addr, "c", dev, &token("dev-2"), 30).await;
    assert_eq!(
        ack.reason_code,
        v5::ConnectReasonCode::BadUserNameOrPassword
    );
    let (_, ack) = Client::connect5(addr, "c", "bad id!", &tok, 30).await;
    assert_eq!(
        ack.reason_code,
        v5::ConnectReasonCode::BadUserNameOrPassword
    );
    let (_, ack) = Client::connect3(addr, dev, "nope").await;
    assert_eq!(ack.code, v3::ConnectReturnCode::BadUserNameOrPassword);
    // Garbage instead of a CONNECT: closed without an answer.
    let mut c = Client::open(addr).await;
    c.raw(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(matches!(c.recv5().await, Got::Closed));

    // Permanent refusals of a publish: an error PUBACK, the session stays.
    let (mut c, _) = Client::connect5(addr, "c", dev, &tok, 30).await;
    let future = body(dev, 1).replace(&Timestamp::now().to_string()[..4], "2999");
    let cases: [(&str, String, u8, &str); 6] = [
        ("readings/dev-2", body("dev-2", 1), 0x87, "may only publish"),
        ("other/topic", body(dev, 1), 0x90, "the only topic"),
        ("readings/dev-1", "{not json".into(), 0x99, "malformed"),
        ("readings/dev-1", future, 0x99, "ts_in_future"),
        ("readings/dev-1", body("dev-2", 1), 0x87, "wrong_device"),
        (
            "readings/dev-1",
            r#"{"readings":[]}"#.into(),
            0x99,
            "no_readings",
        ),
    ];
    for (i, (topic, payload, code, why)) in cases.iter().enumerate() {
        let pid = i as u16 + 1;
        c.publish5(QoS::Level1, pid, topic, payload).await;
        let (got, reason) = c.puback5(pid).await;
        assert_eq!(
            (got, reason.contains(why)),
            (*code, true),
            "{topic}: {reason}"
        );
    }
    // The rate limit: the last token admits one, the next is refused (0x97).
    c.publish5(QoS::Level1, 10, "readings/dev-1", &body(dev, 1))
        .await;
    assert_eq!(c.puback5(10).await.0, 0x00);
    c.publish5(QoS::Level1, 11, "readings/dev-1", &body(dev, 2))
        .await;
    let (code, why) = c.puback5(11).await;
    assert_eq!(code, 0x97);
    assert!(why.starts_with("rate_limited: retry after"), "{why}");
    c.send5(v5::Packet::Pingreq).await;
    assert!(matches!(c.recv5().await, Got::Packet(v5::Packet::Pingresp)));

    // Refusals that end the connection, each with its reason code.
    let (mut c, _) = Client::connect5(addr, "c", dev, &tok, 30).await;
    c.publish5(QoS::Level2, 1, "readings/dev-1", &body(dev, 3))
        .await;
    assert_eq!(c.disconnect5().await, 0x9B, "QoS 2");
    let (mut c, _) = Client::connect5(addr, "c", dev, &tok, 30).await;
    // 2 MiB announced: refused from the fixed header, before the body.
    c.raw(&[0x32, 0x80, 0x80, 0x80, 0x01, 0, 1]).await;
    assert_eq!(c.disconnect5().await, 0x95, "oversized");
    let (mut c, _) = Client::connect5(addr, "c", dev, &tok, 30).await;
    c.raw(&[0x00, 0x02, 0xde, 0xad]).await;
    assert_eq!(c.disconnect5().await, 0x81, "garbage packet");
    let (mut c, _) = Client::connect5(addr, "c", dev, &tok, 30).await;
    c.raw(&[0x36, 0x02, 0x00, 0x00]).await;
    assert_eq!(c.disconnect5().await, 0x81, "QoS 3");
    let (mut c, _) = Client::connect5(addr, "c", dev, &tok, 30).await;
    c.send5(v5::Packet::Connect(v5::Connect::new("c".into(), 30)))
        .await;
    assert_eq!(c.disconnect5().await, 0x82, "second CONNECT");
    // 3.1.1 has no error PUBACK: a refused publish closes the connection.
    let (mut c, _) = Client::connect3(addr, dev, &tok).await;
    c.publish3(1, "readings/dev-2", &body("dev-2", 1)).await;
    assert!(matches!(c.recv3().await, Got::Closed));

    // Only the admitted reading was queued; the service is still ready.
    assert_eq!(queued(queue.as_ref()).await, [("dev-1".to_owned(), 1)]);
    assert_eq!(get(svc.http, "/readyz").await.0, 200);
    let counted = [
        r#"ha_ingest_mqtt_connects_total{version="5.0",result="bad_credentials"}"#,
        r#"ha_ingest_mqtt_connects_total{version="unknown",result="malformed"}"#,
        r#"ha_ingest_mqtt_publishes_total{qos="1",outcome="not_authorized"}"#,
        r#"ha_ingest_mqtt_publishes_total{qos="1",outcome="payload_format_invalid"}"#,
        r#"ha_ingest_mqtt_publishes_total{qos="1",outcome="quota_exceeded"}"#,
        r#"ha_ingest_mqtt_publishes_total{qos="2",outcome="qos_not_supported"}"#,
        r#"ha_ingest_mqtt_connections_closed_total{reason="packet_too_large"}"#,
        r#"ha_ingest_mqtt_connections_closed_total{reason="malformed"}"#,
        r#"ha_ingest_mqtt_connections_closed_total{reason="protocol_error"}"#,
    ];
    for m in counted {
        assert!(metric(svc.http, m).await >= 1.0, "{m}");
    }
    svc.stop().await;
}

#[tokio::test]
async fn keep_alive_takeover_and_receive_maximum_are_enforced() {
    let queue = GatedQueue::closed(4);
    let mqtt = MqttConfig {
        receive_maximum: 2,
        ..MqttConfig::default()
    };
    let svc = start(queue.clone(), IngestConfig::default(), mqtt).await;
    let tok = token("dev-1");
    // Keep-alive 1 s: silent for 1.5 s, then DISCONNECT 0x8D.
    let (mut c, ack) = Client::connect5(svc.mqtt, "ka", "dev-1", &tok, 1).await;
    assert_eq!(
        ack.properties.server_keep_alive, None,
        "1 s is granted as asked"
    );
    assert_eq!(c.disconnect5().await, 0x8D);
    // Keep-alive 0 (none) is not granted: the server's maximum is.
    let (_c, ack) = Client::connect5(svc.mqtt, "ka0", "dev-1", &tok, 0).await;
    assert_eq!(ack.properties.server_keep_alive, Some(300));
    // The same device and client id again: the first is taken over.
    let (mut first, _) = Client::connect5(svc.mqtt, "same", "dev-1", &tok, 30).await;
    let (mut second, _) = Client::connect5(svc.mqtt, "same", "dev-1", &tok, 30).await;
    assert_eq!(first.disconnect5().await, 0x8E);
    // Receive maximum 2: a third unacknowledged QoS 1 publish ends it.
    for pid in 1..=3 {
        second
            .publish5(
                QoS::Level1,
                pid,
                "readings/dev-1",
                &body("dev-1", u64::from(pid)),
            )
            .await;
    }
    assert_eq!(second.disconnect5().await, 0x93);
    svc.stop().await;
}

#[tokio::test]
async fn shutdown_answers_what_is_in_flight_then_disconnects_with_0x8b() {
    let queue = GatedQueue::closed(4);
    let svc = start(
        queue.clone(),
        IngestConfig::default(),
        MqttConfig::default(),
    )
    .await;
    let (mut c, _) = Client::connect5(svc.mqtt, "c", "dev-1", &token("dev-1"), 30).await;
    c.publish5(QoS::Level1, 1, "readings/dev-1", &body("dev-1", 1))
        .await;
    assert!(matches!(
        c.recv5_within(Duration::from_millis(200)).await,
        Got::Silence
    ));
    let Running {
        stop, done, mqtt, ..
    } = svc;
    drop(stop);
    // Draining: new sessions are refused with 0x88 while this one finishes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    queue.open();
    assert_eq!(c.puback5(1).await.0, 0x00);
    assert_eq!(c.disconnect5().await, 0x8B);
    tokio::time::timeout(Duration::from_secs(20), done)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(mqtt).await.is_err(),
        "listener closed"
    );
    assert_eq!(queued(&queue.inner).await.len(), 1);
}

#[tokio::test]
async fn past_the_connection_cap_a_connect_gets_server_busy_and_is_counted() {
    let queue = Arc::new(MemoryQueue::with_partitions(4));
    let serve = ServeConfig {
        max_connections: 1,
        ..ServeConfig::default()
    };
    let svc = start_with(queue, IngestConfig::default(), MqttConfig::default(), serve).await;
    let tok = token("dev-1");
    let (mut first, ack) = Client::connect5(svc.mqtt, "a", "dev-1", &tok, 30).await;
    assert_eq!(ack.reason_code, v5::ConnectReasonCode::Success);
    let (_, ack) = Client::connect5(svc.mqtt, "b", "dev-1", &tok, 30).await;
    assert_eq!(ack.reason_code, v5::ConnectReasonCode::ServerBusy);
    let (_, ack) = Client::connect3(svc.mqtt, "dev-1", &tok).await;
    assert_eq!(ack.code, v3::ConnectReturnCode::ServerUnavailable);
    assert_eq!(
        metric(svc.http, "ha_ingest_mqtt_connections_refused_total").await,
        2.0
    );
    assert_eq!(
        metric(svc.http, "ha_ingest_mqtt_connections_open").await,
        1.0
    );
    // The first session is unaffected.
    first
        .publish5(QoS::Level1, 1, "readings/dev-1", &body("dev-1", 1))
        .await;
    assert_eq!(first.puback5(1).await.0, 0x00);
    svc.stop().await;
}
