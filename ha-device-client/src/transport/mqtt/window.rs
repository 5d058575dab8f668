//! Several PUBLISHes in flight (`with_mqtt_max_in_flight`): a window of
//! batches is written at once, then the PUBACKs are read in order (a server
//! answers QoS 1 publishes in the order it received them). The caller
//! acknowledges batches in order up to the first answer that is not a
//! success; the rest stay buffered and go again, in order, in the next
//! window.

use std::time::Duration;

use bytes::Bytes;
use mqtt_proto::v5::Publish;
use mqtt_proto::{Encodable, Pid, QosPid, TopicName};
use tokio::time::{Instant, timeout};

use super::frame::{self, Incoming};
use super::{Failure, MqttLink, Session, codes, protocol, timed_out, write_packet};
use crate::error::Error;
use crate::event::Event;
use crate::transport::{Response, Window};

impl MqttLink {
    /// The most batches one window may take: the configured maximum, within
    /// the server's Receive Maximum once a session is up.
    pub(crate) fn window(&self) -> usize {
        let mut n = self.max_in_flight;
        if let Some(session) = &self.session {
            n = n.min(session.receive_max);
        }
        usize::from(n.max(1))
    }

    /// Publishes `bodies` (a window; cut to the server's Receive Maximum)
    /// without waiting between them, connecting first if need be; the
    /// answers in order, ending with the first failure, if any.
    pub(crate) async fn publish_window(
        &mut self,
        bodies: &[Vec<u8>],
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Window {
        if self.session.as_ref().is_some_and(|s| s.busy) {
            self.close("an earlier publish was abandoned", events);
        }
        self.check_idle(events).await;
        let mut reused = self.session.is_some();
        loop {
            if self.session.is_none() {
                let opened = match self.open(events).await {
                    Ok(super::Opened::Session(s)) => s,
                    Ok(super::Opened::Refused(r)) => return one(Ok(r)),
                    Err(e) => return one(Err(e)),
                };
                self.session = Some(*opened);
            }
            let Some(session) = self.session.as_mut() else {
                continue;
            };
            let n = bodies.len().min(usize::from(session.receive_max)).max(1);
            match session
                .exchange_window(&self.topic, &bodies[..n], self.request_timeout)
                .await
            {
                Ok((window, None)) => return window,
                Ok((window, Some(closed))) => {
                    self.close(&closed, events);
                    return window;
                }
                // Found closed before any answer: an idle connection the
                // server dropped. The whole window goes again, once.
                Err((window, f)) if reused && f.stale && window.answers.is_empty() => {
                    tracing::debug!(error = %f.error, "Idle MQTT connection was closed; reconnecting.");
                    self.close(&f.error.to_string(), events);
                    reused = false;
                }
                Err((mut window, f)) => {
                    self.close(&f.error.to_string(), events);
                    window.answers.push(Err(f.error));
                    return window;
                }
            }
        }
    }
}

fn one(answer: Result<Response, Error>) -> Window {
    Window {
        written: 0,
        answers: vec![answer],
    }
}

impl Session {
    /// Writes a PUBLISH per body, then reads their PUBACKs in order. Ok:
    /// the answers (and why the session ended, after a DISCONNECT); Err:
    /// the answers so far and the failure that ended the exchange.
    async fn exchange_window(
        &mut self,
        topic: &TopicName,
        bodies: &[Vec<u8>],
        limit: Duration,
    ) -> Result<(Window, Option<String>), (Window, Failure)> {
        let mut packets: Vec<(Pid, Vec<u8>)> = Vec::with_capacity(bodies.len());
        // A body the server would refuse unread ends the window: it is
        // answered here, as a 413 (split), after the ones before it.
        let mut too_large = None;
        let mut pid = self.next_pid;
        #[allow(
            clippy::explicit_counter_loop,
            reason = "a packet id wraps from 65,535 to 1, which a range does not"
        )]
        for body in bodies {
            let payload = Bytes::copy_from_slice(body);
            let mut publish = Publish::new(QosPid::Level1(pid), topic.clone(), payload);
            publish.properties.payload_is_utf8 = Some(true);
            let size = mqtt_proto::total_len(publish.encode_len()).unwrap_or(usize::MAX);
            if self.max_packet.is_some_and(|max| size > max as usize) {
                too_large = Some(codes::answer(
                    "PUBLISH",
                    0x95,
                    "larger than the server's maximum packet size",
                ));
                break;
            }
            let bytes = frame::encode(0x32, &publish).map_err(|error| {
                let failure = Failure {
                    error,
                    stale: false,
                };
                (Window::default(), failure)
            })?;
            packets.push((pid, bytes));
            pid += 1;
        }
        let mut window = Window::default();
        self.busy = true;
        self.reader.expect_answer();
        for (_, bytes) in &packets {
            if let Err(f) = write_packet(&mut self.stream, Ok(bytes.clone())).await {
                return Err((window, f));
            }
            self.last_sent = Instant::now();
            self.next_pid += 1;
            window.written += 1;
        }
        for (expected, _) in &packets {
            match timeout(limit, self.puback(*expected)).await {
                Err(_) => return Err((window, timed_out(limit))),
                Ok(Err(f)) => return Err((window, f)),
                Ok(Ok(Ok(answer))) => window.answers.push(answer),
                Ok(Ok(Err((code, reason)))) => {
                    self.busy = false;
                    window
                        .answers
                        .push(codes::answer("DISCONNECT", code, &reason));
                    let closed = format!("server DISCONNECT {code:#04x} {reason}");
                    return Ok((window, Some(closed)));
                }
            }
        }
        if let Some(answer) = too_large {
            window.answers.push(answer);
        }
        self.busy = false;
        Ok((window, None))
    }

    /// Reads until the PUBACK for `pid`: its answer, or the server's
    /// DISCONNECT (code, reason).
    async fn puback(
        &mut self,
        pid: Pid,
    ) -> Result<Result<Result<Response, Error>, (u8, String)>, Failure> {
        loop {
            match self.reader.next(&mut self.stream).await? {
                Incoming::Puback {
                    pid: p,
                    code,
                    reason,
                } if p == pid.value() => {
                    return Ok(Ok(codes::answer("PUBACK", code, &reason)));
                }
                Incoming::Puback { pid: p, .. } => {
                    tracing::debug!(pid = p, "PUBACK out of order; ignored.");
                }
                Incoming::Pingresp => {}
                Incoming::Disconnect { code, reason } => return Ok(Err((code, reason))),
                Incoming::Connack { .. } => return Err(protocol("CONNACK", "PUBACK")),
                Incoming::Other(what) => return Err(protocol(what, "PUBACK")),
            }
        }
    }
}
