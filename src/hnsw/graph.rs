//! The graph's links: who each node links to on each of its layers.
//!
//! Contract with `crate::db` (which owns persistence and calls these under the writer lock):
//! - node `r` is row `r`; nodes `0..len()` are inserted, in row order;
//! - a node's layer is a pure function of the graph's seed and its row ([`Graph::level_of`]),
//!   so inserting the same rows gives the same layers after a reload;
//! - [`Graph::insert`] reports every node whose links it changed, and [`Graph::links_bytes`]
//!   encodes one node's links for redb; [`Graph::from_links`] rebuilds the graph from those
//!   values exactly as they were written.

use super::Entry;
use crate::distance::Kernels;
use crate::error::Result;
use crate::quant::HnswParams;
use crate::storage::RowView;
use crate::types::Metric;
use std::collections::BTreeSet;
use std::sync::Arc;

/// How two rows compare while building: the database's metric and kernels (higher is
/// better, as in [`crate::index::topk::Candidate`]).
#[derive(Debug, Clone, Copy)]
pub struct Space {
    /// The metric.
    pub metric: Metric,
    /// The kernels.
    pub kernels: Kernels,
}

/// The links of every inserted node. `Send + Sync`: one writer inserts through `&self`
/// while searches read.
pub struct Graph {
    params: HnswParams,
    seed: u64,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("params", &self.params)
            .field("nodes", &self.len())
            .finish_non_exhaustive()
    }
}

impl Graph {
    /// An empty graph.
    pub fn new(params: HnswParams, seed: u64) -> Self {
        let _ = (params, seed);
        todo!("hnsw graph")
    }

    /// The build parameters.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// The seed the layers are drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Nodes inserted: rows `0..len()`.
    pub fn len(&self) -> u64 {
        todo!("hnsw graph")
    }

    /// True before the first insertion.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where a traversal of the whole graph enters (`None` while empty).
    pub fn entry(&self) -> Option<Entry> {
        todo!("hnsw graph")
    }

    /// Bytes the links take in memory.
    pub fn bytes(&self) -> u64 {
        todo!("hnsw graph")
    }

    /// The top layer of row `row` in a graph with this seed and `m`.
    pub fn level_of(seed: u64, m: usize, row: u64) -> u8 {
        let _ = (seed, m, row);
        todo!("hnsw graph")
    }

    /// Inserts rows `len()..to` of `rows` (on all cores natively when there are many), adding
    /// to `dirty` every node whose links changed (the new ones included). The caller is the
    /// only writer; searches may run meanwhile. Deleted rows are inserted too (row numbers
    /// are the nodes; searches skip them).
    pub fn insert(
        &self,
        rows: &dyn RowView,
        space: Space,
        to: u64,
        dirty: &mut BTreeSet<u32>,
    ) -> Result<()> {
        let _ = (rows, space, to, dirty);
        todo!("hnsw graph")
    }

    /// Node `node`'s links on every layer, encoded for storage.
    pub fn links_bytes(&self, node: u32) -> Vec<u8> {
        let _ = node;
        todo!("hnsw graph")
    }

    /// The graph of nodes `0..len` from every node's [`Graph::links_bytes`], as stored: an
    /// error naming the node when a value is damaged or links past `len`.
    pub fn from_links(
        params: HnswParams,
        seed: u64,
        len: u64,
        entry: Option<Entry>,
        links: impl Iterator<Item = Result<(u32, Vec<u8>)>>,
    ) -> Result<Self> {
        let _ = (params, seed, len, entry, links);
        todo!("hnsw graph")
    }

    /// What a search of the nodes inserted so far sees.
    pub fn view(self: &Arc<Self>) -> GraphView {
        GraphView {
            nodes: self.len(),
            entry: self.entry(),
            graph: Arc::clone(self),
        }
    }
}

/// The graph as of one snapshot: nodes past `nodes` (inserted later) are not followed.
#[derive(Debug, Clone)]
pub struct GraphView {
    /// The links.
    pub graph: Arc<Graph>,
    /// Nodes this view covers (rows `0..nodes`).
    pub nodes: u64,
    /// The entry as of this view.
    pub entry: Option<Entry>,
}
