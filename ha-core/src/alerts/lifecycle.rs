//! The alerts service's one lifecycle: serve, hand over, return.

use std::future::Future;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::net::TcpListener;

use super::AlertsService;
use crate::http::{ServeConfig, ServeError, serve_handing_over};

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
        serve_handing_over(
            listener,
            self.router(),
            tls,
            shutdown,
            || self.drain(),
            config,
            self.connection_metrics(),
        )
        .await
    }
}
