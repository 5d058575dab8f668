//! One PUBLISH through the same checks and the same group-commit path as a
//! `POST /v1/readings`: the answer is known only after the broker
//! confirmed the message carrying the readings.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::reason::Reason;
use crate::ingest::State;
use crate::queue::partition_for;
use crate::wire::{EncodedReadings, ParseError, Reading, Timestamp, UncheckedBody};

/// Why a publish got no success: the reason code and a reason string.
pub(super) type Refusal = (Reason, String);

/// The topic a device publishes its readings to: `readings/{device}`.
pub fn topic_of(device: &str) -> String {
    format!("readings/{device}")
}

/// Checks a publish of `device` (the authenticated one) like the HTTP
/// handler checks a request: topic (0x87/0x90), shape and rules (0x99, the
/// body's own error code in the reason string), then the device's rate
/// (0x97). Returns the readings to publish.
pub(super) fn check(
    state: &State,
    device: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Vec<Reading>, Refusal> {
    if state.draining.load(Ordering::SeqCst) {
        return Err((Reason::ShuttingDown, "this replica is shutting down".into()));
    }
    match topic.strip_prefix("readings/") {
        Some(d) if d == device => {}
        Some(_) => {
            return Err((
                Reason::NotAuthorized,
                format!("a device may only publish to `{}`", topic_of(device)),
            ));
        }
        None => {
            return Err((
                Reason::TopicNameInvalid,
                format!("the only topic is `{}`", topic_of(device)),
            ));
        }
    }
    let unchecked = UncheckedBody::parse(payload).map_err(|e| {
        let why = match e {
            ParseError::TooLarge { .. } => "body_too_large".to_owned(),
            ParseError::Malformed { message, field, .. } => match field {
                Some(f) => format!("malformed: {message} at {f}"),
                None => format!("malformed: {message}"),
            },
            other => format!("malformed: {other}"),
        };
        (Reason::PayloadFormatInvalid, why)
    })?;
    if let Some(i) = unchecked.device_ids().position(|d| d != device) {
        return Err((
            Reason::NotAuthorized,
            format!("wrong_device: reading {i} belongs to another device than `{device}`"),
        ));
    }
    let body = unchecked
        .validate_in(Timestamp::now(), state.config.max_reading_age)
        .map_err(|e| {
            let field = match e.index {
                Some(i) => format!("readings[{i}].{}", e.field),
                None => e.field.clone(),
            };
            (
                Reason::PayloadFormatInvalid,
                format!("{}: {} at {field}", e.rule.code(), e.rule.describe()),
            )
        })?;
    if let Some(limiter) = &state.limiter {
        limiter.take(device, body.readings.len()).map_err(|secs| {
            (
                Reason::QuotaExceeded,
                format!("rate_limited: retry after {secs} s"),
            )
        })?;
    }
    Ok(body.readings)
}

/// Publishes `readings` (all of one device) through the group-commit
/// batcher of their partition; `Ok` once the broker confirmed them.
/// Every failure here is transient: the client must resend.
pub(super) async fn publish(state: Arc<State>, readings: Vec<Reading>) -> Result<(), Refusal> {
    let busy = |why: &str| (Reason::ServerBusy, why.to_owned());
    // The same bound as HTTP requests: never an unbounded in-memory queue.
    let Ok(_permit) = state.in_flight.try_acquire() else {
        return Err(busy("too many publishes in flight; reconnect and resend"));
    };
    let Some(first) = readings.first() else {
        return Ok(());
    };
    let partition = partition_for(&first.device_id, state.queue.partitions());
    let n = readings.len();
    let encoded = EncodedReadings::encode(&readings);
    drop(readings);
    let started = tokio::time::Instant::now();
    let outcome = match state.batchers.submit(partition, encoded).await {
        Ok(outcome) => outcome,
        Err(_) => {
            return Err((Reason::ShuttingDown, "this replica is shutting down".into()));
        }
    };
    match outcome.await {
        Ok(Ok(())) => {
            state
                .metrics
                .ack_wait
                .observe(started.elapsed().as_secs_f64());
            state.metrics.readings_accepted.inc_by(n as u64);
            state.broker_ok();
            Ok(())
        }
        // The batcher logged the error once for the whole message.
        Ok(Err(_)) | Err(_) => {
            state.broker_failed();
            Err(busy("the queue did not confirm the readings; resend"))
        }
    }
}
