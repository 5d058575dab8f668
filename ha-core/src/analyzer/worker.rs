//! One partition's consumer: batch, store, detect, ack.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::assignment::View;
use super::budget::Held;
use super::series::{BoundedSeries, SeriesKey};
use crate::queue::{Delivery, QueueError, Subscription};
use crate::store::{Anomaly, Fence, StoreError};
use crate::wire::{Envelope, EnvelopeError, Reading, Timestamp};

/// New series warm-started per store query.
const WARM_START_CHUNK: usize = 256;

/// Why [`Worker::consume`] returned without an error.
pub(super) enum Ended {
    /// The replica is stopping.
    Stopped,
    /// Made way for the partition's assigned owner (after a batch).
    Released,
}

pub(super) struct Worker {
    shared: Arc<Shared>,
    partition: u32,
    /// This subscription's claim on the partition, taken at its first
    /// batch: the broker made it the active consumer.
    fence: Option<Fence>,
    /// When the claim was taken.
    claimed_at: Instant,
    series: BoundedSeries,
    batches: u64,
    /// Newest `seq` and `ts` per device, for the gap and freshness metrics.
    devices: HashMap<String, (u64, Timestamp)>,
    /// This worker's share of the stale-devices gauge.
    stale: i64,
    /// This worker's share of the series gauge.
    series_counted: i64,
}

/// A device silent for longer than this counts as stale.
const STALE_AFTER: Duration = Duration::from_secs(300);

impl Drop for Worker {
    fn drop(&mut self) {
        let m = &self.shared.metrics;
        if self.fence.is_some() {
            m.active_partitions.dec();
        }
        m.stale_devices.dec_by(self.stale);
        m.devices.dec_by(self.devices.len() as i64);
        m.series.dec_by(self.series_counted);
    }
}

impl Worker {
    /// A worker for one subscription of `partition`, with a fresh detector
    /// state: while this replica did not consume the partition, another one
    /// may have, so windows are rebuilt from the store on first sight.
    pub(super) fn new(shared: Arc<Shared>, partition: u32) -> Result<Worker, String> {
        let cfg = &shared.config;
        let max_series = (cfg.max_series / shared.queue.partitions().max(1) as usize).max(1);
        let series = BoundedSeries::new(&cfg.detector, max_series, cfg.max_metrics_per_device)
            .map_err(|e| e.to_string())?;
        Ok(Worker {
            shared,
            partition,
            fence: None,
            claimed_at: Instant::now(),
            series,
            batches: 0,
            devices: HashMap::new(),
            stale: 0,
            series_counted: 0,
        })
    }

    /// Whether this subscription claimed the partition (was ever active).
    pub(super) fn claimed(&self) -> bool {
        self.fence.is_some()
    }

    /// Processes batches until stopped, or until it makes way for the
    /// partition's assigned owner (at a batch boundary, see
    /// [`View::should_yield`]), the subscription fails or a batch is not
    /// committed.
    pub(super) async fn consume(
        &mut self,
        sub: &mut Box<dyn Subscription>,
        stop: &mut watch::Receiver<bool>,
        view: &watch::Receiver<View>,
    ) -> Result<Ended, QueueError> {
        let budget = self.shared.budget.clone();
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let lease_wait = cfg.lease_ttl + cfg.heartbeat;
        loop {
            if self.fence.is_some()
                && view.borrow().should_yield(
                    self.partition,
                    &cfg.member_id,
                    self.claimed_at,
                    lease_wait,
                    Instant::now(),
                )
            {
                return Ok(Ended::Released);
            }
            tokio::select! {
                () = budget.wait_for_room() => {}
                _ = stop.changed() => return Ok(Ended::Stopped),
            }
            let first = tokio::select! {
                d = sub.next() => d?,
                _ = stop.changed() => return Ok(Ended::Stopped),
            };
            let started = Instant::now();
            let mut held = Held::new(&budget, &self.shared.metrics.unacked);
            held.add(first.payload.len());
            let mut batch = vec![first];
            let linger = tokio::time::sleep(self.shared.config.batch_linger);
            tokio::pin!(linger);
            // Stop pulling when the replica holds its bound of bytes.
            while batch.len() < self.shared.config.batch_deliveries && budget.has_room() {
                tokio::select! {
                    d = sub.next() => {
                        let d = d?;
                        held.add(d.payload.len());
                        batch.push(d);
                    }
                    () = &mut linger => break,
                }
            }
            let committed = self.process(batch, stop).await;
            drop(held);
            self.count_series();
            if !committed {
                // Not acknowledged: the deliveries come back. Drop the
                // detector state they already went through.
                return Err(QueueError::Closed("batch not committed".into()));
            }
            self.shared
                .metrics
                .batch_latency
                .observe(started.elapsed().as_secs_f64());
            self.batches += 1;
            if self.batches.is_multiple_of(64) {
                self.count_stale();
                self.series.set_tick(self.batches);
                let idle = self.series.evict_untouched_since(
                    self.batches
                        .saturating_sub(self.shared.config.evict_after_batches),
                );
                if idle > 0 {
                    tracing::debug!(partition = self.partition, idle, "Evicted idle series.");
                }
                self.count_series();
            }
        }
    }

    /// Claims the partition (a new ownership epoch) for this subscription,
    /// retrying store errors until it succeeds or the replica stops.
    async fn claim(&mut self, stop: &watch::Receiver<bool>) -> Option<Fence> {
        let s = &self.shared;
        let mut delay = Duration::from_millis(100);
        loop {
            match s
                .store
                .claim_partition(&s.config.group, self.partition, &s.config.member_id)
                .await
            {
                Ok(fence) => {
                    tracing::info!(
                        partition = self.partition,
                        epoch = fence.epoch,
                        "Claimed the partition: this replica's subscription is the active one."
                    );
                    s.metrics.claims.inc();
                    s.metrics.active_partitions.inc();
                    self.fence = Some(fence.clone());
                    self.claimed_at = Instant::now();
                    return Some(fence);
                }
                Err(_) if *stop.borrow() => return None,
                Err(e) => {
                    s.metrics.store_retries.inc();
                    tracing::warn!(partition = self.partition, error = %e, "Claiming the partition failed; retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Brings the shared series gauges up to date with this worker.
    fn count_series(&mut self) {
        let m = &self.shared.metrics;
        let held = self.series.len() as i64;
        m.series.inc_by(held - self.series_counted);
        self.series_counted = held;
        m.series_evicted.inc_by(self.series.take_evicted());
    }

    /// Stores, detects and acknowledges one batch. Returns false when the
    /// batch was not committed (stopping during a store outage): its
    /// deliveries stay unacknowledged and will be redelivered.
    async fn process(&mut self, batch: Vec<Delivery>, stop: &watch::Receiver<bool>) -> bool {
        let shared = self.shared.clone();
        let m = &shared.metrics;
        m.batch_size.observe(batch.len() as f64);
        let mut readings: Vec<Reading> = Vec::new();
        // Each settled delivery with the range of its readings.
        let mut settle: Vec<(Delivery, Range<usize>)> = Vec::with_capacity(batch.len());
        for d in batch {
            if d.redelivered {
                m.redeliveries.inc();
            }
            match Envelope::decode(&d.payload) {
                Ok(env) => {
                    let from = readings.len();
                    readings.extend(env.readings);
                    settle.push((d, from..readings.len()));
                }
                Err(e @ EnvelopeError::Malformed(_)) => {
                    tracing::error!(partition = self.partition, error = %e, "Poison message: dead-lettering it.");
                    m.dead_lettered.inc();
                    if let Err(e) = d.nack(false).await {
                        tracing::warn!(error = %e, "Rejecting a poison message failed; it will come back.");
                    }
                }
                Err(e) => {
                    // A newer format: not poison. Return it (counted towards
                    // the delivery limit) after a pause, for an upgraded
                    // replica; roll analyzers out before ingest.
                    tracing::warn!(partition = self.partition, error = %e, "Message format not understood; returning it.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = d.nack(true).await;
                }
            }
        }
        if settle.is_empty() {
            return true;
        }
        // Claim before reading any history: the claim waits for a write of
        // the previous owner that is committing, so the windows see it.
        let fence = match &self.fence {
            Some(f) => f.clone(),
            None => match self.claim(stop).await {
                Some(f) => f,
                None => return false,
            },
        };
        self.track_devices(&readings);
        let anomalies = match self.detect(&readings, stop).await {
            Some(a) => a,
            None => return false,
        };
        match self.write(&fence, &readings, &anomalies, stop, 1).await {
            Written::Yes => {}
            Written::Stopped => return false,
            Written::Never(e) => {
                // Some message of the batch can never be written: find it
                // by writing them one by one.
                tracing::warn!(partition = self.partition, error = %e, "Store refused the batch; writing its messages one by one.");
                return self
                    .write_one_by_one(&fence, settle, &readings, &anomalies, stop)
                    .await;
            }
        }
        let newest = readings.iter().map(|r| r.ts).max();
        if let Some(ts) = newest {
            let lag = (Timestamp::now().unix_micros() - ts.unix_micros()) as f64 / 1e6;
            m.lag.set(lag.max(0.0));
        }
        if let Some((last, _)) = settle.pop()
            && let Err(e) = last.ack_up_to().await
        {
            // Committed but not acknowledged: it comes back and the store
            // absorbs the duplicate.
            tracing::warn!(partition = self.partition, error = %e, "Ack failed after commit.");
            return false;
        }
        true
    }

    /// After a permanent error on a whole batch: writes each message on its
    /// own (with its anomalies), acknowledging those written and
    /// dead-lettering those refused [`AnalyzerConfig::permanent_error_tries`]
    /// times, so one bad message cannot stall the partition.
    ///
    /// [`AnalyzerConfig::permanent_error_tries`]: super::AnalyzerConfig::permanent_error_tries
    async fn write_one_by_one(
        &self,
        fence: &Fence,
        settle: Vec<(Delivery, Range<usize>)>,
        readings: &[Reading],
        anomalies: &[Anomaly],
        stop: &watch::Receiver<bool>,
    ) -> bool {
        let m = &self.shared.metrics;
        let tries = self.shared.config.permanent_error_tries;
        for (d, range) in settle {
            let mine = &readings[range];
            let keys: HashSet<(&str, u64)> =
                mine.iter().map(|r| (r.device_id.as_str(), r.seq)).collect();
            let theirs: Vec<Anomaly> = anomalies
                .iter()
                .filter(|a| keys.contains(&(a.device_id.as_str(), a.seq)))
                .cloned()
                .collect();
            match self.write(fence, mine, &theirs, stop, tries).await {
                Written::Yes => {
                    if let Err(e) = d.ack().await {
                        tracing::warn!(partition = self.partition, error = %e, "Ack failed after commit.");
                        return false;
                    }
                }
                Written::Stopped => return false,
                Written::Never(e) => {
                    tracing::error!(
                        partition = self.partition,
                        tag = d.tag(),
                        readings = mine.len(),
                        tries,
                        reason = %e,
                        "Store refused the message every time: dead-lettering it."
                    );
                    m.dead_lettered.inc();
                    m.dead_lettered_store.inc();
                    if let Err(e) = d.nack(false).await {
                        tracing::warn!(error = %e, "Dead-lettering failed; the message will come back.");
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Tracks each device's newest `seq` to count gaps and late readings.
    fn track_devices(&mut self, readings: &[Reading]) {
        let m = &self.shared.metrics;
        for r in readings {
            match self.devices.get_mut(&r.device_id) {
                Some((last, ts)) if r.seq > *last => {
                    if r.seq > *last + 1 {
                        m.seq_gaps.inc();
                        m.missing_readings.inc_by(r.seq - *last - 1);
                    }
                    *last = r.seq;
                    *ts = (*ts).max(r.ts);
                }
                Some(_) => {
                    m.late_readings.inc();
                }
                None => {
                    self.devices.insert(r.device_id.clone(), (r.seq, r.ts));
                    m.devices.inc();
                }
            }
        }
    }

    /// Recounts this worker's stale devices into the shared gauge.
    fn count_stale(&mut self) {
        let cutoff = Timestamp::now().saturating_sub(STALE_AFTER);
        let stale = self.devices.values().filter(|(_, ts)| *ts < cutoff).count() as i64;
        self.shared.metrics.stale_devices.inc_by(stale - self.stale);
        self.stale = stale;
    }

    /// Feeds the detector in order, warm-starting unseen series from the
    /// store first (one query per [`WARM_START_CHUNK`] new series). Values
    /// of series the bounds leave out are stored but not analysed.
    /// `None` when stopped during a store outage.
    async fn detect(
        &mut self,
        readings: &[Reading],
        stop: &watch::Receiver<bool>,
    ) -> Option<Vec<Anomaly>> {
        let m = &self.shared.metrics;
        // The first seq of each unseen series in this batch, in order of
        // first appearance.
        let mut unseen: HashMap<SeriesKey, usize> = HashMap::new();
        let mut admitted: Vec<(String, String, u64)> = Vec::new();
        let room = self.series.max_series();
        for r in readings {
            for metric in &r.metrics {
                let key = (r.device_id.clone(), metric.name.clone());
                if self.series.contains(&key) {
                    continue;
                }
                match unseen.get(&key) {
                    Some(&i) if i < admitted.len() => {
                        admitted[i].2 = admitted[i].2.min(r.seq);
                    }
                    Some(_) => {}
                    None => {
                        if admitted.len() < room && self.series.admit(&r.device_id) {
                            unseen.insert(key, admitted.len());
                            admitted.push((r.device_id.clone(), metric.name.clone(), r.seq));
                        } else {
                            unseen.insert(key, usize::MAX);
                        }
                    }
                }
            }
        }
        let window = self.shared.config.detector.window as u32;
        for chunk in admitted.chunks(WARM_START_CHUNK) {
            let histories = loop {
                match self.shared.store.recent_values_many(chunk, window).await {
                    Ok(h) if h.len() == chunk.len() => break h,
                    Ok(_) => {
                        tracing::error!(
                            "Store returned the wrong number of histories; starting the series empty."
                        );
                        break vec![Vec::new(); chunk.len()];
                    }
                    Err(e) if e.is_transient() && !*stop.borrow() => {
                        m.store_retries.inc();
                        tracing::warn!(error = %e, "Reading history failed; retrying.");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) if e.is_permanent() => {
                        // Never stall the partition on history.
                        tracing::error!(error = %e, series = chunk.len(), "Reading history refused; starting the series empty.");
                        break vec![Vec::new(); chunk.len()];
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Reading history failed; giving the batch back.");
                        return None;
                    }
                }
            };
            m.warm_starts.inc_by(chunk.len() as u64);
            for ((device, metric, _), history) in chunk.iter().zip(histories) {
                self.series
                    .insert((device.clone(), metric.clone()), history);
            }
        }
        let detector = self.shared.config.detector.kind.as_str();
        let mut anomalies = Vec::new();
        let mut unanalysed = 0u64;
        for r in readings {
            for metric in &r.metrics {
                let key = (r.device_id.clone(), metric.name.clone());
                if !self.series.contains(&key) {
                    unanalysed += 1;
                    continue;
                }
                let Some(verdict) = self.series.feed(key, r.seq, metric.value) else {
                    continue;
                };
                if let (true, Some(score)) = (verdict.is_anomaly, verdict.score) {
                    anomalies.push(Anomaly {
                        device_id: r.device_id.clone(),
                        seq: r.seq,
                        metric: metric.name.clone(),
                        ts: r.ts,
                        value: metric.value,
                        score,
                        anomaly_score: verdict.anomaly_score(),
                        detector: detector.to_owned(),
                    });
                }
            }
        }
        m.unanalysed.inc_by(unanalysed);
        Some(anomalies)
    }

    /// Writes readings and anomalies in one transaction, retrying transient
    /// errors while holding the deliveries. A permanent error is tried
    /// `tries` times in all, then reported; an error that is neither
    /// (schema not ready) is retried slowly until stopped.
    async fn write(
        &self,
        fence: &Fence,
        readings: &[Reading],
        anomalies: &[Anomaly],
        stop: &watch::Receiver<bool>,
        tries: u32,
    ) -> Written {
        let m = &self.shared.metrics;
        let mut delay = Duration::from_millis(100);
        let mut refused = 0u32;
        loop {
            match self
                .shared
                .store
                .write_fenced(fence, readings, anomalies)
                .await
            {
                Ok(out) => {
                    m.readings_stored.inc_by(out.inserted);
                    m.duplicates.inc_by(out.duplicates);
                    m.conflicts.inc_by(out.conflicts);
                    m.anomalies.inc_by(out.anomalies_inserted);
                    if out.conflicts > 0 {
                        tracing::warn!(
                            partition = self.partition,
                            conflicts = out.conflicts,
                            "Readings conflicting with stored ones were ignored."
                        );
                    }
                    return Written::Yes;
                }
                Err(e) if e.is_fenced() => {
                    m.fenced_batches.inc();
                    tracing::warn!(partition = self.partition, epoch = fence.epoch, error = %e, "Another replica owns the partition now; giving the batch back.");
                    return Written::Stopped;
                }
                Err(e) if *stop.borrow() => {
                    tracing::warn!(error = %e, "Stopping during a store outage; the batch will be redelivered.");
                    return Written::Stopped;
                }
                Err(e) if e.is_transient() => {
                    m.store_retries.inc();
                    tracing::warn!(partition = self.partition, error = %e, ?delay, "Store unavailable; holding the batch and retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) if e.is_permanent() => {
                    m.store_permanent_errors.inc();
                    refused += 1;
                    if refused >= tries {
                        return Written::Never(e);
                    }
                    tracing::warn!(partition = self.partition, error = %e, refused, tries, "Store refused the write; trying again.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    // Schema not ready: an operator migrates; keep the work.
                    tracing::error!(partition = self.partition, error = %e, "Store cannot take the batch yet; retrying in 5 s.");
                    m.store_retries.inc();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}

/// How a write ended.
enum Written {
    Yes,
    /// Stopped or fenced off before it succeeded: give the deliveries back.
    Stopped,
    /// Refused with a permanent error every time.
    Never(StoreError),
}
