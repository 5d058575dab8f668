//! # ha-device-client
//!
//! WIP
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod buffer;
mod client;
mod config;
mod error;
mod event;
mod retry;
pub mod state;
mod transport;

pub use buffer::{Buffer, BufferLimits, EncodedReading, FileBuffer, MemoryBuffer, OverflowPolicy};
pub use client::{Client, FlushReport};
pub use config::{ClientConfig, EventCallback, READINGS_PATH};
pub use error::{Error, ServerError};
pub use event::{Counters, Event, RetryCause};
pub use retry::{MAX_RETRY_AFTER, RetryPolicy};
