//! A search over one snapshot's graph.

use super::graph::{Chunk, GraphView, Space};
use super::layer::{greedy, search_layer, LayerSearch, Scorer};
use super::rows::ResidentRows;
use super::score::{CodeScorer, RowScorer};
use super::visited::{with_scratch, Scored};
use crate::index::flat::FlatIndex;
use crate::index::topk::Candidate;
use crate::index::{Index, Queries, ScanSet};
use crate::quant::codes::CodeTable;
use std::sync::Arc;

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

/// What every query of one search shares.
struct Context<'s> {
    set: &'s ScanSet<'s>,
    resident: Option<ResidentRows<'s>>,
    space: Space,
    chunks: Arc<Vec<Arc<Chunk>>>,
    /// Nodes the traversal follows.
    nodes: u32,
    /// Rows past the graph (not skipped): scored exactly for every query.
    tail: Vec<u64>,
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

    /// The candidates of query `q`.
    fn traverse(&self, ctx: &Context<'_>, queries: &Queries, q: usize, k: usize) -> Found {
        let Some(entry) = self.graph.entry.filter(|e| e.node < ctx.nodes) else {
            return Found::Scan;
        };
        let (query, norm) = (queries.get(q), queries.norms[q]);
        // f32: the traversal ranks on its own kernels, whose keys differ from the exact
        // scan's in the last bits, so a row tied with the k-th to within rounding may rank
        // either side of it: twice k (at most ef) are rescored exactly.
        let keep = match self.codes {
            Some(_) => self.ef.max(k.saturating_mul(self.oversample.max(1))),
            None => k.saturating_mul(2).min(self.ef).max(k),
        };
        let ef = keep.max(self.ef).max(k);
        match self.codes {
            Some(codes) => {
                let mut scorer = CodeScorer::new(codes, query, norm);
                self.walk(ctx, entry, ef, keep, &mut scorer)
            }
            None => {
                let mut scorer =
                    RowScorer::new(ctx.set.rows, ctx.resident.as_ref(), ctx.space, query, norm);
                self.walk(ctx, entry, ef, keep, &mut scorer)
            }
        }
    }

    /// Descends from `entry` to the bottom layer and searches it with `ef`: the best `keep`
    /// rows found, ascending, or a scan when the traversal gave up.
    fn walk(
        &self,
        ctx: &Context<'_>,
        entry: super::Entry,
        ef: usize,
        keep: usize,
        scorer: &mut impl Scorer,
    ) -> Found {
        let links = self.graph.graph.reader(&ctx.chunks);
        let skip = |n: u32| ctx.set.is_deleted(u64::from(n));
        let p = LayerSearch {
            layer: 0,
            ef,
            nodes: ctx.nodes,
            skip: if ctx.set.tombstones.is_empty() {
                None
            } else {
                Some(&skip)
            },
            budget: self.matching,
        };
        with_scratch(|s| {
            let mut at = Scored::new(scorer.score(entry.node), entry.node);
            for layer in (1..=entry.level).rev() {
                at = greedy(&links, layer, at, ctx.nodes, scorer, &mut s.batch);
            }
            if !search_layer(&links, &p, &[at], scorer, s) {
                return Found::Scan;
            }
            let mut best: Vec<Scored> = s.results.drain().map(|r| r.0).collect();
            best.sort_unstable_by(|a, b| b.cmp(a));
            best.truncate(keep);
            let mut rows: Vec<u64> = best.iter().map(|s| u64::from(s.node)).collect();
            rows.sort_unstable();
            Found::Rows(rows)
        })
    }

    /// Query `q`'s answer: its candidates and the rows past the graph, rescored exactly; or
    /// the exact scan when the traversal gave up.
    fn search_one(
        &self,
        ctx: &Context<'_>,
        queries: &Queries,
        q: usize,
        k: usize,
    ) -> Vec<Candidate> {
        let set = ctx.set;
        let one = Queries {
            data: queries.get(q).to_vec(),
            norms: vec![queries.norms[q]],
            dim: queries.dim,
        };
        match self.traverse(ctx, queries, q, k) {
            Found::Scan => self.exact.search(set, &one, k).pop().unwrap_or_default(),
            Found::Rows(mut rows) => {
                rows.extend_from_slice(&ctx.tail);
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
        let ctx = Context {
            set,
            resident: ResidentRows::new(set.rows),
            space: Space {
                metric: self.exact.metric(),
                kernels: self.exact.kernels(),
            },
            chunks: self.graph.graph.chunks(),
            nodes,
            tail,
        };
        let one = |q: usize| self.search_one(&ctx, queries, q, k);
        #[cfg(not(target_arch = "wasm32"))]
        if n > 1 {
            use rayon::prelude::*;
            return (0..n).into_par_iter().map(one).collect();
        }
        (0..n).map(one).collect()
    }
}
