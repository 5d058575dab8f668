//! One MQTT connection: CONNECT and authentication, then PUBLISHes
//! answered in order, each PUBACK only after the broker confirmed.
//!
//! A single task per connection: it reads packets, keeps the publishes in
//! flight in arrival order (PUBACKs must go out in the order the PUBLISHes
//! came), and watches the keep-alive, a takeover and the service's drain.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use mqtt_proto::{Pid, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::codec::{self, DecodeError, Frame, Grant, Inbound, Outbound, Version};
use super::publish::{self, Refusal};
use super::reason::Reason;
use super::{Ctx, Phase};
use crate::wire::is_valid_device_id;

/// Longest client id kept (bytes).
const MAX_CLIENT_ID: usize = 256;
/// Largest CONNECT read (a will message and properties included).
const MAX_CONNECT: usize = 64 * 1024;
/// Packets larger than this need one of the service's buffer slots before
/// their body is read, as HTTP bodies need an in-flight slot: the memory
/// of half-received large packets is bounded by slots, not connections.
const LARGE_PACKET: usize = 16 * 1024;

/// How a connection ended (the metric label).
pub(super) type Ended = &'static str;

struct Done {
    pid: Option<Pid>,
    result: Result<(), Refusal>,
}

type InFlight = Pin<Box<dyn Future<Output = Done> + Send>>;

/// Counts a publish as in flight while its future lives.
struct Counted(prometheus_client::metrics::gauge::Gauge);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Conn<IO> {
    io: IO,
    buf: BytesMut,
    ctx: Arc<Ctx>,
    version: Version,
    /// Reason strings may go on PUBACKs (5.0 clients that did not opt out).
    reason_strings: bool,
}

enum Read {
    Packet(bytes::Bytes),
    End(Ended),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    async fn send(&mut self, packet: Outbound) -> bool {
        let Some(bytes) = codec::encode(self.version, packet) else {
            return false;
        };
        let write = self.io.write_all(&bytes);
        matches!(
            tokio::time::timeout(self.ctx.write_timeout(), write).await,
            Ok(Ok(()))
        )
    }

    /// Ends the connection with `reason` (a DISCONNECT in 5.0, a close in
    /// 3.1.1) and counts it.
    async fn end(&mut self, reason: Reason, why: &str) -> Ended {
        self.send(Outbound::Disconnect(reason, why.to_owned()))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
        reason.label()
    }

    /// Reads until a whole packet is buffered or `deadline` passes.
    /// Only used before the session: the first packet must be a CONNECT,
    /// so anything else is refused at its first byte.
    async fn read_packet(&mut self, max: usize, deadline: Instant) -> Read {
        loop {
            if self.buf.first().is_some_and(|b| *b != 0x10) {
                return Read::End("malformed");
            }
            match codec::frame(&self.buf, max) {
                Frame::Complete(n) => return Read::Packet(self.buf.split_to(n).freeze()),
                Frame::TooLarge(_) => return Read::End("packet_too_large"),
                Frame::Malformed => return Read::End("malformed"),
                Frame::Partial { total } => self.buf.reserve(total - self.buf.len()),
                Frame::Incomplete => self.buf.reserve(64),
            }
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Read::End("eof"),
                Ok(Ok(_)) => {}
                Err(_) => return Read::End("connect_timeout"),
            }
        }
    }
}

/// Serves one connection (TLS already done) until it ends; returns why.
pub(super) async fn run<IO>(io: IO, ctx: Arc<Ctx>, phase: watch::Receiver<Phase>) -> Ended
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        io,
        buf: BytesMut::new(),
        ctx: ctx.clone(),
        version: Version::V3,
        reason_strings: false,
    };
    let deadline = Instant::now() + ctx.serve.header_read_timeout;
    let packet = match conn.read_packet(MAX_CONNECT, deadline).await {
        Read::Packet(p) => p,
        Read::End(why) => {
            if why != "eof" {
                ctx.metrics.connect("unknown", why);
            }
            return why;
        }
    };
    let connect = match codec::decode_connect(&packet) {
        Ok(c) => c,
        Err(DecodeError::UnsupportedVersion) => {
            // 3.1.1 says to answer an unknown level with its CONNACK 0x01.
            conn.send(Outbound::Connack(Err(Reason::UnsupportedVersion)))
                .await;
            ctx.metrics.connect("unknown", "unsupported_version");
            return "unsupported_version";
        }
        Err(DecodeError::Malformed(why)) => {
            tracing::debug!(why, "Malformed MQTT CONNECT.");
            ctx.metrics.connect("unknown", "malformed");
            return "malformed";
        }
    };
    conn.version = connect.version;
    conn.reason_strings = connect.reason_strings;
    let label = connect.version.label();
    let session = match accept(&ctx, &connect) {
        Ok(s) => s,
        Err(reason) => {
            conn.send(Outbound::Connack(Err(reason))).await;
            ctx.metrics.connect(label, reason.label());
            return reason.label();
        }
    };
    ctx.metrics.connect(label, "accepted");
    let claim = ctx.sessions.claim(&session.device, &session.client_id);
    if !conn.send(Outbound::Connack(Ok(session.grant))).await {
        return "eof";
    }
    let device = session.device;
    tracing::debug!(device, version = label, "MQTT session open.");
    serve(&mut conn, &device, session.keep_alive, claim, phase).await
}

struct Session {
    device: String,
    client_id: String,
    keep_alive: Duration,
    grant: Grant,
}

/// Checks a CONNECT: what the session gets, or the CONNACK's refusal.
fn accept(ctx: &Ctx, c: &codec::Connect) -> Result<Session, Reason> {
    if c.auth_method {
        return Err(Reason::BadAuthMethod);
    }
    let device = c.username.as_deref().unwrap_or_default();
    if !is_valid_device_id(device) {
        return Err(Reason::BadCredentials);
    }
    if let Some(keys) = &ctx.state.config.keys {
        let password = c.password.as_deref().unwrap_or_default();
        let token = std::str::from_utf8(password).map_err(|_| Reason::BadCredentials)?;
        keys.verify_token(device, token)
            .map_err(|_| Reason::BadCredentials)?;
    }
    if c.client_id.len() > MAX_CLIENT_ID {
        return Err(Reason::ClientIdInvalid);
    }
    // 3.1.1: an empty id asks for a session the server cannot name.
    if c.client_id.is_empty() && c.version == Version::V3 && !c.clean_start {
        return Err(Reason::ClientIdInvalid);
    }
    if ctx.state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Reason::ServerUnavailable);
    }
    let max = u16::try_from(ctx.config.max_keep_alive.as_secs())
        .unwrap_or(u16::MAX)
        .max(1);
    let keep_alive = if c.keep_alive == 0 || c.keep_alive > max {
        max
    } else {
        c.keep_alive
    };
    let assigned = c
        .client_id
        .is_empty()
        .then(|| ctx.sessions.assign_id(device));
    Ok(Session {
        device: device.to_owned(),
        client_id: assigned.clone().unwrap_or_else(|| c.client_id.clone()),
        // The 1.5 × rule of both versions.
        keep_alive: Duration::from_millis(u64::from(keep_alive) * 1500),
        grant: Grant {
            receive_maximum: ctx.config.receive_maximum,
            max_packet: u32::try_from(ctx.config.max_packet_bytes).unwrap_or(u32::MAX),
            server_keep_alive: (keep_alive != c.keep_alive).then_some(keep_alive),
            assigned_client_id: assigned,
        },
    })
}

/// The connected state, until the connection ends.
async fn serve<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<IO>,
    device: &str,
    keep_alive: Duration,
    claim: super::sessions::Claim,
    mut phase: watch::Receiver<Phase>,
) -> Ended {
    let ctx = conn.ctx.clone();
    let max = ctx.config.max_packet_bytes;
    let window = usize::from(ctx.config.receive_maximum);
    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    let mut last_rx = Instant::now();
    let mut packet_started: Option<Instant> = None;
    let mut draining = *phase.borrow() != Phase::Running;
    let mut large_slot = None;
    loop {
        // Handle what is buffered; 3.1.1 clients cannot be told a window,
        // so past it their packets wait in the socket (backpressure).
        let full = in_flight.len() >= window;
        let reading = !(draining || full && conn.version == Version::V3);
        if reading {
            match codec::frame(&conn.buf, max) {
                Frame::Complete(n) => {
                    let packet = conn.buf.split_to(n).freeze();
                    packet_started = None;
                    large_slot = None;
                    if conn.buf.is_empty() && conn.buf.capacity() > LARGE_PACKET {
                        conn.buf = BytesMut::new();
                    }
                    match handle(conn, device, &packet, &mut in_flight).await {
                        Ok(()) => continue,
                        Err(ended) => return ended,
                    }
                }
                Frame::TooLarge(n) => {
                    let why = format!("packet of {n} bytes; the maximum is {max}");
                    return conn.end(Reason::PacketTooLarge, &why).await;
                }
                Frame::Malformed => {
                    return conn
                        .end(Reason::Malformed, "invalid remaining length")
                        .await;
                }
                Frame::Partial { total } => {
                    packet_started.get_or_insert_with(Instant::now);
                    if total > LARGE_PACKET && large_slot.is_none() {
                        match ctx.large_packets.clone().try_acquire_owned() {
                            Ok(slot) => large_slot = Some(slot),
                            Err(_) => {
                                let why = "too many large packets being received; resend";
                                return conn.end(Reason::ServerBusy, why).await;
                            }
                        }
                    }
                    conn.buf.reserve((total - conn.buf.len()).min(LARGE_PACKET));
                }
                Frame::Incomplete => {
                    if !conn.buf.is_empty() {
                        packet_started.get_or_insert_with(Instant::now);
                    }
                    conn.buf.reserve(256);
                }
            }
        }
        if draining && in_flight.is_empty() {
            return conn
                .end(Reason::ShuttingDown, "this replica is shutting down")
                .await;
        }
        let mut deadline = last_rx + keep_alive;
        if let Some(started) = packet_started {
            deadline = deadline.min(started + ctx.state.config.body_timeout);
        }
        tokio::select! {
            read = conn.io.read_buf(&mut conn.buf), if reading => match read {
                Ok(0) | Err(_) => return "eof",
                Ok(_) => last_rx = Instant::now(),
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(ended) = answer(conn, done).await {
                    return ended;
                }
            }
            () = tokio::time::sleep_until(deadline), if reading => {
                return if packet_started.is_some_and(|s| s + ctx.state.config.body_timeout <= Instant::now()) {
                    conn.end(Reason::KeepAliveTimeout, "a packet did not arrive whole in time").await;
                    "packet_timeout"
                } else {
                    conn.end(Reason::KeepAliveTimeout, "").await
                };
            }
            () = claim.taken_over() => {
                return conn.end(Reason::SessionTakenOver, "another connection of this client id").await;
            }
            changed = phase.changed() => {
                let now = if changed.is_ok() { *phase.borrow() } else { Phase::Closing };
                match now {
                    Phase::Running => {}
                    Phase::Draining => draining = true,
                    Phase::Closing => {
                        return conn.end(Reason::ShuttingDown, "this replica is shutting down").await;
                    }
                }
            }
        }
    }
}

/// Acts on one complete packet of a connected client.
async fn handle<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<IO>,
    device: &str,
    packet: &[u8],
    in_flight: &mut FuturesOrdered<InFlight>,
) -> Result<(), Ended> {
    let inbound = match codec::decode(conn.version, packet) {
        Ok(p) => p,
        Err(DecodeError::Malformed(why)) => {
            return Err(conn.end(Reason::Malformed, &why).await);
        }
        Err(DecodeError::UnsupportedVersion) => {
            return Err(conn.end(Reason::ProtocolError, "a second CONNECT").await);
        }
    };
    let ctx = conn.ctx.clone();
    match inbound {
        Inbound::Publish(p) => {
            if p.topic_alias {
                return Err(conn
                    .end(Reason::TopicAliasInvalid, "topic alias maximum is 0")
                    .await);
            }
            match (p.qos, p.pid) {
                (QoS::Level2, _) => {
                    ctx.metrics.publish(2, Reason::QosNotSupported.label());
                    let why = "QoS 2 is not supported; publish with QoS 1";
                    return Err(conn.end(Reason::QosNotSupported, why).await);
                }
                (QoS::Level1, Some(_))
                    if in_flight.len() >= usize::from(ctx.config.receive_maximum) =>
                {
                    ctx.metrics
                        .publish(1, Reason::ReceiveMaximumExceeded.label());
                    return Err(conn.end(Reason::ReceiveMaximumExceeded, "").await);
                }
                (QoS::Level0, _) if in_flight.len() >= usize::from(ctx.config.receive_maximum) => {
                    // QoS 0 is best effort: past the window it is dropped.
                    ctx.metrics.publish(0, "dropped");
                    return Ok(());
                }
                _ => {}
            }
            let topic = publish::check_topic(device, &p.topic);
            let (pid, payload) = (p.pid, p.payload);
            let (state, device) = (ctx.state.clone(), device.to_owned());
            let gauge = ctx.metrics.in_flight.clone();
            gauge.inc();
            let counted = Counted(gauge);
            in_flight.push_back(Box::pin(async move {
                let _counted = counted;
                let result = match topic {
                    Ok(()) => publish::accept(state, device, payload).await,
                    Err(refusal) => Err(refusal),
                };
                Done { pid, result }
            }));
            Ok(())
        }
        Inbound::Pingreq => send_or_end(conn, Outbound::Pingresp).await,
        Inbound::Subscribe { pid, filters } => {
            send_or_end(conn, Outbound::Suback { pid, filters }).await
        }
        Inbound::Unsubscribe { pid, filters } => {
            send_or_end(conn, Outbound::Unsuback { pid, filters }).await
        }
        Inbound::Disconnect => Err("client"),
        Inbound::Pubrel => Err(conn
            .end(Reason::ProtocolError, "no QoS 2 flow exists")
            .await),
        Inbound::Connect(_) => Err(conn.end(Reason::ProtocolError, "a second CONNECT").await),
        Inbound::Unexpected(what) => {
            let why = format!("{what} is not sent by a client of this server");
            Err(conn.end(Reason::ProtocolError, &why).await)
        }
    }
}

async fn send_or_end<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<IO>,
    packet: Outbound,
) -> Result<(), Ended> {
    if conn.send(packet).await {
        Ok(())
    } else {
        Err("eof")
    }
}

/// Answers the oldest publish once settled: a PUBACK, or the end of the
/// connection for a transient failure (the client resends).
async fn answer<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<IO>,
    done: Done,
) -> Result<(), Ended> {
    let metrics = conn.ctx.metrics.clone();
    let Some(pid) = done.pid else {
        // QoS 0: best effort, counted, never answered.
        match done.result {
            Ok(()) => metrics.publish(0, "accepted"),
            Err((reason, _)) => metrics.publish(0, reason.label()),
        }
        return Ok(());
    };
    match done.result {
        Ok(()) => {
            metrics.publish(1, "acked");
            send_or_end(conn, Outbound::Puback(pid, Ok(()))).await
        }
        Err((reason, why)) if reason.is_transient() => {
            metrics.publish(1, "unacknowledged");
            Err(conn.end(reason, &why).await)
        }
        Err((reason, why)) => {
            metrics.publish(1, reason.label());
            if conn.version == Version::V3 {
                // 3.1.1 has no error PUBACK: closing is the only refusal
                // that does not claim the reading was taken.
                return Err(conn.end(reason, &why).await);
            }
            let why = if conn.reason_strings {
                why
            } else {
                String::new()
            };
            send_or_end(conn, Outbound::Puback(pid, Err((reason, why)))).await
        }
    }
}

/// Answers a connection over the cap: reads its CONNECT (bounded) and
/// refuses it with "server busy" in its own version.
pub(super) async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(io: IO, ctx: Arc<Ctx>) {
    let mut conn = Conn {
        io,
        buf: BytesMut::new(),
        ctx: ctx.clone(),
        version: Version::V3,
        reason_strings: false,
    };
    let deadline = Instant::now() + ctx.serve.handshake_timeout;
    if let Read::Packet(p) = conn.read_packet(MAX_CONNECT, deadline).await
        && let Ok(c) = codec::decode_connect(&p)
    {
        conn.version = c.version;
        conn.send(Outbound::Connack(Err(Reason::ServerBusy))).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.io.shutdown()).await;
}
