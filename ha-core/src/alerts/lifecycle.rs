//! The alerts service's one lifecycle: serve, hand over, return.

use std::future::Future;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::net::TcpListener;

use super::AlertsService;
use crate::http::{ServeConfig, ServeError, serve_with};

impl AlertsService {
    /// Serves the API and web UI on `listener` (TLS with `tls`) until
    /// `shutdown` resolves, then hands over: `/readyz` answers `503` and
    /// open event streams end at once (their clients reconnect elsewhere),
    /// the listener keeps accepting for [`ServeConfig::deregister_delay`],
    /// and other requests get [`ServeConfig::drain`] to finish.
    pub async fn run(
        &self,
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        shutdown: impl Future<Output = ()>,
        config: &ServeConfig,
    ) -> Result<(), ServeError> {
        let handover = async {
            shutdown.await;
            self.drain();
            tokio::time::sleep(config.deregister_delay).await;
        };
        serve_with(
            listener,
            self.router(),
            tls,
            handover,
            config,
            self.connection_metrics(),
        )
        .await
    }
}
