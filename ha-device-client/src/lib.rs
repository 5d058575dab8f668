//! # ha-device-client
//!
//! WIP
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod buffer;
mod error;
mod event;
mod retry;
pub mod state;

pub use buffer::{Buffer, BufferLimits, EncodedReading, FileBuffer, MemoryBuffer, OverflowPolicy};
pub use error::{Error, ServerError};
pub use event::{Counters, Event, RetryCause};
pub use retry::{MAX_RETRY_AFTER, RetryPolicy};
