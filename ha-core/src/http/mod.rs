//! HTTP plumbing shared by the services (feature `server`): serving a router
//! over TLS or plain TCP with graceful drain, and the JSON error body.

mod conn;
mod drain;
mod error;
mod linger;
mod metrics;
mod park;
pub mod request_id;
mod serve;

pub use error::ApiError;
pub use linger::Linger;
pub use metrics::{json_document, metrics_response};
pub use request_id::RequestId;
pub use serve::{
    ConnectionMetrics, ServeConfig, ServeError, load_tls, serve, serve_handing_over, serve_with,
};
