//! The greeting log's lines: one per `/hello` request, written once the
//! answer is known, with who asked, what, the outcome and how long it took:
//!
//! ```text
//! 2026-11-27T07:00:00.123456Z pod-1 hello client=10.0.0.7:51234 method=GET path=/hello/world status=200 latency_ms=0.214 name="world"
//! ```
//!
//! `path` is the request's path as sent (percent-encoded, so it holds no
//! space or line break); for a refused request it is the route instead
//! (`/hello/{name}`), so that a name the app refused is never copied into
//! the log. `client` is `-` when the server did not say (a router driven
//! without a socket, as in unit tests).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ha_core::wire::Timestamp;
use tokio::time::Instant;

use super::{HelloState, append_line};

/// What a handler asks to be logged about its request (`name=...`): set
/// on the response, the log layer adds the rest and writes the line.
#[derive(Clone, Debug)]
pub struct Greeting(
    /// `name="world"`.
    pub String,
);

impl Greeting {
    /// `response` with this greeting attached.
    pub fn on(mut response: Response, what: String) -> Response {
        response.extensions_mut().insert(Greeting(what));
        response
    }
}

/// One line of the greeting log.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessRecord {
    /// When the answer was ready.
    pub time: Timestamp,
    /// The host name (the pod's, in Kubernetes).
    pub host: String,
    /// The client's address, when the server gave it.
    pub client: Option<SocketAddr>,
    /// `GET`.
    pub method: String,
    /// The path as sent, or the route for a refused request.
    pub path: String,
    /// The answer's status.
    pub status: u16,
    /// From the request's arrival to its answer, in milliseconds.
    pub latency_ms: f64,
    /// The handler's part (`name="world"`).
    pub what: String,
}

impl AccessRecord {
    /// The line, without its newline.
    pub fn line(&self) -> String {
        let client = self
            .client
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        format!(
            "{} {} hello client={client} method={} path={} status={} latency_ms={:.3} {}",
            self.time, self.host, self.method, self.path, self.status, self.latency_ms, self.what
        )
    }
}

/// The log layer: runs the request, then appends its line when the handler
/// attached a [`Greeting`]. A failed append is logged, not returned: the
/// greeting matters more than its record.
pub(super) async fn record(
    State(state): State<Arc<HelloState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let method = request.method().to_string();
    let sent_path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let response = next.run(request).await;
    let Some(Greeting(what)) = response.extensions().get::<Greeting>().cloned() else {
        return response;
    };
    let status = response.status();
    let path = if status.is_client_error() || status.is_server_error() {
        route.unwrap_or_else(|| "(refused)".to_owned())
    } else {
        sent_path
    };
    let entry = AccessRecord {
        time: Timestamp::now(),
        host: state.identity.hostname.clone(),
        client,
        method,
        path,
        status: status.as_u16(),
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
        what,
    };
    let file = state.config.log_file.clone();
    let line = entry.line();
    let written = tokio::task::spawn_blocking(move || append_line(&file, &line)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            file = %state.config.log_file.display(),
            error = %e,
            "Cannot append to the log file."
        ),
        Err(e) => tracing::warn!(error = %e, "Log writer task failed."),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_every_field_in_order() {
        let mut r = AccessRecord {
            time: Timestamp::from_unix_micros(1_795_694_400_000_001),
            host: "pod-1".into(),
            client: Some("10.0.0.7:51234".parse().unwrap()),
            method: "GET".into(),
            path: "/hello/world".into(),
            status: 200,
            latency_ms: 0.2144,
            what: "name=\"world\"".into(),
        };
        let line = r.line();
        assert!(
            line.ends_with(
                " pod-1 hello client=10.0.0.7:51234 method=GET path=/hello/world status=200 latency_ms=0.214 name=\"world\""
            ),
            "{line}"
        );
        assert!(line.starts_with(&r.time.to_string()), "{line}");
        r.client = None;
        assert!(r.line().contains(" client=- "), "{}", r.line());
    }
}
