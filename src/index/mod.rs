//! Indexes answer "which rows are nearest"; they read rows only through a [`ScanSet`]. The
//! exact [`flat::FlatIndex`] is the first; an approximate index (HNSW over quantized vectors,
//! rescored exactly from the rows) implements the same trait.

pub mod flat;
pub mod topk;

use crate::storage::RowView;
use topk::Candidate;

/// What a search may see: one snapshot's rows and tombstones.
pub struct ScanSet<'a> {
    /// The rows.
    pub rows: &'a dyn RowView,
    /// Rows the scan must skip as a bitmap (bit `r % 64` of word `r / 64`; rows past its end
    /// are scanned): the deleted rows, and for a filtered search also every row the filter
    /// does not match, so the top-k is exactly the k best matching rows.
    pub tombstones: &'a [u64],
}

impl ScanSet<'_> {
    /// True when `row` is deleted.
    #[inline]
    pub fn is_deleted(&self, row: u64) -> bool {
        row_bit_set(self.tombstones, row)
    }
}

/// Reads bit `row` of a tombstone bitmap (bit `r % 64` of word `r / 64`); rows past its end
/// are not set. The one definition of the bitmap's layout for readers.
#[inline]
pub(crate) fn row_bit_set(bits: &[u64], row: u64) -> bool {
    bits.get((row >> 6) as usize)
        .is_some_and(|w| (w >> (row & 63)) & 1 == 1)
}

/// Cuts rows laid out in segments (`(first row, data)` in row order, `stride` elements per
/// row) into runs of at most `per_block` rows covering rows `0..total`, never straddling a
/// segment: `(first row, rows, data)`. The one blocking of the exact scan and the code scan.
pub(crate) fn row_blocks<'a, T>(
    segments: impl Iterator<Item = (u64, &'a [T])>,
    stride: usize,
    total: u64,
    per_block: usize,
) -> Vec<(u64, usize, &'a [T])> {
    let per_block = per_block.max(1);
    let mut out = Vec::new();
    for (first, data) in segments {
        if first >= total {
            break;
        }
        let in_segment = ((data.len() / stride) as u64).min(total - first) as usize;
        let mut at = 0;
        while at < in_segment {
            let n = per_block.min(in_segment - at);
            out.push((first + at as u64, n, &data[at * stride..(at + n) * stride]));
            at += n;
        }
    }
    out
}

/// Queries of one dimension, contiguous, with their norms computed once.
#[derive(Debug, Clone)]
pub struct Queries {
    /// `count * dim` components, row-major.
    pub data: Vec<f32>,
    /// L2 norm of each query.
    pub norms: Vec<f32>,
    /// Components per query.
    pub dim: usize,
}

impl Queries {
    /// Number of queries.
    pub fn count(&self) -> usize {
        self.norms.len()
    }

    /// Query `i`.
    pub fn get(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// An index over the rows of a snapshot.
pub trait Index: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// The best `k` rows for each query, best first (`key` higher is better).
    fn search(&self, set: &ScanSet<'_>, queries: &Queries, k: usize) -> Vec<Vec<Candidate>>;
}
