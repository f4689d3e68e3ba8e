//! What a traversal scores nodes with: the f32 rows (a resident view without a virtual call
//! per row, or a view read on demand), or int8 codes.

use super::graph::Space;
use super::kernel::{Fast, Int8Dot};
use super::layer::Scorer;
use super::rows::{prefetch, ResidentRows};
use crate::error::Error;
use crate::quant::codes::CodeTable;
use crate::quant::{Codebook, PreparedQuery};
use crate::storage::RowView;
use crate::types::Metric;

/// Cache lines of a row prefetched before it is scored: the first few; the hardware's
/// stream prefetcher follows the kernel's sequential reads for the rest.
const ROW_PREFETCH_LINES: usize = 2;

/// Scores rows against a query with the exact scan's formula on the traversal's kernels
/// ([`Fast`]: the same order as the exact scan's keys up to rounding; a search rescores what
/// it returns).
pub(crate) struct RowScorer<'a> {
    resident: Option<&'a ResidentRows<'a>>,
    view: &'a dyn RowView,
    space: Space,
    fast: Fast,
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
            fast: Fast::new(space.kernels),
            dim,
            query: &query[..dim.min(query.len())],
            norm,
            lines: (dim + 1).div_ceil(16).min(ROW_PREFETCH_LINES),
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
                self.fast
                    .key(self.space.metric, self.query, self.norm, r, self.dim)
            });
        }
        self.buf.resize(self.view.layout().stride_f32, 0.0);
        match self.view.read_rows(row, &mut self.buf) {
            Ok(()) => self.fast.key(
                self.space.metric,
                self.query,
                self.norm,
                &self.buf,
                self.dim,
            ),
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
            // The norm ends the row: a line of its own the kernel's stream reaches last.
            if self.space.metric == Metric::Cosine {
                prefetch(&r[self.dim..], 1);
            }
        }
    }
}

/// Scores int8 codes against a prepared query: [`Codebook::score_block`]'s keys, computed
/// one code at a time with the query made ready once ([`Int8Dot`]) for int8 codes.
pub(crate) struct CodeScorer<'a> {
    codes: &'a CodeTable,
    codebook: &'a Codebook,
    prepared: PreparedQuery,
    /// Int8 codes: what turns a code into its key.
    int8: Option<Int8Key>,
    /// Where an int8 code's f32 squared norm starts.
    norm_at: usize,
    lines: usize,
}

/// `key = bias + step * dot` (cosine, dot), or `2 key - |row|^2 - |query|^2` (L2), as
/// [`Codebook::score_block`] computes it, with the query's integers made ready once for one
/// code at a time ([`Int8Dot`]). The index's codes and a build's guide codes
/// (`super::guide`) are scored by it alike.
pub(super) struct Int8Key {
    dot: Int8Dot,
    step: f32,
    bias: f32,
    norm_sq: f32,
    l2: bool,
}

impl Int8Key {
    /// For `prepared`, a query prepared by an int8 codebook of `metric`; `None` for another.
    pub(super) fn new(prepared: &PreparedQuery, metric: Metric) -> Option<Self> {
        match prepared {
            PreparedQuery::Int8 {
                q,
                step,
                bias,
                norm_sq,
            } => Some(Int8Key {
                dot: Int8Dot::new(q),
                step: *step,
                bias: *bias,
                norm_sq: *norm_sq,
                l2: metric == Metric::L2,
            }),
            PreparedQuery::Binary { .. } => None,
        }
    }

    /// The key of `code` (at least the query's length); `row_norm_sq` gives the row's
    /// squared norm, asked for L2 only (`-inf` without it).
    #[inline]
    pub(super) fn key(&self, code: &[u8], row_norm_sq: impl FnOnce() -> Option<f32>) -> f32 {
        let key = self.bias + self.step * self.dot.dot(code) as f32;
        if !self.l2 {
            return key;
        }
        match row_norm_sq() {
            Some(n) => 2.0 * key - n - self.norm_sq,
            None => f32::NEG_INFINITY,
        }
    }
}

impl<'a> CodeScorer<'a> {
    /// Scores `codes` against `query` with norm `norm`.
    pub fn new(codes: &'a CodeTable, query: &[f32], norm: f32) -> Self {
        let codebook = codes.codebook().as_ref();
        let prepared = codebook.prepare(query, norm);
        let dim = codebook.dim();
        // The prepared query has `min(query, dim)` integers: the int8 path needs all `dim`,
        // and codes that hold them.
        let int8 = Int8Key::new(&prepared, codebook.metric())
            .filter(|_| query.len() >= dim && codes.code_len() >= dim);
        CodeScorer {
            codes,
            codebook,
            prepared,
            int8,
            norm_at: dim.next_multiple_of(4),
            lines: codes.code_len().div_ceil(64),
        }
    }
}

impl Scorer for CodeScorer<'_> {
    #[inline]
    fn score(&mut self, node: u32) -> f32 {
        let Some(code) = self.codes.code(u64::from(node)) else {
            return f32::NEG_INFINITY;
        };
        if let Some(k) = &self.int8 {
            let norm_at = self.norm_at;
            return k.key(code, || {
                let t = code.get(norm_at..norm_at + 4)?;
                Some(f32::from_le_bytes([t[0], t[1], t[2], t[3]]))
            });
        }
        self.codebook.score(&self.prepared, code)
    }

    #[inline]
    fn prefetch(&self, node: u32) {
        if let Some(code) = self.codes.code(u64::from(node)) {
            prefetch(code, self.lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RowLayout;
    use crate::quant::kernels::Kernel;
    use crate::quant::Quantization;
    use crate::testing::Rng;
    use std::sync::Arc;

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    /// Each code's key equals the scalar block kernel's ([`Kernel::Scalar`], the reference),
    /// bit for bit, at lengths on both sides of the SIMD steps and for every metric.
    #[test]
    fn int8_keys_are_the_scalar_block_kernels_bit_for_bit() {
        let mut rng = Rng::new(11);
        for dim in [1usize, 5, 31, 32, 33, 63, 64, 65, 100, 384, 385] {
            let layout = RowLayout::new(dim as u32);
            let stride = layout.stride_f32;
            let vectors: Vec<Vec<f32>> = (0..40)
                .map(|_| (0..dim).map(|_| rng.f32()).collect())
                .collect();
            let mut rows = vec![0f32; stride * vectors.len()];
            for (v, out) in vectors.iter().zip(rows.chunks_exact_mut(stride)) {
                layout.encode_row(v, norm(v), out);
            }
            let q: Vec<f32> = (0..dim).map(|_| rng.f32()).collect();
            for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
                let train = vectors.iter().map(|v| (v.as_slice(), norm(v)));
                let codebook = Codebook::train(Quantization::Int8, metric, dim, train);
                let mut codes = CodeTable::new(Arc::new(codebook));
                codes.push_rows(layout, &rows);
                let mut scorer = CodeScorer::new(&codes, &q, norm(&q));
                assert!(
                    scorer.int8.is_some(),
                    "dim {dim}: int8 codes take the int8 path"
                );
                let prepared = codes.codebook().prepare(&q, norm(&q));
                for r in 0..vectors.len() {
                    let mut want = [0f32];
                    let code = codes.code(r as u64).unwrap();
                    codes
                        .codebook()
                        .score_block_with(Kernel::Scalar, &prepared, code, &mut want);
                    let got = scorer.score(r as u32);
                    assert_eq!(
                        got.to_bits(),
                        want[0].to_bits(),
                        "dim {dim} {metric:?} row {r}: {got} vs {}",
                        want[0]
                    );
                }
                assert_eq!(scorer.score(vectors.len() as u32), f32::NEG_INFINITY);
            }
        }
    }
}
