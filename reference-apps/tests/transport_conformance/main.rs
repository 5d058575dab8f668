//! One conformance suite for both device transports: every scenario runs
//! over HTTPS (`POST /v1/readings`) and over MQTT 5 (QoS 1 to
//! `readings/{device}`; once with one PUBLISH in flight, once with up to
//! 4), with the real device client (`ha-device-client`)
//! against the real `ingest-api` (TLS on both listeners) on real RabbitMQ,
//! the `analyzer` storing into real PostgreSQL. Assertions are on the
//! store's rows.
//!
//! | scenario | proves, on either transport |
//! |---|---|
//! | `readings_from_several_devices_are_stored_once` | N readings from several devices, concurrently: each stored once, none resent |
//! | `resends_of_the_same_seq_are_stored_once` | a batch whose ack was lost is resent by the client, and a fresh client resends stored readings: ingest acknowledges every resend, the store keeps one row each |
//! | `a_connection_cut_mid_stream_loses_nothing_and_doubles_nothing` | every connection cut repeatedly while devices stream: all acknowledged, in `seq` order, stored once |
//! | `permanent_refusals_are_reported_alike_and_store_nothing` | a wrong token is `Error::Unauthorized` (401) without retry, readings kept; too-old readings are `Event::Held` (`ts_too_old`); nothing stored |
//!
//! Test names: `https::<scenario>`, `mqtt::<scenario>` and
//! `mqtt_window::<scenario>`. Run with
//! `scripts/test -p reference-apps --all-features --test transport_conformance`.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod pipeline;
mod proxy;
mod scenarios;

/// How the device client reaches ingest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `https://`: `POST /v1/readings`, acknowledged by a 202.
    Https,
    /// `mqtts://`: a QoS 1 PUBLISH, acknowledged by a PUBACK; one in
    /// flight (the client's default).
    Mqtt,
    /// `mqtts://` with up to 4 PUBLISHes in flight
    /// (`ClientConfig::with_mqtt_max_in_flight`).
    MqttWindow,
}

/// One test per scenario and transport: `https::name`, `mqtt::name`,
/// `mqtt_window::name`.
macro_rules! for_both_transports {
    ($($scenario:ident),* $(,)?) => {
        mod https {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::scenarios::$scenario(crate::Transport::Https).await;
                }
            )*
        }
        mod mqtt {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::scenarios::$scenario(crate::Transport::Mqtt).await;
                }
            )*
        }
        mod mqtt_window {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::scenarios::$scenario(crate::Transport::MqttWindow).await;
                }
            )*
        }
    };
}

for_both_transports!(
    readings_from_several_devices_are_stored_once,
    resends_of_the_same_seq_are_stored_once,
    a_connection_cut_mid_stream_loses_nothing_and_doubles_nothing,
    permanent_refusals_are_reported_alike_and_store_nothing,
);
