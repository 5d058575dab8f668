//! # ha-test-support
//!
//! What the binary crates' tests share: start a binary and wait until it
//! says where it listens, probe it over plain HTTP, wait on a condition
//! (never a bare sleep), a fresh database, the dead-letter topology of the
//! broker policy, Eclipse Mosquitto (broker and `mosquitto_pub`).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use ha_test_support::{Proc, wait_until};
//!
//! // Any binary that logs `listening on <addr>` on stderr.
//! let hello = Proc::start("hello", "target/debug/hello", &["--listen", "127.0.0.1:0"]);
//! wait_until("hello is healthy", Duration::from_secs(10), || {
//!     hello.get("/healthz").0 == 200
//! });
//! let status = hello.terminate(Duration::from_secs(10));
//! assert!(status.success());
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`process`] | [`Proc`]: a child process, its address, its log; signals; [`run_to_end`] |
//! | [`mosquitto`] | [`mosquitto::Broker`] (TLS, optional passwords), `mosquitto_pub` runs, [`mosquitto::installed`] |
//! | [`http`] | one HTTP/1.1 request per connection; Prometheus samples |
//! | [`wait`] | [`wait_until`] and [`wait_until_async`]: poll a condition with a deadline |
//! | `postgres` | `create_database`: a fresh database per test (feature `servers`, default) |
//! | `rabbitmq` | `declare_dead_letter_queue`: `ha.dlx` and a queue bound to one prefix (feature `servers`) |
//!
//! Test support panics on failure (that is the test failing), with a
//! message naming what did not happen.
#![allow(
    clippy::unwrap_used,
    reason = "test support: a failure is the calling test's failure"
)]

pub mod http;
pub mod mosquitto;
#[cfg(feature = "servers")]
pub mod postgres;
pub mod process;
#[cfg(feature = "servers")]
pub mod rabbitmq;
pub mod wait;

pub use http::{metric, request};
#[cfg(feature = "servers")]
pub use postgres::create_database;
pub use process::{Proc, run_to_end};
#[cfg(feature = "servers")]
pub use rabbitmq::{DLX, declare_dead_letter_queue};
pub use wait::{wait_until, wait_until_async};
