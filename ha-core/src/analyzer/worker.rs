//! One partition's consumer: batch, store, detect, ack.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ha_analysis::SeriesSet;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use crate::queue::{Delivery, QueueError, Subscription};
use crate::store::Anomaly;
use crate::wire::{Envelope, EnvelopeError, Reading, Timestamp};

type SeriesKey = (String, String);

/// Consumes `partition` until `stop` turns true (finishing the batch in
/// hand) or the subscription is lost for good.
pub(super) async fn run_partition(
    shared: Arc<Shared>,
    partition: u32,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    while !*stop.borrow() {
        let sub = tokio::select! {
            s = shared.queue.subscribe(partition, shared.config.prefetch) => s,
            _ = stop.changed() => break,
        };
        let mut sub = match sub {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(partition, error = %e, "Subscribing failed; retrying.");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        tracing::info!(partition, "Consuming partition.");
        // A fresh detector state for every subscription: while this replica
        // did not consume the partition, another one may have, so windows
        // are rebuilt from the store on first sight.
        let mut worker = Worker {
            shared: shared.clone(),
            partition,
            series: match SeriesSet::new(&shared.config.detector) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "Invalid detector configuration.");
                    return;
                }
            },
            batches: 0,
            devices: HashMap::new(),
            stale: 0,
        };
        match worker.consume(&mut sub, &mut stop).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(partition, error = %e, "Subscription lost; subscribing again.")
            }
        }
    }
    tracing::info!(partition, "Released partition.");
}

struct Worker {
    shared: Arc<Shared>,
    partition: u32,
    series: SeriesSet<SeriesKey>,
    batches: u64,
    /// Newest `seq` and `ts` per device, for the gap and freshness metrics.
    devices: HashMap<String, (u64, Timestamp)>,
    /// This worker's share of the stale-devices gauge.
    stale: i64,
}

/// This batch's share of the unacked-deliveries gauge; given back when
/// the batch is settled or abandoned (its deliveries then come back).
struct Unacked {
    gauge: prometheus_client::metrics::gauge::Gauge,
    count: i64,
}

impl Unacked {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        Unacked {
            gauge: gauge.clone(),
            count: 0,
        }
    }

    fn add(&mut self, n: i64) {
        self.gauge.inc_by(n);
        self.count += n;
    }
}

impl Drop for Unacked {
    fn drop(&mut self) {
        self.gauge.dec_by(self.count);
    }
}

/// A device silent for longer than this counts as stale.
const STALE_AFTER: Duration = Duration::from_secs(300);

impl Drop for Worker {
    fn drop(&mut self) {
        let m = &self.shared.metrics;
        m.stale_devices.dec_by(self.stale);
        m.devices.dec_by(self.devices.len() as i64);
    }
}

impl Worker {
    /// Processes batches until stopped (`Ok`) or the subscription fails.
    async fn consume(
        &mut self,
        sub: &mut Box<dyn Subscription>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), QueueError> {
        loop {
            let first = tokio::select! {
                d = sub.next() => d?,
                _ = stop.changed() => return Ok(()),
            };
            let started = Instant::now();
            let mut unacked = Unacked::new(&self.shared.metrics.unacked);
            unacked.add(1);
            let mut batch = vec![first];
            let linger = tokio::time::sleep(self.shared.config.batch_linger);
            tokio::pin!(linger);
            while batch.len() < self.shared.config.batch_deliveries {
                tokio::select! {
                    d = sub.next() => {
                        batch.push(d?);
                        unacked.add(1);
                    }
                    () = &mut linger => break,
                }
            }
            let committed = self.process(batch, stop).await;
            drop(unacked);
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
            }
        }
    }

    /// Stores, detects and acknowledges one batch. Returns false when the
    /// batch was not committed (stopping during a store outage): its
    /// deliveries stay unacknowledged and will be redelivered.
    async fn process(&mut self, batch: Vec<Delivery>, stop: &watch::Receiver<bool>) -> bool {
        let shared = self.shared.clone();
        let m = &shared.metrics;
        m.batch_size.observe(batch.len() as f64);
        let mut readings: Vec<Reading> = Vec::new();
        let mut settle = Vec::with_capacity(batch.len());
        for d in batch {
            if d.redelivered {
                m.redeliveries.inc();
            }
            match Envelope::decode(&d.payload) {
                Ok(env) => {
                    readings.extend(env.readings);
                    settle.push(d);
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
        self.track_devices(&readings);
        let anomalies = match self.detect(&readings, stop).await {
            Some(a) => a,
            None => return false,
        };
        if !self.write(&readings, &anomalies, stop).await {
            return false;
        }
        let newest = readings.iter().map(|r| r.ts).max();
        if let Some(ts) = newest {
            let lag = (Timestamp::now().unix_micros() - ts.unix_micros()) as f64 / 1e6;
            m.lag.set(lag.max(0.0));
        }
        if let Some(last) = settle.pop()
            && let Err(e) = last.ack_up_to().await
        {
            // Committed but not acknowledged: it comes back and the store
            // absorbs the duplicate.
            tracing::warn!(partition = self.partition, error = %e, "Ack failed after commit.");
            return false;
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
    /// store first. `None` when stopped during a store outage.
    async fn detect(
        &mut self,
        readings: &[Reading],
        stop: &watch::Receiver<bool>,
    ) -> Option<Vec<Anomaly>> {
        // The first seq of each unseen series in this batch.
        let mut unseen: HashMap<SeriesKey, u64> = HashMap::new();
        for r in readings {
            for metric in &r.metrics {
                let key = (r.device_id.clone(), metric.name.clone());
                if !self.series.contains_key(&key) {
                    let first = unseen.entry(key).or_insert(r.seq);
                    *first = (*first).min(r.seq);
                }
            }
        }
        let window = self.shared.config.detector.window as u32;
        for ((device, metric), first_seq) in unseen {
            let history = loop {
                match self
                    .shared
                    .store
                    .recent_values(&device, &metric, first_seq, window)
                    .await
                {
                    Ok(h) => break h,
                    Err(e) if e.is_transient() && !*stop.borrow() => {
                        self.shared.metrics.store_retries.inc();
                        tracing::warn!(error = %e, "Reading history failed; retrying.");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Reading history failed; giving the batch back.");
                        return None;
                    }
                }
            };
            self.shared.metrics.warm_starts.inc();
            if let Err(e) = self.series.warm_start((device, metric), history) {
                tracing::warn!(error = %e, "Stored history unusable; starting the series empty.");
            }
        }
        let detector = self.shared.config.detector.kind.as_str();
        let mut anomalies = Vec::new();
        for r in readings {
            for metric in &r.metrics {
                let key = (r.device_id.clone(), metric.name.clone());
                let Ok(Some(verdict)) = self.series.feed(key, r.seq, metric.value) else {
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
        Some(anomalies)
    }

    /// Writes readings and anomalies in one transaction, retrying transient
    /// errors while holding the deliveries. False when stopped first.
    async fn write(
        &self,
        readings: &[Reading],
        anomalies: &[Anomaly],
        stop: &watch::Receiver<bool>,
    ) -> bool {
        let m = &self.shared.metrics;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.shared.store.write(readings, anomalies).await {
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
                    return true;
                }
                Err(e) if *stop.borrow() => {
                    tracing::warn!(error = %e, "Stopping during a store outage; the batch will be redelivered.");
                    return false;
                }
                Err(e) if e.is_transient() => {
                    m.store_retries.inc();
                    tracing::warn!(partition = self.partition, error = %e, ?delay, "Store unavailable; holding the batch and retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    // Not transient: this batch can never be written as is.
                    // Rare by construction (ingest validated every reading);
                    // keep the deliveries and retry slowly, loudly.
                    tracing::error!(partition = self.partition, error = %e, "Store refused the batch; retrying in 5 s.");
                    m.store_retries.inc();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}
