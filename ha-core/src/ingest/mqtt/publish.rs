//! One PUBLISH through the same path as a `POST /v1/readings`
//! ([`accept_body`]: parse, device, rules, rate, group commit): the answer
//! is known only after the broker confirmed the message carrying the
//! readings. [`refusal`] is the one mapping from [`IngestError`] to MQTT 5
//! reason codes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::reason::Reason;
use crate::ingest::State;
use crate::ingest::error::IngestError;
use crate::ingest::handler::accept_body;

/// Why a publish got no success: the reason code and a reason string.
pub(super) type Refusal = (Reason, String);

/// How long the answer to a device in rate-limit debt is held, as for
/// HTTP: a client that ignores the refusal costs one cheap answer per
/// second and in-flight slot, not one per round trip.
const DEBT_PAUSE: Duration = Duration::from_secs(1);

/// The topic a device publishes its readings to: `readings/{device}`.
pub fn topic_of(device: &str) -> String {
    format!("readings/{device}")
}

/// The topic must be the authenticated device's own (0x87 for another
/// device's, 0x90 for anything else).
pub(super) fn check_topic(device: &str, topic: &str) -> Result<(), Refusal> {
    match topic.strip_prefix("readings/") {
        Some(d) if d == device => Ok(()),
        Some(_) => Err((
            Reason::NotAuthorized,
            format!("a device may only publish to `{}`", topic_of(device)),
        )),
        None => Err((
            Reason::TopicNameInvalid,
            format!("the only topic is `{}`", topic_of(device)),
        )),
    }
}

/// Accepts the readings of one publish of `device`: `Ok` once the broker
/// confirmed them all; nothing of a refused payload is published.
pub(super) async fn accept(
    state: Arc<State>,
    device: String,
    payload: Bytes,
) -> Result<(), Refusal> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(refusal(&IngestError::Draining));
    }
    // A device in debt is refused before its payload is parsed.
    if let Some(limiter) = &state.limiter
        && let Err(retry_after_secs) = limiter.check(&device)
    {
        tokio::time::sleep(DEBT_PAUSE.min(Duration::from_secs(u64::from(retry_after_secs)))).await;
        return Err(refusal(&IngestError::RateLimited { retry_after_secs }));
    }
    // The same bound as HTTP requests: never an unbounded in-memory queue.
    let Ok(_slot) = state.in_flight.try_acquire() else {
        return Err(refusal(&IngestError::Overloaded));
    };
    // Always the topic's device, with or without keys: a publish only
    // carries readings of the device it is published as.
    accept_body(&state, Some(&device), &payload)
        .await
        .map(|_| ())
        .map_err(|e| refusal(&e))
}

/// The MQTT answer to an ingest refusal: the reason code, and a reason
/// string that starts with the HTTP error code (`ts_in_future: ... at
/// readings[0].ts`) so that both transports name a refusal alike.
pub(super) fn refusal(e: &IngestError) -> Refusal {
    let reason = match e {
        IngestError::Draining => Reason::ShuttingDown,
        _ if e.is_transient() => Reason::ServerBusy,
        IngestError::RateLimited { .. } => Reason::QuotaExceeded,
        IngestError::WrongDevice { .. } | IngestError::Unauthorized(_) => Reason::NotAuthorized,
        _ => Reason::PayloadFormatInvalid,
    };
    let api = e.to_api(0);
    let mut why = format!("{}: {}", api.error, api.message);
    if let Some(field) = &api.field {
        why.push_str(&format!(" at {field}"));
    }
    if let IngestError::RateLimited { retry_after_secs } = e {
        why = format!("rate_limited: retry after {retry_after_secs} s");
    }
    (reason, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Rule, ValidationError};

    #[test]
    fn every_ingest_error_maps_to_one_reason_code() {
        let cases = [
            (IngestError::Draining, 0x8B, "draining"),
            (IngestError::Overloaded, 0x89, "overloaded"),
            (IngestError::Broker(None), 0x89, "broker_unavailable"),
            (
                IngestError::RateLimited {
                    retry_after_secs: 4,
                },
                0x97,
                "rate_limited: retry after 4 s",
            ),
            (
                IngestError::WrongDevice {
                    index: 0,
                    device: "d".into(),
                },
                0x87,
                "wrong_device",
            ),
            (IngestError::TooLarge, 0x99, "body_too_large"),
            (
                IngestError::from(ValidationError::new(Some(0), "ts", Rule::TsInFuture)),
                0x99,
                "ts_in_future: ts must not be more than 5 minutes in the future at readings[0].ts",
            ),
        ];
        for (e, code, why) in cases {
            let (reason, text) = refusal(&e);
            assert_eq!(reason.code(), code, "{e}");
            assert!(text.starts_with(why), "{text}");
            assert_eq!(reason.is_transient(), e.is_transient(), "{e}");
        }
    }

    #[test]
    fn only_the_own_topic_is_accepted() {
        assert_eq!(check_topic("d-1", "readings/d-1"), Ok(()));
        assert_eq!(
            check_topic("d-1", "readings/d-2").unwrap_err().0,
            Reason::NotAuthorized
        );
        assert_eq!(
            check_topic("d-1", "readings/d-1/x").unwrap_err().0,
            Reason::NotAuthorized
        );
        assert_eq!(
            check_topic("d-1", "other").unwrap_err().0,
            Reason::TopicNameInvalid
        );
    }
}
