//! A search over one snapshot's graph.

use super::graph::{greedy, search_layer, GraphView, LayerSearch, Space};
use super::visited::{with_scratch, Scored};
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

/// What the traversal of one query found.
enum Found {
    /// Candidate rows to rescore (ascending).
    Rows(Vec<u64>),
    /// The traversal gave up: scan the set.
    Scan,
}

impl HnswIndex<'_> {
    /// Nodes the traversal may follow: the view's, within the set's rows and the codes.
    fn nodes(&self, set: &ScanSet<'_>) -> u32 {
        let mut nodes = self.graph.nodes.min(set.rows.rows());
        if let Some(codes) = self.codes {
            nodes = nodes.min(codes.rows());
        }
        u32::try_from(nodes).unwrap_or(u32::MAX)
    }

    /// The candidates of query `q` (`nodes` > the entry node).
    fn traverse(
        &self,
        set: &ScanSet<'_>,
        queries: &Queries,
        q: usize,
        k: usize,
        nodes: u32,
    ) -> Found {
        let Some(entry) = self.graph.entry.filter(|e| e.node < nodes) else {
            return Found::Scan;
        };
        let query = queries.get(q);
        let qn = queries.norms[q];
        let space = Space {
            metric: self.exact.metric(),
            kernels: self.exact.kernels(),
        };
        let dim = queries.dim;
        let chunks = self.graph.graph.chunks();
        let links = self.graph.graph.reader(&chunks);
        let skip = |n: u32| set.is_deleted(u64::from(n));
        let (ef, keep) = match self.codes {
            Some(_) => {
                let keep = self.ef.max(k.saturating_mul(self.oversample.max(1)));
                (keep, keep)
            }
            None => (self.ef.max(k), k),
        };
        let p = LayerSearch {
            layer: 0,
            ef,
            nodes,
            skip: &skip,
            budget: self.matching,
        };
        let run = |score: &mut dyn FnMut(u32) -> f32| {
            let mut score = |n: u32| score(n);
            let mut at = Scored::new(score(entry.node), entry.node);
            for layer in (1..=entry.level).rev() {
                at = greedy(&links, layer, at, nodes, &mut score);
            }
            with_scratch(|s| {
                if !search_layer(&links, &p, &[at], &mut score, s) {
                    return Found::Scan;
                }
                let mut best: Vec<Scored> = s.results.drain().map(|r| r.0).collect();
                best.sort_unstable_by(|a, b| b.cmp(a));
                best.truncate(keep);
                let mut rows: Vec<u64> = best.iter().map(|s| u64::from(s.node)).collect();
                rows.sort_unstable();
                Found::Rows(rows)
            })
        };
        match self.codes {
            Some(codes) => {
                let codebook = codes.codebook();
                let prepared = codebook.prepare(query, qn);
                run(&mut |n| {
                    codes
                        .code(u64::from(n))
                        .map_or(f32::NEG_INFINITY, |c| codebook.score(&prepared, c))
                })
            }
            None if set.rows.resident() => run(&mut |n| {
                set.rows
                    .row(u64::from(n))
                    .map_or(f32::NEG_INFINITY, |r| space.key(query, qn, r, dim))
            }),
            None => run(&mut |n| match set.rows.read_row(u64::from(n)) {
                Ok(Some(r)) => space.key(query, qn, &r, dim),
                _ => f32::NEG_INFINITY,
            }),
        }
    }

    /// Query `q`'s answer: its candidates and the rows past the graph, rescored exactly; or
    /// the exact scan when the traversal gave up.
    fn search_one(
        &self,
        set: &ScanSet<'_>,
        queries: &Queries,
        q: usize,
        k: usize,
        nodes: u32,
        tail: &[u64],
    ) -> Vec<Candidate> {
        let one = Queries {
            data: queries.get(q).to_vec(),
            norms: vec![queries.norms[q]],
            dim: queries.dim,
        };
        match self.traverse(set, queries, q, k, nodes) {
            Found::Scan => self.exact.search(set, &one, k).pop().unwrap_or_default(),
            Found::Rows(mut rows) => {
                rows.extend_from_slice(tail);
                self.exact
                    .search_rows(set.rows, &rows, &one, k)
                    .pop()
                    .unwrap_or_default()
            }
        }
    }
}

impl Index for HnswIndex<'_> {
    fn name(&self) -> &'static str {
        "hnsw"
    }

    fn search(&self, set: &ScanSet<'_>, queries: &Queries, k: usize) -> Vec<Vec<Candidate>> {
        let n = queries.count();
        let total = set.rows.rows();
        if k == 0 || total == 0 || n == 0 {
            return vec![Vec::new(); n];
        }
        let nodes = self.nodes(set);
        if nodes == 0 || self.graph.entry.is_none_or(|e| e.node >= nodes) {
            return self.exact.search(set, queries, k);
        }
        // Rows the graph does not cover yet, scored exactly with every query's candidates.
        let tail: Vec<u64> = (u64::from(nodes)..total)
            .filter(|&row| !set.is_deleted(row))
            .collect();
        let one = |q: usize| self.search_one(set, queries, q, k, nodes, &tail);
        #[cfg(not(target_arch = "wasm32"))]
        if n > 1 {
            use rayon::prelude::*;
            return (0..n).into_par_iter().map(one).collect();
        }
        (0..n).map(one).collect()
    }
}
