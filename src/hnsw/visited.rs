//! The scratch a traversal reuses from one search to the next on a thread: which nodes it has
//! scored (a generation-stamped array, cleared in O(1)), and its two heaps.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A node and its key against the current query (higher is better).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    /// Ranking key; NaN never gets here (see [`Scored::new`]).
    pub key: f32,
    /// The node (a row number).
    pub node: u32,
}

impl Scored {
    /// A scored node; a NaN key ranks below everything.
    #[inline]
    pub fn new(key: f32, node: u32) -> Self {
        let key = if key.is_nan() { f32::NEG_INFINITY } else { key };
        Scored { key, node }
    }
}

/// Greater is better: higher key, then the lower node (as [`crate::index::topk::TopK`]).
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .total_cmp(&other.key)
            .then(other.node.cmp(&self.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

/// Nodes seen by the current traversal, one bit each: at 1M nodes the set is 125 KB and stays
/// in the core's L2, where a stamp per node (4 MB) missed it on most of the checks a traversal
/// makes (a quarter of the layer search's time in a profile of f32 searches at 1M, ef 448).
/// Starting a traversal clears only the words the last one set when they are few.
#[derive(Debug, Default)]
pub(crate) struct Visited {
    words: Vec<u64>,
    /// Nodes `0..nodes` can be marked.
    nodes: usize,
    /// Words set since the last reset, while they are fewer than `words.len() / 16`.
    touched: Vec<u32>,
    /// `touched` overflowed: the next reset clears every word.
    clear_all: bool,
}

impl Visited {
    /// Forgets every node and makes room for nodes `0..nodes`.
    pub fn reset(&mut self, nodes: usize) {
        if self.clear_all {
            self.words.fill(0);
        } else {
            for &w in &self.touched {
                self.words[w as usize] = 0;
            }
        }
        self.touched.clear();
        self.clear_all = false;
        let words = nodes.div_ceil(64);
        if self.words.len() < words {
            self.words.resize(words, 0);
        }
        self.nodes = nodes;
    }

    /// Marks `node`; true when it was not marked yet. Nodes past the reset's `nodes` count as
    /// seen (they are not to be followed).
    #[inline]
    pub fn insert(&mut self, node: u32) -> bool {
        let node = node as usize;
        if node >= self.nodes {
            return false;
        }
        let (w, bit) = (node / 64, 1u64 << (node % 64));
        let limit = self.words.len() / 16;
        let Some(word) = self.words.get_mut(w) else {
            return false;
        };
        if *word & bit != 0 {
            return false;
        }
        if *word == 0 && !self.clear_all {
            if self.touched.len() < limit {
                self.touched.push(w as u32);
            } else {
                self.clear_all = true;
            }
        }
        *word |= bit;
        true
    }
}

/// One thread's traversal scratch.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Seen nodes.
    pub visited: Visited,
    /// Nodes to expand, best on top.
    pub candidates: BinaryHeap<Scored>,
    /// The best nodes found, worst on top.
    pub results: BinaryHeap<Reverse<Scored>>,
    /// The unvisited neighbours of the node being expanded.
    pub batch: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch. `f` must not call back into code that takes the
/// scratch (a rayon call inside `f` could run another traversal on this thread); when the
/// scratch is taken already (which that rule prevents) `f` gets a fresh one.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a `HashSet` over many traversals of random sizes: the few-words path (only the
    /// touched words cleared) and the many-words path (every word cleared) both forget.
    #[test]
    fn visited_matches_a_hash_set_across_resets() {
        let mut rng = crate::testing::Rng::new(5);
        let mut v = Visited::default();
        for round in 0..200 {
            let nodes = 1 + rng.below(5000) as usize;
            v.reset(nodes);
            let mut want = std::collections::HashSet::new();
            // Few marks in some rounds, most of the nodes in others.
            let marks = if round % 3 == 0 {
                nodes * 2
            } else {
                1 + nodes / 50
            };
            for _ in 0..marks {
                let n = rng.below(nodes as u64 + 10) as u32;
                let fresh = (n as usize) < nodes && want.insert(n);
                assert_eq!(v.insert(n), fresh, "round {round}, node {n} of {nodes}");
            }
        }
    }

    #[test]
    fn visited_forgets_on_reset_and_refuses_nodes_past_its_size() {
        let mut v = Visited::default();
        v.reset(10);
        assert!(v.insert(3));
        assert!(!v.insert(3));
        assert!(!v.insert(10));
        v.reset(10);
        assert!(v.insert(3));
    }

    #[test]
    fn scored_orders_by_key_then_lower_node() {
        let mut h = BinaryHeap::new();
        h.push(Scored::new(0.5, 7));
        h.push(Scored::new(0.9, 9));
        h.push(Scored::new(0.9, 2));
        h.push(Scored::new(f32::NAN, 1));
        let order: Vec<u32> = std::iter::from_fn(|| h.pop()).map(|s| s.node).collect();
        assert_eq!(order, vec![2, 9, 7, 1]);
    }
}
