//! The pure core of the client: what to do after each attempt to send a
//! batch. No sockets, no clock, no buffer: the client feeds in what an
//! attempt came to and gets back the next step, with delays as values.

use std::ops::Range;
use std::time::Duration;

use crate::retry::{JitterRng, RetryCause, RetryPolicy};

/// What one attempt to send a batch came to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// 2xx: every reading of the batch is durable.
    Accepted,
    /// Worth retrying: connection trouble, timeout, 408, 429, 5xx.
    Transient {
        /// What went wrong.
        cause: RetryCause,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// 413: the body was too large.
    TooLarge,
    /// 401/403: credentials refused.
    Unauthorized,
    /// Another 4xx (404, 415, ...) or an unexpected status: the request
    /// itself is wrong for this server (configuration, version skew).
    Refused,
    /// 400/422 and other 4xx: the request was refused for its content;
    /// `index` names the offending reading when the server said which.
    Invalid {
        /// Position of the offending reading in the batch.
        index: Option<usize>,
    },
}

/// The next step after an [`Outcome`].
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Remove the batch from the buffer; go on with the next one.
    Acknowledge,
    /// Wait `delay`, then send again (the same oldest readings).
    Retry {
        /// 1-based retry number within this send.
        attempt: u32,
        /// How long to wait first.
        delay: Duration,
        /// Why.
        cause: RetryCause,
    },
    /// Stop: retries are exhausted. The readings stay buffered.
    GiveUp {
        /// Retries made.
        retries: u32,
        /// What the last attempt ran into.
        cause: RetryCause,
    },
    /// Send at most `batch_limit` readings per request from now on, and
    /// send again at once (not counted as a retry).
    Split {
        /// The new largest batch.
        batch_limit: usize,
    },
    /// Move these readings of the batch (positions) to the
    /// rejected-readings sink, then go on with the rest at once.
    Reject {
        /// Positions in the batch.
        positions: Range<usize>,
    },
    /// Stop: credentials refused, or a request this server will never
    /// take. The readings stay buffered.
    Hold,
}

/// The send/retry/give-up state of one client.
///
/// The retry count covers one *send*: the consecutive transient failures
/// of the batch at the head of the buffer. Anything that makes progress
/// (an acknowledgement, a split, a rejection) starts a new send.
#[derive(Clone, Debug)]
pub struct Delivery {
    policy: RetryPolicy,
    rng: JitterRng,
    max_batch: usize,
    batch_limit: usize,
    retries: u32,
}

impl Delivery {
    /// A state machine retrying per `policy`, sending at most `max_batch`
    /// readings per request, drawing jitter from a generator seeded with
    /// `seed`.
    pub fn new(policy: RetryPolicy, max_batch: usize, seed: u64) -> Self {
        let max_batch = max_batch.max(1);
        Delivery {
            policy,
            rng: JitterRng::new(seed),
            max_batch,
            batch_limit: max_batch,
            retries: 0,
        }
    }

    /// Starts a flush: the batch limit goes back to its configured maximum
    /// (a server that answered 413 may have been reconfigured since) and
    /// the retry budget is full again.
    pub fn begin_flush(&mut self) {
        self.batch_limit = self.max_batch;
        self.retries = 0;
    }

    /// The largest batch to send now, in readings.
    pub fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    /// Retries made so far in the current send.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Decides the next step after an attempt to send a batch of
    /// `batch_len` readings came to `outcome`.
    pub fn on_outcome(&mut self, batch_len: usize, outcome: Outcome) -> Action {
        match outcome {
            Outcome::Accepted => {
                self.retries = 0;
                Action::Acknowledge
            }
            Outcome::Transient { cause, retry_after } => {
                if self.retries >= self.policy.max_retries() {
                    let retries = self.retries;
                    self.retries = 0;
                    return Action::GiveUp { retries, cause };
                }
                self.retries += 1;
                let u = self.rng.next_unit();
                Action::Retry {
                    attempt: self.retries,
                    delay: self.policy.delay(self.retries, u, retry_after),
                    cause,
                }
            }
            Outcome::TooLarge => {
                self.retries = 0;
                self.split_or_reject(batch_len)
            }
            Outcome::Unauthorized | Outcome::Refused => {
                self.retries = 0;
                Action::Hold
            }
            Outcome::Invalid { index } => {
                self.retries = 0;
                match index {
                    Some(i) if i < batch_len => Action::Reject {
                        positions: i..i + 1,
                    },
                    // The server did not say which reading: bisect until the
                    // culprit is alone, so good readings are never sunk.
                    _ => self.split_or_reject(batch_len),
                }
            }
        }
    }

    fn split_or_reject(&mut self, batch_len: usize) -> Action {
        if batch_len <= 1 {
            return Action::Reject { positions: 0..1 };
        }
        self.batch_limit = (batch_len / 2).max(1);
        Action::Split {
            batch_limit: self.batch_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn transient() -> Outcome {
        Outcome::Transient {
            cause: RetryCause::Connect,
            retry_after: None,
        }
    }

    #[test]
    fn seed_schedule_then_give_up() {
        let mut d = Delivery::new(RetryPolicy::default(), 100, 1);
        for n in 1..=10u32 {
            assert_eq!(
                d.on_outcome(5, transient()),
                Action::Retry {
                    attempt: n,
                    delay: n * S,
                    cause: RetryCause::Connect
                }
            );
        }
        assert_eq!(
            d.on_outcome(5, transient()),
            Action::GiveUp {
                retries: 10,
                cause: RetryCause::Connect
            }
        );
        // The next send starts with a full budget.
        assert!(matches!(
            d.on_outcome(5, transient()),
            Action::Retry { attempt: 1, .. }
        ));
    }

    #[test]
    fn success_resets_the_budget() {
        let mut d = Delivery::new(RetryPolicy::default(), 100, 1);
        for _ in 0..7 {
            d.on_outcome(5, transient());
        }
        assert_eq!(d.retries(), 7);
        assert_eq!(d.on_outcome(5, Outcome::Accepted), Action::Acknowledge);
        assert_eq!(d.retries(), 0);
        assert!(matches!(
            d.on_outcome(5, transient()),
            Action::Retry { attempt: 1, delay, .. } if delay == S
        ));
    }

    #[test]
    fn retry_after_counts_as_a_retry() {
        let mut d = Delivery::new(RetryPolicy::default(), 100, 1);
        let busy = Outcome::Transient {
            cause: RetryCause::Status(503),
            retry_after: Some(30 * S),
        };
        let mut delays = vec![];
        loop {
            match d.on_outcome(1, busy) {
                Action::Retry { delay, .. } => delays.push(delay.as_secs()),
                Action::GiveUp { retries, cause } => {
                    assert_eq!((retries, cause), (10, RetryCause::Status(503)));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, [30; 10]);
    }

    #[test]
    fn zero_retries_gives_up_at_once() {
        let mut d = Delivery::new(RetryPolicy::linear(S, S, 0).unwrap(), 10, 1);
        assert!(matches!(
            d.on_outcome(1, transient()),
            Action::GiveUp { retries: 0, .. }
        ));
    }

    #[test]
    fn too_large_halves_down_to_one_then_rejects() {
        let mut d = Delivery::new(RetryPolicy::default(), 100, 1);
        let mut len = 100;
        let mut limits = vec![];
        loop {
            match d.on_outcome(len, Outcome::TooLarge) {
                Action::Split { batch_limit } => {
                    assert_eq!(batch_limit, d.batch_limit());
                    limits.push(batch_limit);
                    len = batch_limit;
                }
                Action::Reject { positions } => {
                    assert_eq!(positions, 0..1);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(limits, [50, 25, 12, 6, 3, 1]);
        d.begin_flush();
        assert_eq!(d.batch_limit(), 100);
    }

    #[test]
    fn invalid_rejects_the_named_reading_or_bisects() {
        let mut d = Delivery::new(RetryPolicy::default(), 8, 1);
        assert_eq!(
            d.on_outcome(8, Outcome::Invalid { index: Some(3) }),
            Action::Reject { positions: 3..4 }
        );
        // An index outside the batch is not trusted.
        assert_eq!(
            d.on_outcome(8, Outcome::Invalid { index: Some(8) }),
            Action::Split { batch_limit: 4 }
        );
        assert_eq!(
            d.on_outcome(1, Outcome::Invalid { index: None }),
            Action::Reject { positions: 0..1 }
        );
    }

    #[test]
    fn unauthorized_holds_and_progress_resets_retries() {
        let mut d = Delivery::new(RetryPolicy::default(), 8, 1);
        d.on_outcome(8, transient());
        assert_eq!(d.on_outcome(8, Outcome::Unauthorized), Action::Hold);
        assert_eq!(d.retries(), 0);
    }

    #[test]
    fn jitter_is_seeded_and_bounded() {
        let p = RetryPolicy::default().with_jitter(0.2).unwrap();
        let run = |seed| {
            let mut d = Delivery::new(p, 1, seed);
            (0..10)
                .map(|_| match d.on_outcome(1, transient()) {
                    Action::Retry { attempt, delay, .. } => {
                        let base = p.base_delay(attempt);
                        assert!(delay >= base.mul_f64(0.8) && delay < base.mul_f64(1.2));
                        delay
                    }
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
