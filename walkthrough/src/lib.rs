//! # walkthrough
//!
//! The small apps of the Kubernetes walkthrough, one module per app so each
//! can be tested in-process; `src/bin/` holds thin `main`s. They share the
//! services' flags and logging (`reference_apps::service`), nothing else of
//! the pipeline.
//!
//! ```no_run
//! use walkthrough::hello::{self, HelloConfig, Identity};
//!
//! # async fn example() -> std::io::Result<()> {
//! // What the `hello` binary serves, on a port of your choice.
//! let config = HelloConfig { log_file: "/tmp/hello.log".into() };
//! let app = hello::router(config, Identity::current());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! | binary | module | job |
//! |---|---|---|
//! | `hello` | [`hello`] | greets, shows its host and user, a log file on a volume |
//! | `cpu-stresser` | [`cpu_stresser`] | burns CPU for the autoscaler demo |
//! | `ram-hogger` | [`ram_hogger`] | grows its resident memory for the memory-limit demo |

pub mod cpu_stresser;
pub mod hello;
pub mod ram_hogger;
