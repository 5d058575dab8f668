//! Prometheus metrics of the MQTT listener (`ha_ingest_mqtt_*`), in the
//! ingest service's registry. Bounded label sets only: never a device id.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A connection attempt's outcome: `accepted` or a refusal reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectLabel {
    pub version: &'static str,
    pub result: &'static str,
}

/// A publish's outcome: `acked`, `accepted` (QoS 0), a refusal reason, or
/// `unacknowledged` (transient: the connection was closed instead).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PublishLabel {
    pub qos: u8,
    pub outcome: &'static str,
}

/// Why a connection ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CloseLabel {
    pub reason: &'static str,
}

/// The MQTT listener's metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct MqttMetrics {
    pub open: Gauge,
    pub refused: Counter,
    pub connects: Family<ConnectLabel, Counter>,
    pub publishes: Family<PublishLabel, Counter>,
    pub closed: Family<CloseLabel, Counter>,
    pub in_flight: Gauge,
}

impl MqttMetrics {
    /// Creates the metrics and registers them as `ha_ingest_mqtt_*`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = MqttMetrics::default();
        registry.register(
            "ha_ingest_mqtt_connections_open",
            "MQTT connections open",
            m.open.clone(),
        );
        registry.register(
            "ha_ingest_mqtt_connections_refused",
            "MQTT connections refused because the connection cap was reached",
            m.refused.clone(),
        );
        registry.register(
            "ha_ingest_mqtt_connects",
            "MQTT CONNECTs by protocol version and result",
            m.connects.clone(),
        );
        registry.register(
            "ha_ingest_mqtt_publishes",
            "MQTT PUBLISHes by QoS and outcome",
            m.publishes.clone(),
        );
        registry.register(
            "ha_ingest_mqtt_connections_closed",
            "MQTT connections ended, by reason (client, eof, or the server's reason code name)",
            m.closed.clone(),
        );
        registry.register(
            "ha_ingest_mqtt_publishes_in_flight",
            "MQTT publishes awaiting the broker's confirm",
            m.in_flight.clone(),
        );
        m
    }

    pub(crate) fn connect(&self, version: &'static str, result: &'static str) {
        self.connects
            .get_or_create(&ConnectLabel { version, result })
            .inc();
    }

    pub(crate) fn publish(&self, qos: u8, outcome: &'static str) {
        self.publishes
            .get_or_create(&PublishLabel { qos, outcome })
            .inc();
    }

    pub(crate) fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&CloseLabel { reason }).inc();
    }
}
