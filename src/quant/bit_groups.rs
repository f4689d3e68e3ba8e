//! How binary codes lie in memory for the scan: in groups of [`GROUP_ROWS`] rows, nibble
//! position by nibble position, so one table lookup instruction (`vpshufb`, `i8x16.swizzle`)
//! scores one nibble of 16 or 32 rows at once against a per-query table
//! ([`super::kernels::bits_lut`]). Scoring a row with popcounts takes four per code word;
//! the lookups take about one instruction per two rows and nibble pair.
//!
//! A group of rows with `code_len`-byte codes takes `GROUP_ROWS * code_len` bytes, as the
//! same rows row after row would, so row ranges that start on a group boundary keep their
//! byte offsets. Within a group, code byte `b` of its rows fills bytes `32 b .. 32 b + 32`:
//! the first 16 hold its low nibbles, the last 16 its high nibbles; byte `i` of each half
//! holds row `i`'s nibble in its low half and row `16 + i`'s in its high half.
//!
//! The codes file keeps codes row after row (its format does not change): this layout is
//! made when codes are loaded or appended, and undone when they are written.

/// Rows per group.
pub const GROUP_ROWS: usize = 32;

/// Where row `row` (of its group) keeps nibble `half` (0 low, 1 high) of code byte `b`: the
/// group's byte, and the shift of the nibble within it.
#[inline]
fn place(b: usize, half: usize, row: usize) -> (usize, u32) {
    (32 * b + 16 * half + row % 16, 4 * (row / 16) as u32)
}

/// Writes `code` as row `row` (`< GROUP_ROWS`) of `group` (`GROUP_ROWS * code.len()` bytes).
pub fn put(group: &mut [u8], row: usize, code: &[u8]) {
    for (b, &byte) in code.iter().enumerate() {
        for half in 0..2 {
            let (at, shift) = place(b, half, row);
            let nibble = (byte >> (4 * half)) & 0xf;
            group[at] = (group[at] & !(0xf << shift)) | (nibble << shift);
        }
    }
}

/// Reads row `row` of `group` into `code` (`code.len()` bytes per row).
pub fn get(group: &[u8], row: usize, code: &mut [u8]) {
    for (b, byte) in code.iter_mut().enumerate() {
        let mut out = 0u8;
        for half in 0..2 {
            let (at, shift) = place(b, half, row);
            out |= ((group[at] >> shift) & 0xf) << (4 * half);
        }
        *byte = out;
    }
}

/// Bytes that `rows` rows of `code_len`-byte codes take in groups (the last group whole).
pub fn grouped_len(rows: usize, code_len: usize) -> usize {
    rows.div_ceil(GROUP_ROWS) * GROUP_ROWS * code_len
}

/// Rows held by `bytes` bytes of whole groups of `code_len`-byte codes.
pub fn rows_held(bytes: usize, code_len: usize) -> usize {
    bytes / (GROUP_ROWS * code_len.max(1)) * GROUP_ROWS
}

/// Codes laid out row after row (`code_len` bytes each), in groups; rows past the last
/// code of the last group are zero.
pub fn to_groups(codes: &[u8], code_len: usize) -> Vec<u8> {
    let code_len = code_len.max(1);
    let rows = codes.len() / code_len;
    let mut out = vec![0u8; grouped_len(rows, code_len)];
    let group_bytes = GROUP_ROWS * code_len;
    for (r, code) in codes.chunks_exact(code_len).enumerate() {
        let g = r / GROUP_ROWS;
        put(
            &mut out[g * group_bytes..(g + 1) * group_bytes],
            r % GROUP_ROWS,
            code,
        );
    }
    out
}

/// Codes `rows` of `groups` (rows counted from its first group), row after row.
pub fn from_groups(groups: &[u8], code_len: usize, rows: std::ops::Range<usize>) -> Vec<u8> {
    let group_bytes = GROUP_ROWS * code_len;
    let mut out = vec![0u8; rows.len() * code_len];
    for (r, code) in rows.zip(out.chunks_exact_mut(code_len.max(1))) {
        let g = r / GROUP_ROWS;
        get(
            &groups[g * group_bytes..(g + 1) * group_bytes],
            r % GROUP_ROWS,
            code,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// The layout as the module's doc states it, bit by bit: row `r`'s component `8 b + t`
    /// (bit `t` of code byte `b`) is bit `t % 4 + 4 * (r / 16)` of group byte
    /// `32 b + 16 * (t / 4) + r % 16`.
    #[test]
    fn every_bit_lands_where_the_layout_says_and_comes_back() {
        let mut rng = Rng::new(5);
        for code_len in [1usize, 8, 48, 56] {
            for rows in [1usize, 15, 16, 17, 31, 32, 33, 70] {
                let codes: Vec<u8> = (0..rows * code_len).map(|_| rng.below(256) as u8).collect();
                let groups = to_groups(&codes, code_len);
                assert_eq!(groups.len(), grouped_len(rows, code_len));
                for r in 0..rows {
                    let group = &groups[(r / 32) * 32 * code_len..];
                    let rr = r % 32;
                    for b in 0..code_len {
                        for t in 0..8 {
                            let want = (codes[r * code_len + b] >> t) & 1;
                            let byte = group[32 * b + 16 * (t / 4) + rr % 16];
                            let got = (byte >> (t % 4 + 4 * (rr / 16))) & 1;
                            assert_eq!(got, want, "code_len {code_len} row {r} byte {b} bit {t}");
                        }
                    }
                }
                assert_eq!(from_groups(&groups, code_len, 0..rows), codes);
            }
        }
    }

    /// Rewriting a row changes that row only.
    #[test]
    fn put_overwrites_one_row() {
        let code_len = 6;
        let mut group = vec![0xa5u8; GROUP_ROWS * code_len];
        let before = from_groups(&group, code_len, 0..GROUP_ROWS);
        put(&mut group, 20, &[1, 2, 3, 4, 5, 6]);
        let after = from_groups(&group, code_len, 0..GROUP_ROWS);
        for r in 0..GROUP_ROWS {
            let row = &after[r * code_len..(r + 1) * code_len];
            if r == 20 {
                assert_eq!(row, [1, 2, 3, 4, 5, 6]);
            } else {
                assert_eq!(row, &before[r * code_len..(r + 1) * code_len]);
            }
        }
    }
}
