//! The raw ceilings, measured on the same servers in the same run: lapin
//! publishing with confirms pipelined, consuming with `multiple` acks, and
//! binary COPY into a copy of the readings table.

use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use ha_core::wire::{Envelope, Metric, Reading, Timestamp};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::time::Instant;

/// A measured rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    /// Items (messages or rows).
    pub items: u64,
    /// Over this many seconds.
    pub seconds: f64,
}

impl Rate {
    /// Items per second.
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.items as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// A baseline failed; the text says where.
pub type BaselineError = String;

fn amqp_err(what: &'static str) -> impl Fn(lapin::Error) -> BaselineError {
    move |e| format!("{what}: {e}")
}

/// One message as our ingest publishes it for a one-reading request.
pub fn sample_message(seq: u64) -> Vec<u8> {
    Envelope::encode(&[Reading {
        device_id: "raw-00001".into(),
        seq,
        ts: Timestamp::now(),
        metrics: vec![Metric::new("pulse", 72.5)],
    }])
}

async fn quorum_queue(ch: &lapin::Channel, name: &str) -> Result<(), BaselineError> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .map_err(amqp_err("declare"))?;
    Ok(())
}

/// Publishes persistent messages to a fresh quorum queue for `duration`,
/// `window` confirms in flight, each publish issued inside its own
/// in-flight future (so lapin is never awaited serially), over `channels`
/// channels of one connection. Returns the confirmed rate; the messages
/// stay in `queue` for [`raw_consume`].
pub async fn raw_publish(
    url: &str,
    queue: &str,
    duration: Duration,
    window: usize,
    channels: usize,
) -> Result<Rate, BaselineError> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(amqp_err("connect"))?;
    let mut chans = Vec::new();
    for _ in 0..channels.max(1) {
        let ch = conn.create_channel().await.map_err(amqp_err("channel"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp_err("confirm_select"))?;
        chans.push(ch);
    }
    quorum_queue(&chans[0], queue).await?;
    let _ = chans[0].queue_purge(queue.into(), Default::default()).await;
    let payload = sample_message(1);
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut in_flight = FuturesUnordered::new();
    let start = Instant::now();
    let mut issued = 0u64;
    let mut confirmed = 0u64;
    let mut failed = 0u64;
    loop {
        let publishing = start.elapsed() < duration;
        if publishing && in_flight.len() < window {
            let ch = chans[issued as usize % chans.len()].clone();
            let payload = &payload;
            let props = props.clone();
            in_flight.push(async move {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        payload,
                        props,
                    )
                    .await?;
                confirm.await
            });
            issued += 1;
            continue;
        }
        match in_flight.next().await {
            Some(Ok(c)) if c.is_ack() => confirmed += 1,
            Some(_) => failed += 1,
            None => break,
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(0, "done".into())).await;
    if failed > 0 {
        return Err(format!("{failed} publishes were not confirmed"));
    }
    Ok(Rate {
        items: confirmed,
        seconds,
    })
}

/// Consumes everything in `queue` (prefetch 1000, a `multiple` ack every
/// 500 deliveries), then deletes the queue. Returns the rate.
pub async fn raw_consume(url: &str, queue: &str, expected: u64) -> Result<Rate, BaselineError> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(amqp_err("connect"))?;
    let ch = conn.create_channel().await.map_err(amqp_err("channel"))?;
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .map_err(amqp_err("qos"))?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "raw-consume".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_err("consume"))?;
    let start = Instant::now();
    let mut got = 0u64;
    let mut unacked = 0u32;
    while got < expected {
        let next = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            break;
        };
        got += 1;
        unacked += 1;
        if unacked >= 500 || got == expected {
            ch.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .map_err(amqp_err("ack"))?;
            unacked = 0;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(0, "done".into())).await;
    if got < expected {
        return Err(format!("consumed {got} of {expected} messages"));
    }
    Ok(Rate {
        items: got,
        seconds,
    })
}

/// A `timestamptz` for binary COPY: microseconds since 2000-01-01 UTC.
#[derive(Debug)]
struct PgTimestamp(i64);

impl tokio_postgres::types::ToSql for PgTimestamp {
    fn to_sql(
        &self,
        _ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }
    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::TIMESTAMPTZ
    }
    tokio_postgres::types::to_sql_checked!();
}

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800 * 1_000_000;

/// Binary COPY of `batch`-row batches into `perf_copy` (a copy of the
/// readings table with its key and indexes) over one connection for
/// `duration`; the table is dropped afterwards. Returns rows/s.
pub async fn raw_copy(url: &str, duration: Duration, batch: usize) -> Result<Rate, BaselineError> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::{ToSql, Type};
    let pg = |what: &'static str| move |e: tokio_postgres::Error| format!("{what}: {e}");
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(pg("connect"))?;
    let conn_task = tokio::spawn(connection);
    client
        .batch_execute(
            "DROP TABLE IF EXISTS perf_copy; CREATE TABLE perf_copy (LIKE readings INCLUDING ALL)",
        )
        .await
        .map_err(pg("create perf_copy"))?;
    let types = [
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::FLOAT8,
    ];
    let devices: Vec<String> = (0..1000).map(|i| format!("copy-{i:05}")).collect();
    let start = Instant::now();
    let mut rows = 0u64;
    let mut seq = 0i64;
    while start.elapsed() < duration {
        let sink = client
            .copy_in("COPY perf_copy (device_id, seq, metric, ts, value) FROM STDIN BINARY")
            .await
            .map_err(pg("copy"))?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        let mut writer = std::pin::pin!(writer);
        let now = Timestamp::now().unix_micros() - PG_EPOCH_MICROS;
        for i in 0..batch {
            let device = &devices[i % devices.len()];
            let s = seq + (i / devices.len()) as i64;
            let ts = PgTimestamp(now);
            let value = 72.5f64;
            let row: [&(dyn ToSql + Sync); 5] = [device, &s, &"pulse", &ts, &value];
            writer.as_mut().write(&row).await.map_err(pg("copy row"))?;
        }
        writer.finish().await.map_err(pg("copy finish"))?;
        seq += (batch / devices.len()) as i64 + 1;
        rows += batch as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = client.batch_execute("DROP TABLE IF EXISTS perf_copy").await;
    drop(client);
    let _ = conn_task.await;
    Ok(Rate {
        items: rows,
        seconds,
    })
}
