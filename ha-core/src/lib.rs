//! # ha-core
//!
//! The building blocks of ha-pipeline: the wire model devices and services
//! share, and the [`Queue`](queue::Queue) and [`Store`](store::Store)
//! contracts with their backends.
//!
//! ```no_run
//! use ha_core::queue::{MemoryQueue, MemoryQueueConfig, OutgoingMessage, Queue, partition_for};
//! use ha_core::wire::{Envelope, IngestBody, Timestamp};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // A device's body, checked against every wire rule...
//! let body = br#"{"readings":[{"device_id":"dev-1","seq":1,"ts":"2026-11-26T12:00:00Z","metrics":{"pulse":72.5}}]}"#;
//! let parsed = IngestBody::parse(body, Timestamp::now())?;
//! // ...published durably to its device's partition (AmqpQueue in production)...
//! let queue = MemoryQueue::new(MemoryQueueConfig::default());
//! let partition = partition_for("dev-1", queue.partitions());
//! let payload = Envelope::encode(&parsed.readings).into();
//! queue.publish(vec![OutgoingMessage { partition, payload }]).await?;
//! // ...and consumed, at least once, by an analyzer.
//! let mut subscription = queue.subscribe(partition, 100).await?;
//! let delivery = subscription.next().await?;
//! assert_eq!(Envelope::decode(&delivery.payload)?.readings, parsed.readings);
//! # Ok(())
//! # }
//! ```
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

#[cfg(feature = "server")]
pub mod alerts;
#[cfg(feature = "server")]
pub mod analyzer;
pub mod config;
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

pub use config::ConfigError;
