//! A fixed-capacity ring of the newest values of one series.

/// The newest `capacity` values, oldest overwritten first.
///
/// Allocated once at full size (`capacity × 8` bytes) and never grown, so a
/// series costs the same from its first reading to its millionth.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    values: Box<[f64]>,
    /// Index of the oldest value (the next one to overwrite when full).
    start: u32,
    len: u32,
}

impl Window {
    /// `capacity` must be ≥ 1 and ≤ `u32::MAX` (config validation ensures it).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            values: vec![0.0; capacity].into_boxed_slice(),
            start: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Heap bytes owned by this window.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.values)
    }

    /// Appends `value`; returns the value pushed out when the ring was full.
    pub(crate) fn push(&mut self, value: f64) -> Option<f64> {
        let capacity = self.values.len();
        let len = self.len as usize;
        if len < capacity {
            let index = self.physical(len);
            self.values[index] = value;
            self.len += 1;
            None
        } else {
            let index = self.start as usize;
            let evicted = std::mem::replace(&mut self.values[index], value);
            self.start = if index + 1 == capacity {
                0
            } else {
                self.start + 1
            };
            Some(evicted)
        }
    }

    /// The value `back` positions before the newest (0 = newest).
    /// `back` must be `< len()`.
    pub(crate) fn back(&self, back: usize) -> f64 {
        self.values[self.physical(self.len() - 1 - back)]
    }

    /// The oldest value; the window must not be empty.
    pub(crate) fn oldest(&self) -> f64 {
        self.values[self.start as usize]
    }

    /// The oldest `count` values, oldest first, as at most two slices.
    pub(crate) fn oldest_slices(&self, count: usize) -> (&[f64], &[f64]) {
        let count = count.min(self.len());
        let start = self.start as usize;
        let first_len = count.min(self.values.len() - start);
        (
            &self.values[start..start + first_len],
            &self.values[..count - first_len],
        )
    }

    /// The `count` values just before the newest, oldest first, as at most
    /// two slices; `count` must be `< len()`.
    pub(crate) fn before_newest(&self, count: usize) -> (&[f64], &[f64]) {
        let first = self.len() - 1 - count;
        let start = self.physical(first);
        let first_len = count.min(self.values.len() - start);
        (
            &self.values[start..start + first_len],
            &self.values[..count - first_len],
        )
    }

    /// Physical index of the `logical`-th oldest value.
    fn physical(&self, logical: usize) -> usize {
        let index = self.start as usize + logical;
        let capacity = self.values.len();
        if index >= capacity {
            index - capacity
        } else {
            index
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_reports_evictions() {
        let mut window = Window::new(3);
        assert_eq!(window.push(1.0), None);
        assert_eq!(window.push(2.0), None);
        assert_eq!(window.push(3.0), None);
        assert_eq!(window.push(4.0), Some(1.0));
        assert_eq!(window.push(5.0), Some(2.0));
        assert_eq!(window.len(), 3);
        assert_eq!(window.back(0), 5.0);
        assert_eq!(window.back(2), 3.0);
        assert_eq!(window.oldest(), 3.0);
        let (a, b) = window.oldest_slices(3);
        let all: Vec<f64> = a.iter().chain(b).copied().collect();
        assert_eq!(all, [3.0, 4.0, 5.0]);
        let (a, b) = window.before_newest(2);
        let two: Vec<f64> = a.iter().chain(b).copied().collect();
        assert_eq!(two, [3.0, 4.0]);
        let (a, b) = window.oldest_slices(2);
        let two: Vec<f64> = a.iter().chain(b).copied().collect();
        assert_eq!(two, [3.0, 4.0]);
    }
}
