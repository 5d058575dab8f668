//! `GET /v1/stream`: server-sent events of new anomalies, by polling.
//!
//! CockroachDB has no `LISTEN/NOTIFY`, so each client polls the store every
//! [`stream_poll`](super::AlertsConfig::stream_poll) for the newest
//! [`stream_window`](super::AlertsConfig::stream_window) anomalies matching
//! its filters (one indexed query; cost = clients / poll interval, capped by
//! [`max_stream_clients`](super::AlertsConfig::max_stream_clients)).
//!
//! **Exactly once per client.** Anomalies can be inserted with a timestamp
//! older than ones already seen (a device flushing its buffer after being
//! offline), so "everything newer than the last one sent" would miss them.
//! Instead the stream remembers the keys `(device, seq, metric)` of the
//! previous window and sends every anomaly of the current window that was
//! not in it. The window is the top `N` of a set that only grows, in a fixed
//! order; an anomaly that has left it can never come back (the `N` that
//! pushed it out stay ahead of it). Hence each anomaly is sent at most once,
//! memory per client is bounded by `N` keys, and an anomaly is sent at
//! least once when, at the first poll after its insertion, it is among the
//! `N` newest.
//!
//! **What it can miss, by design**: an anomaly inserted with a timestamp
//! older than the `N` newest ones (a long-offline device's backlog), or
//! more than `N` new anomalies within one poll interval. The second case is
//! detected (a full window of nothing but new anomalies) and announced as a
//! `resync` event; the first is not. The stream is a notification channel:
//! `/v1/anomalies` stays the source of truth, and the UI reloads it on every
//! `ready` and `resync`.
//!
//! Events (all `data` is JSON):
//!
//! | event | when | data |
//! |---|---|---|
//! | `ready` | after the first poll: from here on, new anomalies are sent | `{"window": N, "poll_ms": ms}` |
//! | `anomaly` | a new anomaly (`id` is its pagination cursor) | an anomaly as in `/v1/anomalies` |
//! | `resync` | more than `N` anomalies arrived within one poll | `{}` |
//! | `store_error` | a poll failed (sent once per run of failures) | `{"error": "..."}` |
//!
//! plus a `: keep-alive` comment every
//! [`stream_keep_alive`](super::AlertsConfig::stream_keep_alive). The stream
//! ends when the service [drains](super::AlertsService::drain).

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Interval, MissedTickBehavior};

use super::State;
use super::params::{self, RawParams};
use crate::http::ApiError;
use crate::store::{Anomaly, AnomalyQuery, Page, StoreError};

type Key = (String, u64, String);

fn key(a: &Anomaly) -> Key {
    (a.device_id.clone(), a.seq, a.metric.clone())
}

/// The pure part of the stream: which anomalies of a window are new.
#[derive(Debug, Default)]
pub(super) struct Deduper {
    /// Keys of the previous window; `None` before the first poll.
    seen: Option<HashSet<Key>>,
}

/// What one window brought.
#[derive(Debug, PartialEq)]
pub(super) enum Novelty {
    /// The first window: remembered, nothing sent.
    Ready,
    /// New anomalies, oldest first; `lagged` when some may have been missed.
    New {
        /// The new anomalies, oldest first.
        items: Vec<Anomaly>,
        /// More than a window arrived since the last poll.
        lagged: bool,
    },
}

impl Deduper {
    /// Takes the newest window (`items` newest first, at most `window`).
    pub(super) fn observe(&mut self, items: Vec<Anomaly>, window: usize) -> Novelty {
        let keys: HashSet<Key> = items.iter().map(key).collect();
        let Some(seen) = self.seen.replace(keys) else {
            return Novelty::Ready;
        };
        // A full window of nothing but new ones: more may have arrived
        // than fit (a false alarm when exactly `window` did; harmless).
        let lagged = items.len() >= window && items.iter().all(|a| !seen.contains(&key(a)));
        let mut new: Vec<Anomaly> = items
            .into_iter()
            .filter(|a| !seen.contains(&key(a)))
            .collect();
        new.reverse();
        Novelty::New { items: new, lagged }
    }
}

/// `GET /v1/stream`.
pub(super) async fn stream(
    AxumState(state): AxumState<Arc<State>>,
    raw: RawParams,
) -> Result<Response, ApiError> {
    let query = params::stream_query(raw, state.config.stream_window)?;
    if state.is_draining() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this replica is shutting down; reconnect",
        )
        .retry_after(1));
    }
    let Ok(permit) = state.stream_slots.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "too many open streams; retry later",
        )
        .retry_after(5));
    };
    let keep_alive = KeepAlive::new()
        .interval(state.config.stream_keep_alive)
        .text("keep-alive");
    let mut ticker = tokio::time::interval(state.config.stream_poll);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let client = Client {
        draining: state.draining.subscribe(),
        _slot: Slot::new(&state, permit),
        state,
        query,
        ticker,
        deduper: Deduper::default(),
        pending: VecDeque::new(),
        failing: false,
    };
    Ok(Sse::new(events(client))
        .keep_alive(keep_alive)
        .into_response())
}

/// A stream slot: released, and the gauge lowered, when the client goes.
struct Slot {
    state: Arc<State>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn new(state: &Arc<State>, permit: OwnedSemaphorePermit) -> Self {
        state.metrics.stream_clients.inc();
        Slot {
            state: state.clone(),
            _permit: permit,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.metrics.stream_clients.dec();
    }
}

struct Client {
    state: Arc<State>,
    query: AnomalyQuery,
    ticker: Interval,
    draining: watch::Receiver<bool>,
    deduper: Deduper,
    pending: VecDeque<Event>,
    /// The last poll failed (so the next failure is not announced again).
    failing: bool,
    _slot: Slot,
}

fn events(client: Client) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(client, |mut c| async move {
        loop {
            if let Some(event) = c.pending.pop_front() {
                return Some((Ok(event), c));
            }
            if *c.draining.borrow() {
                return None;
            }
            tokio::select! {
                changed = c.draining.changed() => {
                    if changed.is_err() || *c.draining.borrow() {
                        return None;
                    }
                }
                _ = c.ticker.tick() => c.poll().await,
            }
        }
    })
}

impl Client {
    async fn poll(&mut self) {
        self.state.metrics.stream_polls.inc();
        let result = tokio::time::timeout(
            self.state.config.store_timeout,
            self.state.store.anomalies(&self.query),
        )
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("timed out".into())));
        let page: Page<Anomaly> = match result {
            Ok(page) => page,
            Err(e) => {
                self.state.metrics.store_errors.inc();
                if !self.failing {
                    tracing::warn!(error = %e, "Stream poll failed; retrying.");
                    let data = serde_json::json!({ "error": "store_unavailable" });
                    self.push(Event::default().event("store_error").data(data.to_string()));
                }
                self.failing = true;
                return;
            }
        };
        self.failing = false;
        let window = self.query.effective_limit() as usize;
        match self.deduper.observe(page.items, window) {
            Novelty::Ready => {
                let data = serde_json::json!({
                    "window": window,
                    "poll_ms": self.state.config.stream_poll.as_millis() as u64,
                });
                self.push(Event::default().event("ready").data(data.to_string()));
            }
            Novelty::New { items, lagged } => {
                if lagged {
                    self.state.metrics.stream_resyncs.inc();
                    self.push(Event::default().event("resync").data("{}"));
                }
                for a in items {
                    let data = serde_json::to_string(&a).unwrap_or_default();
                    let id = a.cursor().to_string();
                    self.state.metrics.stream_events.inc();
                    self.push(Event::default().event("anomaly").id(id).data(data));
                }
            }
        }
    }

    fn push(&mut self, event: Event) {
        self.pending.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Timestamp;

    fn a(device: &str, seq: u64, ts: i64) -> Anomaly {
        Anomaly {
            device_id: device.into(),
            seq,
            metric: "pulse".into(),
            ts: Timestamp::from_unix_micros(ts),
            value: 1.0,
            score: 5.0,
            anomaly_score: 0.99,
            detector: "zscore".into(),
        }
    }

    /// The newest `n` of `all`, newest first, like the store answers.
    fn window(all: &[Anomaly], n: usize) -> Vec<Anomaly> {
        let mut v = all.to_vec();
        v.sort_by(|x, y| (y.ts, &y.device_id, y.seq).cmp(&(x.ts, &x.device_id, x.seq)));
        v.truncate(n);
        v
    }

    fn new_keys(n: Novelty) -> (Vec<u64>, bool) {
        match n {
            Novelty::Ready => panic!("not the first window"),
            Novelty::New { items, lagged } => (items.iter().map(|a| a.seq).collect(), lagged),
        }
    }

    #[test]
    fn each_new_anomaly_once_even_with_an_older_timestamp() {
        let mut d = Deduper::default();
        let mut all = vec![a("d1", 1, 100), a("d1", 2, 200)];
        assert_eq!(d.observe(window(&all, 3), 3), Novelty::Ready);
        // Newer, and one older than everything seen, both new.
        all.push(a("d1", 3, 300));
        all.push(a("d2", 4, 50));
        assert_eq!(new_keys(d.observe(window(&all, 3), 3)), (vec![3], false));
        // d2/4 fell out of the window of 3 already: that is the documented miss.
        all.push(a("d2", 5, 150));
        assert_eq!(new_keys(d.observe(window(&all, 3), 3)), (vec![5], false));
        // Nothing new: nothing sent, however often polled.
        for _ in 0..3 {
            assert_eq!(new_keys(d.observe(window(&all, 3), 3)), (vec![], false));
        }
    }

    #[test]
    fn late_insert_inside_the_window_is_sent_in_order() {
        let mut d = Deduper::default();
        let mut all = vec![a("d1", 1, 100), a("d1", 2, 200)];
        d.observe(window(&all, 10), 10);
        all.push(a("d2", 9, 150));
        all.push(a("d2", 8, 10));
        all.push(a("d1", 3, 300));
        assert_eq!(
            new_keys(d.observe(window(&all, 10), 10)),
            (vec![8, 9, 3], false)
        );
    }

    #[test]
    fn a_burst_larger_than_the_window_is_flagged() {
        let mut d = Deduper::default();
        let mut all: Vec<Anomaly> = (0..3).map(|i| a("d", i, i as i64)).collect();
        d.observe(window(&all, 3), 3);
        all.extend((10..14).map(|i| a("d", i, i as i64)));
        let (new, lagged) = new_keys(d.observe(window(&all, 3), 3));
        assert_eq!(new, vec![11, 12, 13]);
        assert!(lagged);
    }

    #[test]
    fn a_burst_after_an_empty_start_is_flagged_too() {
        let mut d = Deduper::default();
        d.observe(vec![], 2);
        let all: Vec<Anomaly> = (0..5).map(|i| a("d", i, i as i64)).collect();
        assert_eq!(new_keys(d.observe(window(&all, 2), 2)), (vec![3, 4], true));
    }
}
