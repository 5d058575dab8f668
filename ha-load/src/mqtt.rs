//! The open-loop driver's MQTT transport: one MQTT 3.1.1 session over TLS
//! per connection, that connection's device publishing QoS 1 to
//! `readings/{device_id}` with the same JSON body as `POST /v1/readings`,
//! one message per job. Up to the server's receive maximum publishes are
//! in flight per connection; the ack latency of each runs from when it was
//! due to its PUBACK (which ingest sends only after the broker confirmed).
//!
//! Only three packets are spoken (CONNECT, PUBLISH QoS 1 out; CONNACK,
//! PUBACK in), so they are encoded here rather than through a codec crate:
//! a load driver should do as little as it can besides the server's work.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ha_core::wire::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::driver::{Collector, Job, write_body};
use crate::http1::{Endpoint, Io};

/// The listener's receive maximum (docs/mqtt.md): QoS 1 publishes one
/// connection may have unacknowledged.
pub const RECEIVE_MAXIMUM: usize = 32;

const CONNACK: u8 = 0x20;
const PUBACK: u8 = 0x40;

/// Appends MQTT's variable byte integer.
fn put_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT, 3.1.1, clean session, user name = device id, password = its
/// token; keep-alive 0 (the server grants its maximum).
pub fn encode_connect(out: &mut Vec<u8>, device: &str, token: &str) {
    let mut body = Vec::with_capacity(64 + device.len() * 2 + token.len());
    put_str(&mut body, b"MQTT");
    body.push(4);
    body.push(0xC2);
    body.extend_from_slice(&0u16.to_be_bytes());
    put_str(&mut body, device.as_bytes());
    put_str(&mut body, device.as_bytes());
    put_str(&mut body, token.as_bytes());
    out.push(0x10);
    put_length(out, body.len());
    out.extend_from_slice(&body);
}

/// PUBLISH, QoS 1, packet id `pid`.
pub fn encode_publish(out: &mut Vec<u8>, topic: &str, pid: u16, payload: &[u8]) {
    out.push(0x32);
    put_length(out, 2 + topic.len() + 2 + payload.len());
    put_str(out, topic.as_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The first complete packet in `buf`: (first byte, body, total length).
pub fn next_packet(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let start = 2 + i;
            return buf
                .get(start..start + len)
                .map(|body| (buf[0], body, start + len));
        }
    }
    // Five length bytes: not MQTT; the caller drops the connection.
    Some((0, &[], buf.len()))
}

/// Opens a session for `device`: TLS, CONNECT, CONNACK accepted.
pub async fn connect(
    endpoint: &Endpoint,
    device: &str,
    token: &str,
) -> std::io::Result<Box<dyn Io>> {
    let mut io = endpoint.connect_stream(None).await?;
    let mut out = Vec::new();
    encode_connect(&mut out, device, token);
    io.write_all(&out).await?;
    io.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        if let Some((kind, body, _)) = next_packet(&buf) {
            return match (kind & 0xF0, body) {
                (CONNACK, [_, 0]) => Ok(io),
                (CONNACK, [_, rc]) => Err(std::io::Error::other(format!(
                    "CONNACK refused the session (return code {rc})"
                ))),
                _ => Err(std::io::Error::other(format!(
                    "expected a CONNACK, got packet type {:#04x}",
                    kind
                ))),
            };
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct InFlight {
    pid: u16,
    due: Instant,
    sent: Instant,
    batch: usize,
    collector: Arc<Collector>,
}

fn fail(f: InFlight, why: &str) {
    f.collector.error(why.to_owned());
    f.collector.done.fetch_add(1, Ordering::Relaxed);
}

async fn read_some(conn: &mut Option<Box<dyn Io>>, chunk: &mut [u8]) -> std::io::Result<usize> {
    match conn {
        Some(c) => c.read(chunk).await,
        None => std::future::pending().await,
    }
}

/// One device's session: publishes the jobs it is given (each from the
/// device's next `seq`), matches PUBACKs to them, reconnects after an error.
pub(crate) async fn worker(
    endpoint: Arc<Endpoint>,
    conn: Box<dyn Io>,
    mut jobs: mpsc::Receiver<Job>,
    device: (String, String),
    first_seq: u64,
    timeout: Duration,
) {
    let (id, token) = device;
    let topic = format!("readings/{id}");
    let mut conn = Some(conn);
    let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(RECEIVE_MAXIMUM);
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 2048];
    let mut body = String::with_capacity(256);
    let mut packet = Vec::with_capacity(512);
    let mut next_pid: u16 = 1;
    let mut seq = first_seq;
    loop {
        // The oldest unanswered publish bounds the wait.
        let deadline = inflight
            .front()
            .map_or(Instant::now() + Duration::from_secs(3600), |f| {
                f.sent + timeout
            });
        tokio::select! {
            job = jobs.recv(), if inflight.len() < RECEIVE_MAXIMUM => {
                let Some(job) = job else { break };
                if conn.is_none() {
                    match tokio::time::timeout(timeout, connect(&endpoint, &id, &token)).await {
                        Ok(Ok(c)) => conn = Some(c),
                        Ok(Err(e)) => {
                            job.collector.error(format!("MQTT connect: {e}"));
                            job.collector.done.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(_) => {
                            job.collector.error("MQTT connect timed out".into());
                            job.collector.done.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                body.clear();
                write_body(&mut body, &id, seq, job.batch, Timestamp::now());
                seq += job.batch as u64;
                let pid = next_pid;
                next_pid = next_pid.checked_add(1).unwrap_or(1);
                packet.clear();
                encode_publish(&mut packet, &topic, pid, body.as_bytes());
                let f = InFlight {
                    pid,
                    due: job.due,
                    sent: Instant::now(),
                    batch: job.batch,
                    collector: job.collector,
                };
                let written = match conn.as_mut() {
                    Some(c) => tokio::time::timeout(timeout, async {
                        c.write_all(&packet).await?;
                        c.flush().await
                    })
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                    None => Err(std::io::ErrorKind::NotConnected.into()),
                };
                match written {
                    Ok(()) => inflight.push_back(f),
                    Err(e) => {
                        let why = format!("MQTT I/O: {e}");
                        fail(f, &why);
                        drop_session(&mut conn, &mut inflight, &mut buf, &why);
                    }
                }
            }
            n = read_some(&mut conn, &mut chunk) => {
                match n {
                    Ok(0) => drop_session(&mut conn, &mut inflight, &mut buf, "MQTT: the server closed the connection"),
                    Err(e) => drop_session(&mut conn, &mut inflight, &mut buf, &format!("MQTT I/O: {e}")),
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if !take_acks(&mut buf, &mut inflight) {
                            drop_session(&mut conn, &mut inflight, &mut buf, "MQTT: malformed packet from the server");
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if !inflight.is_empty() => {
                drop_session(&mut conn, &mut inflight, &mut buf, "timed out");
            }
        }
    }
    drop_session(&mut conn, &mut inflight, &mut buf, "driver stopped");
}

/// Answers the publishes whose PUBACKs are complete in `buf`; false on a
/// packet that cannot be MQTT.
fn take_acks(buf: &mut Vec<u8>, inflight: &mut VecDeque<InFlight>) -> bool {
    let mut used = 0;
    while let Some((kind, body, len)) = next_packet(&buf[used..]) {
        if kind == 0 {
            return false;
        }
        if kind & 0xF0 == PUBACK
            && let [hi, lo, ..] = body
        {
            let pid = u16::from_be_bytes([*hi, *lo]);
            // PUBACKs come in publish order; a search keeps a stray one harmless.
            if let Some(i) = inflight.iter().position(|f| f.pid == pid)
                && let Some(f) = inflight.remove(i)
            {
                let c = &f.collector;
                if let Ok(mut h) = c.latency.lock() {
                    h.record(f.due.elapsed());
                }
                c.acked_requests.fetch_add(1, Ordering::Relaxed);
                c.acked_readings
                    .fetch_add(f.batch as u64, Ordering::Relaxed);
                c.done.fetch_add(1, Ordering::Relaxed);
            }
        }
        used += len;
    }
    buf.drain(..used);
    true
}

/// Fails every publish in flight and forgets the connection (the next job
/// reconnects).
fn drop_session(
    conn: &mut Option<Box<dyn Io>>,
    inflight: &mut VecDeque<InFlight>,
    buf: &mut Vec<u8>,
    why: &str,
) {
    *conn = None;
    buf.clear();
    for f in inflight.drain(..) {
        fail(f, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_variable_byte_integers() {
        for (n, bytes) in [
            (0usize, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            put_length(&mut out, n);
            assert_eq!(out, bytes, "{n}");
        }
    }

    #[test]
    fn connect_and_publish_frame_as_mqtt_3_1_1() {
        let mut out = Vec::new();
        encode_connect(&mut out, "d1", "tok");
        assert_eq!(
            out,
            [
                &[0x10, 23, 0, 4][..],
                b"MQTT",
                &[4, 0xC2, 0, 0, 0, 2],
                b"d1",
                &[0, 2],
                b"d1",
                &[0, 3],
                b"tok"
            ]
            .concat()
        );
        let (kind, body, len) = next_packet(&out).unwrap();
        assert_eq!((kind, body.len(), len), (0x10, 23, out.len()));

        let payload = vec![b'x'; 200];
        let mut p = Vec::new();
        encode_publish(&mut p, "readings/d1", 0x0102, &payload);
        // 2 + 11 topic + 2 pid + 200 = 215: two length bytes.
        assert_eq!(&p[..3], &[0x32, 215 & 0x7f | 0x80, 1]);
        assert_eq!(&p[3..5], &[0, 11]);
        assert_eq!(&p[16..18], &[1, 2]);
        assert_eq!(
            next_packet(&p).map(|(_, b, l)| (b.len(), l)),
            Some((215, 218))
        );
        assert_eq!(next_packet(&p[..100]), None);
    }

    #[test]
    fn acks_answer_their_publishes_and_partial_packets_wait() {
        let c = Arc::new(Collector::default());
        let f = |pid| InFlight {
            pid,
            due: Instant::now(),
            sent: Instant::now(),
            batch: 1,
            collector: c.clone(),
        };
        let mut inflight: VecDeque<InFlight> = [f(1), f(2), f(3)].into();
        let mut buf = vec![0x40, 2, 0, 1, 0x40, 2, 0, 3, 0x40, 2];
        assert!(take_acks(&mut buf, &mut inflight));
        assert_eq!(buf, [0x40, 2]);
        assert_eq!(inflight.iter().map(|f| f.pid).collect::<Vec<_>>(), [2]);
        assert_eq!(c.acked_readings.load(Ordering::Relaxed), 2);
        let mut garbage = vec![0x40, 0xff, 0xff, 0xff, 0xff, 1];
        assert!(!take_acks(&mut garbage, &mut inflight));
    }
}
