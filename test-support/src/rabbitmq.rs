//! The dead-letter side of the broker policy, as tests need it: the
//! `ha-readings` policy (`scripts/servers.sh`, deploy/) dead-letters
//! messages of every `*.readings.<n>` queue to the topic exchange `ha.dlx`
//! with their queue name as routing key; a test binds its own queue to its
//! own prefix so it sees only its messages.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// The dead-letter exchange of the broker policy.
pub const DLX: &str = "ha.dlx";

/// Declares [`DLX`] (durable topic exchange) and a durable queue `dlq`
/// (a quorum queue when `quorum`, as in production) bound to it for the
/// partitions `<prefix>.<n>`.
pub async fn declare_dead_letter_queue(ch: &Channel, prefix: &str, dlq: &str, quorum: bool) {
    ch.exchange_declare(
        DLX.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("declare {DLX}: {e}"));
    let mut args = FieldTable::default();
    if quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    ch.queue_declare(
        dlq.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .unwrap_or_else(|e| panic!("declare the dead-letter queue {dlq}: {e}"));
    ch.queue_bind(
        dlq.into(),
        DLX.into(),
        format!("{prefix}.*").into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("bind {dlq} to {DLX}: {e}"));
}
