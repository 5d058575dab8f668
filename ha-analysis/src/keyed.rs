//! Many series, keyed (e.g. by device and metric): the container the
//! analyzer service keeps.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::mem::size_of;

use crate::config::Resolved;
use crate::series::SeriesState;
use crate::{AnalysisError, DetectorConfig, Verdict};

/// One detector per key, all sharing one [`DetectorConfig`].
///
/// Per series the container keeps the `W` newest values, a few counters
/// and, for [`DetectorKind::Mad`](crate::DetectorKind::Mad), a sorted copy
/// of the baseline; the key is held twice (map and recency list).
/// [`memory_per_series`](Self::memory_per_series) gives the figure
/// (≈ 1.8 KiB for the default z-score config and `(String, String)` keys,
/// key text not included).
///
/// **Bounded size.** [`set_max_series`](Self::set_max_series) caps the
/// number of series: adding one to a full container first drops the least
/// recently used (fed or warm-started) series, in O(1); see
/// [`evicted`](Self::evicted). [`pop_lru`](Self::pop_lru) lets the caller
/// make room itself.
///
/// **Idle series.** The library has no clock. The caller owns a *tick*
/// ([`set_tick`](Self::set_tick)): any number that never decreases, such as
/// seconds since start, or a batch counter. Feeding or warm-starting a
/// series stamps it with the current tick;
/// [`evict_untouched_since`](Self::evict_untouched_since) drops every series
/// stamped earlier than a given tick, in O(number dropped). An evicted
/// series that comes back starts empty, or from
/// [`warm_start`](Self::warm_start).
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
    /// Key → index into `slots`.
    index: HashMap<K, u32, S>,
    /// Dense: removing swaps the last slot into the hole.
    slots: Vec<Slot<K>>,
    /// Most recently used slot, or `NIL`.
    head: u32,
    /// Least recently used slot, or `NIL`.
    tail: u32,
    tick: u64,
    max_series: usize,
    evicted: u64,
}

const NIL: u32 = u32::MAX;

/// A series in the recency list (doubly linked by slot index).
#[derive(Debug, Clone)]
struct Slot<K> {
    key: K,
    state: SeriesState,
    prev: u32,
    next: u32,
}

impl<K: Hash + Eq + Clone> SeriesSet<K> {
    /// An empty container; fails on an invalid config.
    pub fn new(config: &DetectorConfig) -> Result<Self, AnalysisError> {
        Self::with_hasher(config, RandomState::new())
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher> SeriesSet<K, S> {
    /// An empty container with a custom hasher (e.g. a faster one for
    /// integer keys).
    pub fn with_hasher(config: &DetectorConfig, hasher: S) -> Result<Self, AnalysisError> {
        Ok(Self {
            config: config.resolve()?,
            index: HashMap::with_hasher(hasher),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            tick: 0,
            max_series: u32::MAX as usize - 1,
            evicted: 0,
        })
    }

    /// Caps the number of series (at least 1); series beyond it are
    /// dropped at once, least recently used first.
    pub fn set_max_series(&mut self, max: usize) {
        self.max_series = max.clamp(1, u32::MAX as usize - 1);
        while self.slots.len() > self.max_series {
            self.pop_lru();
            self.evicted += 1;
        }
    }

    /// The cap on the number of series.
    pub fn max_series(&self) -> usize {
        self.max_series
    }

    /// Series dropped so far to respect the cap (not counting
    /// [`pop_lru`](Self::pop_lru), [`remove`](Self::remove) or idle
    /// eviction).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Feeds reading `(seq, value)` to the series `key`, creating it on
    /// first sight (dropping the least recently used series if full).
    ///
    /// - `Ok(None)`: **not fed** — `seq` is not newer than the newest `seq`
    ///   already fed to this series (a late or repeated reading).
    /// - `Ok(Some(verdict))`: fed; `verdict.score` is `None` when no verdict
    ///   could be given (short history, zero spread).
    /// - `Err(NonFiniteValue)`: NaN or ±inf; nothing changed.
    pub fn feed(&mut self, key: K, seq: u64, value: f64) -> Result<Option<Verdict>, AnalysisError> {
        let value = crate::error::check_finite(value)?;
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let state = SeriesState::new(&self.config, self.tick);
                self.insert_new(key, state)
            }
        };
        let tick = self.tick;
        let verdict = self.slots[i as usize]
            .state
            .feed(&self.config, tick, seq, value);
        if verdict.is_some() {
            self.move_to_front(i);
        }
        Ok(verdict)
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
        let (state, count) = SeriesState::from_history(&self.config, self.tick, history)?;
        match self.index.get(&key) {
            Some(&i) => {
                self.slots[i as usize].state = state;
                self.move_to_front(i);
            }
            None => {
                self.insert_new(key, state);
            }
        }
        Ok(count)
    }

    /// Newest `seq` fed to `key` (or loaded by warm start).
    pub fn last_seq<Q>(&self, key: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let &i = self.index.get(key)?;
        self.slots[i as usize].state.last_seq()
    }

    /// True when the container holds a series for `key`.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.contains_key(key)
    }

    /// Drops the series `key`; true when it existed.
    pub fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.index.remove(key) {
            Some(i) => {
                self.take_slot(i);
                true
            }
            None => false,
        }
    }

    /// Drops the least recently used series and returns its key; `None`
    /// when empty. O(1).
    pub fn pop_lru(&mut self) -> Option<K> {
        if self.tail == NIL {
            return None;
        }
        let i = self.tail;
        self.index.remove(&self.slots[i as usize].key);
        Some(self.take_slot(i))
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
    /// how many were dropped. O(number dropped): the least recently used
    /// series are the oldest stamped.
    pub fn evict_untouched_since(&mut self, tick: u64) -> usize {
        let mut dropped = 0;
        while self.pop_lru_untouched_since(tick).is_some() {
            dropped += 1;
        }
        dropped
    }

    /// Drops the least recently used series if it was last fed or
    /// warm-started before `tick`, and returns its key. O(1); call until
    /// `None` to evict idle series one by one.
    pub fn pop_lru_untouched_since(&mut self, tick: u64) -> Option<K> {
        if self.tail == NIL || self.slots[self.tail as usize].state.last_touched() >= tick {
            return None;
        }
        self.pop_lru()
    }

    /// Number of series held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no series is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes one series costs with this config: its slot in the list (key,
    /// state, links), its map entry (key, index, control byte) and its
    /// buffers. Heap data the key owns (the text of a `String`) and
    /// allocator overhead are not included, nor spare capacity (see
    /// [`memory_bytes`](Self::memory_bytes)).
    pub fn memory_per_series(&self) -> usize {
        Self::SLOT_BYTES + Self::ENTRY_BYTES + SeriesState::new_heap_bytes(&self.config)
    }

    /// Heap bytes of one series' buffers with this config (allocated in
    /// full when the series is created, never grown).
    pub fn heap_bytes_per_series(&self) -> usize {
        SeriesState::new_heap_bytes(&self.config)
    }

    const SLOT_BYTES: usize = size_of::<Slot<K>>();
    const ENTRY_BYTES: usize = size_of::<K>() + size_of::<u32>() + 1;

    /// Bytes held by the container: every slot and map entry, used or
    /// spare, plus every series' buffers (key heap data not included).
    /// O(number of series).
    pub fn memory_bytes(&self) -> usize {
        let slots = self.slots.capacity() * Self::SLOT_BYTES;
        let entries = self.index.capacity() * Self::ENTRY_BYTES;
        let buffers: usize = self.slots.iter().map(|s| s.state.heap_bytes()).sum();
        size_of::<Self>() + slots + entries + buffers
    }

    /// Adds a series not yet held, at the front; makes room first.
    fn insert_new(&mut self, key: K, state: SeriesState) -> u32 {
        if self.slots.len() >= self.max_series && self.pop_lru().is_some() {
            self.evicted += 1;
        }
        let i = self.slots.len() as u32;
        self.index.insert(key.clone(), i);
        self.slots.push(Slot {
            key,
            state,
            prev: NIL,
            next: NIL,
        });
        self.link_front(i);
        i
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn link_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            h => self.slots[h as usize].prev = i,
        }
        self.head = i;
    }

    fn move_to_front(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.link_front(i);
        }
    }

    /// Removes slot `i` (already gone from the index) and returns its key;
    /// the last slot moves into the hole, keeping its place in the list.
    fn take_slot(&mut self, i: u32) -> K {
        self.unlink(i);
        let slot = self.slots.swap_remove(i as usize);
        if let Some(moved) = self.slots.get(i as usize) {
            let (prev, next) = (moved.prev, moved.next);
            match prev {
                NIL => self.head = i,
                p => self.slots[p as usize].next = i,
            }
            match next {
                NIL => self.tail = i,
                n => self.slots[n as usize].prev = i,
            }
            if let Some(entry) = self.index.get_mut(&self.slots[i as usize].key) {
                *entry = i;
            }
        }
        slot.key
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
    fn a_full_set_drops_the_least_recently_used() {
        let mut set = SeriesSet::new(&config()).unwrap();
        set.set_max_series(3);
        for key in ["a", "b", "c"] {
            set.feed(key, 1, 1.0).unwrap();
        }
        // "a" used again: "b" is now the least recently used.
        set.feed("a", 2, 1.0).unwrap();
        set.feed("d", 1, 1.0).unwrap();
        assert_eq!(set.len(), 3);
        assert!(!set.contains_key("b"));
        assert_eq!(set.evicted(), 1);
        // A not-fed reading is no use: "c" goes next.
        set.feed("c", 1, 1.0).unwrap();
        set.warm_start("e", [(1, 1.0)]).unwrap();
        assert!(!set.contains_key("c"));
        assert_eq!(set.pop_lru(), Some("a"));
        assert_eq!(set.pop_lru(), Some("d"));
        assert!(set.remove("e"));
        assert_eq!(set.pop_lru(), None);
        assert!(set.is_empty());
        // Lowering the cap drops at once.
        for key in ["a", "b", "c"] {
            set.feed(key, 9, 1.0).unwrap();
        }
        set.set_max_series(1);
        assert!(set.contains_key("c") && set.len() == 1);
    }

    #[test]
    fn recency_order_survives_removals_from_the_middle() {
        // Checked against a plain Vec kept in recency order.
        let mut set = SeriesSet::new(&config()).unwrap();
        let mut model: Vec<u32> = Vec::new();
        let mut seq = 0u64;
        for step in 0..2000u32 {
            let key = (step * 7919) % 61;
            seq += 1;
            if step % 5 == 0 {
                assert_eq!(set.remove(&key), model.contains(&key));
                model.retain(|k| *k != key);
            } else {
                set.feed(key, seq, 1.0).unwrap();
                model.retain(|k| *k != key);
                model.push(key);
            }
            assert_eq!(set.len(), model.len());
        }
        for expected in model {
            assert_eq!(set.pop_lru(), Some(expected));
        }
        assert_eq!(set.pop_lru(), None);
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
            let held: usize = set.slots.iter().map(|s| s.state.heap_bytes()).sum();
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
