//! # ha-pipeline
//!
//! Highly available, horizontally scalable ingestion of device telemetry.
//!
//! ```no_run
//! use ha_pipeline::core::wire::{Envelope, IngestBody, Timestamp};
//!
//! // What ingest does with a device's body before publishing it.
//! let body = br#"{"readings":[{"device_id":"dev-1","seq":1,"ts":"2026-11-26T12:00:00Z","metrics":{"pulse":72.5}}]}"#;
//! let parsed = IngestBody::parse(body, Timestamp::now())?;
//! let message = Envelope::encode(&parsed.readings);
//! assert_eq!(Envelope::decode(&message)?.readings, parsed.readings);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! This root crate re-exports the workspace's library crates so an
//! application can depend on one name; the examples in `examples/` and the
//! cross-crate system tests in `tests/` live here too.
//!
//! | crate | what it is |
//! |---|---|
//! | [`core`] (`ha-core`) | wire model, `Queue` and `Store` traits with in-memory, RabbitMQ and PostgreSQL backends |
//! | [`device_client`] (`ha-device-client`) | the device side: HTTPS client with the seed's linear backoff and a store-and-forward buffer |

pub use ha_core as core;
pub use ha_device_client as device_client;
