//! Reading whole MQTT 5 packets off a stream: the fixed header's
//! remaining length frames a packet, `mqtt-proto` decodes it. A DISCONNECT
//! whose reason code the codec does not know (0x88 is valid in a CONNACK
//! but not in a DISCONNECT, and servers send it anyway) is still read for
//! its code.

use mqtt_proto::v5::Packet;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::Error;

/// Largest packet accepted from the server: it only sends small
/// acknowledgements, and CONNECT announces this as our maximum.
pub(super) const MAX_INCOMING: u32 = 64 * 1024;

/// A packet from the server, as far as the client cares.
#[derive(Debug)]
pub(super) enum Incoming {
    Connack {
        code: u8,
        reason: String,
        packet: Box<mqtt_proto::v5::Connack>,
    },
    Puback {
        pid: u16,
        code: u8,
        reason: String,
    },
    Pingresp,
    Disconnect {
        code: u8,
        reason: String,
    },
    /// Anything else (a PUBLISH, a SUBACK, an AUTH): never expected.
    Other(&'static str),
}

/// Why reading failed, and whether the server had sent nothing at all on
/// this connection before (a kept-alive connection it had closed).
#[derive(Debug)]
pub(super) struct ReadFailure {
    pub(super) error: Error,
    pub(super) silent: bool,
}

/// Buffers bytes read from the connection across packets.
#[derive(Debug, Default)]
pub(super) struct Reader {
    buf: Vec<u8>,
    got_any: bool,
}

impl Reader {
    /// Reads the next whole packet.
    pub(super) async fn next<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<Incoming, ReadFailure> {
        loop {
            if let Some(len) = frame_len(&self.buf).map_err(|e| self.fail(e))?
                && self.buf.len() >= len
            {
                let frame: Vec<u8> = self.buf.drain(..len).collect();
                return decode(&frame).map_err(|e| self.fail(e));
            }
            let mut chunk = [0u8; 2048];
            match stream.read(&mut chunk).await {
                Ok(0) => {
                    return Err(self.fail(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))));
                }
                Ok(n) => {
                    self.got_any = true;
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) => return Err(self.fail(Error::Io(e))),
            }
        }
    }

    fn fail(&self, error: Error) -> ReadFailure {
        ReadFailure {
            silent: !self.got_any && matches!(error, Error::Io(_)),
            error,
        }
    }
}

/// The length of the packet at the start of `buf`, once its fixed header
/// is complete.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let mut remaining: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if remaining > MAX_INCOMING {
                return Err(Error::Protocol(format!(
                    "MQTT packet of {remaining} bytes from the server (at most {MAX_INCOMING})"
                )));
            }
            return Ok(Some(2 + i + remaining as usize));
        }
    }
    Err(Error::Protocol("MQTT remaining length over 4 bytes".into()))
}

fn decode(frame: &[u8]) -> Result<Incoming, Error> {
    let packet = match Packet::decode(frame) {
        Ok(Some(p)) => p,
        Ok(None) => return Err(Error::Protocol("truncated MQTT packet".into())),
        Err(_) if frame[0] == 0xE0 => {
            // A DISCONNECT the codec refused: its first body byte is the
            // reason code (none means 0x00).
            let code = frame.get(2).copied().unwrap_or(0);
            return Ok(Incoming::Disconnect {
                code,
                reason: String::new(),
            });
        }
        Err(e) => return Err(Error::Protocol(format!("MQTT packet: {e}"))),
    };
    let text = |s: &Option<std::sync::Arc<str>>| s.as_deref().unwrap_or_default().to_owned();
    Ok(match packet {
        Packet::Connack(c) => Incoming::Connack {
            code: c.reason_code as u8,
            reason: text(&c.properties.reason_string),
            packet: Box::new(c),
        },
        Packet::Puback(p) => Incoming::Puback {
            pid: p.pid.value(),
            code: p.reason_code as u8,
            reason: text(&p.properties.reason_string),
        },
        Packet::Pingresp => Incoming::Pingresp,
        Packet::Disconnect(d) => Incoming::Disconnect {
            code: d.reason_code as u8,
            reason: text(&d.properties.reason_string),
        },
        other => Incoming::Other(match other.get_type() {
            mqtt_proto::v5::PacketType::Publish => "PUBLISH",
            mqtt_proto::v5::PacketType::Auth => "AUTH",
            _ => "an unexpected packet",
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_decodes_acks_and_unknown_disconnects() {
        assert_eq!(frame_len(&[0x40]).unwrap(), None);
        assert_eq!(frame_len(&[0x40, 0x02]).unwrap(), Some(4));
        assert_eq!(frame_len(&[0x30, 0x80, 0x01]).unwrap(), Some(3 + 128));
        assert!(
            frame_len(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).is_err(),
            "too large"
        );
        assert!(frame_len(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
        // PUBACK pid 7, 0x97 quota exceeded, no properties.
        match decode(&[0x40, 0x04, 0x00, 0x07, 0x97, 0x00]).unwrap() {
            Incoming::Puback { pid, code, .. } => assert_eq!((pid, code), (7, 0x97)),
            other => panic!("{other:?}"),
        }
        // DISCONNECT 0x88: not a DISCONNECT code in the spec, sent anyway.
        match decode(&[0xE0, 0x02, 0x88, 0x00]).unwrap() {
            Incoming::Disconnect { code, .. } => assert_eq!(code, 0x88),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(&[0xD0, 0x00]).unwrap(), Incoming::Pingresp));
        assert!(decode(&[0x40, 0x01, 0x00]).is_err(), "garbage");
    }
}
