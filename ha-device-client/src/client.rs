//! The async client: validates and buffers readings, flushes them in `seq`
//! order, retries per the policy, and reports what happens.

use std::time::Duration;

use ha_core::wire::{MAX_BODY_BYTES, Reading, Timestamp};
use serde::Deserialize;

use crate::buffer::{Buffer, ClockRefusal, EncodedReading, MemoryBuffer};
use crate::config::{ClientConfig, EventCallback};
use crate::error::{Error, ServerError, is_transient_status};
use crate::event::{Counters, Event};
use crate::retry::RetryCause;
use crate::state::{Action, Delivery, Outcome};
use crate::transport::{Response, Transport};

const BODY_OPEN: &[u8] = b"{\"readings\":[";
const BODY_CLOSE: &[u8] = b"]}";

/// Sends one device's readings to the ingest API.
///
/// The client owns no task: [`push`](Client::push) buffers a reading, and
/// the future returned by [`flush`](Client::flush) does all the network
/// work while the caller awaits it (on any tokio runtime, current-thread
/// included). Dropping that future is safe: readings leave the buffer only
/// when a 2xx covered them.
pub struct Client<B: Buffer = MemoryBuffer> {
    device_id: String,
    transport: Transport,
    buffer: B,
    delivery: Delivery,
    pacing: Duration,
    clock_retry: Duration,
    /// When the readings held for `ts_in_future` go back into the flush
    /// order (`None`: none held).
    next_release: Option<tokio::time::Instant>,
    max_batch_bytes: usize,
    counters: Counters,
    on_event: Option<EventCallback>,
}

impl<B: Buffer> std::fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("device_id", &self.device_id)
            .field("connected", &self.transport.is_connected())
            .field("buffered", &self.buffer.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The outcome of a successful [`Client::flush`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Readings acknowledged by the server.
    pub acknowledged: usize,
    /// Readings moved to the rejected-readings sink.
    pub rejected: usize,
    /// Readings moved to a holding area (refused for a clock rule).
    pub held: usize,
    /// Requests made (retries included).
    pub requests: usize,
}

impl<B: Buffer> Client<B> {
    /// A client for `config` keeping readings in `buffer` (which may hold
    /// readings from an earlier run: they are sent first).
    ///
    /// Errors: [`Error::Config`] / [`Error::TlsConfig`] for a bad
    /// configuration. Does no network I/O.
    pub fn new(mut config: ClientConfig, buffer: B) -> Result<Self, Error> {
        let transport = Transport::new(&config)?;
        let seed = config
            .jitter_seed
            .unwrap_or_else(|| default_seed(&config.device_id));
        let counters = Counters {
            buffered: buffer.len() as u64,
            ..Counters::default()
        };
        // Readings held in an earlier run are tried again at the first flush.
        let next_release =
            (buffer.held_len(ClockRefusal::InFuture) > 0).then(tokio::time::Instant::now);
        Ok(Client {
            clock_retry: config.clock_retry,
            next_release,
            delivery: Delivery::new(config.retry, config.max_batch, seed),
            device_id: config.device_id,
            transport,
            buffer,
            pacing: config.pacing,
            max_batch_bytes: config.max_batch_bytes.min(MAX_BODY_BYTES),
            counters,
            on_event: config.on_event.take(),
        })
    }

    /// Validates `reading` against the wire rules (with the device clock as
    /// `now`) and stores it in the buffer. Does no network I/O.
    ///
    /// Errors: [`Error::InvalidReading`], [`Error::WrongDevice`],
    /// [`Error::DuplicateSeq`]; [`Error::BufferFull`] under `RejectNew`
    /// (also reported as an [`Event::Overflow`]); [`Error::Storage`].
    pub fn push(&mut self, reading: Reading) -> Result<(), Error> {
        if reading.device_id != self.device_id {
            return Err(Error::WrongDevice {
                expected: self.device_id.clone(),
                found: reading.device_id,
            });
        }
        reading.validate_at(Timestamp::now())?;
        let seq = reading.seq;
        match self.buffer.push(EncodedReading::encode(&reading)) {
            Ok(pushed) => {
                if !pushed.dropped.is_empty() {
                    self.counters.dropped += pushed.dropped.len() as u64;
                    self.emit(Event::Overflow {
                        policy: crate::OverflowPolicy::DropOldest,
                        dropped: pushed.dropped,
                    });
                }
                self.counters.buffered = self.buffer.len() as u64;
                Ok(())
            }
            Err(e) => {
                if e.is_buffer_full() {
                    self.counters.dropped += 1;
                    self.emit(Event::Overflow {
                        policy: crate::OverflowPolicy::RejectNew,
                        dropped: vec![seq],
                    });
                }
                Err(e)
            }
        }
    }

    /// [`push`](Self::push) then [`flush`](Self::flush).
    pub async fn send(&mut self, reading: Reading) -> Result<FlushReport, Error> {
        self.push(reading)?;
        self.flush().await
    }

    /// Sends every buffered reading, oldest `seq` first, in batches, pausing
    /// between requests (pacing), retrying per the policy.
    ///
    /// Returns when the buffer is empty. Errors, with the readings still
    /// buffered: [`Error::GaveUp`] when a send exhausted its retries;
    /// [`Error::Unauthorized`] on 401/403; [`Error::Status`] for another
    /// 4xx that is not about the readings (404, 415, ...: a configuration
    /// problem); [`Error::Storage`] if the buffer failed. Readings the
    /// server refused with 400/422 are moved to the rejected-readings sink
    /// and reported ([`Event::Rejected`]); the flush goes on.
    pub async fn flush(&mut self) -> Result<FlushReport, Error> {
        let mut report = FlushReport::default();
        self.release_due()?;
        self.delivery.begin_flush();
        let mut pause = false;
        loop {
            let batches = self.next_batches()?;
            if batches.is_empty() {
                return Ok(report);
            }
            if pause && !self.pacing.is_zero() {
                tokio::time::sleep(self.pacing).await;
            }
            pause = false;
            let bodies: Vec<Vec<u8>> = batches.iter().map(|b| encode_body(b)).collect();
            let (window, events) = {
                let mut events = Vec::new();
                let window = self
                    .transport
                    .post_window(&bodies, &mut |e: Event| events.push(e))
                    .await;
                (window, events)
            };
            for e in events {
                self.emit(e);
            }
            let attempted = window.written.max(window.answers.len()).max(1);
            report.requests += attempted;
            self.counters.sent += batches[..attempted.min(batches.len())]
                .iter()
                .map(|b| b.len() as u64)
                .sum::<u64>();
            // In order; the first answer that is not a success ends the
            // window (the batches after it stay buffered).
            for (batch, result) in batches.iter().zip(window.answers) {
                if !self.on_answer(batch, result, &mut report).await? {
                    break;
                }
                pause = true;
            }
        }
    }

    /// The next batches to send: one, or over MQTT with several publishes
    /// in flight up to the transport's window, consecutive in `seq` order.
    fn next_batches(&self) -> Result<Vec<Vec<EncodedReading>>, Error> {
        let budget = self.max_batch_bytes - BODY_OPEN.len() - BODY_CLOSE.len();
        let limit = self.delivery.batch_limit();
        let window = self.transport.window();
        if window <= 1 {
            let batch = self.buffer.peek(limit, budget)?;
            return Ok(if batch.is_empty() {
                vec![]
            } else {
                vec![batch]
            });
        }
        let readings = self
            .buffer
            .peek(limit.saturating_mul(window), budget.saturating_mul(window))?;
        let mut batches: Vec<Vec<EncodedReading>> = Vec::new();
        let mut bytes = 0;
        for r in readings {
            let size = r.len() + 1;
            let fits = batches
                .last()
                .is_some_and(|b| b.len() < limit && bytes + size <= budget);
            if let (true, Some(b)) = (fits, batches.last_mut()) {
                bytes += size;
                b.push(r);
            } else if batches.len() == window {
                break;
            } else {
                bytes = size;
                batches.push(vec![r]);
            }
        }
        Ok(batches)
    }

    /// Acts on the answer to one batch. `Ok(true)`: acknowledged, go on
    /// with the next; `Ok(false)`: handled (retry waited, split, rejected,
    /// held), peek again.
    async fn on_answer(
        &mut self,
        batch: &[EncodedReading],
        result: Result<Response, Error>,
        report: &mut FlushReport,
    ) -> Result<bool, Error> {
        {
            let (outcome, error) = classify(result);
            match self.delivery.on_outcome(batch.len(), outcome) {
                Action::Acknowledge => {
                    let seqs: Vec<u64> = batch.iter().map(EncodedReading::seq).collect();
                    self.buffer.acknowledge(&seqs)?;
                    self.counters.acknowledged += seqs.len() as u64;
                    self.counters.buffered = self.buffer.len() as u64;
                    report.acknowledged += seqs.len();
                    self.emit(Event::Acknowledged {
                        count: seqs.len(),
                        first_seq: seqs[0],
                        last_seq: seqs[seqs.len() - 1],
                    });
                    Ok(true)
                }
                Action::Retry {
                    attempt,
                    delay,
                    cause,
                } => {
                    self.counters.retried += 1;
                    self.emit(Event::Retry {
                        attempt,
                        delay,
                        cause,
                    });
                    tokio::time::sleep(delay).await;
                    Ok(false)
                }
                Action::GiveUp { retries, cause } => {
                    self.counters.gave_up += 1;
                    self.emit(Event::GaveUp { retries, cause });
                    Err(Error::GaveUp {
                        retries,
                        cause,
                        last: Box::new(error.unwrap_or(Error::Protocol("no error".into()))),
                    })
                }
                Action::Split { batch_limit } => {
                    self.emit(Event::Split { batch_limit });
                    Ok(false)
                }
                Action::Reject { positions } => {
                    let reason = match error {
                        Some(Error::Status(reason)) => reason,
                        _ => ServerError::default(),
                    };
                    let rejected = &batch[positions.clone()];
                    if let Some(refusal) = ClockRefusal::from_code(&reason.code)
                        && let Some(pushed) = self.buffer.hold(rejected, refusal)?
                    {
                        self.on_held(rejected, refusal, reason, pushed.dropped);
                        report.held += rejected.len();
                        return Ok(false);
                    }
                    self.buffer.reject(rejected, &reason)?;
                    self.counters.rejected += rejected.len() as u64;
                    self.counters.buffered = self.buffer.len() as u64;
                    report.rejected += rejected.len();
                    let readings = rejected.iter().filter_map(|r| r.decode().ok()).collect();
                    self.emit(Event::Rejected { readings, reason });
                    Ok(false)
                }
                Action::Hold => Err(match error {
                    Some(Error::Status(reason)) if reason.status == 401 || reason.status == 403 => {
                        self.emit(Event::Unauthorized {
                            reason: reason.clone(),
                        });
                        Error::Unauthorized(reason)
                    }
                    Some(e) => e,
                    None => Error::Protocol("no error".into()),
                }),
            }
        }
    }

    /// The readings held for `refusal` (see
    /// [`buffer`](crate::buffer#clock-refusals)), e.g. to export the ones
    /// refused with `ts_too_old`.
    ///
    /// Errors: [`Error::Storage`].
    pub fn held(&self, refusal: ClockRefusal) -> Result<Vec<Reading>, Error> {
        Ok(self
            .buffer
            .held(refusal)?
            .iter()
            .filter_map(|r| r.decode().ok())
            .collect())
    }

    /// Removes held readings for good, once the application exported them
    /// (or pushed re-stamped copies under new `seq`s).
    ///
    /// Errors: [`Error::Storage`]; they then stay held.
    pub fn forget_held(&mut self, seqs: &[u64]) -> Result<(), Error> {
        self.buffer.forget_held(seqs)
    }

    /// Moves every reading held for `refusal` back into the flush order now
    /// (e.g. `TooOld` after the server's maximum age was raised); returns
    /// how many moved. Readings the buffer's overflow policy drops are
    /// reported as an [`Event::Overflow`].
    ///
    /// Errors: [`Error::Storage`]; what was not moved stays held.
    pub fn release_held(&mut self, refusal: ClockRefusal) -> Result<usize, Error> {
        let before = self.buffer.held_len(refusal);
        let pushed = self.buffer.release(refusal)?;
        let count = before.saturating_sub(self.buffer.held_len(refusal));
        self.counters.released += count as u64;
        self.counters.buffered = self.buffer.len() as u64;
        if !pushed.dropped.is_empty() {
            self.counters.dropped += pushed.dropped.len() as u64;
            self.emit(Event::Overflow {
                policy: crate::OverflowPolicy::DropOldest,
                dropped: pushed.dropped,
            });
        }
        Ok(count)
    }

    /// Moves the readings held for `ts_in_future` back into the flush order
    /// once the clock-retry interval has passed since they were held.
    fn release_due(&mut self) -> Result<(), Error> {
        let Some(at) = self.next_release else {
            return Ok(());
        };
        if tokio::time::Instant::now() < at {
            return Ok(());
        }
        let refusal = ClockRefusal::InFuture;
        let before = self.buffer.held_len(refusal);
        let pushed = self.buffer.release(refusal)?;
        let left = self.buffer.held_len(refusal);
        // What did not fit (`RejectNew`) is tried again after another interval.
        self.next_release = (left > 0).then(|| tokio::time::Instant::now() + self.clock_retry);
        let count = before.saturating_sub(left);
        self.counters.released += count as u64;
        self.counters.dropped += pushed.dropped.len() as u64;
        self.counters.buffered = self.buffer.len() as u64;
        if count > 0 {
            self.emit(Event::Released {
                refusal,
                count,
                dropped: pushed.dropped,
            });
        }
        Ok(())
    }

    fn on_held(
        &mut self,
        held: &[EncodedReading],
        refusal: ClockRefusal,
        reason: ServerError,
        dropped: Vec<u64>,
    ) {
        self.counters.held += held.len() as u64;
        self.counters.held_dropped += dropped.len() as u64;
        self.counters.buffered = self.buffer.len() as u64;
        if refusal == ClockRefusal::InFuture && self.next_release.is_none() {
            self.next_release = Some(tokio::time::Instant::now() + self.clock_retry);
        }
        let readings = held.iter().filter_map(|r| r.decode().ok()).collect();
        self.emit(Event::Held {
            refusal,
            readings,
            reason,
            dropped,
        });
    }

    /// Closes the connection (it is reopened by the next flush).
    pub fn disconnect(&mut self) {
        let mut events = Vec::new();
        self.transport
            .disconnect("closed by the application", &mut |e| events.push(e));
        for e in events {
            self.emit(e);
        }
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.transport.is_connected()
    }

    /// The running totals.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The buffer.
    pub fn buffer(&self) -> &B {
        &self.buffer
    }

    /// The device this client sends for.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Gives the buffer back (with the readings not yet acknowledged).
    pub fn into_buffer(self) -> B {
        self.buffer
    }

    fn emit(&mut self, event: Event) {
        log(&self.device_id, &event);
        if let Some(callback) = self.on_event.as_mut() {
            callback(&event);
        }
    }
}

fn encode_body(batch: &[EncodedReading]) -> Vec<u8> {
    let size: usize = batch.iter().map(|r| r.len() + 1).sum();
    let mut body = Vec::with_capacity(BODY_OPEN.len() + size + BODY_CLOSE.len());
    body.extend_from_slice(BODY_OPEN);
    for (i, r) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(r.json());
    }
    body.extend_from_slice(BODY_CLOSE);
    body
}

/// Maps what the transport returned to the state machine's view, keeping
/// the error (if any) for the caller.
fn classify(result: Result<Response, Error>) -> (Outcome, Option<Error>) {
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let outcome = Outcome::Transient {
                cause: e.retry_cause(),
                retry_after: e.retry_after(),
            };
            return (outcome, Some(e));
        }
    };
    let status = response.status;
    if (200..300).contains(&status) {
        return (Outcome::Accepted, None);
    }
    let reason = server_error(status, &response.body);
    let outcome = match status {
        s if is_transient_status(s) => Outcome::Transient {
            cause: RetryCause::Status(s),
            retry_after: response.retry_after,
        },
        413 => Outcome::TooLarge,
        401 | 403 => Outcome::Unauthorized,
        400 | 422 => Outcome::Invalid {
            index: reason.index,
        },
        _ => Outcome::Refused,
    };
    (outcome, Some(Error::Status(reason)))
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    message: Option<String>,
    field: Option<String>,
    index: Option<usize>,
}

fn server_error(status: u16, body: &[u8]) -> ServerError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ServerError {
            status,
            code: b.error.unwrap_or_else(|| format!("http_{status}")),
            message: b.message.unwrap_or_default(),
            field: b.field,
            index: b.index,
        },
        Err(_) => ServerError {
            status,
            code: format!("http_{status}"),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            field: None,
            index: None,
        },
    }
}

fn default_seed(device_id: &str) -> u64 {
    // FNV-1a of the device id, mixed with the clock: devices differ even
    // when they boot at the same instant with the same image.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^ Timestamp::now().unix_micros() as u64
}

fn log(device: &str, event: &Event) {
    match event {
        Event::Connected { peer } => tracing::debug!(device, %peer, "Connected."),
        Event::Disconnected { reason } => tracing::debug!(device, reason, "Disconnected."),
        Event::Retry {
            attempt,
            delay,
            cause,
        } => tracing::warn!(device, attempt, ?delay, %cause, "Retrying send."),
        Event::GaveUp { retries, cause } => {
            tracing::warn!(device, retries, %cause, "Gave up sending; readings stay buffered.")
        }
        Event::Acknowledged {
            count,
            first_seq,
            last_seq,
        } => tracing::debug!(device, count, first_seq, last_seq, "Readings acknowledged."),
        Event::Split { batch_limit } => {
            tracing::info!(device, batch_limit, "Body too large; splitting the batch.")
        }
        Event::Overflow { policy, dropped } => {
            tracing::error!(
                device,
                ?policy,
                count = dropped.len(),
                "Buffer full; readings dropped."
            )
        }
        Event::Rejected { readings, reason } => {
            tracing::error!(device, count = readings.len(), %reason, "Server rejected readings; moved to the rejected sink.")
        }
        Event::Held {
            refusal,
            readings,
            reason,
            dropped,
        } => {
            tracing::warn!(device, %refusal, count = readings.len(), lost = dropped.len(), %reason, "Server refused readings for their time stamp; held.")
        }
        Event::Released {
            refusal,
            count,
            dropped,
        } => {
            tracing::info!(device, %refusal, count, lost = dropped.len(), "Held readings sent again.")
        }
        Event::Unauthorized { reason } => {
            tracing::error!(device, %reason, "Server refused the credentials; readings stay buffered.")
        }
    }
}
