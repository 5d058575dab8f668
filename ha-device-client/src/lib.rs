//! # ha-device-client
//!
//! The device side of ha-pipeline: sends a device's readings to the ingest
//! API (`POST /v1/readings`) over HTTPS — or over MQTT 5 (feature `mqtt`,
//! [below](#mqtt)) — never loses a reading while it has room to keep it,
//! and never floods a recovering server.
//!
//! ## Example
//!
//! ```no_run
//! use ha_core::wire::{Metric, Reading, Timestamp};
//! use ha_device_client::{BufferLimits, Client, ClientConfig, Event, FileBuffer};
//!
//! # async fn run() -> Result<(), ha_device_client::Error> {
//! let config = ClientConfig::new("https://ingest.example:8443", "dev-00001", "9f86d0818")
//!     .with_ca_file("/etc/ha/ca.pem")
//!     .with_event_callback(|e| {
//!         if let Event::Retry { attempt, delay, cause } = e {
//!             eprintln!("retry {attempt} in {delay:?} ({cause})");
//!         }
//!     });
//! let buffer = FileBuffer::open("/var/lib/ha/readings.log", BufferLimits::default())?;
//! let mut client = Client::new(config, buffer)?;
//! for seq in 0.. {
//!     client.push(Reading {
//!         device_id: "dev-00001".into(),
//!         seq,
//!         ts: Timestamp::now(),
//!         metrics: vec![Metric::new("pulse", 72.0)],
//!     })?;
//!     if let Err(e) = client.flush().await {
//!         // The readings stay buffered; the next flush tries again.
//!         eprintln!("send failed: {e}");
//!     }
//!     tokio::time::sleep(std::time::Duration::from_secs(10)).await;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! - **Transport**: HTTP/1.1 keep-alive on one reused connection, rustls
//!   with the *ring* provider (no OpenSSL, no aws-lc), custom CA bundle,
//!   optional client certificate (mTLS), optional local source address,
//!   connect timeout 2 s and request timeout 5 s by default, plain HTTP
//!   only when asked. HTTP Basic authentication with the device id and its
//!   token.
//! - **Retries**: [`RetryPolicy`], by default the seed's linear backoff —
//!   1, 2, …, 10 s, then the send gives up (the readings stay buffered) —
//!   with optional jitter and `Retry-After` honoured. Retried: connection
//!   errors, timeouts, 408, 429, 5xx. 413 splits the batch; 401/403 keep
//!   the readings and return [`Error::Unauthorized`]; 400/422 move the
//!   refused readings to the rejected-readings sink ([`Event::Rejected`],
//!   and a size-bounded file with the [`FileBuffer`]) — except readings
//!   refused for their time stamp (`ts_in_future`, `ts_too_old`), which
//!   are held apart, bounded, and sent again later or left for the
//!   application ([`Event::Held`]; see [`buffer`](buffer#clock-refusals)).
//! - **Store-and-forward**: readings wait in a bounded [`Buffer`]
//!   ([`MemoryBuffer`], or the crash-safe append-only [`FileBuffer`], or
//!   your own on flash) until a 2xx covers them, and are flushed in `seq`
//!   order, many per request, with a pause between requests.
//! - **Shared connections** (gateways, emulators): many clients can send
//!   over one bounded [`ConnectionPool`] instead of a connection each; see
//!   [below](#many-devices-over-few-connections).
//! - **Observability**: an [`Event`] callback (connect, disconnect, retry
//!   with attempt, delay and cause, give-up, overflow, …), [`Counters`],
//!   and `tracing` events. The crate installs no subscriber.
//!
//! ## MQTT
//!
//! With the `mqtt` feature, an `mqtts://host[:port]` URL (port 8883 by
//! default) sends the same batches over MQTT 5 to the ingest's MQTT
//! listener, through the same buffer, retry policy, events and counters:
//!
//! ```no_run
//! # use ha_device_client::{Client, ClientConfig, MemoryBuffer};
//! # fn run() -> Result<(), ha_device_client::Error> {
//! let config = ClientConfig::new("mqtts://ingest.example:8883", "dev-00001", "9f86d0818")
//!     .with_ca_file("/etc/ha/ca.pem");
//! let client = Client::new(config, MemoryBuffer::default())?;
//! # Ok(())
//! # }
//! ```
//!
//! - **Session**: TLS as for HTTPS (same CA, client certificate, connect
//!   timeout; ALPN `mqtt`), then CONNECT with clean start, client id and
//!   user name = device id, password = token, keep-alive 60 s
//!   ([`ClientConfig::with_mqtt_keep_alive`]). The client owns no task:
//!   before publishing on a session idle for more than half the keep-alive
//!   it sends PINGREQ and waits for PINGRESP, and it replaces a session
//!   idle for longer.
//! - **Publishing**: one batch = one QoS 1 PUBLISH to `readings/<device id>`
//!   whose payload is the body `POST /v1/readings` would carry. By default
//!   one PUBLISH is in flight at a time, with the same pacing between
//!   publishes as between requests; [`ClientConfig::with_mqtt_max_in_flight`]
//!   lets several consecutive batches go out before the first PUBACK
//!   (bounded by the server's Receive Maximum; pacing between windows).
//!   Readings leave the buffer only on their own success PUBACK (reason
//!   code below 0x80), batch by batch in `seq` order: past the first batch
//!   not acknowledged, the later ones stay buffered and are published
//!   again after it, in order.
//! - **Reconnect**: a lost session (connection broken, no PUBACK within the
//!   request timeout, or a server DISCONNECT such as 0x88 server unavailable
//!   or 0x89 server busy) is retried on the policy's schedule; the batch is
//!   still buffered and is published again, oldest first, on a new clean
//!   session. The store de-duplicates by `(device_id, seq)`, so a reading
//!   whose PUBACK was lost is stored once.
//! - **Refusals** map to what the HTTPS path does with the equivalent
//!   status: PUBACK 0x99 payload format invalid ↔ 400/422 (the culprit,
//!   found by bisecting unless the reason string names it, goes to the
//!   rejected sink; a reason string starting with `ts_in_future` or
//!   `ts_too_old` holds it apart instead), 0x95 packet too large (also when
//!   a batch exceeds the server's Maximum Packet Size, and 0x99 with the
//!   reason `body_too_large`) ↔ 413 (split),
//!   0x87 not authorized / CONNACK 0x86, 0x87 ↔ 401/403
//!   ([`Error::Unauthorized`], readings kept), 0x97 quota exceeded ↔ 429
//!   and the transient codes ↔ 5xx (backoff, [`Error::Mqtt`],
//!   [`RetryCause::Mqtt`]). Over MQTT, [`ServerError::status`] is the HTTP
//!   status the code is treated as, and [`ServerError::message`] names the
//!   MQTT reason code.
//! - A [`ConnectionPool`] speaks HTTPS only: an MQTT session is one device's.
//!
//! ## Runtime
//!
//! Async on tokio; works on a current-thread runtime. The client owns no
//! task and spawns nothing: [`Client::push`] stores a reading,
//! [`Client::flush`] does the network work while you await it. With the
//! `blocking` feature, [`blocking::BlockingClient`] wraps it for firmware
//! without an async runtime. (A host name in the URL is resolved with
//! tokio's `lookup_host`, which runs the system resolver on tokio's
//! blocking pool; an IP literal needs no resolution.)
//!
//! ## Many devices over few connections
//!
//! A gateway forwarding many sensors, or an emulator driving 100k
//! simulated devices in one process, cannot hold a socket per device (an
//! open-file limit, ~28k ports per source address). Build one
//! [`ConnectionPool`] and give every client a clone: a client borrows a
//! connection for one request/answer exchange and hands it back. Each
//! request still carries its own device's credentials, and buffer,
//! retries, events and counters stay per client; only sockets (and the
//! parsed TLS configuration) are shared. The pool spawns nothing either.
//!
//! ```no_run
//! use ha_device_client::{Client, ClientConfig, ConnectionPool, MemoryBuffer, PoolConfig};
//!
//! # fn run() -> Result<(), ha_device_client::Error> {
//! let pool = ConnectionPool::new(
//!     PoolConfig::new("https://ingest.example:8443", 64).with_ca_file("/etc/ha/ca.pem"),
//! )?;
//! let sensors: Vec<Client> = ["sensor-1", "sensor-2"]
//!     .into_iter()
//!     .map(|id| {
//!         let config = ClientConfig::new(pool.url(), id, "token-of-this-sensor")
//!             .with_connection_pool(pool.clone());
//!         Client::new(config, MemoryBuffer::default())
//!     })
//!     .collect::<Result<_, _>>()?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! | feature | adds |
//! |---|---|
//! | *(none)* | everything above |
//! | `blocking` | [`blocking::BlockingClient`]: the client on its own current-thread runtime |
//! | `test-util` | `buffer::conformance`: the suite every [`Buffer`] must pass, for your own buffer |
//! | `mqtt` | MQTT 5 over TLS for `mqtts://` URLs ([above](#mqtt)); adds the `mqtt-proto` codec |
//!
//! ## Why no hyper
//!
//! The client speaks one exchange (a `POST` with a `Content-Length` body,
//! a small answer), which is a few hundred lines over [`httparse`] in
//! `transport/`. hyper's client would need its connection future driven
//! by a spawned task (or `hyper-util`'s pool, which spawns), plus `http`,
//! `http-body` and friends: more code on the device for features it never
//! uses, and a task behind the caller's back. The tests check this client
//! against hyper's server.
//!
//! ## Layout
//!
//! The modules depend on each other in one direction only (checked by
//! `scripts/check-structure`):
//!
//! | module | holds | uses |
//! |---|---|---|
//! | `retry` | [`RetryPolicy`]; `retry/cause.rs`: [`RetryCause`] | `error` |
//! | `error` | [`Error`], [`ServerError`] | `retry/cause` |
//! | [`buffer`] | the [`Buffer`] trait, [`MemoryBuffer`], [`FileBuffer`] (`buffer/file/format.rs`: the record format and replay), `buffer::conformance` | `error` |
//! | `event` | [`Event`], [`Counters`] | `buffer`, `error`, `retry` |
//! | [`state`] | the pure send/retry/give-up state machine | `retry` |
//! | `transport` | [`ConnectOptions`] (`options.rs`), the endpoint, opening connections (`connector.rs`, `tls.rs`), one exchange (`conn.rs`, `response.rs`), [`ConnectionPool`] (`pool.rs`), the MQTT session (`mqtt/`: `frame.rs` reads packets, `codes.rs` maps reason codes, `window.rs` several publishes in flight), a client's `Transport` | `config`, `error`, `event` |
//! | `config` | [`ClientConfig`] | `transport` (options, pool), `retry`, `event` |
//! | `client` | [`Client`] | all of the above |

#[cfg(feature = "blocking")]
pub mod blocking;
pub mod buffer;
mod client;
mod config;
mod error;
mod event;
mod retry;
pub mod state;
mod transport;

pub use buffer::{
    Buffer, BufferLimits, ClockRefusal, EncodedReading, FileBuffer, FileOptions, MemoryBuffer,
    OverflowPolicy, Pushed, Recovery,
};
pub use client::{Client, FlushReport};
pub use config::{ClientConfig, EventCallback};
pub use error::{Error, ServerError};
pub use event::{Counters, Event};
pub use retry::{MAX_RETRY_AFTER, RetryCause, RetryPolicy};
pub use transport::{ConnectOptions, ConnectionPool, PoolConfig, READINGS_PATH};
