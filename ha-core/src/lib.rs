//! # ha-core
//!
//! The building blocks of ha-pipeline: the wire model devices and services
//! share, and the [`Queue`](queue::Queue) and [`Store`](store::Store)
//! contracts with their backends.
//!
//! | feature | adds |
//! |---|---|
//! | *(none)* | [`wire`] model, `Queue`/`Store` traits, in-memory backends |
//! | `rabbitmq` | `AmqpQueue`: RabbitMQ quorum queues via lapin, publisher confirms |
//! | `postgres` | `PostgresStore`: PostgreSQL / CockroachDB via tokio-postgres |
//! | `server` | the services: [`ingest`](crate::ingest), [`analyzer`](crate::analyzer) (with `ha-analysis`), [`alerts`](crate::alerts) with its web UI, and the shared `http` plumbing |
//! | `test-util` | the conformance suites, to run against your own backend |
//!
//! With default features off, `ha-core` is only the wire model plus small
//! traits: a device build (`ha-device-client`) pulls no broker, database or
//! HTTP server crates.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

#[cfg(feature = "server")]
pub mod alerts;
#[cfg(feature = "server")]
pub mod analyzer;
#[cfg(feature = "test-util")]
pub mod conformance;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod ingest;
pub mod queue;
pub mod redact;
pub mod store;
pub mod wire;
