//! The MQTT transport against a scripted fake server (`mqtt-proto` on a
//! tokio listener, plain TCP on 127.0.0.1): each reason code a server can
//! answer with must lead to what the HTTPS path does with the equivalent
//! status, and nothing leaves the buffer without a success PUBACK.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_core::wire::{IngestBody, Metric, Reading, Timestamp};
use ha_device_client::{
    Buffer, BufferLimits, Client, ClientConfig, ClockRefusal, Event, MemoryBuffer, RetryCause,
    RetryPolicy,
};
use mqtt_proto::v5::{
    Connack, ConnectReasonCode, Disconnect, DisconnectReasonCode, Packet, Puback, PubackReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with the `n`th PUBLISH (0-based, over all connections).
#[derive(Clone, Copy, Debug)]
enum Reply {
    Ack(u8, &'static str),
    /// A DISCONNECT with this reason code, as raw bytes (0x88 is not in
    /// the codec's DISCONNECT codes), then close.
    Disconnect(u8),
    /// Never answer (the client times out).
    Silent,
    /// Acknowledge, then close the connection (as a server does with an
    /// idle one).
    AckThenClose,
    /// Acknowledge later: once this many PUBACKs wait on the connection,
    /// all of them, in order (several must be in flight to get any).
    AckWhen(usize),
}

#[derive(Default)]
struct Seen {
    /// (user name, password, clean start, keep-alive) of each CONNECT.
    connects: Vec<(String, Vec<u8>, bool, u16)>,
    /// (topic, seqs) of each PUBLISH, in arrival order.
    publishes: Vec<(String, Vec<u64>)>,
    pings: usize,
    /// Most PUBLISHes unacknowledged at once on one connection.
    max_in_flight: usize,
}

type Script = Box<dyn FnMut(usize, &[u64]) -> Reply + Send>;

struct Fake {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Fake {
    async fn start(
        connack: u8,
        server_keep_alive: Option<u16>,
        script: impl FnMut(usize, &[u64]) -> Reply + Send + 'static,
    ) -> Fake {
        Self::start_with(connack, server_keep_alive, None, script).await
    }

    /// [`Fake::start`] announcing `receive_max` in its CONNACK.
    async fn start_with(
        connack: u8,
        server_keep_alive: Option<u16>,
        receive_max: Option<u16>,
        script: impl FnMut(usize, &[u64]) -> Reply + Send + 'static,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (seen, script) = (s.clone(), script.clone());
                let announce = (connack, server_keep_alive, receive_max);
                tokio::spawn(serve(tcp, announce, seen, script));
            }
        });
        Fake { port, seen }
    }

    fn config(&self, events: &Arc<Mutex<Vec<Event>>>) -> ClientConfig {
        let sink = events.clone();
        ClientConfig::new(format!("mqtt://127.0.0.1:{}", self.port), "dev-1", "c0ffee")
            .with_plain_http()
            .with_retry_policy(
                RetryPolicy::linear(Duration::from_millis(10), Duration::from_millis(50), 10)
                    .unwrap(),
            )
            .with_request_timeout(Duration::from_millis(500))
            .with_pacing(Duration::from_millis(1))
            .with_event_callback(move |e| sink.lock().unwrap().push(e.clone()))
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }
}

async fn read_packet(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Packet> {
    loop {
        if buf.len() >= 2 {
            let mut len = 0usize;
            let mut i = 1;
            let mut complete = false;
            while i < buf.len() && i <= 4 {
                len |= usize::from(buf[i] & 0x7F) << (7 * (i - 1));
                if buf[i] & 0x80 == 0 {
                    complete = true;
                    break;
                }
                i += 1;
            }
            if complete && buf.len() >= i + 1 + len {
                let frame: Vec<u8> = buf.drain(..i + 1 + len).collect();
                return Some(Packet::decode(&frame).unwrap().unwrap());
            }
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn send(tcp: &mut TcpStream, packet: Packet) {
    let _ = tcp.write_all(packet.encode().unwrap().as_ref()).await;
}

/// What the CONNACK says: reason code, Server Keep Alive, Receive Maximum.
type Announce = (u8, Option<u16>, Option<u16>);

async fn serve(
    mut tcp: TcpStream,
    (connack, server_keep_alive, receive_max): Announce,
    seen: Arc<Mutex<Seen>>,
    script: Arc<Mutex<Script>>,
) {
    let mut buf = Vec::new();
    let mut in_flight = 0;
    let mut deferred = Vec::new();
    while let Some(packet) = read_packet(&mut tcp, &mut buf).await {
        match packet {
            Packet::Connect(c) => {
                seen.lock().unwrap().connects.push((
                    c.username.as_deref().unwrap_or("").to_owned(),
                    c.password.as_deref().unwrap_or(&[]).to_vec(),
                    c.clean_start,
                    c.keep_alive,
                ));
                let code = ConnectReasonCode::from_u8(connack).unwrap();
                let mut ack = Connack::new(false, code);
                ack.properties.server_keep_alive = server_keep_alive;
                ack.properties.receive_max = receive_max;
                send(&mut tcp, Packet::Connack(ack)).await;
                if connack != 0 {
                    return;
                }
            }
            Packet::Pingreq => {
                seen.lock().unwrap().pings += 1;
                send(&mut tcp, Packet::Pingresp).await;
            }
            Packet::Publish(p) => {
                let readings = IngestBody::parse(&p.payload, Timestamp::now())
                    .unwrap()
                    .readings;
                let seqs: Vec<u64> = readings.iter().map(|r| r.seq).collect();
                in_flight += 1;
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.max_in_flight = s.max_in_flight.max(in_flight);
                    s.publishes.push((p.topic_name.to_string(), seqs.clone()));
                    s.publishes.len() - 1
                };
                let reply = (script.lock().unwrap())(n, &seqs);
                let pid = p.qos_pid.pid().unwrap();
                match reply {
                    Reply::Ack(code, reason) => {
                        let mut ack = Puback::new(pid, PubackReasonCode::from_u8(code).unwrap());
                        if !reason.is_empty() {
                            ack.properties.reason_string = Some(reason.into());
                        }
                        send(&mut tcp, Packet::Puback(ack)).await;
                        in_flight -= 1;
                    }
                    Reply::Disconnect(code) => {
                        if let Some(known) = DisconnectReasonCode::from_u8(code) {
                            send(&mut tcp, Packet::Disconnect(Disconnect::new(known))).await;
                        } else {
                            let _ = tcp.write_all(&[0xE0, 0x02, code, 0x00]).await;
                        }
                        return;
                    }
                    Reply::Silent => {}
                    Reply::AckWhen(count) => {
                        deferred.push(pid);
                        if deferred.len() >= count {
                            for pid in deferred.drain(..) {
                                send(&mut tcp, Packet::Puback(Puback::new_success(pid))).await;
                                in_flight -= 1;
                            }
                        }
                    }
                    Reply::AckThenClose => {
                        send(&mut tcp, Packet::Puback(Puback::new_success(pid))).await;
                        return;
                    }
                }
            }
            Packet::Disconnect(_) => return,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn reading(seq: u64) -> Reading {
    Reading {
        device_id: "dev-1".into(),
        seq,
        ts: Timestamp::now().saturating_sub(Duration::from_secs(60)),
        metrics: vec![Metric::new("pulse", 70.0)],
    }
}

fn new_client(fake: &Fake, batch: usize) -> (Client, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let config = fake.config(&events).with_batch(batch, 1 << 20);
    let client = Client::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap();
    (client, events)
}

fn retry_causes(events: &Mutex<Vec<Event>>) -> Vec<RetryCause> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Retry { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect()
}

const OK: Reply = Reply::Ack(0x00, "");

#[tokio::test]
async fn batches_are_qos1_publishes_to_the_devices_topic_with_its_credentials() {
    let fake = Fake::start(0, None, |_, _| OK).await;
    let (mut client, _) = new_client(&fake, 10);
    for s in 0..25 {
        client.push(reading(s)).unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!((report.acknowledged, report.requests), (25, 3));
    assert!(client.buffer().is_empty());
    fake.seen(|s| {
        assert_eq!(s.connects.len(), 1, "one session for the whole flush");
        let (user, pass, clean, keep_alive) = &s.connects[0];
        assert_eq!(
            (user.as_str(), pass.as_slice()),
            ("dev-1", b"c0ffee".as_slice())
        );
        assert!(*clean);
        assert_eq!(*keep_alive, 60);
        let seqs: Vec<u64> = s.publishes.iter().flat_map(|p| p.1.clone()).collect();
        assert_eq!(seqs, (0..25).collect::<Vec<_>>());
        assert!(s.publishes.iter().all(|p| p.0 == "readings/dev-1"));
        assert_eq!(
            s.max_in_flight, 1,
            "one PUBLISH in flight: any receive maximum holds"
        );
    });
}

#[tokio::test]
async fn payload_invalid_rejects_the_culprit_and_a_clock_reason_holds() {
    // Any publish holding seq 2 is refused; seq 5 is refused for its clock.
    let fake = Fake::start(0, None, |_, seqs| {
        if seqs.contains(&2) {
            Reply::Ack(0x99, "invalid_value: metrics")
        } else if seqs.contains(&5) {
            Reply::Ack(0x99, "ts_in_future: 40 s ahead")
        } else {
            OK
        }
    })
    .await;
    let (mut client, events) = new_client(&fake, 8);
    for s in 0..8 {
        client.push(reading(s)).unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!(
        (report.acknowledged, report.rejected, report.held),
        (6, 1, 1)
    );
    assert!(client.buffer().is_empty());
    assert_eq!(client.buffer().held_len(ClockRefusal::InFuture), 1);
    let events = events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(e,
        Event::Rejected { readings, reason } if readings[0].seq == 2 && reason.code == "invalid_value")));
    assert!(events.iter().any(|e| matches!(e,
        Event::Held { readings, refusal: ClockRefusal::InFuture, .. } if readings[0].seq == 5)));
}

#[tokio::test]
async fn quota_exceeded_backs_off_and_not_authorized_keeps_the_readings() {
    let fake = Fake::start(0, None, |n, _| match n {
        0 => Reply::Ack(0x97, "rate_limited: retry after 1 s"),
        1 => Reply::Ack(0x97, "rate limit"),
        2 => OK,
        _ => Reply::Ack(0x87, "not your topic"),
    })
    .await;
    let (mut client, events) = new_client(&fake, 100);
    client.push(reading(1)).unwrap();
    client.flush().await.unwrap();
    assert_eq!(retry_causes(&events), [RetryCause::Mqtt(0x97); 2]);
    // The ingest's `retry after N s` is honoured like Retry-After.
    let delays: Vec<Duration> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Retry { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [Duration::from_secs(1), Duration::from_millis(20)]);
    fake.seen(|s| assert_eq!(s.connects.len(), 1, "an error PUBACK keeps the session"));
    client.push(reading(2)).unwrap();
    let err = client.flush().await.unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert_eq!(
        client.buffer().len(),
        1,
        "kept for when the operator fixes it"
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Unauthorized { .. }))
    );
}

#[tokio::test]
async fn disconnect_0x88_and_0x89_resend_the_unacknowledged_batch_in_order() {
    let fake = Fake::start(0, None, |n, _| match n {
        1 => Reply::Disconnect(0x88),
        3 => Reply::Disconnect(0x89),
        _ => OK,
    })
    .await;
    let (mut client, events) = new_client(&fake, 5);
    for s in 0..20 {
        client.push(reading(s)).unwrap();
    }
    client.flush().await.unwrap();
    assert!(client.buffer().is_empty());
    assert_eq!(
        retry_causes(&events),
        [RetryCause::Mqtt(0x88), RetryCause::Mqtt(0x89)]
    );
    fake.seen(|s| {
        let order: Vec<Vec<u64>> = s.publishes.iter().map(|p| p.1.clone()).collect();
        let b = |i: u64| (i * 5..i * 5 + 5).collect::<Vec<u64>>();
        // Batch 1 resent after the first DISCONNECT, batch 2 after the second.
        assert_eq!(order, [b(0), b(1), b(1), b(2), b(2), b(3)]);
        assert_eq!(s.connects.len(), 3, "a new clean session after each");
        assert!(s.connects.iter().all(|c| c.2));
    });
}

#[tokio::test]
async fn no_puback_no_removal_and_bad_credentials_are_unauthorized() {
    let fake = Fake::start(0, None, |n, _| if n < 2 { Reply::Silent } else { OK }).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let one_retry = RetryPolicy::linear(Duration::from_millis(10), Duration::from_millis(10), 1);
    let config = fake.config(&events).with_retry_policy(one_retry.unwrap());
    let mut client = Client::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap();
    client.push(reading(7)).unwrap();
    // Two publishes, neither acknowledged: the send gives up and the
    // reading stays buffered.
    let err = client.flush().await.unwrap_err();
    assert!(err.is_gave_up(), "{err}");
    assert_eq!(retry_causes(&events), [RetryCause::RequestTimeout]);
    assert_eq!(client.buffer().len(), 1);
    // The third is acknowledged: only now does it leave.
    client.flush().await.unwrap();
    assert!(client.buffer().is_empty());
    fake.seen(|s| assert_eq!(s.publishes.len(), 3));

    let refusing = Fake::start(0x86, None, |_, _| OK).await;
    let (mut client, events) = new_client(&refusing, 100);
    client.push(reading(1)).unwrap();
    let err = client.flush().await.unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert_eq!(client.buffer().len(), 1);
    assert!(
        retry_causes(&events).is_empty(),
        "credentials are not retried"
    );
    refusing.seen(|s| assert!(s.publishes.is_empty()));
}

#[tokio::test]
async fn a_session_idle_past_half_the_keep_alive_is_pinged_first() {
    // The server asks for a 2 s keep-alive.
    let fake = Fake::start(0, Some(2), |_, _| OK).await;
    let (mut client, _) = new_client(&fake, 100);
    client.send(reading(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    client.send(reading(2)).await.unwrap();
    fake.seen(|s| {
        assert_eq!(s.pings, 1);
        assert_eq!(s.connects.len(), 1, "the pinged session was reused");
    });
}

#[tokio::test]
async fn a_session_the_server_closed_while_idle_is_replaced_without_a_retry() {
    let fake = Fake::start(0, None, |_, _| Reply::AckThenClose).await;
    let (mut client, events) = new_client(&fake, 100);
    client.send(reading(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.send(reading(2)).await.unwrap();
    assert!(
        retry_causes(&events).is_empty(),
        "a stale session is no failure"
    );
    fake.seen(|s| {
        let seqs: Vec<Vec<u64>> = s.publishes.iter().map(|p| p.1.clone()).collect();
        // Seq 2 was written to the closed session (unread), then sent
        // again at once on a new one.
        assert_eq!(seqs, [vec![1], vec![2]]);
        assert_eq!(s.connects.len(), 2);
    });
}

#[tokio::test]
async fn several_publishes_in_flight_stay_within_the_servers_receive_maximum() {
    // The server answers only once 3 PUBLISHes wait: one at a time, the
    // client would get no PUBACK at all.
    let fake = Fake::start_with(0, None, Some(3), |_, _| Reply::AckWhen(3)).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let config = fake
        .config(&events)
        .with_batch(5, 1 << 20)
        .with_mqtt_max_in_flight(8);
    let mut client = Client::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap();
    for s in 0..45 {
        client.push(reading(s)).unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!((report.acknowledged, report.requests), (45, 9));
    assert!(client.buffer().is_empty());
    assert_eq!(retry_causes(&events), []);
    fake.seen(|s| {
        assert_eq!(s.connects.len(), 1);
        assert_eq!(s.max_in_flight, 3, "8 allowed, the server's 3 kept");
        let seqs: Vec<u64> = s.publishes.iter().flat_map(|p| p.1.clone()).collect();
        assert_eq!(seqs, (0..45).collect::<Vec<_>>());
    });
    let acked: Vec<(u64, u64)> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Acknowledged {
                first_seq,
                last_seq,
                ..
            } => Some((*first_seq, *last_seq)),
            _ => None,
        })
        .collect();
    let want: Vec<(u64, u64)> = (0..9).map(|b| (b * 5, b * 5 + 4)).collect();
    assert_eq!(acked, want, "acknowledged batch by batch, in order");
}

#[tokio::test]
async fn an_unanswered_publish_in_a_window_is_resent_with_the_ones_after_it_in_order() {
    // The second PUBLISH never gets its PUBACK; the two after it do.
    let fake = Fake::start(0, None, |n, _| if n == 1 { Reply::Silent } else { OK }).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let config = fake
        .config(&events)
        .with_batch(5, 1 << 20)
        .with_mqtt_max_in_flight(4);
    let mut client = Client::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap();
    for s in 0..20 {
        client.push(reading(s)).unwrap();
    }
    let report = client.flush().await.unwrap();
    assert_eq!(report.acknowledged, 20);
    assert!(client.buffer().is_empty());
    assert_eq!(retry_causes(&events).len(), 1, "one timeout, one retry");
    fake.seen(|s| {
        assert_eq!(s.connects.len(), 2);
        let batches: Vec<u64> = s.publishes.iter().map(|p| p.1[0]).collect();
        // The first window, then on a new session the unanswered batch
        // and the ones after it (their PUBACKs came but out of order:
        // nothing leaves the buffer past a missing one), in order.
        assert_eq!(batches, [0, 5, 10, 15, 5, 10, 15]);
    });
    let acked: Vec<u64> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Acknowledged { first_seq, .. } => Some(*first_seq),
            _ => None,
        })
        .collect();
    assert_eq!(acked, [0, 5, 10, 15]);
}
