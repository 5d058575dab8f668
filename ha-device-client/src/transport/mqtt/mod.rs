//! MQTT 5 as a second way to the ingest (`mqtts://` URLs, feature `mqtt`).
//!
//! One session per client, opened on demand like the HTTPS connection:
//! TCP + TLS (the same [`Connector`], ALPN `mqtt`), then CONNECT with a
//! clean start, user name = device id, password = token. A batch is one
//! QoS 1 PUBLISH to `readings/<device id>` whose payload is the very body
//! `POST /v1/readings` would carry; by default the client waits for its
//! PUBACK before sending the next (one PUBLISH in flight), or it writes a
//! window of several (`window.rs`, within the server's Receive Maximum);
//! the readings leave the buffer only on a success PUBACK. A broken
//! session loses nothing: the batch is still buffered and is published
//! again, oldest first, on the next connection (the store de-duplicates by
//! `(device_id, seq)`). Reason codes map to the HTTPS path's outcomes in
//! `codes.rs`.
//!
//! Keep-alive: the client owns no task, so it cannot ping while the
//! application is idle. It announces `keep_alive` in CONNECT (the server's
//! Server Keep Alive wins), and before publishing on a connection idle for
//! more than half of it sends PINGREQ and waits for PINGRESP; a connection
//! idle for longer than the keep-alive (which the server has dropped) is
//! replaced. Flushing at least once per keep-alive keeps one session up.

mod codes;
mod frame;
mod window;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqtt_proto::v5::{Connect, ConnectProperties, Publish};
use mqtt_proto::{Encodable, Pid, QosPid, TopicName};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, timeout};

use super::connector::Connector;
use super::response::Response;
use super::tls::Stream;
use crate::error::Error;
use crate::event::Event;
use frame::{Incoming, MAX_INCOMING, ReadFailure, Reader};

/// The topic readings of `device_id` are published to.
fn readings_topic(device_id: &str) -> String {
    format!("readings/{device_id}")
}

/// One client's MQTT session: its settings, and the open connection.
pub(crate) struct MqttLink {
    connector: Arc<Connector>,
    device_id: Arc<str>,
    password: Bytes,
    topic: TopicName,
    keep_alive: Duration,
    request_timeout: Duration,
    /// Publishes allowed unacknowledged at once (`with_mqtt_max_in_flight`).
    max_in_flight: u16,
    session: Option<Session>,
}

struct Session {
    stream: Stream,
    reader: Reader,
    next_pid: Pid,
    /// When the client last sent a packet (keep-alive counts from there).
    last_sent: Instant,
    keep_alive: Duration,
    /// The server's Maximum Packet Size, if it announced one.
    max_packet: Option<u32>,
    /// The server's Receive Maximum (65,535 when it announced none).
    receive_max: u16,
    /// Set while a PUBLISH waits for its PUBACK: if the caller drops the
    /// future, the session's state is unknown and it must not be reused.
    busy: bool,
}

/// Why one exchange on a session failed.
struct Failure {
    error: Error,
    /// The connection was found closed before the server said anything.
    stale: bool,
}

impl From<ReadFailure> for Failure {
    fn from(f: ReadFailure) -> Self {
        Failure {
            error: f.error,
            stale: f.silent,
        }
    }
}

impl MqttLink {
    pub(crate) fn new(
        connector: Arc<Connector>,
        device_id: &str,
        token: &str,
        keep_alive: Duration,
        request_timeout: Duration,
        max_in_flight: u16,
    ) -> Result<Self, Error> {
        let topic = TopicName::try_from(readings_topic(device_id).as_str())
            .map_err(|e| Error::Config(format!("MQTT topic for `{device_id}`: {e}")))?;
        Ok(MqttLink {
            connector,
            device_id: device_id.into(),
            password: Bytes::copy_from_slice(token.as_bytes()),
            topic,
            keep_alive,
            request_timeout,
            max_in_flight,
            session: None,
        })
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    pub(crate) fn close(&mut self, reason: &str, events: &mut (dyn FnMut(Event) + Send)) {
        if self.session.take().is_some() {
            events(Event::Disconnected {
                reason: reason.to_owned(),
            });
        }
    }

    /// Publishes `body` as one QoS 1 PUBLISH and waits for its PUBACK,
    /// connecting first if need be. Returns the answer to act on, as the
    /// HTTPS path's (see `codes.rs`).
    pub(crate) async fn publish(
        &mut self,
        body: &[u8],
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Response, Error> {
        if self.session.as_ref().is_some_and(|s| s.busy) {
            self.close("an earlier publish was abandoned", events);
        }
        self.check_idle(events).await;
        let payload = Bytes::copy_from_slice(body);
        let mut reused = self.session.is_some();
        loop {
            if self.session.is_none() {
                match self.open(events).await? {
                    Opened::Session(s) => self.session = Some(*s),
                    Opened::Refused(r) => return Ok(r),
                }
            }
            let Some(session) = self.session.as_mut() else {
                continue;
            };
            match session
                .exchange(&self.topic, payload.clone(), self.request_timeout)
                .await
            {
                // A PUBACK, success or not, leaves the session usable.
                Ok(Exchanged::Answer(answer)) => return answer,
                Ok(Exchanged::Disconnected { code, reason }) => {
                    self.close(&format!("server DISCONNECT {code:#04x} {reason}"), events);
                    return codes::answer("DISCONNECT", code, &reason);
                }
                Err(f) if reused && f.stale => {
                    tracing::debug!(error = %f.error, "Idle MQTT connection was closed; reconnecting.");
                    self.close(&f.error.to_string(), events);
                    reused = false;
                }
                Err(f) => {
                    self.close(&f.error.to_string(), events);
                    return Err(f.error);
                }
            }
        }
    }

    /// Replaces a session idle past its keep-alive, and checks one idle
    /// past half of it with PINGREQ/PINGRESP.
    async fn check_idle(&mut self, events: &mut (dyn FnMut(Event) + Send)) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let idle = session.last_sent.elapsed();
        if session.keep_alive.is_zero() || idle < session.keep_alive / 2 {
            return;
        }
        if idle >= session.keep_alive {
            self.close("idle past the MQTT keep-alive", events);
            return;
        }
        if let Err(f) = session.ping(self.request_timeout).await {
            self.close(&format!("keep-alive ping failed: {}", f.error), events);
        }
    }

    async fn open(&self, events: &mut (dyn FnMut(Event) + Send)) -> Result<Opened, Error> {
        let limit = self.connector.connect_timeout();
        let (mut stream, peer) = self.connector.connect().await?;
        let mut connect = Connect::new(self.device_id.clone(), secs(self.keep_alive));
        connect.username = Some(self.device_id.clone());
        connect.password = Some(self.password.clone());
        connect.properties = ConnectProperties {
            max_packet_size: Some(MAX_INCOMING),
            ..ConnectProperties::default()
        };
        let mut reader = Reader::default();
        let handshake = async {
            write_packet(&mut stream, frame::encode(0x10, &connect)).await?;
            match reader.next(&mut stream).await? {
                Incoming::Connack {
                    code,
                    reason,
                    packet,
                } => Ok::<_, Failure>(Ok((code, reason, packet))),
                Incoming::Disconnect { code, reason } => Ok(Err((code, reason))),
                Incoming::Other(what) => Err(protocol(what, "CONNACK")),
                Incoming::Puback { .. } | Incoming::Pingresp => {
                    Err(protocol("a PUBACK or PINGRESP", "CONNACK"))
                }
            }
        };
        let (code, reason, connack) = match timeout(limit, handshake).await {
            Err(_) => {
                return Err(Error::Timeout {
                    phase: "connect",
                    after: limit,
                });
            }
            Ok(Err(f)) => return Err(f.error),
            Ok(Ok(Err((code, reason)))) => {
                return codes::answer("DISCONNECT", code, &reason).map(Opened::Refused);
            }
            Ok(Ok(Ok(c))) => c,
        };
        if code != 0 {
            return codes::answer("CONNACK", code, &reason).map(Opened::Refused);
        }
        if connack.properties.max_qos == Some(mqtt_proto::QoS::Level0) {
            return Err(Error::Config(
                "the MQTT server offers QoS 0 only; readings need QoS 1".into(),
            ));
        }
        events(Event::Connected { peer });
        let keep_alive = connack
            .properties
            .server_keep_alive
            .map_or(self.keep_alive, |s| Duration::from_secs(s.into()));
        Ok(Opened::Session(Box::new(Session {
            stream,
            reader,
            next_pid: Pid::default(),
            last_sent: Instant::now(),
            keep_alive,
            max_packet: connack.properties.max_packet_size,
            receive_max: connack.properties.receive_max.unwrap_or(u16::MAX).max(1),
            busy: false,
        })))
    }
}

enum Opened {
    Session(Box<Session>),
    /// CONNACK (or DISCONNECT) with a permanent refusal; the connection is dropped.
    Refused(Response),
}

enum Exchanged {
    /// What the PUBACK (or our own size check) came to.
    Answer(Result<Response, Error>),
    Disconnected {
        code: u8,
        reason: String,
    },
}

impl Session {
    async fn exchange(
        &mut self,
        topic: &TopicName,
        payload: Bytes,
        limit: Duration,
    ) -> Result<Exchanged, Failure> {
        let pid = self.next_pid;
        let mut publish = Publish::new(QosPid::Level1(pid), topic.clone(), payload);
        publish.properties.payload_is_utf8 = Some(true);
        let size = mqtt_proto::total_len(publish.encode_len()).unwrap_or(usize::MAX);
        if self.max_packet.is_some_and(|max| size > max as usize) {
            // What the server would refuse unread: split the batch, as 413.
            let answer = codes::answer(
                "PUBLISH",
                0x95,
                "larger than the server's maximum packet size",
            );
            return Ok(Exchanged::Answer(answer));
        }
        self.busy = true;
        self.reader.expect_answer();
        let result = timeout(limit, async {
            write_packet(&mut self.stream, frame::encode(0x32, &publish)).await?;
            self.last_sent = Instant::now();
            self.next_pid += 1;
            loop {
                match self.reader.next(&mut self.stream).await? {
                    Incoming::Puback {
                        pid: p,
                        code,
                        reason,
                    } if p == pid.value() => {
                        return Ok(Exchanged::Answer(codes::answer("PUBACK", code, &reason)));
                    }
                    Incoming::Puback { pid: p, .. } => {
                        tracing::debug!(pid = p, "PUBACK for an earlier PUBLISH; ignored.");
                    }
                    Incoming::Pingresp => {}
                    Incoming::Disconnect { code, reason } => {
                        return Ok(Exchanged::Disconnected { code, reason });
                    }
                    Incoming::Connack { .. } => return Err(protocol("CONNACK", "PUBACK")),
                    Incoming::Other(what) => return Err(protocol(what, "PUBACK")),
                }
            }
        })
        .await
        .unwrap_or(Err(timed_out(limit)));
        self.busy = false;
        result
    }

    async fn ping(&mut self, limit: Duration) -> Result<(), Failure> {
        self.busy = true;
        let result = timeout(limit, async {
            write_packet(&mut self.stream, Ok(vec![0xC0, 0x00])).await?;
            self.last_sent = Instant::now();
            loop {
                match self.reader.next(&mut self.stream).await? {
                    Incoming::Pingresp => return Ok(()),
                    Incoming::Puback { .. } => {}
                    Incoming::Disconnect { code, .. } => {
                        return Err(Failure {
                            error: Error::Mqtt {
                                packet: "DISCONNECT",
                                code,
                                reason: String::new(),
                                retry_after: None,
                            },
                            stale: false,
                        });
                    }
                    other => return Err(protocol(&format!("{other:?}"), "PINGRESP")),
                }
            }
        })
        .await
        .unwrap_or(Err(timed_out(limit)));
        self.busy = false;
        result
    }
}

async fn write_packet(stream: &mut Stream, packet: Result<Vec<u8>, Error>) -> Result<(), Failure> {
    let bytes = packet.map_err(|error| Failure {
        error,
        stale: false,
    })?;
    let write = async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    };
    write.await.map_err(|e| Failure {
        error: Error::Io(e),
        stale: true,
    })
}

fn timed_out(limit: Duration) -> Failure {
    Failure {
        error: Error::Timeout {
            phase: "request",
            after: limit,
        },
        stale: false,
    }
}

fn protocol(got: &str, expected: &str) -> Failure {
    Failure {
        error: Error::Protocol(format!("MQTT: got {got} while waiting for {expected}")),
        stale: false,
    }
}

/// `d` in whole seconds for the CONNECT header (at most 65,535 s).
fn secs(d: Duration) -> u16 {
    u16::try_from(d.as_secs()).unwrap_or(u16::MAX)
}
