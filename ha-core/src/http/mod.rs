//! HTTP plumbing shared by the services (feature `server`): serving a router
//! over TLS or plain TCP with graceful drain, and the JSON error body.

mod error;
mod metrics;
mod serve;

pub use error::ApiError;
pub use metrics::{json_document, metrics_response};
pub use serve::{ServeError, load_tls, serve};
