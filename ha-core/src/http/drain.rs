//! The drain signal shared by a server and its connections: the server
//! raises it when it stops accepting and then waits until every connection
//! has ended (or the drain bound passes).
//!
//! hyper-util's `GracefulShutdown` only watches hyper's own connection
//! types; a connection that parks between requests (see `park.rs`) is a
//! loop of several hyper connections and has to hear the signal itself.

use std::future::Future;
use std::pin::pin;

use tokio::sync::watch;

/// The server's side: raises the signal, then waits for the connections.
pub(super) struct Drain(watch::Sender<bool>);

/// A connection's side; the server waits until every one is dropped.
#[derive(Clone)]
pub(super) struct DrainWatch(watch::Receiver<bool>);

impl Drain {
    pub(super) fn new() -> Self {
        Drain(watch::Sender::new(false))
    }

    pub(super) fn watcher(&self) -> DrainWatch {
        DrainWatch(self.0.subscribe())
    }

    /// Signals every connection, then resolves once all have ended.
    pub(super) async fn shutdown(self) {
        self.0.send_replace(true);
        self.0.closed().await;
    }
}

impl DrainWatch {
    /// Resolves once the drain has started (or the server is gone).
    pub(super) async fn started(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }
}

/// Runs a hyper connection; once the drain starts, asks it to finish the
/// requests it has and close (`graceful_shutdown`), and waits for that.
pub(super) async fn graceful<C: Future>(
    conn: C,
    mut drain: DrainWatch,
    shutdown: impl FnOnce(std::pin::Pin<&mut C>),
) -> C::Output {
    let mut conn = pin!(conn);
    tokio::select! {
        biased;
        out = conn.as_mut() => return out,
        () = drain.started() => shutdown(conn.as_mut()),
    }
    conn.await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shutdown_waits_for_every_watcher_and_signals_them() {
        let drain = Drain::new();
        let mut w = drain.watcher();
        let ended = tokio::spawn(async move {
            w.started().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        tokio::time::timeout(Duration::from_secs(10), drain.shutdown())
            .await
            .expect("shutdown resolves once the watcher is dropped");
        assert!(ended.is_finished());
    }

    #[tokio::test]
    async fn a_connection_told_to_drain_finishes_what_it_has() {
        let drain = Drain::new();
        let w = drain.watcher();
        let (told_tx, told_rx) = tokio::sync::oneshot::channel::<()>();
        let conn = async move {
            let _ = told_rx.await;
            7
        };
        let run = tokio::spawn(graceful(conn, w, move |_| {
            let _ = told_tx.send(());
        }));
        drain.shutdown().await;
        assert_eq!(run.await.ok(), Some(7));
    }
}
