//! A TCP relay between the device client and one ingest listener, which
//! the scenarios use to break things the same way for both transports:
//! cut every connection, or swallow what the server answers (a lost ack).
//! TLS passes through untouched (the client still verifies ingest's
//! certificate).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Relay {
    pub port: u16,
    shared: Arc<Shared>,
    accept: AbortHandle,
}

#[derive(Default)]
struct Shared {
    /// The copying tasks of the open connections; aborting them drops
    /// (closes) both sockets.
    tasks: Mutex<Vec<AbortHandle>>,
    /// While set, bytes from the server are read and thrown away.
    swallow: AtomicBool,
    /// Connections accepted so far.
    accepted: AtomicUsize,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(copy(client_read, server_write, None));
                let down = tokio::spawn(copy(server_read, client_write, Some(state.clone())));
                let mut tasks = state.tasks.lock().unwrap();
                tasks.retain(|t| !t.is_finished());
                tasks.extend([up.abort_handle(), down.abort_handle()]);
            }
        })
        .abort_handle();
        Relay {
            port,
            shared,
            accept,
        }
    }

    /// Closes every open connection (both directions, at once).
    pub fn cut(&self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// While `on`, whatever the server sends is lost on the way.
    pub fn swallow_answers(&self, on: bool) {
        self.shared.swallow.store(on, Ordering::SeqCst);
    }

    /// Connections relayed so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    answers: Option<Arc<Shared>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if answers
            .as_ref()
            .is_some_and(|s| s.swallow.load(Ordering::SeqCst))
        {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
