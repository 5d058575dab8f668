//! The blocking wrapper (feature `blocking`): `cargo test -p ha-device-client --all-features`.
#![cfg(feature = "blocking")]

use std::io::{Read, Write};
use std::net::TcpListener;

use ha_core::wire::{Metric, Reading, Timestamp};
use ha_device_client::blocking::BlockingClient;
use ha_device_client::{BufferLimits, ClientConfig, MemoryBuffer};

#[test]
fn sends_without_an_async_runtime() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.ends_with(b"]}") {
            let n = s.read(&mut chunk).unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        s.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 14\r\n\r\n{\"accepted\":1}")
            .unwrap();
        String::from_utf8(buf).unwrap()
    });
    let config =
        ClientConfig::new(format!("http://127.0.0.1:{port}"), "dev-1", "t").with_plain_http();
    let mut client =
        BlockingClient::new(config, MemoryBuffer::new(BufferLimits::default())).unwrap();
    let report = client
        .send(Reading {
            device_id: "dev-1".into(),
            seq: 5,
            ts: Timestamp::now(),
            metrics: vec![Metric::new("pulse", 70.0)],
        })
        .unwrap();
    assert_eq!(report.acknowledged, 1);
    assert!(server.join().unwrap().contains("\"seq\":5"));
}
