//! `ha-admin dlq list|replay` against a real RabbitMQ (from `scripts/test`):
//! a private dead-letter queue with three envelopes and one garbage
//! message; `list` shows all four and removes none, `replay --dry-run`
//! changes nothing, `replay` moves the three to their partitions (one of
//! them split over two) and leaves the garbage. Then a message really
//! dead-lettered by RabbitMQ (policy `ha-readings` → `ha.dlx`) is listed
//! with the broker's own `x-death` and replayed.

use std::collections::BTreeMap;
use std::time::Duration;

use ha_core::conformance::{reading, server_url, unique_name};
use ha_core::queue::amqp::{AmqpConfig, AmqpQueue};
use ha_core::queue::{Queue, partition_for};
use ha_core::wire::{Envelope, Reading};
use ha_test_support::{declare_dead_letter_queue, run_to_end, wait_until_async};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const PARTITIONS: u32 = 4;

fn x_death(queue: &str, reason: &str, count: i64) -> FieldTable {
    let mut entry = FieldTable::default();
    entry.insert("queue".into(), AMQPValue::LongString(queue.into()));
    entry.insert("reason".into(), AMQPValue::LongString(reason.into()));
    entry.insert("count".into(), AMQPValue::LongLongInt(count));
    entry.insert("exchange".into(), AMQPValue::LongString("".into()));
    let mut routing_keys = FieldArray::default();
    routing_keys.push(AMQPValue::LongString(queue.into()));
    entry.insert("routing-keys".into(), AMQPValue::FieldArray(routing_keys));
    let mut deaths = FieldArray::default();
    deaths.push(AMQPValue::FieldTable(entry));
    let mut headers = FieldTable::default();
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths));
    headers
}

async fn depth(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive declare")
    .message_count()
}

/// Waits until `queue` holds `want` ready messages.
async fn expect_depth(ch: &Channel, queue: &str, want: u32) {
    wait_until_async(
        &format!("{queue} to hold {want} messages"),
        Duration::from_secs(10),
        || async { depth(ch, queue).await == want },
    )
    .await;
}

/// Runs `ha-admin dlq <args>`; returns the exit code and stdout.
fn ha_admin(url: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["dlq"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_to_end(
        env!("CARGO_BIN_EXE_ha-admin"),
        &all,
        &[("HA_AMQP_URL", url)],
    );
    eprintln!("ha-admin dlq {args:?}: {code:?}\n{stdout}{stderr}");
    (code, stdout)
}

#[tokio::test]
async fn list_leaves_everything_and_replay_moves_the_valid_messages_to_their_partitions() {
    let Some(url) = server_url("HA_TEST_AMQP_URL") else {
        return;
    };
    let dlq = unique_name("dlq-test-dead-");
    let prefix = unique_name("dlq-test-p-");
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = connection.create_channel().await.expect("channel");
    ch.queue_declare(
        dlq.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare the DLQ");

    // Two devices in different partitions, for an envelope that must be split.
    let devices: Vec<String> = (0..100).map(|i| format!("dev-{i:05}")).collect();
    let a = devices[0].clone();
    let b = devices
        .iter()
        .find(|d| partition_for(d, PARTITIONS) != partition_for(&a, PARTITIONS))
        .expect("a device in another partition")
        .clone();
    let c = devices[7].clone();
    let envelopes: Vec<Vec<Reading>> = vec![
        (7..10)
            .map(|s| reading(&a, s, 1_800_000_000 + s as i64, &[("pulse", 70.0)]))
            .collect(),
        vec![reading(&c, 42, 1_800_000_100, &[("spo2", 97.0)])],
        vec![
            reading(&a, 10, 1_800_000_200, &[("pulse", 71.0)]),
            reading(&b, 3, 1_800_000_200, &[("pulse", 72.0)]),
        ],
    ];
    let origin = format!("{prefix}.{}", partition_for(&a, PARTITIONS));
    let payloads: Vec<Vec<u8>> = envelopes.iter().map(|r| Envelope::encode(r)).collect();
    let messages: Vec<(Vec<u8>, Option<FieldTable>)> = vec![
        (
            payloads[0].clone(),
            Some(x_death(&origin, "delivery_limit", 20)),
        ),
        (payloads[1].clone(), None),
        (
            b"not an envelope".to_vec(),
            Some(x_death(&origin, "rejected", 1)),
        ),
        (payloads[2].clone(), Some(x_death(&origin, "rejected", 2))),
    ];
    for (payload, headers) in &messages {
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(h) = headers {
            props = props.with_headers(h.clone());
        }
        ch.basic_publish(
            "".into(),
            dlq.as_str().into(),
            BasicPublishOptions::default(),
            payload,
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("publish sent");
    }
    expect_depth(&ch, &dlq, 4).await;

    // list: four lines and a summary, nothing removed.
    let (code, out) = ha_admin(&url, &["list", "--dlq", &dlq]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(
        lines[0],
        format!(
            "1 queue={origin} reason=delivery_limit count=20 readings=3 first={a}/7 bytes={}",
            payloads[0].len()
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "2 queue=- reason=- count=- readings=1 first={c}/42 bytes={}",
            payloads[1].len()
        )
    );
    assert!(
        lines[2].starts_with(&format!(
            "3 queue={origin} reason=rejected count=1 malformed="
        )),
        "{out}"
    );
    assert!(lines[2].ends_with(" bytes=15"), "{out}");
    assert!(lines[3].contains(" count=2 readings=2 "), "{out}");
    assert_eq!(
        lines[4],
        format!("listed 4 messages in {dlq} (1 malformed); none removed")
    );
    expect_depth(&ch, &dlq, 4).await;

    // --limit looks at the first ones only, and still removes nothing.
    let (code, out) = ha_admin(&url, &["list", "--dlq", &dlq, "--limit", "2"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 3, "{out}");
    expect_depth(&ch, &dlq, 4).await;

    let flags = [
        "--dlq",
        dlq.as_str(),
        "--queue-prefix",
        prefix.as_str(),
        "--partitions",
        "4",
    ];
    // A dry run changes nothing.
    let (code, out) = ha_admin(&url, &[&["replay", "--dry-run"][..], &flags].concat());
    assert_eq!(code, Some(0));
    assert_eq!(out.matches(" would replay -> ").count(), 3, "{out}");
    assert!(out.contains("3 left queue="), "{out}");
    expect_depth(&ch, &dlq, 4).await;

    // replay: the three valid messages leave the DLQ, the garbage stays.
    let (code, out) = ha_admin(&url, &[&["replay"][..], &flags].concat());
    assert_eq!(code, Some(0));
    assert_eq!(out.matches(" replayed -> ").count(), 3, "{out}");
    assert!(
        out.ends_with(&format!(
            "replayed 3 messages from {dlq}; left 1 (malformed) in it\n"
        )),
        "{out}"
    );
    expect_depth(&ch, &dlq, 1).await;
    let (_, out) = ha_admin(&url, &["list", "--dlq", &dlq]);
    assert!(
        out.starts_with("1 queue=") && out.contains("malformed="),
        "{out}"
    );

    // Every reading arrived in its device's partition, once.
    let queue = AmqpQueue::connect(AmqpConfig {
        urls: vec![url.clone()],
        partitions: PARTITIONS,
        queue_prefix: prefix.clone(),
        ..AmqpConfig::default()
    })
    .await
    .expect("queue");
    let mut want: BTreeMap<u32, Vec<(String, u64)>> = BTreeMap::new();
    for r in envelopes.iter().flatten() {
        want.entry(partition_for(&r.device_id, PARTITIONS))
            .or_default()
            .push((r.device_id.clone(), r.seq));
    }
    for p in 0..PARTITIONS {
        let mut sub = queue.subscribe(p, 16).await.expect("subscribe");
        let expected = want.remove(&p).unwrap_or_default();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap_or_else(|_| panic!("partition {p}: got {got:?}, want {expected:?}"))
                .expect("delivery");
            let readings = Envelope::decode(&d.payload)
                .expect("a valid envelope")
                .readings;
            for r in &readings {
                assert_eq!(partition_for(&r.device_id, PARTITIONS), p, "{r:?}");
            }
            got.extend(readings.into_iter().map(|r| (r.device_id, r.seq)));
            d.ack().await.expect("ack");
        }
        got.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected, "partition {p}");
        drop(sub);
        assert_eq!(queue.depth(p).await.expect("depth"), 0, "partition {p}");
    }

    for q in std::iter::once(dlq.clone()).chain((0..PARTITIONS).map(|p| format!("{prefix}.{p}"))) {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_missing_dlq_and_bad_flags_are_reported() {
    let (code, _) = ha_admin("amqp://127.0.0.1:1/%2f", &["list", "--partitions", "0"]);
    assert_eq!(code, Some(64));
    let (code, _) = ha_admin("amqp://127.0.0.1:1/%2f", &["list", "--limit", "none"]);
    assert_eq!(code, Some(64));
    let Some(url) = server_url("HA_TEST_AMQP_URL") else {
        return;
    };
    let missing = unique_name("dlq-test-missing-");
    let (code, _, stderr) = run_to_end(
        env!("CARGO_BIN_EXE_ha-admin"),
        &["dlq", "list", "--amqp-url", &url, "--dlq", &missing],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("the dead-letter queue {missing} does not exist")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_message_dead_lettered_by_the_broker_is_listed_and_replayed() {
    let Some(url) = server_url("HA_TEST_AMQP_URL") else {
        return;
    };
    // The prefix matches the test broker's `ha-readings` policy
    // (`\.readings\.[0-9]+$` → dead-letter exchange `ha.dlx`), as in
    // production; the DLQ takes only this test's routing keys.
    let prefix = format!("{}.readings", unique_name("dlq-real-"));
    let dlq = unique_name("dlq-real-dead-");
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = connection.create_channel().await.expect("channel");
    declare_dead_letter_queue(&ch, &prefix, &dlq, false).await;

    let queue = AmqpQueue::connect(AmqpConfig {
        urls: vec![url.clone()],
        partitions: 2,
        queue_prefix: prefix.clone(),
        ..AmqpConfig::default()
    })
    .await
    .expect("queue");
    let device = "dev-poison";
    let p = partition_for(device, 2);
    let payload = Envelope::encode(&[reading(device, 5, 1_800_000_000, &[("pulse", 60.0)])]);
    queue
        .publish(vec![ha_core::queue::OutgoingMessage {
            partition: p,
            payload: payload.clone().into(),
        }])
        .await
        .expect("publish");
    let mut sub = queue.subscribe(p, 1).await.expect("subscribe");
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery")
        .expect("delivery");
    d.nack(false).await.expect("dead-letter it");
    expect_depth(&ch, &dlq, 1).await;

    let (code, out) = ha_admin(&url, &["list", "--dlq", &dlq]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.lines().next(),
        Some(
            format!(
                "1 queue={prefix}.{p} reason=rejected count=1 readings=1 first={device}/5 bytes={}",
                payload.len()
            )
            .as_str()
        ),
        "{out}"
    );
    expect_depth(&ch, &dlq, 1).await;

    let (code, out) = ha_admin(
        &url,
        &[
            "replay",
            "--dlq",
            &dlq,
            "--queue-prefix",
            &prefix,
            "--partitions",
            "2",
        ],
    );
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with(&format!("1 replayed -> {prefix}.{p} ")),
        "{out}"
    );
    expect_depth(&ch, &dlq, 0).await;
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the replayed message")
        .expect("delivery");
    assert_eq!(&d.payload[..], &payload[..]);
    d.ack().await.expect("ack");
    drop(sub);

    for q in [dlq.clone(), format!("{prefix}.0"), format!("{prefix}.1")] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
}
