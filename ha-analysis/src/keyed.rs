//! Many series, keyed (e.g. by device and metric): the container the
//! analyzer service keeps.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash};
use std::mem::size_of;

use crate::config::Resolved;
use crate::series::SeriesState;
use crate::{AnalysisError, DetectorConfig, Verdict};

/// One detector per key, all sharing one [`DetectorConfig`].
///
/// Each key is stored once (as the map key); per series the container
/// keeps the `W` newest values, a few counters and, for
/// [`DetectorKind::Mad`](crate::DetectorKind::Mad), a sorted copy of the
/// baseline. [`memory_per_series`](Self::memory_per_series) gives the
/// figure (≈ 1.7 KiB for the default z-score config and `(String, String)`
/// keys, key text not included).
///
/// **Idle series.** The library has no clock. The caller owns a *tick*
/// ([`set_tick`](Self::set_tick)): any number that never decreases, such as
/// seconds since start, or a batch counter. Feeding or warm-starting a
/// series stamps it with the current tick;
/// [`evict_untouched_since`](Self::evict_untouched_since) drops every series
/// stamped earlier than a given tick (O(number of series), so call it
/// periodically, not per reading). An evicted series that comes back starts
/// empty, or from [`warm_start`](Self::warm_start).
///
/// ```
/// use ha_analysis::{DetectorConfig, SeriesSet};
///
/// let config = DetectorConfig { window: 8, recent: 2, min_history: 4, ..Default::default() };
/// let mut set: SeriesSet<(String, String)> = SeriesSet::new(&config)?;
/// let key = || ("dev-a".to_string(), "temp".to_string());
/// for (seq, value) in [(1, 10.0), (2, 10.5), (3, 9.8), (4, 10.2), (5, 10.1)] {
///     set.feed(key(), seq, value)?;
/// }
/// assert_eq!(set.feed(key(), 5, 99.0)?, None); // seq not newer: not fed
/// let verdict = set.feed(key(), 6, 9.9)?.expect("fed");
/// assert!(verdict.score.is_some() && !verdict.is_anomaly);
/// # Ok::<(), ha_analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SeriesSet<K, S = RandomState> {
    config: Resolved,
    series: HashMap<K, SeriesState, S>,
    tick: u64,
}

impl<K: Hash + Eq> SeriesSet<K> {
    /// An empty container; fails on an invalid config.
    pub fn new(config: &DetectorConfig) -> Result<Self, AnalysisError> {
        Self::with_hasher(config, RandomState::new())
    }
}

impl<K: Hash + Eq, S: BuildHasher> SeriesSet<K, S> {
    /// An empty container with a custom hasher (e.g. a faster one for
    /// integer keys).
    pub fn with_hasher(config: &DetectorConfig, hasher: S) -> Result<Self, AnalysisError> {
        Ok(Self {
            config: config.resolve()?,
            series: HashMap::with_hasher(hasher),
            tick: 0,
        })
    }

    /// Feeds reading `(seq, value)` to the series `key`, creating it on
    /// first sight.
    ///
    /// - `Ok(None)`: **not fed** — `seq` is not newer than the newest `seq`
    ///   already fed to this series (a late or repeated reading).
    /// - `Ok(Some(verdict))`: fed; `verdict.score` is `None` when no verdict
    ///   could be given (short history, zero spread).
    /// - `Err(NonFiniteValue)`: NaN or ±inf; nothing changed.
    pub fn feed(&mut self, key: K, seq: u64, value: f64) -> Result<Option<Verdict>, AnalysisError> {
        let value = crate::error::check_finite(value)?;
        let (config, tick) = (&self.config, self.tick);
        let series = match self.series.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(SeriesState::new(config, tick)),
        };
        Ok(series.feed(config, tick, seq, value))
    }

    /// Replaces the series `key` with one rebuilt from stored history: the
    /// values below the first `seq` this analyzer will feed, in strictly
    /// increasing `seq` order. Only the newest `W` matter; pass those (more
    /// is accepted and costs O(1) each). Returns the number of values read.
    ///
    /// No verdicts are produced. On error (non-finite value, `seq` out of
    /// order) the existing series, if any, is left untouched.
    pub fn warm_start(
        &mut self,
        key: K,
        history: impl IntoIterator<Item = (u64, f64)>,
    ) -> Result<usize, AnalysisError> {
        let (series, count) = SeriesState::from_history(&self.config, self.tick, history)?;
        self.series.insert(key, series);
        Ok(count)
    }

    /// Newest `seq` fed to `key` (or loaded by warm start).
    pub fn last_seq<Q>(&self, key: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.series.get(key).and_then(SeriesState::last_seq)
    }

    /// True when the container holds a series for `key`.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.series.contains_key(key)
    }

    /// Drops the series `key`; true when it existed.
    pub fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.series.remove(key).is_some()
    }

    /// Sets the caller's notion of "now" used to stamp series (see the type
    /// docs). Any `u64`; it should not decrease.
    pub fn set_tick(&mut self, tick: u64) {
        self.tick = tick;
    }

    /// The current tick.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Drops every series last fed or warm-started before `tick`; returns
    /// how many were dropped. O(number of series).
    pub fn evict_untouched_since(&mut self, tick: u64) -> usize {
        let before = self.series.len();
        self.series
            .retain(|_, series| series.last_touched() >= tick);
        before - self.series.len()
    }

    /// Number of series held.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Bytes one series costs with this config: its slot in the map (key,
    /// state, control byte) plus its buffers. Heap data the key owns (the
    /// text of a `String`) and allocator overhead are not included; the
    /// map's spare capacity is (see [`memory_bytes`](Self::memory_bytes)).
    pub fn memory_per_series(&self) -> usize {
        let slot = size_of::<K>() + size_of::<SeriesState>() + 1;
        slot + SeriesState::new_heap_bytes(&self.config)
    }

    /// Heap bytes of one series' buffers with this config (allocated in
    /// full when the series is created, never grown).
    pub fn heap_bytes_per_series(&self) -> usize {
        SeriesState::new_heap_bytes(&self.config)
    }

    /// Bytes held by the container: every slot of the map, used or spare,
    /// plus every series' buffers (key heap data not included).
    pub fn memory_bytes(&self) -> usize {
        let slots = self.series.capacity() * (size_of::<K>() + size_of::<SeriesState>() + 1);
        let buffers: usize = self.series.values().map(SeriesState::heap_bytes).sum();
        size_of::<Self>() + slots + buffers
    }

    /// The config every series is judged with, its threshold given as `z`
    /// (whether it was configured as `z` or as a false-alarm probability).
    pub fn config(&self) -> DetectorConfig {
        DetectorConfig {
            window: self.config.window,
            recent: self.config.recent,
            min_history: self.config.min_history,
            false_alarm: None,
            z: Some(self.config.z),
            kind: self.config.kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DetectorKind;

    fn config() -> DetectorConfig {
        DetectorConfig {
            window: 8,
            recent: 2,
            min_history: 4,
            false_alarm: Some(0.01),
            ..DetectorConfig::default()
        }
    }

    #[test]
    fn repeated_and_late_seq_are_not_fed() {
        let mut set = SeriesSet::new(&config()).unwrap();
        assert!(set.feed("a", 5, 1.0).unwrap().is_some());
        assert_eq!(set.feed("a", 5, 1.0).unwrap(), None);
        assert_eq!(set.feed("a", 4, 1.0).unwrap(), None);
        assert_eq!(set.feed("a", 6, 1.0).unwrap(), Some(Verdict::NONE));
        // Other keys are independent; seq 0 is fine as a first reading.
        assert!(set.feed("b", 0, 1.0).unwrap().is_some());
        assert_eq!(set.last_seq("a"), Some(6));
    }

    #[test]
    fn non_finite_creates_nothing() {
        let mut set = SeriesSet::new(&config()).unwrap();
        assert!(set.feed("a", 1, f64::NAN).unwrap_err().is_invalid_input());
        assert!(set.is_empty());
    }

    #[test]
    fn warm_start_equals_feeding_the_history() {
        let history: Vec<(u64, f64)> = (1..=20).map(|i| (i, f64::from(i as u32 % 7))).collect();
        for kind in [DetectorKind::ZScore, DetectorKind::Mad] {
            let config = DetectorConfig { kind, ..config() };
            let mut fed = SeriesSet::new(&config).unwrap();
            for &(seq, value) in &history {
                fed.feed("a", seq, value).unwrap();
            }
            let mut warm = SeriesSet::new(&config).unwrap();
            assert_eq!(warm.warm_start("a", history.iter().copied()).unwrap(), 20);
            assert_eq!(warm.feed("a", 20, 1.0).unwrap(), None);
            for (seq, value) in [(21, 3.0), (22, 40.0), (23, 2.5)] {
                assert_eq!(
                    fed.feed("a", seq, value).unwrap(),
                    warm.feed("a", seq, value).unwrap()
                );
            }
        }
    }

    #[test]
    fn warm_start_rejects_bad_history_and_keeps_the_old_series() {
        let mut set = SeriesSet::new(&config()).unwrap();
        set.feed("a", 10, 1.0).unwrap();
        let err = set.warm_start("a", [(3, 1.0), (3, 2.0)]).unwrap_err();
        assert_eq!(
            err,
            AnalysisError::HistoryOutOfOrder {
                seq: 3,
                previous: 3
            }
        );
        assert!(set.warm_start("a", [(1, f64::INFINITY)]).is_err());
        assert_eq!(set.last_seq("a"), Some(10));
    }

    #[test]
    fn evicts_series_untouched_since_a_tick() {
        let mut set = SeriesSet::new(&config()).unwrap();
        set.feed("old", 1, 1.0).unwrap();
        set.set_tick(10);
        set.feed("new", 1, 1.0).unwrap();
        set.warm_start("warm", [(1, 1.0)]).unwrap();
        assert_eq!(set.evict_untouched_since(10), 1);
        assert!(!set.contains_key("old"));
        assert!(set.contains_key("new") && set.contains_key("warm"));
        // A not-fed reading does not refresh the stamp.
        set.set_tick(20);
        set.feed("new", 1, 1.0).unwrap();
        assert_eq!(set.evict_untouched_since(20), 2);
    }

    #[test]
    fn reported_config_is_valid_and_equivalent() {
        let set: SeriesSet<u32> = SeriesSet::new(&config()).unwrap();
        let reported = set.config();
        assert_eq!(
            reported.z_threshold().unwrap(),
            config().z_threshold().unwrap()
        );
        assert_eq!(
            (reported.window, reported.recent, reported.min_history),
            (8, 2, 4)
        );
    }

    #[test]
    fn stated_heap_bytes_are_what_a_series_holds() {
        for kind in DetectorKind::ALL {
            let config = DetectorConfig {
                kind,
                ..DetectorConfig::default()
            };
            let mut set: SeriesSet<u32> = SeriesSet::new(&config).unwrap();
            for seq in 0..500u64 {
                set.feed(7, seq, (seq % 11) as f64).unwrap();
            }
            let held: usize = set.series.values().map(SeriesState::heap_bytes).sum();
            assert_eq!(held, set.heap_bytes_per_series(), "{kind}");
        }
    }

    #[test]
    fn default_config_meets_the_memory_target() {
        let set: SeriesSet<(String, String)> = SeriesSet::new(&DetectorConfig::default()).unwrap();
        let bytes = set.memory_per_series();
        assert!(bytes <= 2560 - 64, "{bytes} bytes per series");
    }
}
