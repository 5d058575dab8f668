//! One dead-lettered message: where it came from and why (its `x-death`
//! header), what it carries, and how it would be re-published. No I/O.

use std::collections::BTreeMap;
use std::fmt;

use ha_core::queue::{OutgoingMessage, partition_for};
use ha_core::wire::{Envelope, Reading};
use lapin::types::{AMQPValue, FieldTable};

/// What a dead-lettered message says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadMessage {
    /// The queue it was dead-lettered from, when known.
    pub origin: Option<String>,
    /// Why (`rejected`, `delivery_limit`, `expired`, `maxlen`), when known.
    pub reason: Option<String>,
    /// How many times it was dead-lettered from `origin` for `reason`.
    pub count: Option<i64>,
    /// Payload size in bytes.
    pub bytes: usize,
    /// The decoded readings, or why the payload cannot be replayed.
    pub content: Result<Vec<Reading>, String>,
}

impl DeadMessage {
    /// Reads a message fetched from the dead-letter queue `dlq`.
    ///
    /// The origin comes from the newest `x-death` entry, else from
    /// `x-first-death-queue`, else from the routing key (dead-lettering
    /// keeps the original one, which is the partition queue's name) unless
    /// that is just the DLQ's own name. The payload must decode with
    /// [`Envelope::decode`] and hold at least one reading, each valid.
    pub fn parse(
        dlq: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        payload: &[u8],
    ) -> DeadMessage {
        let newest = headers
            .and_then(|h| h.inner().get("x-death"))
            .and_then(|v| match v {
                AMQPValue::FieldArray(a) => a.as_slice().first(),
                _ => None,
            })
            .and_then(|v| match v {
                AMQPValue::FieldTable(t) => Some(t),
                _ => None,
            });
        let field = |table: Option<&FieldTable>, key: &str| {
            table.and_then(|t| t.inner().get(key)).and_then(text)
        };
        let origin = field(newest, "queue")
            .or_else(|| field(headers, "x-first-death-queue"))
            .or_else(|| {
                (!routing_key.is_empty() && routing_key != dlq).then(|| routing_key.to_owned())
            });
        let reason = field(newest, "reason").or_else(|| field(headers, "x-first-death-reason"));
        let count = newest
            .and_then(|t| t.inner().get("count"))
            .and_then(integer);
        DeadMessage {
            origin,
            reason,
            count,
            bytes: payload.len(),
            content: check(payload),
        }
    }

    /// The messages that replay this one over `partitions` partitions: the
    /// original bytes when all its readings belong to one partition (as
    /// ingest writes them), else one envelope per partition, readings in
    /// their original order.
    ///
    /// Errors: why the message cannot be replayed (it stays in the DLQ).
    pub fn replay_messages(
        &self,
        payload: &[u8],
        partitions: u32,
    ) -> Result<Vec<OutgoingMessage>, String> {
        let readings = self.content.as_ref().map_err(Clone::clone)?;
        let mut by_partition: BTreeMap<u32, Vec<Reading>> = BTreeMap::new();
        for r in readings {
            by_partition
                .entry(partition_for(&r.device_id, partitions))
                .or_default()
                .push(r.clone());
        }
        if by_partition.len() == 1 {
            let partition = by_partition.into_keys().next().unwrap_or_default();
            return Ok(vec![OutgoingMessage {
                partition,
                payload: payload.to_vec().into(),
            }]);
        }
        Ok(by_partition
            .into_iter()
            .map(|(partition, readings)| OutgoingMessage {
                partition,
                payload: Envelope::encode(&readings).into(),
            })
            .collect())
    }
}

impl fmt::Display for DeadMessage {
    /// `queue=ha.readings.3 reason=delivery_limit count=20 readings=12
    /// first=dev-00042/45 bytes=1834`, with `-` for what is unknown and
    /// `malformed="<why>"` in place of the readings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "queue={} reason={} count=",
            self.origin.as_deref().unwrap_or("-"),
            self.reason.as_deref().unwrap_or("-"),
        )?;
        match self.count {
            Some(c) => write!(f, "{c}")?,
            None => f.write_str("-")?,
        }
        match &self.content {
            Ok(readings) => {
                write!(f, " readings={}", readings.len())?;
                if let Some(r) = readings.first() {
                    write!(f, " first={}/{}", r.device_id, r.seq)?;
                }
            }
            Err(why) => write!(f, " malformed={why:?}")?,
        }
        write!(f, " bytes={}", self.bytes)
    }
}

fn check(payload: &[u8]) -> Result<Vec<Reading>, String> {
    let envelope = Envelope::decode(payload).map_err(|e| e.to_string())?;
    if envelope.readings.is_empty() {
        return Err("no readings".into());
    }
    for (i, r) in envelope.readings.iter().enumerate() {
        r.validate().map_err(|e| format!("reading {i}: {e}"))?;
    }
    Ok(envelope.readings)
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn integer(v: &AMQPValue) -> Option<i64> {
    match *v {
        AMQPValue::ShortShortInt(i) => Some(i64::from(i)),
        AMQPValue::ShortShortUInt(i) => Some(i64::from(i)),
        AMQPValue::ShortInt(i) => Some(i64::from(i)),
        AMQPValue::ShortUInt(i) => Some(i64::from(i)),
        AMQPValue::LongInt(i) => Some(i64::from(i)),
        AMQPValue::LongUInt(i) => Some(i64::from(i)),
        AMQPValue::LongLongInt(i) => Some(i),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::conformance::reading;

    /// An `x-death` header as RabbitMQ writes it, newest entry first.
    fn x_death(entries: &[(&str, &str, i64)]) -> FieldTable {
        let mut array = lapin::types::FieldArray::default();
        for (queue, reason, count) in entries {
            let mut t = FieldTable::default();
            t.insert("queue".into(), AMQPValue::LongString((*queue).into()));
            t.insert("reason".into(), AMQPValue::LongString((*reason).into()));
            t.insert("count".into(), AMQPValue::LongLongInt(*count));
            t.insert("exchange".into(), AMQPValue::LongString("".into()));
            array.push(AMQPValue::FieldTable(t));
        }
        let mut h = FieldTable::default();
        h.insert("x-death".into(), AMQPValue::FieldArray(array));
        h
    }

    #[test]
    fn reads_origin_reason_and_count_from_the_newest_x_death() {
        let payload = Envelope::encode(&[
            reading("dev-7", 45, 1_800_000_000, &[("pulse", 70.0)]),
            reading("dev-7", 46, 1_800_000_001, &[("pulse", 71.0)]),
        ]);
        let headers = x_death(&[
            ("ha.readings.3", "delivery_limit", 20),
            ("ha.readings.1", "rejected", 1),
        ]);
        let m = DeadMessage::parse("ha.dead", "ha.readings.3", Some(&headers), &payload);
        assert_eq!(m.origin.as_deref(), Some("ha.readings.3"));
        assert_eq!(m.reason.as_deref(), Some("delivery_limit"));
        assert_eq!(m.count, Some(20));
        assert_eq!(
            m.to_string(),
            format!(
                "queue=ha.readings.3 reason=delivery_limit count=20 readings=2 first=dev-7/45 bytes={}",
                payload.len()
            )
        );
    }

    #[test]
    fn falls_back_to_first_death_headers_then_the_routing_key() {
        let payload = Envelope::encode(&[reading("d", 1, 0, &[("x", 1.0)])]);
        let mut h = FieldTable::default();
        h.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString("ha.readings.5".into()),
        );
        h.insert(
            "x-first-death-reason".into(),
            AMQPValue::ShortString("expired".into()),
        );
        let m = DeadMessage::parse("ha.dead", "whatever", Some(&h), &payload);
        assert_eq!(
            (m.origin.as_deref(), m.reason.as_deref(), m.count),
            (Some("ha.readings.5"), Some("expired"), None)
        );
        let m = DeadMessage::parse("ha.dead", "ha.readings.2", None, &payload);
        assert_eq!(m.origin.as_deref(), Some("ha.readings.2"));
        let m = DeadMessage::parse("ha.dead", "ha.dead", None, &payload);
        assert_eq!(m.origin, None);
        assert!(
            m.to_string()
                .starts_with("queue=- reason=- count=- readings=1 first=d/1 ")
        );
    }

    #[test]
    fn malformed_payloads_cannot_be_replayed() {
        for bad in [
            &b"garbage"[..],
            br#"{"v":2,"readings":[]}"#,
            br#"{"v":1,"readings":[]}"#,
            br#"{"v":1,"readings":[{"device_id":"bad id","seq":1,"ts":"2026-01-01T00:00:00Z","metrics":{"x":1}}]}"#,
        ] {
            let m = DeadMessage::parse("ha.dead", "", None, bad);
            assert!(m.content.is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(m.to_string().contains(" malformed=\""), "{m}");
            assert!(m.replay_messages(bad, 8).is_err());
        }
    }

    #[test]
    fn replays_to_the_device_partition_splitting_mixed_envelopes() {
        let one = Envelope::encode(&[
            reading("dev-1", 1, 0, &[("x", 1.0)]),
            reading("dev-1", 2, 1, &[("x", 2.0)]),
        ]);
        let m = DeadMessage::parse("q", "", None, &one);
        let out = m.replay_messages(&one, 8).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].partition, partition_for("dev-1", 8));
        assert_eq!(&out[0].payload[..], &one[..], "the original bytes");

        let other = (0..100)
            .map(|i| format!("dev-{i}"))
            .find(|d| partition_for(d, 8) != partition_for("dev-1", 8))
            .unwrap();
        let mixed = Envelope::encode(&[
            reading("dev-1", 1, 0, &[("x", 1.0)]),
            reading(&other, 5, 0, &[("x", 1.0)]),
            reading("dev-1", 2, 1, &[("x", 2.0)]),
        ]);
        let m = DeadMessage::parse("q", "", None, &mixed);
        let out = m.replay_messages(&mixed, 8).unwrap();
        assert_eq!(out.len(), 2);
        for o in &out {
            let readings = Envelope::decode(&o.payload).unwrap().readings;
            assert!(
                readings
                    .iter()
                    .all(|r| partition_for(&r.device_id, 8) == o.partition)
            );
            if readings[0].device_id == "dev-1" {
                assert_eq!(readings.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
            }
        }
        // One partition only: everything goes there.
        assert_eq!(m.replay_messages(&mixed, 1).unwrap().len(), 1);
    }
}
