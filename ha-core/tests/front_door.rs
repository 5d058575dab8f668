//! The HTTP server against hostile and buggy peers, over real sockets:
//! slow headers are closed, idle keep-alive connections are kept, the
//! connection cap answers 503, an early 413 reaches a client that sends
//! its whole body first, a trickled body gets 408; over TLS the protocol
//! is the one ALPN chose.
//!
//! Timeouts here are short so the tests are quick, but every wait is for a
//! condition (a closed socket, an answer) with a generous bound, never a
//! sleep that must be "long enough".
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
#![cfg(feature = "server")]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ha_core::http::{ConnectionMetrics, ServeConfig, serve_with};
use ha_core::ingest::{IngestConfig, IngestService};
use ha_core::queue::MemoryQueue;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

mod net;
use net::{connect_tls, read_to_close, test_tls};

/// Serves `app` on a free port; the server stops when the sender drops.
async fn start(app: Router, config: ServeConfig) -> (SocketAddr, Registry, oneshot::Sender<()>) {
    start_with(app, config, None).await
}

/// [`start`], over TLS when `tls` is given.
async fn start_with(
    app: Router,
    config: ServeConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, Registry, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut registry = Registry::default();
    let metrics = ConnectionMetrics::register(&mut registry, "test");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        serve_with(listener, app, tls, shutdown, &config, metrics)
            .await
            .unwrap();
    });
    (addr, registry, stop)
}

fn probes() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}

fn metric(registry: &Registry, name: &str) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn slow_headers_and_silent_connections_are_closed() {
    let config = ServeConfig {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        ..ServeConfig::default()
    };
    let (addr, registry, _stop) = start(probes(), config).await;
    let mut conns = Vec::new();
    for i in 0..60 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            // Half send the start of a request and then nothing.
            s.write_all(b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        conns.push(s);
    }
    for (i, s) in conns.iter_mut().enumerate() {
        assert!(
            read_to_close(s, Duration::from_secs(30)).await.is_some(),
            "connection {i} still open after 30 s with a 1 s header-read timeout"
        );
    }
    let closed = metric(&registry, "ha_test_connections_closed_total");
    assert!(
        closed.contains(r#"reason="header_timeout"} 60"#),
        "{closed}"
    );
    assert!(metric(&registry, "ha_test_connections_open").ends_with(" 0"));
}

#[tokio::test]
async fn handlers_see_the_client_address() {
    let app = Router::new().route(
        "/who",
        get(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            },
        ),
    );
    let (addr, _registry, _stop) = start(app, ServeConfig::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mine = s.local_addr().unwrap();
    s.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let raw = read_to_close(&mut s, Duration::from_secs(30))
        .await
        .expect("an answer");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(&mine.to_string()), "{text} (client {mine})");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout() {
    let config = ServeConfig {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        ..ServeConfig::default()
    };
    let (addr, _registry, _stop) = start(probes(), config).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 1024];
    for round in 0..2 {
        s.write_all(request).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "round {round}: {text}");
        // Idle for more than two header-read timeouts: a device between
        // readings.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
    }
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_get_503() {
    let config = ServeConfig {
        max_connections: 2,
        ..ServeConfig::default()
    };
    let (addr, registry, _stop) = start(probes(), config).await;
    let first = TcpStream::connect(addr).await.unwrap();
    let second = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    let answer = read_to_close(&mut third, Duration::from_secs(30))
        .await
        .expect("the refused connection is closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("retry-after: 1"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length matches the body");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"], "too_many_connections");
    assert!(metric(&registry, "ha_test_connections_refused_total").ends_with(" 1"));
    // Once one closes, a new connection is served again.
    drop(first);
    let mut served = false;
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut s, Duration::from_secs(30))
            .await
            .unwrap();
        if answer.starts_with(b"HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a slot freed by a closed connection is reused");
    drop(second);
}

fn ingest(config: IngestConfig) -> Router {
    IngestService::new(Arc::new(MemoryQueue::with_partitions(2)), config).router()
}

#[tokio::test]
async fn an_early_413_reaches_a_client_that_sends_its_whole_body_first() {
    let (addr, _registry, _stop) =
        start(ingest(IngestConfig::default()), ServeConfig::default()).await;
    // A blocking client like Python's http.client: write everything, then read.
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let size = 16 << 20;
        let head = format!(
            "POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {size}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b' '; 1 << 16];
        for _ in 0..size / chunk.len() {
            s.write_all(&chunk)
                .expect("the server keeps reading until the body is sent");
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

#[tokio::test]
async fn a_trickled_body_gets_408() {
    let config = IngestConfig {
        body_timeout: Duration::from_millis(500),
        ..IngestConfig::default()
    };
    let (addr, _registry, _stop) = start(ingest(config), ServeConfig::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"readings\"",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(30))
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
}

/// Over TLS nothing is sniffed: `h2` by ALPN is served as HTTP/2,
/// `http/1.1` and no ALPN at all as HTTP/1.1.
#[tokio::test]
async fn over_tls_the_protocol_is_the_one_alpn_chose() {
    let (tls, ca_pem) = test_tls();
    let (addr, _registry, _stop) = start_with(probes(), ServeConfig::default(), Some(tls)).await;
    let bound = Duration::from_secs(10);
    for alpn in [Some(&b"http/1.1"[..]), None] {
        let mut stream = connect_tls(addr, &ca_pem, alpn).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), alpn);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let out = read_to_close(&mut stream, bound)
            .await
            .expect("answered and closed");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{alpn:?}: {text}");
        assert!(text.ends_with("ok\n"), "{alpn:?}: {text}");
    }

    let mut stream = connect_tls(addr, &ca_pem, Some(b"h2")).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client preface and an empty SETTINGS frame; an HTTP/2 server
    // answers with its own SETTINGS frame (type 4), an HTTP/1.1 one with
    // "HTTP/1.1 400".
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(bound, stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 4, "the first frame is SETTINGS: {head:?}");
}
