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
