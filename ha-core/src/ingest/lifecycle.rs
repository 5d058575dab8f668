//! The ingest service's one lifecycle: serve, hand over, flush, return.

use std::future::Future;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::net::TcpListener;

use super::IngestService;
use crate::http::{ServeConfig, ServeError, serve_handing_over};

impl IngestService {
    /// Serves the service on `listener` (TLS with `tls`) until `shutdown`
    /// resolves, then hands over: `/readyz` answers `503` at once, the
    /// listener keeps accepting for [`ServeConfig::deregister_delay`] so
    /// load balancers move away first, open requests get
    /// [`ServeConfig::drain`] to finish, and what was handed to the
    /// group-commit batchers is published (bounded by the same drain).
    /// Returns when all of that is done; every background task of the
    /// service has ended by then.
    pub async fn run(
        &self,
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        shutdown: impl Future<Output = ()>,
        config: &ServeConfig,
    ) -> Result<(), ServeError> {
        #[cfg(feature = "mqtt")]
        return self
            .run_with_mqtt(listener, tls, None, shutdown, config)
            .await;
        #[cfg(not(feature = "mqtt"))]
        {
            let served = serve_handing_over(
                listener,
                self.router(),
                tls,
                shutdown,
                || self.drain(),
                config,
                self.connection_metrics(),
            )
            .await;
            self.flush(config).await;
            served
        }
    }

    /// [`run`](Self::run) with an MQTT listener beside the HTTP one (feature
    /// `mqtt`): both drain together on `shutdown` (MQTT sessions answer
    /// what is in flight, then get DISCONNECT 0x8B), and the batchers are
    /// flushed once both have stopped.
    #[cfg(feature = "mqtt")]
    pub async fn run_with_mqtt(
        &self,
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        mqtt: Option<super::MqttListener>,
        shutdown: impl Future<Output = ()>,
        config: &ServeConfig,
    ) -> Result<(), ServeError> {
        use super::mqtt::Phase;
        let (phase, phase_rx) = tokio::sync::watch::channel(Phase::Running);
        let http = async {
            let served = serve_handing_over(
                listener,
                self.router(),
                tls,
                shutdown,
                || {
                    self.drain();
                    phase.send_replace(Phase::Draining);
                },
                config,
                self.connection_metrics(),
            )
            .await;
            // Also when serving failed: MQTT must not outlive HTTP.
            phase.send_replace(Phase::Draining);
            served
        };
        let mqtt = async {
            if let Some(mqtt) = mqtt {
                let metrics = self.state.mqtt_metrics.clone();
                super::mqtt::serve(self.state.clone(), metrics, mqtt, phase_rx, config.clone())
                    .await;
            }
        };
        let (served, ()) = tokio::join!(http, mqtt);
        self.flush(config).await;
        served
    }

    /// Publishes what requests and sessions left with the batchers.
    async fn flush(&self, config: &ServeConfig) {
        // The server waited for open requests; publish whatever a request
        // that hung up left with the batchers. Each publish is bounded by
        // the queue's own timeout; this bounds a broker that never answers.
        if tokio::time::timeout(config.drain, self.shutdown())
            .await
            .is_err()
        {
            tracing::error!(
                drain = ?config.drain,
                "Batchers did not finish publishing in time; unconfirmed readings were not acknowledged."
            );
        }
    }
}
