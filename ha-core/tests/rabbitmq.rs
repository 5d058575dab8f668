//! The queue conformance suite against a real RabbitMQ (quorum queues,
//! the poison-message policy set by `scripts/test`).
#![cfg(feature = "rabbitmq")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use ha_core::conformance::queue::QueueFixture;
use ha_core::conformance::{server_url, unique_name};
use ha_core::queue::Queue;
use ha_core::queue::amqp::{AmqpConfig, AmqpQueue};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// The delivery limit of the `ha-readings` policy that `scripts/test` sets.
const POLICY_DELIVERY_LIMIT: u32 = 20;

struct AmqpFixture {
    queue: Arc<AmqpQueue>,
    dlq: String,
    channel: Channel,
    _connection: Connection,
    dead: Mutex<Vec<Bytes>>,
}

#[async_trait]
impl QueueFixture for AmqpFixture {
    fn queue(&self) -> Arc<dyn Queue> {
        self.queue.clone()
    }

    async fn dead_letters(&self) -> Vec<Bytes> {
        while let Some(m) = self
            .channel
            .basic_get(self.dlq.as_str().into(), BasicGetOptions::default())
            .await
            .expect("basic.get on the dead-letter queue")
        {
            m.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            self.dead.lock().unwrap().push(Bytes::from(m.delivery.data));
        }
        self.dead.lock().unwrap().clone()
    }

    fn delivery_limit(&self) -> u32 {
        POLICY_DELIVERY_LIMIT
    }
}

/// Declares the dead-letter exchange of the policy and a dead-letter queue
/// for this test's partitions only (the DLX routes by the original queue
/// name).
async fn dead_letter_queue(url: &str, prefix: &str) -> (Connection, Channel, String) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        "ha.dlx".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare ha.dlx");
    let dlq = format!("{prefix}.dead");
    ch.queue_declare(
        dlq.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare the dead-letter queue");
    ch.queue_bind(
        dlq.as_str().into(),
        "ha.dlx".into(),
        format!("{prefix}.*").into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind the dead-letter queue");
    (conn, ch, dlq)
}

async fn fixture(partitions: u32) -> Option<AmqpFixture> {
    let url = server_url("HA_TEST_AMQP_URL")?;
    let prefix = format!("{}.readings", unique_name("t"));
    let (connection, channel, dlq) = dead_letter_queue(&url, &prefix).await;
    let queue = AmqpQueue::connect(AmqpConfig {
        urls: vec![url],
        partitions,
        queue_prefix: prefix,
        ..AmqpConfig::default()
    })
    .await
    .expect("AmqpQueue::connect");
    Some(AmqpFixture {
        queue: Arc::new(queue),
        dlq,
        channel,
        _connection: connection,
        dead: Mutex::new(Vec::new()),
    })
}

ha_core::queue_conformance!(fixture);

/// The AMQPS URL, the CA of the broker's certificate and a client
/// certificate it signed.
fn tls_config() -> Option<AmqpConfig> {
    Some(AmqpConfig {
        urls: vec![server_url("HA_TEST_AMQP_TLS_URL")?],
        ca_file: Some(server_url("HA_TEST_TLS_CA")?.into()),
        client_cert_file: Some(server_url("HA_TEST_TLS_CLIENT_CERT")?.into()),
        client_key_file: Some(server_url("HA_TEST_TLS_CLIENT_KEY")?.into()),
        ..AmqpConfig::default()
    })
}

/// As [`fixture`], the queue connected over AMQPS with a client certificate
/// (the dead-letter inspection stays on the plain listener).
async fn tls_fixture(partitions: u32) -> Option<AmqpFixture> {
    let plain = server_url("HA_TEST_AMQP_URL")?;
    let config = tls_config()?;
    let prefix = format!("{}.readings", unique_name("s"));
    let (connection, channel, dlq) = dead_letter_queue(&plain, &prefix).await;
    let queue = AmqpQueue::connect(AmqpConfig {
        partitions,
        queue_prefix: prefix,
        ..config
    })
    .await
    .expect("AmqpQueue::connect over AMQPS");
    Some(AmqpFixture {
        queue: Arc::new(queue),
        dlq,
        channel,
        _connection: connection,
        dead: Mutex::new(Vec::new()),
    })
}

/// The whole queue conformance suite again, over AMQPS.
mod over_tls {
    ha_core::queue_conformance!(super::tls_fixture);
}

#[tokio::test]
async fn amqps_connections_are_encrypted_and_present_the_client_certificate() {
    let (Some(config), Some(ctl)) = (tls_config(), server_url("HA_TEST_RABBITMQCTL")) else {
        return;
    };
    let name = unique_name("tlsconn");
    let queue = AmqpQueue::connect(AmqpConfig {
        queue_prefix: format!("{name}.readings"),
        partitions: 1,
        connection_name: name.clone(),
        ..config
    })
    .await
    .expect("connect over AMQPS");
    let out = std::process::Command::new(ctl)
        .args([
            "list_connections",
            "--formatter",
            "json",
            "client_properties",
            "ssl",
            "peer_cert_subject",
        ])
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl failed");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ours: Vec<&serde_json::Value> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter(|c| c["client_properties"].to_string().contains(&name))
        .collect();
    assert!(!ours.is_empty(), "our connection is listed: {listed}");
    for c in ours {
        assert_eq!(c["ssl"], true, "{c}");
        assert!(
            c["peer_cert_subject"]
                .to_string()
                .contains("ha-test-client"),
            "{c}"
        );
    }
    drop(queue);
}

#[tokio::test]
async fn a_broker_certificate_from_another_ca_is_refused() {
    let (Some(config), Some(wrong)) = (tls_config(), server_url("HA_TEST_TLS_WRONG_CA")) else {
        return;
    };
    let err = AmqpQueue::connect(AmqpConfig {
        ca_file: Some(wrong.into()),
        queue_prefix: format!("{}.readings", unique_name("w")),
        ..config
    })
    .await
    .err()
    .expect("a broker signed by another CA is refused");
    assert!(err.is_misconfigured() && !err.is_transient(), "{err}");
}

#[test]
fn amqps_without_a_ca_file_is_refused_before_connecting() {
    let err = AmqpQueue::new(AmqpConfig {
        urls: vec!["amqps://u:p@127.0.0.1:1/%2f".into()],
        ..AmqpConfig::default()
    })
    .err()
    .expect("refused");
    assert!(err.is_misconfigured(), "{err}");
}
