//! The ingest routes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;

use super::error::IngestError;
use super::metrics::Outcome;
use super::{State, batcher};
use crate::queue::partition_for;
use crate::wire::{EncodedReadings, MAX_BODY_BYTES, Reading, Timestamp, UncheckedBody};

type S = AxumState<Arc<State>>;

/// How long the answer to a device in rate-limit debt is held (see
/// [`accept`]).
const DEBT_PAUSE: Duration = Duration::from_secs(1);

fn count(state: &State, status: StatusCode, code: &str) {
    state
        .metrics
        .requests
        .get_or_create(&Outcome {
            status: status.as_u16(),
            code: code.to_owned(),
        })
        .inc();
}

/// `POST /v1/readings`.
///
/// Takes the whole request (not a `HeaderMap` extractor, which would clone
/// every header) and answers the common one-reading success from a static
/// body.
pub(super) async fn post_readings(AxumState(state): S, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match accept(&state, &parts.headers, body).await {
        Ok(n) => {
            state
                .accepted
                .get_or_init(|| {
                    state
                        .metrics
                        .requests
                        .get_or_create(&Outcome {
                            status: StatusCode::ACCEPTED.as_u16(),
                            code: "accepted".to_owned(),
                        })
                        .clone()
                })
                .inc();
            let body = match n {
                1 => Body::from(Bytes::from_static(b"{\"accepted\":1}")),
                n => Body::from(format!("{{\"accepted\":{n}}}")),
            };
            (
                StatusCode::ACCEPTED,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Err(e) => {
            count(&state, e.status(), e.code());
            e.to_api(state.config.retry_after_secs).into_response()
        }
    }
}

/// The HTTP side of a request: the headers' checks, the in-flight slot and
/// the body, then [`accept_body`].
async fn accept(state: &State, headers: &HeaderMap, body: Body) -> Result<usize, IngestError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(IngestError::Draining);
    }
    // 401: credentials, from the headers alone, before any body byte is read.
    let device = match &state.config.keys {
        Some(keys) => Some(keys.verify(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))?),
        None => None,
    };
    // 429: a device in debt is refused before its body is read or parsed,
    // after a pause: a client that ignores `Retry-After` then costs one
    // cheap refusal per second and connection, not one per round trip.
    if let (Some(limiter), Some(device)) = (&state.limiter, &device)
        && let Err(retry_after_secs) = limiter.check(device)
    {
        tokio::time::sleep(DEBT_PAUSE.min(Duration::from_secs(u64::from(retry_after_secs)))).await;
        return Err(IngestError::RateLimited { retry_after_secs });
    }
    // 415: the content type.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(IngestError::UnsupportedMediaType);
    }
    // 413: the size, from Content-Length when given, else while reading.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(IngestError::TooLarge);
    }
    // 503: bounded requests in flight, never an unbounded in-memory queue;
    // taken before the body is read, so at most that many bodies (1 MiB
    // each) are buffered at once, however many streams a client opens.
    let Ok(_permit) = state.in_flight.try_acquire() else {
        return Err(IngestError::Overloaded);
    };
    let bytes = tokio::time::timeout(state.config.body_timeout, read_limited(body))
        .await
        .map_err(|_| IngestError::BodyTimeout(state.config.body_timeout))??;
    accept_body(state, device.as_deref(), &bytes).await
}

/// Parses, checks and publishes one body of readings, for any transport:
/// resolves with the number of readings once the queue confirmed every one
/// of them. `device` is the authenticated device (`None` when the service
/// runs without keys). The caller holds an in-flight slot.
pub(super) async fn accept_body(
    state: &State,
    device: Option<&str>,
    bytes: &[u8],
) -> Result<usize, IngestError> {
    let readings = match checked(state, device, bytes) {
        Ok(readings) => readings,
        Err(e) => {
            // A refused body still cost its parse: the authenticated device
            // pays for its bytes (the answer stays the refusal's own).
            if let (Some(limiter), Some(device)) = (&state.limiter, device) {
                let _ = limiter.take(device, 0, bytes.len());
            }
            return Err(e);
        }
    };
    // 429: the device's rate.
    if let Some(limiter) = &state.limiter {
        let device = device.unwrap_or(readings[0].device_id.as_str());
        limiter
            .take(device, readings.len(), bytes.len())
            .map_err(|retry_after_secs| IngestError::RateLimited { retry_after_secs })?;
    }
    let n = readings.len();
    publish(state, readings).await?;
    state.metrics.readings_accepted.inc_by(n as u64);
    state.metrics.batch_readings.observe(n as f64);
    Ok(n)
}

/// The readings of a body: parsed (400), owned by the authenticated device
/// (403) and valid (422).
fn checked(state: &State, device: Option<&str>, bytes: &[u8]) -> Result<Vec<Reading>, IngestError> {
    let unchecked = UncheckedBody::parse(bytes)?;
    if let Some(device) = device
        && let Some(index) = unchecked.device_ids().position(|d| d != device)
    {
        return Err(IngestError::WrongDevice {
            index,
            device: device.to_owned(),
        });
    }
    Ok(unchecked
        .validate_in(Timestamp::now(), state.config.max_reading_age)?
        .readings)
}

/// Hands the readings to the batcher of each partition they touch and
/// resolves once every message carrying them was confirmed.
async fn publish(state: &State, readings: Vec<Reading>) -> Result<(), IngestError> {
    let partitions = state.queue.partitions();
    let Some(first) = readings
        .first()
        .map(|r| partition_for(&r.device_id, partitions))
    else {
        return Ok(());
    };
    let _waiting = Waiting::new(&state.metrics.in_flight);
    let started = tokio::time::Instant::now();
    if readings
        .iter()
        .skip(1)
        .all(|r| partition_for(&r.device_id, partitions) == first)
    {
        // The common case (an authenticated device's readings): one
        // submission, awaited without collecting anything.
        let outcome = submit(state, first, EncodedReadings::encode(&readings)).await?;
        confirmed(state, outcome).await?;
    } else {
        let mut by_partition: BTreeMap<u32, Vec<Reading>> = BTreeMap::new();
        for r in readings {
            by_partition
                .entry(partition_for(&r.device_id, partitions))
                .or_default()
                .push(r);
        }
        let mut outcomes = Vec::with_capacity(by_partition.len());
        for (partition, rs) in by_partition {
            outcomes.push(submit(state, partition, EncodedReadings::encode(&rs)).await?);
        }
        for outcome in outcomes {
            confirmed(state, outcome).await?;
        }
    }
    state
        .metrics
        .ack_wait
        .observe(started.elapsed().as_secs_f64());
    state.broker_ok();
    Ok(())
}

type Pending = tokio::sync::oneshot::Receiver<batcher::Outcome>;

async fn submit(
    state: &State,
    partition: u32,
    encoded: EncodedReadings,
) -> Result<Pending, IngestError> {
    state
        .batchers
        .submit(partition, encoded)
        .await
        .map_err(|batcher::Closed| IngestError::Draining)
}

/// Waits for a submission's message to be confirmed; a failure is recorded.
async fn confirmed(state: &State, outcome: Pending) -> Result<(), IngestError> {
    let failure = match outcome.await {
        Ok(Ok(())) => return Ok(()),
        // The batcher logged the error once for the whole message.
        Ok(Err(e)) => Some(e),
        Err(_) => {
            tracing::warn!("A batcher ended without answering; answering 503.");
            None
        }
    };
    state.broker_failed();
    Err(IngestError::Broker(failure))
}

/// Counts a request as waiting for as long as it lives (also when the
/// client hangs up and the request future is dropped).
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn read_limited(body: Body) -> Result<Bytes, IngestError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(IngestError::TooLarge),
        Err(e) => Err(IngestError::BodyUnreadable(axum::Error::new(e))),
    }
}

/// `GET /healthz`: the process is alive.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the service is not draining and the broker answers.
///
/// A success within `ready_cache` answers at once. Within `ready_grace`
/// of it, with no publish failed since, the answer stays "ready" while a
/// check runs in the background. Otherwise (never checked, a failure, or
/// silence past the grace) the broker is checked before answering.
pub(super) async fn readyz(AxumState(state): S) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let ok = state.last_broker_ok.load(Ordering::Relaxed);
    let healthy = state.last_broker_err.load(Ordering::Relaxed) < ok;
    let since_ok = state.now_ms().saturating_sub(ok);
    if healthy && since_ok < state.config.ready_cache.as_millis() as i64 {
        return (StatusCode::OK, "ready\n").into_response();
    }
    if healthy && since_ok < state.config.ready_grace.as_millis() as i64 {
        if !state.probing.swap(true, Ordering::SeqCst) {
            let state = state.clone();
            tokio::spawn(async move {
                let _ = check_broker(&state).await;
                state.probing.store(false, Ordering::SeqCst);
            });
        }
        return (StatusCode::OK, "ready\n").into_response();
    }
    match check_broker(&state).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// Asks the broker for a queue depth (2 s at most); records the outcome.
async fn check_broker(state: &State) -> Result<(), String> {
    let probe = tokio::time::timeout(std::time::Duration::from_secs(2), state.queue.depth(0)).await;
    let result = match probe {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("broker unavailable: {e}\n")),
        Err(_) => Err("broker did not answer\n".to_owned()),
    };
    match &result {
        Ok(()) => state.broker_ok(),
        Err(_) => state.broker_failed(),
    }
    result
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(AxumState(state): S) -> Response {
    crate::http::metrics_response(&state.registry)
}

/// `GET /openapi.json`.
pub(super) async fn openapi() -> Response {
    crate::http::json_document(include_str!("openapi.json"))
}

/// `POST /kill`: runs the binary's kill hook (failover drills: it ends the
/// process at once, without draining). The library never exits by itself.
pub(super) async fn kill(AxumState(state): S) -> Response {
    match &state.config.kill {
        Some(hook) => {
            tracing::warn!("POST /kill: calling the kill hook.");
            hook.call();
            StatusCode::ACCEPTED.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
