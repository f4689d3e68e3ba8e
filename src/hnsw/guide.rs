//! The int8 codes a large insertion walks the graph on, made for that insertion and dropped
//! after it.
//!
//! Building a graph scores each new node against a few thousand others, scattered over every
//! row inserted so far. At 1M x 384 the f32 rows (1.5 GB) are far larger than the cache, and
//! scoring them was most of the build: the dot kernel took 62.6% of its cycles, waiting on
//! memory. int8 codes are a quarter of the bytes. The walk that finds a node's candidates
//! runs on them; the best candidates are then rescored on the f32 rows, and links are chosen
//! on exact keys as before.
//!
//! The codes are laid out for the walk, not the scan: each starts a cache line and fills whole
//! lines (384 components: 6 lines, where the index's 388-byte codes straddle 7), in one
//! allocation advised as huge-page backed ([`crate::hugepage`]).

use super::layer::Scorer;
use super::rows::prefetch;
use super::score::Int8Key;
use crate::error::Result;
use crate::quant::{Codebook, Quantization};
use crate::storage::{for_each_rows, RowView};
use crate::types::Metric;

/// Rows the codebook is trained on (an even sample of the rows).
const TRAIN_SAMPLE: u64 = 20_000;
/// Bytes read at a time when the rows are not resident.
const READ_BYTES: usize = 4 << 20;

/// int8 codes of rows `0..rows`, one every `stride` bytes.
pub(super) struct Guide {
    codebook: Codebook,
    metric: Metric,
    dim: usize,
    stride: usize,
    codes: Vec<u8>,
    /// L2: each row's squared norm (the key needs it); empty otherwise.
    norms_sq: Vec<f32>,
}

impl Guide {
    /// Codes of rows `0..to` of `view` for `metric`, with a codebook trained on an even
    /// sample of them; `None` when the memory for them cannot be reserved (a wasm32 guest
    /// holds at most 4 GB), and the insertion walks on the rows instead.
    pub(super) fn build(view: &dyn RowView, metric: Metric, to: u64) -> Result<Option<Guide>> {
        let dim = view.layout().dim as usize;
        let stride = dim.next_multiple_of(64);
        let Some(rows) = usize::try_from(to)
            .ok()
            .filter(|n| n.checked_mul(stride).is_some())
        else {
            return Ok(None);
        };
        let Some(codes) = crate::hugepage::try_vec_with_capacity(rows * stride) else {
            return Ok(None);
        };
        let mut norms_sq = Vec::new();
        if metric == Metric::L2 && norms_sq.try_reserve_exact(rows).is_err() {
            return Ok(None);
        }
        Self::fill(view, metric, to, codes, norms_sq).map(Some)
    }

    /// Encodes rows `0..to` into `codes` (and `norms_sq` for L2), both empty with room
    /// reserved.
    fn fill(
        view: &dyn RowView,
        metric: Metric,
        to: u64,
        mut codes: Vec<u8>,
        mut norms_sq: Vec<f32>,
    ) -> Result<Guide> {
        let layout = view.layout();
        let dim = layout.dim as usize;
        let codebook = Codebook::train_on_sample(
            Quantization::Int8,
            metric,
            view,
            to,
            to,
            TRAIN_SAMPLE,
            |_| false,
        )?;
        let stride = dim.next_multiple_of(64);
        let norm_at = dim.next_multiple_of(4);
        let mut code = vec![0u8; codebook.code_len()];
        for_each_rows(view, 0, to, READ_BYTES, |_, block| {
            for r in block.chunks_exact(layout.stride_f32) {
                codebook.encode(&r[..dim], r[dim], &mut code);
                codes.extend_from_slice(&code[..dim]);
                codes.resize(codes.len() + stride - dim, 0);
                if metric == Metric::L2 {
                    let n = &code[norm_at..norm_at + 4];
                    norms_sq.push(f32::from_le_bytes([n[0], n[1], n[2], n[3]]));
                }
            }
            Ok(())
        })?;
        Ok(Guide {
            codebook,
            metric,
            dim,
            stride,
            codes,
            norms_sq,
        })
    }

    /// Node `node`'s code (whole lines; the first `dim` bytes are its components).
    #[inline]
    fn code(&self, node: u32) -> Option<&[u8]> {
        let at = node as usize * self.stride;
        self.codes.get(at..at + self.stride)
    }
}

/// Scores guide codes against one query as the index's int8 codes are scored ([`Int8Key`]).
pub(super) struct GuideScorer<'a> {
    guide: &'a Guide,
    /// `None` only for a codebook that is not int8, which a guide never has.
    key: Option<Int8Key>,
    lines: usize,
}

impl<'a> GuideScorer<'a> {
    /// Scores against `query` (`dim` components) with norm `norm`.
    pub(super) fn new(guide: &'a Guide, query: &[f32], norm: f32) -> Self {
        let query = &query[..guide.dim.min(query.len())];
        GuideScorer {
            guide,
            key: Int8Key::new(&guide.codebook.prepare(query, norm), guide.metric),
            lines: guide.dim.div_ceil(64),
        }
    }
}

impl Scorer for GuideScorer<'_> {
    #[inline]
    fn score(&mut self, node: u32) -> f32 {
        match (&self.key, self.guide.code(node)) {
            (Some(k), Some(code)) => {
                k.key(code, || self.guide.norms_sq.get(node as usize).copied())
            }
            _ => f32::NEG_INFINITY,
        }
    }

    #[inline]
    fn prefetch(&self, node: u32) {
        if let Some(code) = self.guide.code(node) {
            prefetch(code, self.lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RowLayout;
    use crate::quant::codes::CodeTable;
    use crate::quant::kernels::Kernel;
    use crate::storage::cached::CachedRows;
    use crate::storage::RowStore;
    use crate::testing::Rng;
    use std::sync::Arc;

    /// A guide's key of every row equals the scalar block kernel's ([`Kernel::Scalar`], the
    /// reference the index's int8 codes are checked against) on the index's own code of that
    /// row under the same codebook, bit for bit: at lengths on both sides of a cache line and
    /// the SIMD steps, for every metric, and `-inf` past the rows.
    #[test]
    fn keys_are_the_scalar_int8_kernels_bit_for_bit() {
        let mut rng = Rng::new(5);
        for dim in [1usize, 5, 63, 64, 65, 100, 384] {
            let layout = RowLayout::new(dim as u32);
            let mut store = CachedRows::open(None, Default::default(), layout, 0).unwrap();
            let mut buf = vec![0f32; layout.stride_f32];
            for _ in 0..50 {
                let v: Vec<f32> = (0..dim).map(|_| 3.0 * rng.f32()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                layout.encode_row(&v, norm, &mut buf);
                store.append(&buf).unwrap();
            }
            let view = store.view();
            let q: Vec<f32> = (0..dim).map(|_| rng.f32()).collect();
            let q_norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
            for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
                let guide = Guide::build(view.as_ref(), metric, 50).unwrap().unwrap();
                let mut table = CodeTable::new(Arc::new(guide.codebook.clone()));
                for r in 0..50 {
                    table.push_rows(layout, view.row(r).unwrap());
                }
                let prepared = guide.codebook.prepare(&q, q_norm);
                let mut scorer = GuideScorer::new(&guide, &q, q_norm);
                for r in 0..50u32 {
                    let mut want = [0f32];
                    let code = table.code(u64::from(r)).unwrap();
                    guide
                        .codebook
                        .score_block_with(Kernel::Scalar, &prepared, code, &mut want);
                    let got = scorer.score(r);
                    assert_eq!(
                        got.to_bits(),
                        want[0].to_bits(),
                        "dim {dim} {metric:?} row {r}: {got} vs {}",
                        want[0]
                    );
                }
                assert_eq!(scorer.score(50), f32::NEG_INFINITY);
            }
        }
    }
}
