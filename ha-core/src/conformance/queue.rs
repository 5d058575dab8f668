//! The [`Queue`] conformance suite.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::queue::{Delivery, OutgoingMessage, Queue, QueueErrorKind, Subscription};

/// Partitions every fixture is created with.
pub const PARTITIONS: u32 = 3;

/// What the suite needs from a backend under test.
#[async_trait]
pub trait QueueFixture: Send + Sync {
    /// The queue under test, freshly created and empty.
    fn queue(&self) -> Arc<dyn Queue>;
    /// Payloads dead-lettered so far, in arrival order.
    async fn dead_letters(&self) -> Vec<Bytes>;
    /// The delivery limit the backend was configured with.
    fn delivery_limit(&self) -> u32;
}

fn msg(partition: u32, text: impl Into<String>) -> OutgoingMessage {
    OutgoingMessage {
        partition,
        payload: Bytes::from(text.into()),
    }
}

/// How long a test waits for a delivery that must come. Generous: this is a
/// liveness bound, not a speed assertion.
const MUST_ARRIVE: Duration = Duration::from_secs(20);
/// How long a test waits to conclude that no delivery is coming.
const QUIET: Duration = Duration::from_millis(400);

async fn next(sub: &mut Box<dyn Subscription>) -> Delivery {
    match tokio::time::timeout(MUST_ARRIVE, sub.next()).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => panic!("subscription failed: {e}"),
        Err(_) => panic!("no delivery within {MUST_ARRIVE:?}"),
    }
}

async fn nothing_more(sub: &mut Box<dyn Subscription>) {
    if let Ok(r) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!("expected no delivery, got {r:?}");
    }
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.payload).into_owned()
}

pub async fn confirmed_messages_arrive_in_order(f: &impl QueueFixture) {
    let q = f.queue();
    for chunk in 0..4 {
        let batch = (0..25)
            .map(|i| msg(0, format!("m{}", chunk * 25 + i)))
            .collect();
        q.publish(batch).await.unwrap();
    }
    let mut sub = q.subscribe(0, 50).await.unwrap();
    assert_eq!(sub.partition(), 0);
    for i in 0..100 {
        let d = next(&mut sub).await;
        assert_eq!(text(&d), format!("m{i}"));
        assert!(!d.redelivered);
        assert_eq!(d.partition, 0);
        d.ack().await.unwrap();
    }
    nothing_more(&mut sub).await;
}

pub async fn unacked_deliveries_are_redelivered_when_the_consumer_goes(f: &impl QueueFixture) {
    let q = f.queue();
    q.publish((0..5).map(|i| msg(1, format!("r{i}"))).collect())
        .await
        .unwrap();
    let mut sub = q.subscribe(1, 10).await.unwrap();
    let first = next(&mut sub).await;
    assert_eq!(text(&first), "r0");
    first.ack().await.unwrap();
    let mut held = Vec::new();
    for i in 1..4 {
        let d = next(&mut sub).await;
        assert_eq!(text(&d), format!("r{i}"));
        held.push(d);
    }
    drop(sub);
    // Settling a delivery of a gone subscription fails: it will come again.
    let stale = held.remove(0);
    assert!(stale.ack().await.is_err_and(|e| e.is_closed()));

    let mut again = q.subscribe(1, 10).await.unwrap();
    for i in 1..5 {
        let d = next(&mut again).await;
        assert_eq!(text(&d), format!("r{i}"));
        // r4 may be flagged too: a broker pushes up to `prefetch` messages
        // to the consumer before it asks for them.
        if i < 4 {
            assert!(d.redelivered, "r{i} was delivered before");
        }
        d.ack().await.unwrap();
    }
    nothing_more(&mut again).await;
}

pub async fn nack_requeues_or_dead_letters(f: &impl QueueFixture) {
    let q = f.queue();
    q.publish(vec![msg(0, "a"), msg(0, "b")]).await.unwrap();
    let mut sub = q.subscribe(0, 10).await.unwrap();
    let a = next(&mut sub).await;
    assert_eq!(text(&a), "a");
    a.nack(true).await.unwrap();
    // The requeued message comes back; "b" may overtake it, since a broker
    // may have pushed it to the consumer already.
    let mut got = vec![next(&mut sub).await, next(&mut sub).await];
    got.sort_by_key(text);
    let b = got.pop().unwrap();
    let again = got.pop().unwrap();
    assert_eq!((text(&again), text(&b)), ("a".to_owned(), "b".to_owned()));
    assert!(again.redelivered);
    again.nack(false).await.unwrap();
    b.ack().await.unwrap();
    nothing_more(&mut sub).await;
    let dead = eventually_dead(f, 1).await;
    assert_eq!(dead, vec![Bytes::from("a")]);
}

async fn eventually_dead(f: &impl QueueFixture, n: usize) -> Vec<Bytes> {
    let deadline = tokio::time::Instant::now() + MUST_ARRIVE;
    loop {
        let dead = f.dead_letters().await;
        if dead.len() >= n || tokio::time::Instant::now() > deadline {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn delivery_limit_dead_letters_a_poison_message(f: &impl QueueFixture) {
    let q = f.queue();
    let limit = f.delivery_limit();
    assert!(limit >= 20, "the policy must allow at least 20 deliveries");
    q.publish(vec![msg(2, "poison"), msg(2, "fine")])
        .await
        .unwrap();
    let mut sub = q.subscribe(2, 1).await.unwrap();
    let mut deliveries = 0;
    loop {
        let d = next(&mut sub).await;
        if text(&d) == "fine" {
            d.ack().await.unwrap();
            break;
        }
        deliveries += 1;
        d.nack(true).await.unwrap();
    }
    assert_eq!(
        deliveries,
        limit + 1,
        "delivered once, then returned `limit` times"
    );
    nothing_more(&mut sub).await;
    assert_eq!(eventually_dead(f, 1).await, vec![Bytes::from("poison")]);
}

pub async fn prefetch_bounds_unacked_deliveries(f: &impl QueueFixture) {
    let q = f.queue();
    q.publish((0..5).map(|i| msg(0, format!("p{i}"))).collect())
        .await
        .unwrap();
    let mut sub = q.subscribe(0, 2).await.unwrap();
    let d0 = next(&mut sub).await;
    let d1 = next(&mut sub).await;
    nothing_more(&mut sub).await;
    d0.ack().await.unwrap();
    let d2 = next(&mut sub).await;
    assert_eq!(text(&d2), "p2");
    nothing_more(&mut sub).await;
    d1.ack().await.unwrap();
    d2.ack().await.unwrap();
    for i in 3..5 {
        let d = next(&mut sub).await;
        assert_eq!(text(&d), format!("p{i}"));
        d.ack().await.unwrap();
    }
}

pub async fn single_active_consumer_fails_over(f: &impl QueueFixture) {
    let q = f.queue();
    let mut first = q.subscribe(1, 10).await.unwrap();
    let mut second = q.subscribe(1, 10).await.unwrap();
    q.publish((0..4).map(|i| msg(1, format!("s{i}"))).collect())
        .await
        .unwrap();
    let s0 = next(&mut first).await;
    assert_eq!(text(&s0), "s0");
    s0.ack().await.unwrap();
    let s1 = next(&mut first).await;
    nothing_more(&mut second).await;
    drop(s1);
    drop(first);
    for i in 1..4 {
        let d = next(&mut second).await;
        assert_eq!(text(&d), format!("s{i}"));
        if i == 1 {
            assert!(d.redelivered, "s1 was delivered to the first consumer");
        }
        d.ack().await.unwrap();
    }
}

pub async fn ack_up_to_settles_earlier_deliveries(f: &impl QueueFixture) {
    let q = f.queue();
    q.publish((0..5).map(|i| msg(0, format!("u{i}"))).collect())
        .await
        .unwrap();
    let mut sub = q.subscribe(0, 10).await.unwrap();
    let mut ds = Vec::new();
    for _ in 0..5 {
        ds.push(next(&mut sub).await);
    }
    let tags: Vec<u64> = ds.iter().map(Delivery::tag).collect();
    assert!(tags.windows(2).all(|w| w[0] < w[1]), "{tags:?}");
    let last = ds.pop().unwrap();
    last.ack_up_to().await.unwrap();
    drop(ds);
    drop(sub);
    q.publish(vec![msg(0, "marker")]).await.unwrap();
    let mut again = q.subscribe(0, 10).await.unwrap();
    let d = next(&mut again).await;
    assert_eq!(text(&d), "marker", "acked deliveries must not come back");
    d.ack().await.unwrap();
}

pub async fn partitions_are_independent(f: &impl QueueFixture) {
    let q = f.queue();
    assert_eq!(q.partitions(), PARTITIONS);
    q.publish(vec![msg(0, "zero"), msg(1, "one"), msg(0, "zero-2")])
        .await
        .unwrap();
    let mut p1 = q.subscribe(1, 10).await.unwrap();
    let mut p0 = q.subscribe(0, 10).await.unwrap();
    let d = next(&mut p1).await;
    assert_eq!((text(&d), d.partition), ("one".to_owned(), 1));
    d.ack().await.unwrap();
    nothing_more(&mut p1).await;
    for want in ["zero", "zero-2"] {
        let d = next(&mut p0).await;
        assert_eq!(text(&d), want);
        d.ack().await.unwrap();
    }
}

pub async fn invalid_partition_is_an_error(f: &impl QueueFixture) {
    let q = f.queue();
    let err = q.publish(vec![msg(PARTITIONS, "x")]).await.unwrap_err();
    assert_eq!(err.kind(), QueueErrorKind::InvalidPartition, "{err}");
    assert!(!err.is_transient());
    assert!(q.subscribe(PARTITIONS + 7, 1).await.is_err());
}

pub async fn depth_counts_ready_messages(f: &impl QueueFixture) {
    let q = f.queue();
    q.publish((0..7).map(|i| msg(2, format!("d{i}"))).collect())
        .await
        .unwrap();
    // Broker statistics may lag; wait for them to settle.
    let deadline = tokio::time::Instant::now() + MUST_ARRIVE;
    loop {
        let depth = q.depth(2).await.unwrap();
        if depth == 7 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "depth stayed at {depth}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(q.depth(0).await.unwrap(), 0);
}
