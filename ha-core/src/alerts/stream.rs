//! `GET /v1/stream`: server-sent events of new anomalies, by polling the
//! store. The contract (events, exactly-once, what can be missed) is in the
//! [module docs](super#the-live-stream); this file holds the [`Deduper`]
//! that implements it and the per-client poll loop.
//!
//! Why the deduper is exact: the window is the top `N` of a set that only
//! grows, in a fixed total order `(ts, device, seq, metric)`. An anomaly
//! that has left the window can never come back (the `N` that pushed it
//! out stay ahead of it), so comparing each window with the previous one
//! sends each anomaly at most once, with `N` keys of memory per client.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::{HeaderValue, StatusCode};
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
    let mut resp = Sse::new(events(client))
        .keep_alive(keep_alive)
        .into_response();
    // Tells NGINX (the ingress) not to buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
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
