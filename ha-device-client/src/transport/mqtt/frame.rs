//! Reading whole MQTT 5 packets off a stream: the fixed header's
//! remaining length frames a packet, `mqtt-proto` decodes it. A DISCONNECT
//! whose reason code the codec does not know (0x88 is valid in a CONNACK
//! but not in a DISCONNECT, and servers send it anyway) is still read for
//! its code.

use mqtt_proto::Encodable;
use mqtt_proto::v5::{Connack, Disconnect, Header, PacketType, Puback};
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

/// Why reading failed, and whether the server had sent nothing since the
/// exchange began (a kept-alive connection it had closed while idle).
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

    /// Starts a new exchange: "silent" now means nothing came back since.
    pub(super) fn expect_answer(&mut self) {
        self.got_any = false;
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
    let bad = |e: &dyn std::fmt::Display| Error::Protocol(format!("MQTT packet: {e}"));
    let header_len = frame_header_len(frame);
    let body = &frame[header_len..];
    let header =
        Header::new_with(frame[0], body.len() as u32, frame.len() as u32).map_err(|e| bad(&e))?;
    let text = |s: &Option<std::sync::Arc<str>>| s.as_deref().unwrap_or_default().to_owned();
    let mut offset = 0;
    // Each packet is decoded by its own type's decoder, not `Packet::decode`:
    // that one drags in every packet type's async decoder (about 100 KB of
    // the device binary).
    Ok(match header.typ {
        PacketType::Connack => {
            let c = Connack::decode(body, &mut offset, header).map_err(|e| bad(&e))?;
            Incoming::Connack {
                code: c.reason_code as u8,
                reason: text(&c.properties.reason_string),
                packet: Box::new(c),
            }
        }
        PacketType::Puback => match Puback::decode(body, &mut offset, header) {
            Ok(p) => Incoming::Puback {
                pid: p.pid.value(),
                code: p.reason_code as u8,
                reason: text(&p.properties.reason_string),
            },
            // A reason code the codec does not know is still a reason code.
            Err(_) if body.len() >= 3 => Incoming::Puback {
                pid: u16::from_be_bytes([body[0], body[1]]),
                code: body[2],
                reason: String::new(),
            },
            Err(e) => return Err(bad(&e)),
        },
        PacketType::Pingresp => Incoming::Pingresp,
        PacketType::Disconnect => match Disconnect::decode(body, &mut offset, header) {
            Ok(d) => Incoming::Disconnect {
                code: d.reason_code as u8,
                reason: text(&d.properties.reason_string),
            },
            // 0x88 is valid in a CONNACK but not in a DISCONNECT, and
            // servers send it anyway: the first body byte is the code.
            Err(_) => Incoming::Disconnect {
                code: body.first().copied().unwrap_or(0),
                reason: String::new(),
            },
        },
        PacketType::Publish => Incoming::Other("PUBLISH"),
        PacketType::Auth => Incoming::Other("AUTH"),
        _ => Incoming::Other("an unexpected packet"),
    })
}

/// The fixed header's length of a whole frame (checked by `frame_len`).
fn frame_header_len(frame: &[u8]) -> usize {
    let continued = frame[1..]
        .iter()
        .take(4)
        .take_while(|b| *b & 0x80 != 0)
        .count();
    2 + continued
}

/// The packet `control` + `body`, with its fixed header.
pub(super) fn encode<E: Encodable>(control: u8, body: &E) -> Result<Vec<u8>, Error> {
    let mut len = body.encode_len();
    if len > 268_435_455 {
        return Err(Error::Protocol(format!("MQTT packet of {len} bytes")));
    }
    let mut out = Vec::with_capacity(5 + len);
    out.push(control);
    loop {
        let byte = (len & 0x7F) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    body.encode(&mut out)
        .map_err(|e| Error::Protocol(format!("MQTT encode: {e}")))?;
    Ok(out)
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
        // A PUBACK code the codec does not know.
        match decode(&[0x40, 0x03, 0x00, 0x09, 0x88]).unwrap() {
            Incoming::Puback { pid, code, .. } => assert_eq!((pid, code), (9, 0x88)),
            other => panic!("{other:?}"),
        }
        let p = mqtt_proto::v5::Publish::new(
            mqtt_proto::QosPid::Level1(mqtt_proto::Pid::try_from(3).unwrap()),
            mqtt_proto::TopicName::try_from("readings/d").unwrap(),
            bytes::Bytes::from(vec![b'x'; 300]),
        );
        let ours = encode(0x32, &p).unwrap();
        let theirs = mqtt_proto::v5::Packet::Publish(p).encode().unwrap();
        assert_eq!(ours, theirs.as_ref());
    }
}
