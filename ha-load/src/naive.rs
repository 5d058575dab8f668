//! The naive composition, the baseline ingest is measured against: an
//! axum handler that parses the body, publishes it on one shared confirm
//! channel and awaits that message's confirm before answering 202. No
//! authentication, no batching across requests, no backpressure.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ha_core::wire::{IngestBody, Timestamp};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The queue the naive server publishes to.
pub const NAIVE_QUEUE: &str = "perf.naive";

#[derive(Clone)]
struct Naive {
    channel: Channel,
    _connection: Arc<Connection>,
}

/// Connects to RabbitMQ, declares [`NAIVE_QUEUE`] (quorum) and returns the
/// router: `POST /v1/readings` → 202 after the confirm, 400 on a bad body,
/// 503 when the broker did not confirm.
pub async fn router(amqp_url: &str) -> Result<Router, lapin::Error> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            NAIVE_QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    let state = Naive {
        channel,
        _connection: Arc::new(connection),
    };
    Ok(Router::new()
        .route("/v1/readings", post(ingest))
        .with_state(state))
}

async fn ingest(State(s): State<Naive>, body: Bytes) -> StatusCode {
    if IngestBody::parse(&body, Timestamp::now()).is_err() {
        return StatusCode::BAD_REQUEST;
    }
    let published = s
        .channel
        .basic_publish(
            "".into(),
            NAIVE_QUEUE.into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
    match published {
        Ok(confirm) => match confirm.await {
            Ok(c) if c.is_ack() => StatusCode::ACCEPTED,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}
