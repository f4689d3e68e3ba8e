//! The codes of rows `0..n`: shared by snapshots the way the rows are (clones share chunks; the
//! writer appends), laid out row after row so the scan reads them as contiguous blocks.

use super::{Codebook, Quantization};
use crate::chunked::ChunkedVec;
use crate::format::RowLayout;
use std::sync::Arc;

/// Rows per chunk of codes.
pub const CODE_CHUNK_ROWS: usize = 16 * 1024;

/// Codes of rows `0..rows()`, all from one codebook.
#[derive(Debug, Clone)]
pub struct CodeTable {
    codebook: Arc<Codebook>,
    code_len: usize,
    codes: ChunkedVec<u8>,
}

impl CodeTable {
    /// An empty table for `codebook`.
    pub fn new(codebook: Arc<Codebook>) -> Self {
        let code_len = codebook.code_len();
        CodeTable {
            codebook,
            code_len,
            codes: ChunkedVec::new(CODE_CHUNK_ROWS * code_len),
        }
    }

    /// The codebook every code was made with.
    pub fn codebook(&self) -> &Arc<Codebook> {
        &self.codebook
    }

    /// Bytes per row.
    pub fn code_len(&self) -> usize {
        self.code_len
    }

    /// Rows covered.
    pub fn rows(&self) -> u64 {
        (self.codes.len() / self.code_len) as u64
    }

    /// Bytes held: the codes and the codebook.
    pub fn bytes(&self) -> u64 {
        let params = match self.codebook.quantization() {
            Quantization::Int8 => 2 * self.codebook.dim(),
            Quantization::Binary => self.codebook.dim(),
        };
        (self.codes.len() + 4 * params) as u64
    }

    /// Encodes and appends `rows` (whole rows of `layout`, norm included).
    pub fn push_rows(&mut self, layout: RowLayout, rows: &[f32]) {
        let dim = layout.dim as usize;
        let mut code = vec![0u8; self.code_len];
        for row in rows.chunks_exact(layout.stride_f32) {
            self.codebook.encode(&row[..dim], row[dim], &mut code);
            self.codes.extend_from_slice(&code);
        }
    }

    /// Appends codes made elsewhere (read back from the codes file): whole codes only.
    pub fn push_codes(&mut self, codes: &[u8]) {
        debug_assert_eq!(codes.len() % self.code_len, 0);
        self.codes.extend_from_slice(codes);
    }

    /// Number of contiguous segments covering rows `0..rows()`.
    pub fn segment_count(&self) -> usize {
        self.codes.chunk_count()
    }

    /// Segment `i`: its first row and its rows' codes (`n * code_len` bytes), in row order.
    pub fn segment(&self, i: usize) -> (u64, &[u8]) {
        ((i * CODE_CHUNK_ROWS) as u64, self.codes.chunk(i))
    }

    /// The codes of rows `from..to` (clamped to the rows covered) as contiguous runs: (first
    /// row of the run, its codes), in row order.
    pub fn runs(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let to = to.min(self.rows());
        (0..self.segment_count()).filter_map(move |i| {
            let (first, bytes) = self.segment(i);
            let n = (bytes.len() / self.code_len) as u64;
            let (lo, hi) = (from.max(first), to.min(first + n));
            (lo < hi).then(|| {
                let at = (lo - first) as usize * self.code_len;
                let end = (hi - first) as usize * self.code_len;
                (lo, &bytes[at..end])
            })
        })
    }

    /// Row `row`'s code, if covered.
    pub fn code(&self, row: u64) -> Option<&[u8]> {
        let at = usize::try_from(row).ok()?.checked_mul(self.code_len)?;
        self.codes.slice(at, self.code_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Metric;

    /// `runs` covers exactly the rows asked for, across chunk boundaries, in order.
    #[test]
    fn runs_cover_a_row_range_across_chunks() {
        let codebook = Codebook::train(Quantization::Binary, Metric::Dot, 64, std::iter::empty());
        let mut table = CodeTable::new(Arc::new(codebook));
        let rows = 2 * CODE_CHUNK_ROWS as u64 + 100;
        let codes: Vec<u8> = (0..rows).flat_map(|r| r.to_le_bytes()).collect();
        table.push_codes(&codes);
        for (from, to) in [
            (0, rows),
            (5, 6),
            (CODE_CHUNK_ROWS as u64 - 1, CODE_CHUNK_ROWS as u64 + 1),
            (rows - 3, rows + 10),
            (7, 7),
        ] {
            let mut next = from;
            for (first, bytes) in table.runs(from, to) {
                assert_eq!(first, next);
                for code in bytes.chunks_exact(8) {
                    assert_eq!(code, next.to_le_bytes());
                    next += 1;
                }
            }
            assert_eq!(next, to.min(rows).max(from), "{from}..{to}");
        }
    }
}
