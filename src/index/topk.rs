//! The k best hits seen so far: a bounded binary heap whose root is the worst kept hit, so a
//! candidate that cannot enter costs one comparison. Ties go to the lower row, so results are
//! deterministic whatever order the rows were scanned in.

/// A scored row. `key` is "higher is better" (L2 distances are negated by the caller).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Ranking key; higher is better.
    pub key: f32,
    /// Row number.
    pub row: u64,
}

/// True when `a` ranks strictly better than `b`.
#[inline]
fn better(a: &Candidate, b: &Candidate) -> bool {
    a.key > b.key || (a.key == b.key && a.row < b.row)
}

/// Bounded top-k. Allocates once, at construction.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    /// Min-heap by rank: `heap[0]` is the worst kept candidate.
    heap: Vec<Candidate>,
}

impl TopK {
    /// An empty top-k for `k` hits.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: Vec::with_capacity(k),
        }
    }

    /// Empties it, keeping the allocation.
    pub fn clear(&mut self) {
        let TopK { k: _, heap } = self;
        heap.clear();
    }

    /// The score a candidate must beat once full (`-inf` until then).
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.first().map_or(f32::INFINITY, |c| c.key)
        }
    }

    /// Offers a candidate. NaN keys rank below everything.
    #[inline]
    pub fn push(&mut self, key: f32, row: u64) {
        if self.k == 0 {
            return;
        }
        let key = if key.is_nan() { f32::NEG_INFINITY } else { key };
        let c = Candidate { key, row };
        if self.heap.len() < self.k {
            self.heap.push(c);
            self.sift_up(self.heap.len() - 1);
        } else if better(&c, &self.heap[0]) {
            self.heap[0] = c;
            self.sift_down(0);
        }
    }

    /// Adds every candidate of `other`.
    pub fn merge(&mut self, other: &TopK) {
        for c in &other.heap {
            self.push(c.key, c.row);
        }
    }

    /// The kept candidates, best first.
    pub fn into_sorted(mut self) -> Vec<Candidate> {
        self.heap.sort_by(|a, b| {
            if better(a, b) {
                std::cmp::Ordering::Less
            } else if better(b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        self.heap
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if better(&self.heap[parent], &self.heap[i]) {
                self.heap.swap(parent, i);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut worst = i;
            if l < n && better(&self.heap[worst], &self.heap[l]) {
                worst = l;
            }
            if r < n && better(&self.heap[worst], &self.heap[r]) {
                worst = r;
            }
            if worst == i {
                break;
            }
            self.heap.swap(i, worst);
            i = worst;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_best_with_ties_to_lower_rows() {
        let keys = [0.5f32, 0.9, 0.1, 0.9, 0.7, f32::NAN, 0.3, 0.9];
        let mut t = TopK::new(3);
        for (row, k) in keys.iter().enumerate() {
            t.push(*k, row as u64);
        }
        let rows: Vec<u64> = t.into_sorted().iter().map(|c| c.row).collect();
        assert_eq!(rows, vec![1, 3, 7]);
        let mut t = TopK::new(0);
        t.push(1.0, 0);
        assert!(t.into_sorted().is_empty());
    }
}
