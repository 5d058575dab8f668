//! The JSON routes and the probes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::State;
use super::params::{self, RawParams};
use crate::http::ApiError;
use crate::store::{Anomaly, SeqGap, StoreError, StoredValue};
use crate::wire::{Timestamp, is_valid_device_id};

type S = AxumState<Arc<State>>;

/// Maps a store failure to an answer: the client's own mistakes precisely,
/// ours generically (and logged).
pub(super) fn store_error(state: &State, e: StoreError) -> ApiError {
    state.metrics.store_errors.inc();
    match e {
        StoreError::InvalidQuery(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", m),
        e if e.is_transient() => {
            tracing::warn!(error = %e, "Store unavailable; answering 503.");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the database is unavailable; retry",
            )
            .retry_after(1)
        }
        other => {
            tracing::error!(error = %other, "Store query failed.");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the query failed",
            )
        }
    }
}

/// Runs a store call with the configured timeout.
pub(super) async fn with_store<T>(
    state: &State,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(state.config.store_timeout, call).await {
        Ok(r) => r.map_err(|e| store_error(state, e)),
        Err(_) => {
            state.metrics.store_errors.inc();
            tracing::warn!(timeout = ?state.config.store_timeout, "Store call timed out.");
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "store_timeout",
                "the database did not answer in time; retry",
            )
            .retry_after(1))
        }
    }
}

fn json<T: Serialize>(value: &T) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(value)).into_response()
}

fn check_device(id: &str) -> Result<(), ApiError> {
    if is_valid_device_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "malformed device id",
        )
        .at(Some("id".into()), None))
    }
}

/// A page of `/v1/anomalies`.
#[derive(Serialize)]
struct AnomalyPage {
    items: Vec<Anomaly>,
    next_cursor: Option<String>,
}

/// `GET /v1/anomalies`.
pub(super) async fn anomalies(AxumState(state): S, raw: RawParams) -> Result<Response, ApiError> {
    let query = params::anomaly_query(raw)?;
    let page = with_store(&state, state.store.anomalies(&query)).await?;
    Ok(json(&AnomalyPage {
        items: page.items,
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}

/// The answer of `/v1/devices/{id}/readings`.
#[derive(Serialize)]
struct Readings {
    device_id: String,
    from: Timestamp,
    to: Timestamp,
    items: Vec<StoredValue>,
    /// More values exist in the range than `limit`: ask for a shorter range.
    truncated: bool,
}

/// `GET /v1/devices/{id}/readings`.
pub(super) async fn readings(
    AxumState(state): S,
    Path(id): Path<String>,
    raw: RawParams,
) -> Result<Response, ApiError> {
    check_device(&id)?;
    let (query, limit) = params::reading_query(id, raw, Timestamp::now())?;
    let mut items = with_store(&state, state.store.readings(&query)).await?;
    let truncated = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(json(&Readings {
        device_id: query.device_id,
        from: query.from,
        to: query.to,
        items,
        truncated,
    }))
}

/// The answer of `/v1/devices/{id}/health`.
#[derive(Serialize)]
struct Health {
    device_id: String,
    last_seen: Timestamp,
    last_seq: u64,
    /// Missing `seq` ranges, oldest first, among `gap_search`.
    seq_gaps: Vec<SeqGap>,
    /// Where gaps were searched: the bounded window below `last_seq`.
    gap_search: GapSearch,
}

#[derive(Serialize)]
struct GapSearch {
    from_seq: u64,
    to_seq: u64,
    max_gaps: u32,
    /// `max_gaps` were found: more may exist in the window.
    truncated: bool,
}

/// `GET /v1/devices/{id}/health`: gaps are searched only in the
/// [`gap_window`](super::AlertsConfig::gap_window) seqs up to the newest,
/// so the query cost is bounded however long the device has been sending.
pub(super) async fn health(
    AxumState(state): S,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_device(&id)?;
    let Some(status) = with_store(&state, state.store.device_status(&id)).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_device",
            format!("no readings stored for device `{id}`"),
        ));
    };
    let to_seq = status.last_seq;
    let from_seq = to_seq.saturating_sub(state.config.gap_window);
    let max_gaps = state.config.max_gaps;
    let seq_gaps = with_store(
        &state,
        state.store.seq_gaps(&id, from_seq, to_seq, max_gaps),
    )
    .await?;
    Ok(json(&Health {
        device_id: status.device_id,
        last_seen: status.last_seen,
        last_seq: status.last_seq,
        gap_search: GapSearch {
            from_seq,
            to_seq,
            max_gaps,
            truncated: seq_gaps.len() >= max_gaps as usize,
        },
        seq_gaps,
    }))
}

/// `GET /healthz`: the process is alive.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Bound on the `/readyz` store probe.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /readyz`: the store answers and the service is not draining.
pub(super) async fn readyz(AxumState(state): S) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    // Any cheap indexed query proves the database answers; the id is a
    // valid one no device is expected to have.
    let probe = state.store.device_status("ha-alerts-readiness-probe");
    match tokio::time::timeout(READY_PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store did not answer\n").into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(AxumState(state): S) -> Response {
    crate::http::metrics_response(&state.registry)
}

/// `GET /openapi.json`.
pub(super) async fn openapi() -> Response {
    crate::http::json_document(include_str!("openapi.json"))
}

/// Any other path: a JSON `404`.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
