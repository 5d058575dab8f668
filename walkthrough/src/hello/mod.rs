//! `hello`: the Kubernetes walkthrough's first app. It greets, shows which
//! host and user it runs as (to see replicas, `securityContext` and volumes
//! at work), and keeps a log file on a volume that `/logs` reads back.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | a short HTML page: app, version, host name, user and ids |
//! | `GET /hello/{name}` | `{"message": "Hello, <name>!", "hostname": ...}`; appends a line to the log file (time, host, client address, method, path, status, latency, name: see [`AccessRecord`]). `name`: 1–64 characters, no control characters, else `400` |
//! | `GET /logs?lines=N` | `{"file": ..., "lines": [...]}`: the last `N` lines (default 100, at most 10 000) of the log file; a missing file gives `[]` |
//! | `GET /healthz` | `ok` |
//!
//! Errors are JSON: `{"error": "<code>", "message": "..."}`.

mod access_log;
mod identity;
mod log_file;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use ha_core::http::ApiError;

pub use access_log::{AccessRecord, Greeting};
pub use identity::{Identity, effective_id, user_name};
pub use log_file::{append_line, tail, tail_lines};

/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Lines `/logs` returns when not asked otherwise.
pub const DEFAULT_LOG_LINES: usize = 100;
/// Most lines `/logs` returns.
pub const MAX_LOG_LINES: usize = 10_000;

/// Settings of the hello app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloConfig {
    /// The greeting log (a volume in Kubernetes); its directory must exist.
    pub log_file: PathBuf,
}

impl Default for HelloConfig {
    fn default() -> Self {
        HelloConfig {
            log_file: PathBuf::from("/var/log/hello/hello.log"),
        }
    }
}

struct HelloState {
    config: HelloConfig,
    identity: Identity,
}

/// The hello app's routes: see the [module docs](self).
pub fn router(config: HelloConfig, identity: Identity) -> Router {
    let state = Arc::new(HelloState { config, identity });
    Router::new()
        .route("/", get(index))
        .route("/hello", get(missing_name))
        .route("/hello/", get(missing_name))
        .route("/hello/{name}", get(hello))
        .route("/logs", get(logs))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access_log::record,
        ))
        .with_state(state)
}

/// Why a name is refused, or `None` when it is fine.
pub fn check_name(name: &str) -> Option<&'static str> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        Some("name must be 1 to 64 characters")
    } else if name.chars().any(char::is_control) {
        Some("name must not contain control characters")
    } else {
        None
    }
}

fn bad_name(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", message)
}

async fn index(State(state): State<Arc<HelloState>>) -> Html<String> {
    let id = &state.identity;
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>hello</title></head><body>\n\
         <h1>hello {version}</h1>\n\
         <p>Host: <b>{host}</b></p>\n\
         <p>Running as: <b>{user}</b></p>\n\
         <p>Try <a href=\"/hello/world\">/hello/world</a>, then <a href=\"/logs\">/logs</a>.</p>\n\
         </body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        host = escape_html(&id.hostname),
        user = escape_html(&id.describe_user()),
    ))
}

async fn missing_name() -> Response {
    Greeting::on(
        bad_name("name must be 1 to 64 characters").into_response(),
        "name=(none)".into(),
    )
}

async fn hello(
    State(state): State<Arc<HelloState>>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(_) => {
            return Greeting::on(
                bad_name("the name is not valid percent-encoded UTF-8").into_response(),
                "name=(undecodable)".into(),
            );
        }
    };
    if let Some(problem) = check_name(&name) {
        return Greeting::on(
            bad_name(problem).into_response(),
            format!("name=(invalid, {} chars)", name.chars().count()),
        );
    }
    let response = axum::Json(serde_json::json!({
        "message": format!("Hello, {name}!"),
        "hostname": state.identity.hostname,
    }))
    .into_response();
    Greeting::on(response, format!("name={name:?}"))
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    lines: Option<String>,
}

async fn logs(
    State(state): State<Arc<HelloState>>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let lines = match query.map(|Query(q)| q.lines) {
        Ok(None) => DEFAULT_LOG_LINES,
        Ok(Some(s)) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LOG_LINES).contains(&n) => n,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_lines",
                    format!("lines must be a whole number from 1 to {MAX_LOG_LINES}"),
                )
                .at(Some("lines".into()), None));
            }
        },
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                e.body_text(),
            ));
        }
    };
    let path = state.config.log_file.clone();
    let read = tokio::task::spawn_blocking(move || tail(&path, lines)).await;
    match read {
        Ok(Ok(lines)) => Ok(axum::Json(serde_json::json!({
            "file": state.config.log_file.display().to_string(),
            "lines": lines,
        }))
        .into_response()),
        Ok(Err(e)) => {
            tracing::warn!(file = %state.config.log_file.display(), error = %e, "Cannot read the log file.");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "log_unreadable",
                "the log file cannot be read; see the server log",
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "Log reader task failed.");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ))
        }
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
