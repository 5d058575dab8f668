//! The analyzer's one lifecycle: consume and serve its probes, drain,
//! return.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Analyzer;
use crate::http::{ConnectionMetrics, ServeConfig, ServeError, serve_with};

impl Analyzer {
    /// [`Analyzer::run`] with its probes (`/healthz`, `/readyz`,
    /// `/metrics`) served on `probes` for as long as it runs: until
    /// `shutdown` resolves and the batches in hand are finished (at most
    /// [`ServeConfig::drain`]). The probe server stops after the analyzer,
    /// so `/readyz` reports the drain. Returns when both have ended.
    pub async fn serve(
        self,
        probes: TcpListener,
        shutdown: impl Future<Output = ()>,
        config: &ServeConfig,
    ) -> Result<(), ServeError> {
        let (stopped, mut stop_probes) = watch::channel(false);
        let router = self.router();
        let probe_config = ServeConfig {
            drain: std::time::Duration::from_secs(1),
            ..config.clone()
        };
        let server = serve_with(
            probes,
            router,
            None,
            async move {
                let _ = stop_probes.wait_for(|s| *s).await;
            },
            &probe_config,
            ConnectionMetrics::default(),
        );
        let drain = config.drain;
        let analyzer = async move {
            self.run(shutdown, drain).await;
            let _ = stopped.send(true);
        };
        let (served, ()) = tokio::join!(server, analyzer);
        served
    }
}
