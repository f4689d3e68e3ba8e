//! A search over one snapshot's graph.

use super::graph::GraphView;
use crate::index::flat::FlatIndex;
use crate::index::topk::Candidate;
use crate::index::{Index, Queries, ScanSet};
use crate::quant::codes::CodeTable;

/// Traverses the graph for each query and rescores the candidates exactly. Rows of the set
/// past the graph's nodes are scored exactly.
pub struct HnswIndex<'a> {
    /// The graph as of the snapshot.
    pub graph: &'a GraphView,
    /// int8 codes to traverse on (`None`: the f32 rows).
    pub codes: Option<&'a CodeTable>,
    /// Rescores the candidates; scans the set when the traversal gives up.
    pub exact: FlatIndex,
    /// Candidates kept during traversal (at least `k`).
    pub ef: usize,
    /// With codes: candidates kept per hit for exact rescoring.
    pub oversample: usize,
    /// Rows the set lets through when it is filtered (`None`: unfiltered). A traversal that
    /// visits more nodes than this gives up and the set is scanned exactly.
    pub matching: Option<u64>,
}

impl Index for HnswIndex<'_> {
    fn name(&self) -> &'static str {
        "hnsw"
    }

    fn search(&self, set: &ScanSet<'_>, queries: &Queries, k: usize) -> Vec<Vec<Candidate>> {
        let _ = (set, queries, k);
        todo!("hnsw search")
    }
}
