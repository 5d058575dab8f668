//! The client against a hand-rolled plain-HTTP server: source-address
//! binding, and a kept-alive connection the server closed while idle.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use ha_core::wire::{Metric, Reading, Timestamp};
use ha_device_client::{BufferLimits, Client, ClientConfig, Event, MemoryBuffer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn reading(seq: u64) -> Reading {
    Reading {
        device_id: "dev-1".into(),
        seq,
        ts: Timestamp::now(),
        metrics: vec![Metric::new("pulse", 70.0)],
    }
}

/// Reads one request (head + Content-Length body).
async fn read_request(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed mid-request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
    }
}

const ACCEPTED: &[u8] =
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"accepted\":1}";

#[tokio::test]
async fn binds_the_source_address_and_replaces_a_closed_idle_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut peers = Vec::new();
        // First connection: answer one request, then close while idle.
        let (mut s, peer) = listener.accept().await.unwrap();
        peers.push(peer.ip());
        let req = read_request(&mut s).await;
        assert!(req.starts_with(b"POST /v1/readings HTTP/1.1\r\n"));
        s.write_all(ACCEPTED).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
        // Second connection: chunked answer.
        let (mut s, peer) = listener.accept().await.unwrap();
        peers.push(peer.ip());
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"acc\r\n9\r\nepted\":1}\r\n0\r\n\r\n")
            .await
            .unwrap();
        peers
    });
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let config = ClientConfig::new(format!("http://127.0.0.1:{port}"), "dev-1", "t")
        .with_plain_http()
        .with_local_addr("127.0.0.2".parse().unwrap())
        .with_event_callback(move |e| sink.lock().unwrap().push(e.clone()));
    let mut client = Client::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap();
    client.send(reading(1)).await.unwrap();
    assert!(client.is_connected());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The server closed the idle connection: the client notices on the
    // next send and reconnects at once, without counting a retry.
    client.send(reading(2)).await.unwrap();
    let peers = server.await.unwrap();
    assert!(
        peers.iter().all(|ip| ip.to_string() == "127.0.0.2"),
        "{peers:?}"
    );
    let events = events.lock().unwrap().clone();
    let connects = events
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count();
    assert_eq!(connects, 2);
    assert!(!events.iter().any(|e| matches!(e, Event::Retry { .. })));
    assert_eq!(client.counters().acknowledged, 2);
    assert_eq!(client.counters().retried, 0);
}
