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

/// Nodes seen by the current traversal: `stamps[n] == generation`. Starting a traversal bumps
/// the generation instead of clearing the array.
#[derive(Debug, Default)]
pub(crate) struct Visited {
    stamps: Vec<u32>,
    generation: u32,
}

impl Visited {
    /// Forgets every node and makes room for nodes `0..nodes`.
    pub fn reset(&mut self, nodes: usize) {
        if self.stamps.len() < nodes {
            self.stamps.resize(nodes, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `node`; true when it was not marked yet. Nodes past the reset's `nodes` count as
    /// seen (they are not to be followed).
    #[inline]
    pub fn insert(&mut self, node: u32) -> bool {
        match self.stamps.get_mut(node as usize) {
            Some(s) if *s != self.generation => {
                *s = self.generation;
                true
            }
            _ => false,
        }
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
