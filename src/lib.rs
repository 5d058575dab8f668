//! # ha-pipeline
//!
//! Highly available, horizontally scalable ingestion of device telemetry.
//!
//! This root crate re-exports the workspace's library crates so an
//! application can depend on one name; the examples in `examples/` and the
//! cross-crate system tests in `tests/` live here too.
//!
//! | crate | what it is |
//! |---|---|
//! | [`core`] (`ha-core`) | wire model, `Queue` and `Store` traits with in-memory, RabbitMQ and PostgreSQL backends |
//! | [`device_client`] (`ha-device-client`) | the device side: HTTPS client with the seed's linear backoff and a store-and-forward buffer |
#![forbid(unsafe_code)]

pub use ha_core as core;
pub use ha_device_client as device_client;
