//! The codes of rows `0..n`: shared by snapshots the way the rows are (clones share chunks; the
//! writer appends), laid out as the scan reads them ([`Codebook::scan_layout`]): int8 codes row
//! after row, binary codes in groups of 32 rows ([`super::bit_groups`]), so a block of rows is
//! one contiguous run of bytes either way.

use super::bit_groups::{self, GROUP_ROWS};
use super::{Codebook, Quantization};
use crate::chunked::ChunkedVec;
use crate::format::RowLayout;
use std::borrow::Cow;
use std::sync::Arc;

/// Rows per chunk of codes (a multiple of [`GROUP_ROWS`], so no group spans two chunks).
pub const CODE_CHUNK_ROWS: usize = 16 * 1024;

/// Codes of rows `0..rows()`, all from one codebook.
#[derive(Debug, Clone)]
pub struct CodeTable {
    codebook: Arc<Codebook>,
    code_len: usize,
    /// Binary codes: in groups of [`GROUP_ROWS`] rows (the last group padded with zeros).
    grouped: bool,
    rows: u64,
    codes: ChunkedVec<u8>,
}

/// A block of rows for the scan: its first row, row count and codes in the scan's layout.
#[derive(Debug, Clone, Copy)]
pub struct CodeBlock<'a> {
    /// First row.
    pub first_row: u64,
    /// Rows.
    pub rows: usize,
    /// Their codes ([`Codebook::score_block`]'s input).
    pub codes: &'a [u8],
}

impl CodeTable {
    /// An empty table for `codebook`.
    pub fn new(codebook: Arc<Codebook>) -> Self {
        let code_len = codebook.code_len().max(1);
        let grouped = codebook.quantization() == Quantization::Binary;
        CodeTable {
            codebook,
            code_len,
            grouped,
            rows: 0,
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
        self.rows
    }

    /// Bytes held: the codes (a binary table's last group whole) and the codebook.
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
            self.push_code(&code);
        }
    }

    /// Appends codes made elsewhere (read back from the codes file), row after row: whole
    /// codes only.
    pub fn push_codes(&mut self, codes: &[u8]) {
        debug_assert_eq!(codes.len() % self.code_len, 0);
        if !self.grouped {
            self.codes.extend_from_slice(codes);
            self.rows += (codes.len() / self.code_len) as u64;
            return;
        }
        for code in codes.chunks_exact(self.code_len) {
            self.push_code(code);
        }
    }

    /// Appends one code.
    fn push_code(&mut self, code: &[u8]) {
        if !self.grouped {
            self.codes.extend_from_slice(code);
            self.rows += 1;
            return;
        }
        let group_bytes = GROUP_ROWS * self.code_len;
        let at = (self.rows % GROUP_ROWS as u64) as usize;
        if at == 0 {
            self.codes.extend_from_slice(&vec![0u8; group_bytes]);
        }
        if let Some(group) = self.codes.tail_mut(group_bytes) {
            bit_groups::put(group, at, code);
        }
        self.rows += 1;
    }

    /// The codes of rows `0..rows` (clamped to the rows covered) in blocks of about
    /// `per_block` rows (a multiple of a group for binary codes), each within one chunk.
    pub fn blocks(&self, rows: u64, per_block: usize) -> Vec<CodeBlock<'_>> {
        let rows = rows.min(self.rows);
        let per_block = if self.grouped {
            per_block.max(GROUP_ROWS) / GROUP_ROWS * GROUP_ROWS
        } else {
            per_block.max(1)
        };
        let mut out = Vec::new();
        for i in 0..self.codes.chunk_count() {
            let first = (i * CODE_CHUNK_ROWS) as u64;
            if first >= rows {
                break;
            }
            let bytes = self.codes.chunk(i);
            let in_chunk = (rows - first).min(CODE_CHUNK_ROWS as u64) as usize;
            let mut at = 0;
            while at < in_chunk {
                let n = per_block.min(in_chunk - at);
                let start = at * self.code_len;
                let end = (start + self.codebook.scan_len(n)).min(bytes.len());
                out.push(CodeBlock {
                    first_row: first + at as u64,
                    rows: n,
                    codes: &bytes[start..end],
                });
                at += n;
            }
        }
        out
    }

    /// The codes of rows `from..to` (clamped to the rows covered), row after row, as
    /// contiguous runs: (first row of the run, its codes), in row order.
    pub fn runs(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, Cow<'_, [u8]>)> + '_ {
        let to = to.min(self.rows);
        (0..self.codes.chunk_count()).filter_map(move |i| {
            let first = (i * CODE_CHUNK_ROWS) as u64;
            let n = (self.rows - first.min(self.rows)).min(CODE_CHUNK_ROWS as u64);
            let (lo, hi) = (from.max(first), to.min(first + n));
            (lo < hi).then(|| {
                let bytes = self.codes.chunk(i);
                let (a, b) = ((lo - first) as usize, (hi - first) as usize);
                let run = if self.grouped {
                    Cow::Owned(bit_groups::from_groups(bytes, self.code_len, a..b))
                } else {
                    Cow::Borrowed(&bytes[a * self.code_len..b * self.code_len])
                };
                (lo, run)
            })
        })
    }

    /// Row `row`'s code where codes lie row after row (int8); `None` for binary codes, which
    /// lie in groups ([`CodeTable::copy_code`] reads either).
    pub fn code(&self, row: u64) -> Option<&[u8]> {
        if self.grouped || row >= self.rows {
            return None;
        }
        let at = usize::try_from(row).ok()?.checked_mul(self.code_len)?;
        self.codes.slice(at, self.code_len)
    }

    /// Copies row `row`'s code into `out` (`code_len()` bytes); false when not covered.
    pub fn copy_code(&self, row: u64, out: &mut [u8]) -> bool {
        match self.runs(row, row.saturating_add(1)).next() {
            Some((_, code)) if out.len() == code.len() => {
                out.copy_from_slice(&code);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Metric;

    /// Binary codes appended one at a time and in batches of every alignment, with
    /// snapshots taken between them: each snapshot still reads exactly its own rows, through
    /// `runs`, `copy_code` and the scan's blocks (whose bytes start on a group and hold every
    /// row of the block).
    #[test]
    fn grouped_codes_survive_appends_and_snapshots() {
        let codebook = Codebook::train(Quantization::Binary, Metric::Dot, 128, std::iter::empty());
        let mut table = CodeTable::new(Arc::new(codebook));
        let code_len = table.code_len();
        assert_eq!(code_len, 16);
        let code_of = |r: u64| -> Vec<u8> { [r.to_le_bytes(), (!r).to_le_bytes()].concat() };
        let mut snapshots = Vec::new();
        let mut next = 0u64;
        for batch in [
            1u64,
            31,
            5,
            64,
            3,
            1,
            1,
            CODE_CHUNK_ROWS as u64 + 7,
            40,
            32,
            2,
        ] {
            let codes: Vec<u8> = (next..next + batch).flat_map(code_of).collect();
            if batch % 2 == 0 {
                table.push_codes(&codes);
            } else {
                for code in codes.chunks_exact(code_len) {
                    table.push_codes(code);
                }
            }
            next += batch;
            assert_eq!(table.rows(), next);
            snapshots.push(table.clone());
        }
        for snap in &snapshots {
            let n = snap.rows();
            let mut seen = 0u64;
            for (first, bytes) in snap.runs(0, n) {
                assert_eq!(first, seen);
                for code in bytes.chunks_exact(code_len) {
                    assert_eq!(code, code_of(seen));
                    seen += 1;
                }
            }
            assert_eq!(seen, n);
            let mut code = vec![0u8; code_len];
            assert!(snap.copy_code(n - 1, &mut code));
            assert_eq!(code, code_of(n - 1));
            assert!(!snap.copy_code(n, &mut code));
            assert!(snap.code(0).is_none(), "binary codes are not row after row");
            let mut covered = 0u64;
            for block in snap.blocks(n, 100) {
                assert_eq!(block.first_row, covered);
                assert_eq!(block.first_row % GROUP_ROWS as u64, 0);
                let rows = bit_groups::from_groups(block.codes, code_len, 0..block.rows);
                for (i, code) in rows.chunks_exact(code_len).enumerate() {
                    assert_eq!(code, code_of(covered + i as u64));
                }
                covered += block.rows as u64;
            }
            assert_eq!(covered, n);
        }
    }

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
