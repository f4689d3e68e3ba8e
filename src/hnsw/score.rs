//! What a traversal scores nodes with: the f32 rows (a resident view without a virtual call
//! per row, or a view read on demand), or int8 codes.

use super::graph::Space;
use super::layer::Scorer;
use super::rows::{prefetch, ResidentRows};
use crate::error::Error;
use crate::quant::codes::CodeTable;
use crate::quant::{Codebook, PreparedQuery};
use crate::storage::RowView;

/// Scores rows against a query with the exact scan's key.
pub(crate) struct RowScorer<'a> {
    resident: Option<&'a ResidentRows<'a>>,
    view: &'a dyn RowView,
    space: Space,
    dim: usize,
    query: &'a [f32],
    norm: f32,
    /// Cache lines of a row's components and norm.
    lines: usize,
    /// A row read from a view that is not resident.
    buf: Vec<f32>,
    /// The first failed read (its row scored `-inf`).
    pub failed: Option<Error>,
}

impl<'a> RowScorer<'a> {
    /// Scores rows of `view` (through `resident` when it is) against `query` (`dim`
    /// components) with norm `norm`.
    pub fn new(
        view: &'a dyn RowView,
        resident: Option<&'a ResidentRows<'a>>,
        space: Space,
        query: &'a [f32],
        norm: f32,
    ) -> Self {
        let dim = view.layout().dim as usize;
        RowScorer {
            resident,
            view,
            space,
            dim,
            query: &query[..dim.min(query.len())],
            norm,
            lines: (dim + 1).div_ceil(16),
            buf: Vec::new(),
            failed: None,
        }
    }
}

impl Scorer for RowScorer<'_> {
    #[inline]
    fn score(&mut self, node: u32) -> f32 {
        let row = u64::from(node);
        if let Some(rows) = self.resident {
            return rows.row(row).map_or(f32::NEG_INFINITY, |r| {
                self.space.key(self.query, self.norm, r, self.dim)
            });
        }
        self.buf.resize(self.view.layout().stride_f32, 0.0);
        match self.view.read_rows(row, &mut self.buf) {
            Ok(()) => self.space.key(self.query, self.norm, &self.buf, self.dim),
            Err(e) => {
                self.failed.get_or_insert(e);
                f32::NEG_INFINITY
            }
        }
    }

    #[inline]
    fn prefetch(&self, node: u32) {
        if let Some(r) = self.resident.and_then(|rows| rows.row(u64::from(node))) {
            prefetch(r, self.lines);
        }
    }
}

/// Scores int8 codes against a prepared query ([`Codebook::score_block`]'s keys).
pub(crate) struct CodeScorer<'a> {
    codes: &'a CodeTable,
    codebook: &'a Codebook,
    prepared: PreparedQuery,
    lines: usize,
}

impl<'a> CodeScorer<'a> {
    /// Scores `codes` against `query` with norm `norm`.
    pub fn new(codes: &'a CodeTable, query: &[f32], norm: f32) -> Self {
        let codebook = codes.codebook().as_ref();
        CodeScorer {
            codes,
            codebook,
            prepared: codebook.prepare(query, norm),
            lines: codes.code_len().div_ceil(64),
        }
    }
}

impl Scorer for CodeScorer<'_> {
    #[inline]
    fn score(&mut self, node: u32) -> f32 {
        let mut out = [f32::NEG_INFINITY];
        if let Some(code) = self.codes.code(u64::from(node)) {
            self.codebook.score_block(&self.prepared, code, &mut out);
        }
        out[0]
    }

    #[inline]
    fn prefetch(&self, node: u32) {
        if let Some(code) = self.codes.code(u64::from(node)) {
            prefetch(code, self.lines);
        }
    }
}
