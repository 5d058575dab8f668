//! One partition worker's detector state, bounded: at most `max_series`
//! series (least recently used dropped first) and at most
//! `max_per_device` series per device. A reading whose series is not held
//! is still stored, only not analysed.

use std::collections::HashMap;

use ha_analysis::{AnalysisError, DetectorConfig, SeriesSet, Verdict};

/// `(device_id, metric)`.
pub(super) type SeriesKey = (String, String);

pub(super) struct BoundedSeries {
    set: SeriesSet<SeriesKey>,
    /// Series held (or admitted and about to be) per device.
    per_device: HashMap<String, usize>,
    max_per_device: usize,
    /// Series dropped to make room, since the last [`take_evicted`].
    evicted: u64,
}

impl BoundedSeries {
    pub(super) fn new(
        config: &DetectorConfig,
        max_series: usize,
        max_per_device: usize,
    ) -> Result<Self, AnalysisError> {
        let mut set = SeriesSet::new(config)?;
        set.set_max_series(max_series);
        Ok(BoundedSeries {
            set,
            per_device: HashMap::new(),
            max_per_device,
            evicted: 0,
        })
    }

    pub(super) fn contains(&self, key: &SeriesKey) -> bool {
        self.set.contains_key(key)
    }

    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    pub(super) fn max_series(&self) -> usize {
        self.set.max_series()
    }

    /// Admits a new series of `device` if the device is below its cap;
    /// the caller then [`insert`](Self::insert)s it.
    pub(super) fn admit(&mut self, device: &str) -> bool {
        match self.per_device.get_mut(device) {
            Some(n) if *n >= self.max_per_device => false,
            Some(n) => {
                *n += 1;
                true
            }
            None => {
                self.per_device.insert(device.to_owned(), 1);
                true
            }
        }
    }

    /// Adds an admitted series from its stored history (empty when the
    /// history is unusable), dropping the least recently used if full.
    pub(super) fn insert(&mut self, key: SeriesKey, history: Vec<(u64, f64)>) {
        while self.set.len() >= self.set.max_series() {
            match self.set.pop_lru() {
                Some(old) => {
                    self.forget(&old.0);
                    self.evicted += 1;
                }
                None => break,
            }
        }
        if let Err(e) = self.set.warm_start(key.clone(), history) {
            tracing::warn!(error = %e, "Stored history unusable; starting the series empty.");
            let _ = self.set.warm_start(key, std::iter::empty());
        }
    }

    /// Feeds a held series; `None` when not held or not fed.
    pub(super) fn feed(&mut self, key: SeriesKey, seq: u64, value: f64) -> Option<Verdict> {
        if !self.set.contains_key(&key) {
            return None;
        }
        self.set.feed(key, seq, value).ok().flatten()
    }

    /// Drops series not fed since `tick`; returns how many.
    pub(super) fn evict_untouched_since(&mut self, tick: u64) -> usize {
        let mut dropped = 0;
        while let Some(old) = self.set.pop_lru_untouched_since(tick) {
            self.forget(&old.0);
            dropped += 1;
        }
        dropped
    }

    pub(super) fn set_tick(&mut self, tick: u64) {
        self.set.set_tick(tick);
    }

    /// Series dropped to make room since the last call.
    pub(super) fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    fn forget(&mut self, device: &str) {
        if let Some(n) = self.per_device.get_mut(device) {
            *n -= 1;
            if *n == 0 {
                self.per_device.remove(device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(d: &str, m: &str) -> SeriesKey {
        (d.to_owned(), m.to_owned())
    }

    #[test]
    fn caps_per_device_and_in_total() {
        let mut s = BoundedSeries::new(&DetectorConfig::default(), 3, 2).unwrap();
        assert!(s.admit("a") && s.admit("a") && !s.admit("a"));
        s.insert(key("a", "x"), vec![(1, 1.0)]);
        s.insert(key("a", "y"), Vec::new());
        assert!(s.admit("b") && s.admit("b"));
        s.insert(key("b", "x"), Vec::new());
        // Full: a/x (least recently used) goes, and device a may add again.
        s.insert(key("b", "y"), Vec::new());
        assert_eq!((s.len(), s.take_evicted()), (3, 1));
        assert!(!s.contains(&key("a", "x")));
        assert!(s.admit("a"));
        assert_eq!(s.feed(key("a", "x"), 2, 1.0), None);
        assert!(s.feed(key("b", "x"), 2, 1.0).is_some());
        // Idle eviction gives the device budget back too.
        s.set_tick(5);
        s.feed(key("b", "x"), 3, 1.0);
        assert_eq!(s.evict_untouched_since(5), 2);
        assert!(s.admit("b"));
        assert!(s.per_device.get("a").is_some_and(|n| *n == 1));
    }
}
