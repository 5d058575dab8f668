//! A sorted copy of the baseline with O(log W) median and MAD.
//!
//! Costs per reading: one binary search and one `copy_within` (memmove of
//! at most `W` floats) to insert the value entering the baseline, the same
//! to remove the value leaving it; no sort. The median is read off the
//! middle. The MAD, the median of `|b − median|`, is the k-th smallest of
//! two sorted sequences (deviations below the median, walking left, and
//! above it, walking right) and is found by binary search in O(log W)
//! without materialising the deviations.

/// The baseline values in ascending order.
#[derive(Debug, Clone)]
pub(crate) struct SortedBaseline {
    values: Box<[f64]>,
    len: u32,
}

impl SortedBaseline {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            values: vec![0.0; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.values)
    }

    fn sorted(&self) -> &[f64] {
        &self.values[..self.len()]
    }

    /// Inserts a finite value; the caller never exceeds the capacity.
    pub(crate) fn insert(&mut self, value: f64) {
        let len = self.len();
        let at = self.sorted().partition_point(|&x| x < value);
        self.values.copy_within(at..len, at + 1);
        self.values[at] = value;
        self.len += 1;
    }

    /// Removes one copy of a value previously inserted.
    pub(crate) fn remove(&mut self, value: f64) {
        let len = self.len();
        let at = self.sorted().partition_point(|&x| x < value);
        if at < len && self.values[at] == value {
            self.values.copy_within(at + 1..len, at);
            self.len -= 1;
        } else {
            debug_assert!(false, "removing {value}, which is not in the baseline");
        }
    }

    /// Median of the values; needs `len ≥ 1`.
    pub(crate) fn median(&self) -> f64 {
        let sorted = self.sorted();
        let n = sorted.len();
        if n % 2 == 1 {
            sorted[n / 2]
        } else {
            // Halves first: no overflow for values near f64::MAX.
            0.5 * sorted[n / 2 - 1] + 0.5 * sorted[n / 2]
        }
    }

    /// Median absolute deviation from `median` (unscaled); needs `len ≥ 1`.
    pub(crate) fn mad(&self, median: f64) -> f64 {
        let sorted = self.sorted();
        let n = sorted.len();
        let split = sorted.partition_point(|&x| x < median);
        let (below, above) = sorted.split_at(split);
        // Both sequences ascend with their index.
        let left = |t: usize| median - below[below.len() - 1 - t];
        let right = |t: usize| above[t] - median;
        if n % 2 == 1 {
            kth_smallest_of_two(below.len(), left, above.len(), right, n / 2).0
        } else {
            let (lower, upper) =
                kth_smallest_of_two(below.len(), left, above.len(), right, n / 2 - 1);
            0.5 * lower + 0.5 * upper
        }
    }
}

/// The `k`-th smallest (0-based) element of the union of two ascending
/// sequences given by length and accessor, and the `(k+1)`-th (or +inf when
/// there is none); `k < a_len + b_len`. O(log) with a branch-free loop.
fn kth_smallest_of_two(
    a_len: usize,
    a: impl Fn(usize) -> f64,
    b_len: usize,
    b: impl Fn(usize) -> f64,
    k: usize,
) -> (f64, f64) {
    let take = k + 1;
    // Find the fewest `i` elements of `a` such that, with `take - i` from
    // `b`, the next element of `a` is not below the last one taken from `b`.
    let mut lo = take.saturating_sub(b_len);
    let mut hi = take.min(a_len);
    while lo < hi {
        let i = lo + (hi - lo) / 2;
        let a_too_small = a(i) < b(take - i - 1);
        lo = if a_too_small { i + 1 } else { lo };
        hi = if a_too_small { hi } else { i };
    }
    let from_b = take - lo;
    let last_a = if lo > 0 { a(lo - 1) } else { f64::NEG_INFINITY };
    let last_b = if from_b > 0 {
        b(from_b - 1)
    } else {
        f64::NEG_INFINITY
    };
    let next_a = if lo < a_len { a(lo) } else { f64::INFINITY };
    let next_b = if from_b < b_len {
        b(from_b)
    } else {
        f64::INFINITY
    };
    (last_a.max(last_b), next_a.min(next_b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted_median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * v[n / 2 - 1] + 0.5 * v[n / 2]
        }
    }

    proptest! {
        #[test]
        fn median_and_mad_match_sorting(
            values in prop::collection::vec(-50i32..50, 1..60),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut kept: Vec<f64> = values.iter().map(|&v| f64::from(v) * 0.25).collect();
            let mut baseline = SortedBaseline::new(kept.len());
            for &v in &kept {
                baseline.insert(v);
            }
            for index in removals {
                if kept.len() <= 1 {
                    break;
                }
                let v = kept.remove(index.index(kept.len()));
                baseline.remove(v);
            }
            prop_assert_eq!(baseline.len(), kept.len());
            let median = sorted_median(kept.clone());
            prop_assert_eq!(baseline.median(), median);
            let deviations = kept.iter().map(|x| (x - median).abs()).collect();
            prop_assert_eq!(baseline.mad(median), sorted_median(deviations));
        }
    }

    #[test]
    fn single_value() {
        let mut baseline = SortedBaseline::new(1);
        baseline.insert(3.0);
        assert_eq!(baseline.median(), 3.0);
        assert_eq!(baseline.mad(3.0), 0.0);
    }
}
