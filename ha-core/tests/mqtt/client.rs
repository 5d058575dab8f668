//! A raw MQTT 5 / 3.1.1 client over a socket, with `mqtt-proto` as the
//! codec: it sends exactly the packets (and garbage) a test asks for and
//! reports exactly what the server answered, reason codes included.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ha_core::queue::{MemoryQueue, OutgoingMessage, Queue, QueueError, Subscription};
use ha_core::wire::Envelope;
use mqtt_proto::{Pid, QoS, QosPid, v3, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(10);

/// What the server did next.
#[derive(Debug)]
pub enum Got<P> {
    Packet(P),
    /// The server closed the connection.
    Closed,
    /// Nothing within the wait.
    Silence,
}

pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// The length of the packet at the start of `buf`, once its fixed header
/// is complete.
fn packet_len(buf: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(2 + i + remaining);
        }
    }
    None
}

impl Client {
    pub async fn open(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn raw(&mut self, bytes: &[u8]) {
        // The server may already have closed: a failed write shows in the
        // answer read next.
        let _ = self.stream.write_all(bytes).await;
    }

    async fn next_bytes(&mut self, wait: Duration) -> Got<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(n) = packet_len(&self.buf)
                && self.buf.len() >= n
            {
                return Got::Packet(self.buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Got::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Got::Silence,
            }
        }
    }

    pub async fn send5(&mut self, p: v5::Packet) {
        let bytes = p.encode().unwrap();
        self.raw(bytes.as_ref()).await;
    }

    pub async fn recv5_within(&mut self, wait: Duration) -> Got<v5::Packet> {
        match self.next_bytes(wait).await {
            Got::Packet(b) => Got::Packet(v5::Packet::decode(&b).unwrap().unwrap()),
            Got::Closed => Got::Closed,
            Got::Silence => Got::Silence,
        }
    }

    pub async fn recv5(&mut self) -> Got<v5::Packet> {
        self.recv5_within(WAIT).await
    }

    pub async fn send3(&mut self, p: v3::Packet) {
        let bytes = p.encode().unwrap();
        self.raw(bytes.as_ref()).await;
    }

    pub async fn recv3(&mut self) -> Got<v3::Packet> {
        match self.next_bytes(WAIT).await {
            Got::Packet(b) => Got::Packet(v3::Packet::decode(&b).unwrap().unwrap()),
            Got::Closed => Got::Closed,
            Got::Silence => Got::Silence,
        }
    }

    /// A 5.0 session: CONNECT with `user`/`password`, returns the CONNACK.
    pub async fn connect5(
        addr: SocketAddr,
        client_id: &str,
        user: &str,
        password: &str,
        keep_alive: u16,
    ) -> (Client, v5::Connack) {
        let mut c = Client::open(addr).await;
        let mut connect = v5::Connect::new(client_id.into(), keep_alive);
        connect.username = Some(user.into());
        connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
        c.send5(v5::Packet::Connect(connect)).await;
        match c.recv5().await {
            Got::Packet(v5::Packet::Connack(ack)) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A 3.1.1 session; returns the CONNACK.
    pub async fn connect3(addr: SocketAddr, user: &str, password: &str) -> (Client, v3::Connack) {
        let mut c = Client::open(addr).await;
        let mut connect = v3::Connect::new("c3".into(), 30);
        connect.username = Some(user.into());
        connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
        c.send3(v3::Packet::Connect(connect)).await;
        match c.recv3().await {
            Got::Packet(v3::Packet::Connack(ack)) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn publish5(&mut self, qos: QoS, pid: u16, topic: &str, payload: &str) {
        let p = v5::Publish::new(
            qos_pid(qos, pid),
            topic.try_into().unwrap(),
            Bytes::copy_from_slice(payload.as_bytes()),
        );
        self.send5(v5::Packet::Publish(p)).await;
    }

    pub async fn publish3(&mut self, pid: u16, topic: &str, payload: &str) {
        let p = v3::Publish::new(
            qos_pid(QoS::Level1, pid),
            topic.try_into().unwrap(),
            Bytes::copy_from_slice(payload.as_bytes()),
        );
        self.send3(v3::Packet::Publish(p)).await;
    }

    /// Expects a PUBACK for `pid`; returns its reason code and string.
    pub async fn puback5(&mut self, pid: u16) -> (u8, String) {
        match self.recv5().await {
            Got::Packet(v5::Packet::Puback(ack)) => {
                assert_eq!(ack.pid.value(), pid, "PUBACKs come in order");
                let why = ack
                    .properties
                    .reason_string
                    .as_deref()
                    .unwrap_or("")
                    .to_owned();
                (ack.reason_code as u8, why)
            }
            other => panic!("expected PUBACK {pid}, got {other:?}"),
        }
    }

    /// Expects a DISCONNECT and then the close; returns its reason code.
    pub async fn disconnect5(&mut self) -> u8 {
        let code = match self.recv5().await {
            Got::Packet(v5::Packet::Disconnect(d)) => d.reason_code as u8,
            other => panic!("expected DISCONNECT, got {other:?}"),
        };
        assert!(
            matches!(self.recv5().await, Got::Closed),
            "closed after DISCONNECT"
        );
        code
    }
}

pub fn qos_pid(qos: QoS, pid: u16) -> QosPid {
    let pid = Pid::try_from(pid).unwrap();
    match qos {
        QoS::Level0 => QosPid::Level0,
        QoS::Level1 => QosPid::Level1(pid),
        QoS::Level2 => QosPid::Level2(pid),
    }
}

/// A [`MemoryQueue`] whose publishes wait until the gate is opened: "the
/// broker has not confirmed yet", for as long as a test wants.
pub struct GatedQueue {
    pub inner: MemoryQueue,
    gate: tokio::sync::Semaphore,
}

impl GatedQueue {
    pub fn closed(partitions: u32) -> Arc<Self> {
        Arc::new(GatedQueue {
            inner: MemoryQueue::with_partitions(partitions),
            gate: tokio::sync::Semaphore::new(0),
        })
    }

    pub fn open(&self) {
        self.gate
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }
}

#[async_trait]
impl Queue for GatedQueue {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }
    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        self.gate
            .acquire()
            .await
            .map_err(|_| QueueError::Unavailable("gate closed".into()))?
            .forget();
        self.inner.publish(messages).await
    }
    async fn subscribe(&self, p: u32, prefetch: u16) -> Result<Box<dyn Subscription>, QueueError> {
        self.inner.subscribe(p, prefetch).await
    }
    async fn depth(&self, p: u32) -> Result<u64, QueueError> {
        self.inner.depth(p).await
    }
}

/// Every reading on the queue as `(device_id, seq)`.
pub async fn queued(q: &dyn Queue) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for p in 0..q.partitions() {
        let n = q.depth(p).await.unwrap();
        if n == 0 {
            continue;
        }
        let mut sub = q.subscribe(p, u16::MAX).await.unwrap();
        for _ in 0..n {
            let d = sub.next().await.unwrap();
            for r in Envelope::decode(&d.payload).unwrap().readings {
                out.push((r.device_id, r.seq));
            }
            d.ack().await.unwrap();
        }
    }
    out
}
