//! Idle HTTP/1.1 connections let go of hyper's state between requests
//! ("parking", `ServeConfig::park_idle`), and nothing a client can see
//! changes: many requests on one connection, pipelined requests whose bytes
//! straddle a park, a head arriving in pieces across it, request bodies
//! (read or not), streamed responses (never parked mid-response), the
//! drain, HTTP/2 by prior knowledge, TLS.
//!
//! `ha_test_connections_parked` shows a connection parked; every wait is
//! for a condition with a generous bound, never a sleep that must be "long
//! enough" for correctness (the pauses only make a park likely).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
#![cfg(feature = "server")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use ha_core::http::{ConnectionMetrics, ServeConfig, serve_with};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

mod net;
use net::{connect_tls, read_to_close, test_tls};

const BOUND: Duration = Duration::from_secs(30);

struct Server {
    addr: SocketAddr,
    registry: Registry,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(app: Router, config: ServeConfig, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut registry = Registry::default();
    let metrics = ConnectionMetrics::register(&mut registry, "test");
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        serve_with(listener, app, tls, shutdown, &config, metrics)
            .await
            .unwrap();
    });
    Server {
        addr,
        registry,
        stop: Some(stop),
        done,
    }
}

impl Server {
    fn metric(&self, name: &str) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    fn parked(&self) -> u64 {
        self.metric("ha_test_connections_parked")
    }

    fn parks(&self) -> u64 {
        self.metric("ha_test_connection_parks_total")
    }

    /// Waits until `n` connections are parked.
    async fn until_parked(&self, n: u64) {
        let wait = async {
            while self.parked() != n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(BOUND, wait)
            .await
            .unwrap_or_else(|_| panic!("parked stayed {} (want {n})", self.parked()));
    }
}

/// `/echo` returns the body it got; `/ignore` answers without reading it;
/// `/stream` sends three chunks 200 ms apart.
fn app() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/ignore", post(|| async { "ignored\n" }))
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::unfold(0u32, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Some((Ok::<_, std::io::Error>(format!("chunk{i};")), i + 1))
                });
                Body::from_stream(chunks)
            }),
        )
}

/// Reads one response with a `content-length`; returns (head, body).
async fn response<S: AsyncRead + Unpin>(s: &mut S, pending: &mut Vec<u8>) -> (String, String) {
    let read = async {
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or_else(|| panic!("no content-length: {head}"));
                if pending.len() >= end + 4 + length {
                    let body =
                        String::from_utf8_lossy(&pending[end + 4..end + 4 + length]).into_owned();
                    pending.drain(..end + 4 + length);
                    return (head, body);
                }
            }
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(pending)
            );
            pending.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(BOUND, read).await.expect("a response")
}

fn post_echo(body: &str) -> String {
    format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Requests with parks in between, on one connection (plain or TLS).
async fn many_requests<S: AsyncRead + AsyncWrite + Unpin>(server: &Server, s: &mut S) {
    let mut pending = Vec::new();
    for i in 0..20 {
        let body = format!("reading {i}");
        s.write_all(post_echo(&body).as_bytes()).await.unwrap();
        let (head, got) = response(s, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{i}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert_eq!(got, body);
        if i % 5 == 0 {
            server.until_parked(1).await;
        }
    }
    assert!(server.parks() >= 4, "parks: {}", server.parks());
}

#[tokio::test]
async fn many_requests_on_one_connection_park_between_them() {
    let server = start(app(), ServeConfig::default(), None).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // A connection without a request is parked from the start.
    server.until_parked(1).await;
    many_requests(&server, &mut s).await;
}

#[tokio::test]
async fn pipelined_requests_straddling_a_park_are_all_answered() {
    let server = start(app(), ServeConfig::default(), None).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    // Two whole requests and the first half of a third in one write.
    let third = post_echo("third");
    let (third_a, third_b) = third.split_at(20);
    let burst = format!("{}{}{third_a}", post_echo("first"), post_echo("second"));
    s.write_all(burst.as_bytes()).await.unwrap();
    for want in ["first", "second"] {
        let (head, got) = response(&mut s, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(got, want);
    }
    // The half request is carried, not lost, whatever hyper did meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(third_b.as_bytes()).await.unwrap();
    let (head, got) = response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(got, "third");
    // And the connection goes on.
    server.until_parked(1).await;
    s.write_all(post_echo("fourth").as_bytes()).await.unwrap();
    assert_eq!(response(&mut s, &mut pending).await.1, "fourth");
}

#[tokio::test]
async fn a_head_arriving_in_pieces_while_parked_is_served() {
    let server = start(app(), ServeConfig::default(), None).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(post_echo("one").as_bytes()).await.unwrap();
    assert_eq!(response(&mut s, &mut pending).await.1, "one");
    server.until_parked(1).await;
    let parks = server.parks();
    let request = post_echo("two, in pieces");
    for piece in request.as_bytes().chunks(7) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (head, got) = response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(got, "two, in pieces");
    // No park in the middle of a request head.
    server.until_parked(1).await;
    assert_eq!(server.parks(), parks + 1);
}

#[tokio::test]
async fn a_body_left_unread_never_becomes_a_request() {
    let server = start(app(), ServeConfig::default(), None).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    // The whole body arrives with the head: hyper drains it, the
    // connection stays usable.
    let inner = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let request = format!(
        "POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let (head, got) = response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(got, "ignored\n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(post_echo("after").as_bytes()).await.unwrap();
    let (head, got) = response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(got, "after", "the ignored body was not served as a request");

    // The body has not arrived when the answer is sent: the connection
    // is closed after the answer, and its late body is never parsed.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    let request = format!(
        "POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        inner.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let _ = s.write_all(inner.as_bytes()).await;
    let rest = read_to_close(&mut s, BOUND)
        .await
        .expect("closed after the answer");
    pending.extend_from_slice(&rest);
    assert!(
        pending.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&pending)
    );
}

#[tokio::test]
async fn a_streamed_response_is_never_parked() {
    let server = start(app(), ServeConfig::default(), None).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        let mut saw_parked = false;
        while !got.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed mid-stream");
            got.extend_from_slice(&buf[..n]);
            // Once the last chunk is out, parking is right.
            if !got.ends_with(b"0\r\n\r\n") {
                saw_parked |= server.parked() != 0;
            }
        }
        saw_parked
    };
    let saw_parked = tokio::time::timeout(BOUND, read).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for i in 0..3 {
        assert!(text.contains(&format!("chunk{i};")), "{text}");
    }
    assert!(!saw_parked, "parked mid-response");
    server.until_parked(1).await;
}

#[tokio::test]
async fn the_drain_closes_parked_connections_at_once_and_finishes_requests() {
    let app = app().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "slow\n"
        }),
    );
    let config = ServeConfig {
        drain: Duration::from_secs(60),
        ..ServeConfig::default()
    };
    let mut server = start(app, config, None).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    idle.write_all(post_echo("x").as_bytes()).await.unwrap();
    response(&mut idle, &mut pending).await;
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    server.until_parked(1).await;
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(server.stop.take());
    let rest = read_to_close(&mut idle, BOUND).await;
    assert_eq!(rest, Some(Vec::new()), "the parked connection is closed");
    let mut busy_pending = Vec::new();
    let (head, body) = response(&mut busy, &mut busy_pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, "slow\n");
    // Well within the 60 s drain bound: nothing waited for it.
    tokio::time::timeout(BOUND, &mut server.done)
        .await
        .expect("the server finished its drain")
        .unwrap();
    assert_eq!(server.parked(), 0);
}

#[tokio::test]
async fn with_parking_off_connections_keep_their_state() {
    let config = ServeConfig {
        park_idle: false,
        ..ServeConfig::default()
    };
    let server = start(app(), config, None).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..3 {
        s.write_all(post_echo(&i.to_string()).as_bytes())
            .await
            .unwrap();
        assert_eq!(response(&mut s, &mut pending).await.1, i.to_string());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.parks(), 0);
    assert_eq!(server.parked(), 0);
}

/// Plain HTTP/2 with prior knowledge, its preface in two pieces.
#[tokio::test]
async fn plain_http2_by_prior_knowledge_is_still_served() {
    let server = start(app(), ServeConfig::default(), None).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b".0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(BOUND, s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 4, "the first frame is SETTINGS: {head:?}");
}

#[tokio::test]
async fn over_tls_connections_park_between_requests() {
    let (tls, ca_pem) = test_tls();
    let server = start(app(), ServeConfig::default(), Some(tls)).await;
    let mut s = connect_tls(server.addr, &ca_pem, Some(b"http/1.1")).await;
    many_requests(&server, &mut s).await;
}
