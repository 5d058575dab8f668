//! # walkthrough
//!
//! The small apps of the Kubernetes walkthrough, one module per app so each
//! can be tested in-process; `src/bin/` holds thin `main`s. They share the
//! services' flags and logging (`reference_apps::service`), nothing else of
//! the pipeline.
//!
//! | binary | module | job |
//! |---|---|---|
//! | `hello` | [`hello`] | greets, shows its host and user, a log file on a volume |
//! | `cpu-stresser` | [`cpu_stresser`] | burns CPU for the autoscaler demo |
//! | `ram-hogger` | [`ram_hogger`] | grows its resident memory for the memory-limit demo |
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod cpu_stresser;
pub mod hello;
pub mod ram_hogger;
