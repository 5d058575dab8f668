//! Framing and the two protocol versions behind one vocabulary: the session
//! speaks [`Inbound`] and [`Outbound`]; this file turns bytes into those
//! (with `mqtt-proto` decoding each complete packet) and back.
//!
//! Framing is done here, not by the codec's stream reader, so that a
//! packet's declared size is checked from its fixed header before any of
//! its body is buffered.

use bytes::Bytes;
use mqtt_proto::{Pid, Protocol, QoS, v3, v5};

use super::reason::Reason;

/// The protocol version a connection speaks, from its CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Version {
    /// 3.1.1 (and 3.1): no reason codes; a refusal closes the connection.
    V3,
    /// 5.0: reason codes on CONNACK, PUBACK and DISCONNECT.
    V5,
}

impl Version {
    pub(super) fn label(self) -> &'static str {
        match self {
            Version::V3 => "3.1.1",
            Version::V5 => "5.0",
        }
    }
}

/// What the fixed header at the start of a buffer says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame {
    /// More bytes are needed to know.
    Incomplete,
    /// A whole packet of `len` bytes (fixed header included) is buffered.
    Complete(usize),
    /// A packet of `total` bytes is announced; only `have` are buffered.
    Partial { total: usize },
    /// The packet announces more than the limit: refused before its body.
    TooLarge(usize),
    /// The remaining length is not a valid variable byte integer.
    Malformed,
}

/// Reads the fixed header at the start of `buf`.
pub(super) fn frame(buf: &[u8], max_packet: usize) -> Frame {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Frame::Incomplete;
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let total = 2 + i + remaining;
            return if total > max_packet {
                Frame::TooLarge(total)
            } else if buf.len() >= total {
                Frame::Complete(total)
            } else {
                Frame::Partial { total }
            };
        }
    }
    Frame::Malformed
}

/// The CONNECT, in either version's terms.
#[derive(Debug)]
pub(super) struct Connect {
    pub version: Version,
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// 5.0: the client asked for enhanced authentication (AUTH packets).
    pub auth_method: bool,
    /// 5.0: the client takes reason strings on PUBACKs (it did not ask
    /// for none, and its maximum packet size leaves room for them).
    pub reason_strings: bool,
}

/// A PUBLISH, in either version's terms.
#[derive(Debug)]
pub(super) struct Publish {
    pub qos: QoS,
    pub pid: Option<Pid>,
    pub topic: String,
    pub payload: Bytes,
    /// 5.0: a topic alias (this server allows none).
    pub topic_alias: bool,
}

/// A packet from a client.
#[derive(Debug)]
pub(super) enum Inbound {
    Connect(Connect),
    Publish(Publish),
    /// PUBREL of a QoS 2 flow (refused: QoS 2 is never accepted).
    Pubrel,
    Subscribe {
        pid: Pid,
        filters: usize,
    },
    Unsubscribe {
        pid: Pid,
        filters: usize,
    },
    Pingreq,
    Disconnect,
    /// A packet only a server sends, or AUTH: a protocol error here.
    Unexpected(&'static str),
}

/// Why a complete packet could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DecodeError {
    /// Not a valid packet (0x81).
    Malformed(String),
    /// CONNECT of a protocol level this server does not speak.
    UnsupportedVersion,
}

/// Decodes the first packet of a connection, which must be a CONNECT.
pub(super) fn decode_connect(packet: &[u8]) -> Result<Connect, DecodeError> {
    if packet.first().map(|b| b >> 4) != Some(1) {
        return Err(DecodeError::Malformed(
            "the first packet must be CONNECT".into(),
        ));
    }
    let body = &packet[mqtt_proto::header_len(packet.len()).min(packet.len())..];
    let version = match Protocol::decode(body, &mut 0) {
        Ok(Protocol::V500) => Version::V5,
        Ok(Protocol::V311 | Protocol::V310) => Version::V3,
        Err(mqtt_proto::Error::InvalidProtocol(..)) => return Err(DecodeError::UnsupportedVersion),
        Err(e) => return Err(DecodeError::Malformed(e.to_string())),
    };
    match decode(version, packet)? {
        Inbound::Connect(c) => Ok(c),
        _ => Err(DecodeError::Malformed("expected CONNECT".into())),
    }
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

fn truncated() -> DecodeError {
    DecodeError::Malformed("the remaining length does not match the packet's content".into())
}

/// Decodes one complete packet (as framed by [`frame`]).
pub(super) fn decode(version: Version, packet: &[u8]) -> Result<Inbound, DecodeError> {
    match version {
        Version::V3 => decode_v3(packet),
        Version::V5 => decode_v5(packet),
    }
}

fn decode_v3(packet: &[u8]) -> Result<Inbound, DecodeError> {
    let p = v3::Packet::decode(packet)
        .map_err(malformed)?
        .ok_or_else(truncated)?;
    Ok(match p {
        v3::Packet::Connect(c) => Inbound::Connect(Connect {
            version: Version::V3,
            client_id: c.client_id.to_string(),
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            username: c.username.map(|u| u.to_string()),
            password: c.password,
            auth_method: false,
            reason_strings: false,
        }),
        v3::Packet::Publish(p) => Inbound::Publish(Publish {
            qos: p.qos_pid.qos(),
            pid: p.qos_pid.pid(),
            topic: p.topic_name.to_string(),
            payload: p.payload,
            topic_alias: false,
        }),
        v3::Packet::Pubrel(_) => Inbound::Pubrel,
        v3::Packet::Subscribe(s) => Inbound::Subscribe {
            pid: s.pid,
            filters: s.topics.len(),
        },
        v3::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pid: u.pid,
            filters: u.topics.len(),
        },
        v3::Packet::Pingreq => Inbound::Pingreq,
        v3::Packet::Disconnect => Inbound::Disconnect,
        v3::Packet::Connack(_) => Inbound::Unexpected("CONNACK"),
        v3::Packet::Puback(_) => Inbound::Unexpected("PUBACK"),
        v3::Packet::Pubrec(_) => Inbound::Unexpected("PUBREC"),
        v3::Packet::Pubcomp(_) => Inbound::Unexpected("PUBCOMP"),
        v3::Packet::Suback(_) => Inbound::Unexpected("SUBACK"),
        v3::Packet::Unsuback(_) => Inbound::Unexpected("UNSUBACK"),
        v3::Packet::Pingresp => Inbound::Unexpected("PINGRESP"),
    })
}

fn decode_v5(packet: &[u8]) -> Result<Inbound, DecodeError> {
    let p = v5::Packet::decode(packet)
        .map_err(malformed)?
        .ok_or_else(truncated)?;
    Ok(match p {
        v5::Packet::Connect(c) => Inbound::Connect(Connect {
            version: Version::V5,
            client_id: c.client_id.to_string(),
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            username: c.username.map(|u| u.to_string()),
            password: c.password,
            auth_method: c.properties.auth_method.is_some(),
            reason_strings: c.properties.request_problem_info != Some(false)
                && c.properties.max_packet_size.is_none_or(|m| m >= 512),
        }),
        v5::Packet::Publish(p) => Inbound::Publish(Publish {
            qos: p.qos_pid.qos(),
            pid: p.qos_pid.pid(),
            topic: p.topic_name.to_string(),
            payload: p.payload,
            topic_alias: p.properties.topic_alias.is_some(),
        }),
        v5::Packet::Pubrel(_) => Inbound::Pubrel,
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pid: s.pid,
            filters: s.topics.len(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pid: u.pid,
            filters: u.topics.len(),
        },
        v5::Packet::Pingreq => Inbound::Pingreq,
        v5::Packet::Disconnect(_) => Inbound::Disconnect,
        v5::Packet::Auth(_) => Inbound::Unexpected("AUTH"),
        v5::Packet::Connack(_) => Inbound::Unexpected("CONNACK"),
        v5::Packet::Puback(_) => Inbound::Unexpected("PUBACK"),
        v5::Packet::Pubrec(_) => Inbound::Unexpected("PUBREC"),
        v5::Packet::Pubcomp(_) => Inbound::Unexpected("PUBCOMP"),
        v5::Packet::Suback(_) => Inbound::Unexpected("SUBACK"),
        v5::Packet::Unsuback(_) => Inbound::Unexpected("UNSUBACK"),
        v5::Packet::Pingresp => Inbound::Unexpected("PINGRESP"),
    })
}

/// What the CONNACK grants (5.0 properties; 3.1.1 carries none of it).
#[derive(Debug, Default)]
pub(super) struct Grant {
    pub receive_maximum: u16,
    pub max_packet: u32,
    /// Sent when the server chose another keep-alive than the client's.
    pub server_keep_alive: Option<u16>,
    /// Sent when the client left its id empty.
    pub assigned_client_id: Option<String>,
}

/// A packet to a client.
#[derive(Debug)]
pub(super) enum Outbound {
    Connack(Result<Grant, Reason>),
    Puback(Pid, Result<(), (Reason, String)>),
    Suback {
        pid: Pid,
        filters: usize,
    },
    Unsuback {
        pid: Pid,
        filters: usize,
    },
    Pingresp,
    /// 5.0 only: the session encodes nothing for 3.1.1 and just closes.
    Disconnect(Reason, String),
}

/// The bytes of `packet` for a client of `version`; `None` when that
/// version has no such packet (a 3.1.1 DISCONNECT from the server, an
/// error PUBACK): the session then closes the connection instead.
pub(super) fn encode(version: Version, packet: Outbound) -> Option<Vec<u8>> {
    let bytes = match version {
        Version::V3 => encode_v3(packet)?.encode(),
        Version::V5 => encode_v5(packet).encode(),
    };
    // Encoding fails only for packets over 256 MiB; ours are tiny.
    bytes.ok().map(|b| b.as_ref().to_vec())
}

fn encode_v3(packet: Outbound) -> Option<v3::Packet> {
    use v3::ConnectReturnCode as C;
    Some(match packet {
        Outbound::Connack(grant) => {
            let code = match grant {
                Ok(_) => C::Accepted,
                Err(reason) => match reason {
                    Reason::UnsupportedVersion => C::UnacceptableProtocolVersion,
                    Reason::ClientIdInvalid => C::IdentifierRejected,
                    Reason::BadCredentials => C::BadUserNameOrPassword,
                    Reason::NotAuthorized => C::NotAuthorized,
                    _ => C::ServerUnavailable,
                },
            };
            v3::Packet::Connack(v3::Connack::new(false, code))
        }
        Outbound::Puback(pid, Ok(())) => v3::Packet::Puback(pid),
        Outbound::Puback(_, Err(_)) | Outbound::Disconnect(..) => return None,
        Outbound::Suback { pid, filters } => v3::Packet::Suback(v3::Suback::new(
            pid,
            vec![v3::SubscribeReturnCode::Failure; filters],
        )),
        Outbound::Unsuback { pid, .. } => v3::Packet::Unsuback(pid),
        Outbound::Pingresp => v3::Packet::Pingresp,
    })
}

fn reason_string(s: &str) -> Option<std::sync::Arc<str>> {
    (!s.is_empty()).then(|| s.into())
}

fn encode_v5(packet: Outbound) -> v5::Packet {
    match packet {
        Outbound::Connack(Ok(grant)) => {
            let mut c = v5::Connack::new(false, v5::ConnectReasonCode::Success);
            let p = &mut c.properties;
            // Sessions are never kept past the connection (docs/mqtt.md).
            p.session_expiry_interval = Some(0);
            p.receive_max = Some(grant.receive_maximum);
            p.max_qos = Some(QoS::Level1);
            p.max_packet_size = Some(grant.max_packet);
            p.topic_alias_max = Some(0);
            p.wildcard_subscription_available = Some(false);
            p.subscription_id_available = Some(false);
            p.shared_subscription_available = Some(false);
            p.server_keep_alive = grant.server_keep_alive;
            p.assigned_client_id = grant.assigned_client_id.map(Into::into);
            v5::Packet::Connack(c)
        }
        Outbound::Connack(Err(reason)) => {
            let code = v5::ConnectReasonCode::from_u8(reason.code())
                .unwrap_or(v5::ConnectReasonCode::UnspecifiedError);
            v5::Packet::Connack(v5::Connack::new(false, code))
        }
        Outbound::Puback(pid, Ok(())) => v5::Packet::Puback(v5::Puback::new_success(pid)),
        Outbound::Puback(pid, Err((reason, why))) => {
            let code = v5::PubackReasonCode::from_u8(reason.code())
                .unwrap_or(v5::PubackReasonCode::UnspecifiedError);
            let mut p = v5::Puback::new(pid, code);
            p.properties.reason_string = reason_string(&why);
            v5::Packet::Puback(p)
        }
        Outbound::Suback { pid, filters } => v5::Packet::Suback(v5::Suback::new(
            pid,
            vec![v5::SubscribeReasonCode::NotAuthorized; filters],
        )),
        Outbound::Unsuback { pid, filters } => v5::Packet::Unsuback(v5::Unsuback::new(
            pid,
            vec![v5::UnsubscribeReasonCode::NoSubscriptionExisted; filters],
        )),
        Outbound::Pingresp => v5::Packet::Pingresp,
        Outbound::Disconnect(reason, why) => {
            let code = v5::DisconnectReasonCode::from_u8(reason.code())
                .unwrap_or(v5::DisconnectReasonCode::UnspecifiedError);
            let mut d = v5::Disconnect::new(code);
            d.properties.reason_string = reason_string(&why);
            v5::Packet::Disconnect(d)
        }
    }
}

/// A QoS and packet id pair as the codec wants it (tests and clients).
#[cfg(test)]
pub(super) fn qos_pid(qos: QoS, pid: u16) -> mqtt_proto::QosPid {
    use mqtt_proto::QosPid;
    let pid = Pid::try_from(pid).unwrap_or_default();
    match qos {
        QoS::Level0 => QosPid::Level0,
        QoS::Level1 => QosPid::Level1(pid),
        QoS::Level2 => QosPid::Level2(pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_sized_from_the_fixed_header_alone() {
        assert_eq!(frame(&[0x30], 100), Frame::Incomplete);
        assert_eq!(frame(&[0x30, 3, 0, 1], 100), Frame::Partial { total: 5 });
        assert_eq!(frame(&[0x30, 3, 0, 1, 2], 100), Frame::Complete(5));
        // 2 MiB announced, nothing of it sent: refused at once.
        assert_eq!(
            frame(&[0x30, 0x80, 0x80, 0x80, 0x01], 1 << 20),
            Frame::TooLarge(2_097_157)
        );
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 1 << 20),
            Frame::Malformed
        );
    }

    #[test]
    fn connect_of_either_version_decodes_and_others_are_refused() {
        let mut c5 = v5::Connect::new("c1".into(), 30);
        c5.username = Some("dev-1".into());
        c5.password = Some(Bytes::from_static(b"tok"));
        let bytes = v5::Packet::Connect(c5).encode().unwrap();
        let c = decode_connect(bytes.as_ref()).unwrap();
        assert_eq!((c.version, c.keep_alive), (Version::V5, 30));
        assert_eq!(c.username.as_deref(), Some("dev-1"));

        let c3 = v3::Connect::new("c1".into(), 60);
        let bytes = v3::Packet::Connect(c3).encode().unwrap();
        assert_eq!(decode_connect(bytes.as_ref()).unwrap().version, Version::V3);

        let mut level6 = bytes.as_ref().to_vec();
        level6[8] = 6; // protocol level
        assert_eq!(
            decode_connect(&level6).unwrap_err(),
            DecodeError::UnsupportedVersion
        );
        assert!(matches!(
            decode_connect(&[0xc0, 0]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_connect(&[0x10, 3, 0xff, 0xff, 0xff]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn publishes_decode_with_their_qos() {
        let p = v5::Publish::new(
            qos_pid(QoS::Level1, 7),
            "readings/dev-1".try_into().unwrap(),
            Bytes::from_static(b"{}"),
        );
        let bytes = v5::Packet::Publish(p).encode().unwrap();
        match decode(Version::V5, bytes.as_ref()).unwrap() {
            Inbound::Publish(p) => {
                assert_eq!((p.qos, p.pid.map(|p| p.value())), (QoS::Level1, Some(7)));
                assert_eq!(p.topic, "readings/dev-1");
            }
            other => panic!("{other:?}"),
        }
        // QoS 3 does not exist.
        assert!(matches!(
            decode(Version::V3, &[0x36, 2, 0, 0]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn error_acks_and_server_disconnects_do_not_exist_in_3_1_1() {
        let pid = Pid::try_from(1).unwrap();
        let refused = Outbound::Puback(pid, Err((Reason::PayloadFormatInvalid, String::new())));
        assert!(encode(Version::V3, refused).is_none());
        let refused = Outbound::Puback(pid, Err((Reason::PayloadFormatInvalid, "x".into())));
        let bytes = encode(Version::V5, refused).unwrap();
        assert_eq!(&bytes[..5], &[0x40, 8, 0, 1, 0x99]);
        assert!(
            encode(
                Version::V3,
                Outbound::Disconnect(Reason::ServerBusy, String::new())
            )
            .is_none()
        );
        let bytes = encode(
            Version::V5,
            Outbound::Disconnect(Reason::ServerBusy, String::new()),
        )
        .unwrap();
        assert_eq!(
            bytes,
            [0xe0, 1, 0x89],
            "no properties: the length may stop at the code"
        );
    }
}
