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
        served
    }
}
