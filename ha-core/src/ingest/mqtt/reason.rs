//! The MQTT 5 reason codes this server sends, and what each means for the
//! client (docs/mqtt.md has the table).

/// A refusal or an ending, with its MQTT 5 reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    /// 0x81: not a valid packet. DISCONNECT; the connection closes.
    Malformed,
    /// 0x82: a valid packet at the wrong time (a second CONNECT, a PUBACK
    /// from the client, AUTH). DISCONNECT.
    ProtocolError,
    /// 0x84: CONNECT of another protocol level. CONNACK.
    UnsupportedVersion,
    /// 0x85: a client id this server refuses. CONNACK.
    ClientIdInvalid,
    /// 0x86: username (device id) and password (token) do not match. CONNACK.
    BadCredentials,
    /// 0x87: a publish to another device's topic (PUBACK, permanent).
    NotAuthorized,
    /// 0x88: the replica is draining or cannot take devices. CONNACK; try
    /// another replica.
    ServerUnavailable,
    /// 0x89: transient: the broker did not confirm in time, or the replica
    /// is at its in-flight bound. DISCONNECT; reconnect and resend.
    ServerBusy,
    /// 0x8B: the replica is shutting down. DISCONNECT; reconnect (to
    /// another replica) and resend.
    ShuttingDown,
    /// 0x8C: enhanced authentication (AUTH) is not offered. CONNACK.
    BadAuthMethod,
    /// 0x8D: nothing received for 1.5 × the keep-alive. DISCONNECT.
    KeepAliveTimeout,
    /// 0x8E: another connection of the same device and client id. DISCONNECT.
    SessionTakenOver,
    /// 0x90: a topic other than `readings/{device_id}` (PUBACK, permanent).
    TopicNameInvalid,
    /// 0x93: more QoS 1 publishes in flight than the receive maximum. DISCONNECT.
    ReceiveMaximumExceeded,
    /// 0x94: topic aliases are not offered (maximum 0). DISCONNECT.
    TopicAliasInvalid,
    /// 0x95: a packet over the maximum packet size. DISCONNECT.
    PacketTooLarge,
    /// 0x97: the device's rate limit (PUBACK; retry after the reason
    /// string's seconds).
    QuotaExceeded,
    /// 0x99: the payload is not a valid readings body (PUBACK, permanent).
    PayloadFormatInvalid,
    /// 0x9B: QoS 2 (CONNACK for a QoS 2 will; DISCONNECT for a publish).
    QosNotSupported,
}

impl Reason {
    /// The MQTT 5 reason code.
    pub(super) fn code(self) -> u8 {
        match self {
            Reason::Malformed => 0x81,
            Reason::ProtocolError => 0x82,
            Reason::UnsupportedVersion => 0x84,
            Reason::ClientIdInvalid => 0x85,
            Reason::BadCredentials => 0x86,
            Reason::NotAuthorized => 0x87,
            Reason::ServerUnavailable => 0x88,
            Reason::ServerBusy => 0x89,
            Reason::ShuttingDown => 0x8B,
            Reason::BadAuthMethod => 0x8C,
            Reason::KeepAliveTimeout => 0x8D,
            Reason::SessionTakenOver => 0x8E,
            Reason::TopicNameInvalid => 0x90,
            Reason::ReceiveMaximumExceeded => 0x93,
            Reason::TopicAliasInvalid => 0x94,
            Reason::PacketTooLarge => 0x95,
            Reason::QuotaExceeded => 0x97,
            Reason::PayloadFormatInvalid => 0x99,
            Reason::QosNotSupported => 0x9B,
        }
    }

    /// The metric label: a small fixed set.
    pub(super) fn label(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::ProtocolError => "protocol_error",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::ClientIdInvalid => "client_id_invalid",
            Reason::BadCredentials => "bad_credentials",
            Reason::NotAuthorized => "not_authorized",
            Reason::ServerUnavailable => "server_unavailable",
            Reason::ServerBusy => "server_busy",
            Reason::ShuttingDown => "shutting_down",
            Reason::BadAuthMethod => "bad_auth_method",
            Reason::KeepAliveTimeout => "keep_alive_timeout",
            Reason::SessionTakenOver => "session_taken_over",
            Reason::TopicNameInvalid => "topic_name_invalid",
            Reason::ReceiveMaximumExceeded => "receive_maximum_exceeded",
            Reason::TopicAliasInvalid => "topic_alias_invalid",
            Reason::PacketTooLarge => "packet_too_large",
            Reason::QuotaExceeded => "quota_exceeded",
            Reason::PayloadFormatInvalid => "payload_format_invalid",
            Reason::QosNotSupported => "qos_not_supported",
        }
    }

    /// Whether resending the same publish may succeed later (no PUBACK is
    /// sent; the connection ends so the client resends).
    pub(super) fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::ServerBusy | Reason::ShuttingDown | Reason::ServerUnavailable
        )
    }
}
