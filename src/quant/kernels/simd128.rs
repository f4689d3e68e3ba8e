//! WebAssembly SIMD128 block kernels: int8 codes by sign-extending 8 bytes to i16 lanes and
//! `i32x4.dot_i16x8_s` (exact: each pair of products is at most 2 * 128 * 127); grouped bit
//! codes by table lookups (`i8x16.swizzle`).

use super::scalar;

/// [`scalar::dot_i8_block`], 16 components per step; the last `dim % 16` in scalar. Four
/// rows go together, so one widened query step feeds four independent accumulators.
#[cfg(target_feature = "simd128")]
pub fn dot_i8_block(q: &[i8], codes: &[u8], code_len: usize, out: &mut [i32]) {
    let (dim, rows) = (q.len(), out.len());
    assert!(
        dim <= code_len && codes.len() >= rows * code_len,
        "dot_i8_block: shapes"
    );
    let wide = widen(&[q], dim);
    let mut r = 0;
    while r + 4 <= rows {
        score_rows::<4, 1>(&wide, [q], codes, code_len, r, rows, out);
        r += 4;
    }
    for r in r..rows {
        score_rows::<1, 1>(&wide, [q], codes, code_len, r, rows, out);
    }
}

/// Without SIMD128 enabled at build time the scalar reference runs.
#[cfg(not(target_feature = "simd128"))]
pub fn dot_i8_block(q: &[i8], codes: &[u8], code_len: usize, out: &mut [i32]) {
    scalar::dot_i8_block(q, codes, code_len, out)
}

/// [`dot_i8_block`] for `N` queries at once (`qs`: `N` queries of `dim` components back to
/// back; `out[j * rows + r]` for query `j` and row `r`). The queries are widened to i16 once
/// per call, and each 16-byte step of a code is loaded and widened once for the `N` queries,
/// so a step costs a query two `dot_i16x8` and two adds instead of seven instructions.
/// `qs.len() == N * dim`, `dim <= code_len`, `codes.len() >= rows * code_len` and
/// `out.len() >= N * rows` (asserted: wrong shapes panic rather than read out of bounds;
/// the engine never passes them).
#[cfg(target_feature = "simd128")]
pub fn dot_i8_block_multi<const N: usize>(
    qs: &[i8],
    dim: usize,
    codes: &[u8],
    code_len: usize,
    rows: usize,
    out: &mut [i32],
) {
    assert!(
        qs.len() == N * dim
            && dim <= code_len
            && codes.len() >= rows * code_len
            && out.len() >= N * rows,
        "dot_i8_block_multi: shapes"
    );
    let queries: [&[i8]; N] = std::array::from_fn(|j| &qs[j * dim..(j + 1) * dim]);
    let wide = widen(&queries, dim);
    for r in 0..rows {
        score_rows::<1, N>(&wide, queries, codes, code_len, r, rows, out);
    }
}

/// Rows `r..r + R` against the `N` queries (`wide`: their [`widen`]ed steps):
/// `out[j * rows + r + i]` for query `j` and row `r + i`. Each 16-byte step of a row is
/// loaded and widened once for the `N` queries; the `R` rows' accumulators are independent.
/// The caller has checked `r + R <= rows`, each query's length `dim <= code_len` and
/// `codes.len() >= rows * code_len`.
#[cfg(target_feature = "simd128")]
fn score_rows<const R: usize, const N: usize>(
    wide: &[core::arch::wasm32::v128],
    queries: [&[i8]; N],
    codes: &[u8],
    code_len: usize,
    r: usize,
    rows: usize,
    out: &mut [i32],
) {
    use core::arch::wasm32::*;
    let dim = queries.first().map_or(0, |q| q.len());
    let body = dim - dim % 16;
    let block = &codes[r * code_len..(r + R) * code_len];
    let mut acc = [[i32x4_splat(0); N]; R];
    for (s, q) in wide.chunks_exact(2 * N).enumerate() {
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: row i of `block` has `code_len >= dim >= 16 * s + 16` bytes at
            // `i * code_len`; loads need no alignment.
            let c = unsafe { v128_load(block.as_ptr().add(i * code_len + 16 * s).cast()) };
            let (low, high) = (i16x8_extend_low_i8x16(c), i16x8_extend_high_i8x16(c));
            for (a, q) in row.iter_mut().zip(q.chunks_exact(2)) {
                *a = i32x4_add(*a, i32x4_dot_i16x8(low, q[0]));
                *a = i32x4_add(*a, i32x4_dot_i16x8(high, q[1]));
            }
        }
    }
    for (i, row) in acc.into_iter().enumerate() {
        let tail = super::super::bytes_as_i8(&block[i * code_len + body..i * code_len + dim]);
        for (j, (a, q)) in row.into_iter().zip(queries).enumerate() {
            out[j * rows + r + i] = hsum(a) + scalar::dot_i8(&q[body..], tail);
        }
    }
}

/// Each query's whole 16-component steps (the first `dim - dim % 16`) as i16 vectors, step
/// by step: step `s` of query `j` is its low and high eight components at `2 * (s * N + j)`.
#[cfg(target_feature = "simd128")]
fn widen(queries: &[&[i8]], dim: usize) -> Vec<core::arch::wasm32::v128> {
    use core::arch::wasm32::*;
    let body = dim - dim % 16;
    let mut wide = Vec::with_capacity(2 * queries.len() * body / 16);
    for s in (0..body).step_by(16) {
        for q in queries {
            let q = &q[s..s + 16];
            // SAFETY: `q` is 16 readable bytes; loads need no alignment.
            let v = unsafe { v128_load(q.as_ptr().cast()) };
            wide.push(i16x8_extend_low_i8x16(v));
            wide.push(i16x8_extend_high_i8x16(v));
        }
    }
    wide
}

/// Sum of the four i32 lanes.
#[cfg(target_feature = "simd128")]
fn hsum(v: core::arch::wasm32::v128) -> i32 {
    use core::arch::wasm32::*;
    i32x4_extract_lane::<0>(v)
        + i32x4_extract_lane::<1>(v)
        + i32x4_extract_lane::<2>(v)
        + i32x4_extract_lane::<3>(v)
}

/// Largest `code_len` [`bits_dot_groups`] takes (its u16 sums hold `2 * code_len` entries of
/// at most 60).
pub const GROUPS_MAX_CODE_LEN: usize = 512;

/// [`scalar::bits_dot_groups`], 32 rows at a time: a step loads the 16 bytes of one nibble
/// position and looks up rows 0-15 (low halves) and 16-31 (high halves) in its table; four
/// steps are summed in bytes (at most 4 * 60) before widening to u16.
/// `lut.len() == 32 * code_len`, `code_len <= GROUPS_MAX_CODE_LEN` and `groups.len() >=
/// grouped_len(out.len(), code_len)` (checked by the caller; a slice index would panic
/// rather than read out of bounds).
#[cfg(target_feature = "simd128")]
pub fn bits_dot_groups(lut: &[u8], groups: &[u8], code_len: usize, out: &mut [i32]) {
    use crate::quant::bit_groups::GROUP_ROWS;
    use core::arch::wasm32::*;
    let group_bytes = GROUP_ROWS * code_len;
    let positions = 2 * code_len;
    let nibbles = u8x16_splat(0x0f);
    let load = |s: &[u8]| -> v128 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&s[..16]);
        // SAFETY: `b` is 16 bytes; wasm loads need no alignment.
        unsafe { v128_load(b.as_ptr().cast()) }
    };
    for (g, out) in out.chunks_mut(GROUP_ROWS).enumerate() {
        let group = &groups[g * group_bytes..(g + 1) * group_bytes];
        let mut sums = [u16x8_splat(0); 4];
        let mut p = 0;
        while p < positions {
            let end = (p + 4).min(positions);
            let (mut low, mut high) = (u8x16_splat(0), u8x16_splat(0));
            while p < end {
                let x = load(&group[16 * p..]);
                let table = load(&lut[16 * p..]);
                low = u8x16_add(low, u8x16_swizzle(table, v128_and(x, nibbles)));
                high = u8x16_add(high, u8x16_swizzle(table, u8x16_shr(x, 4)));
                p += 1;
            }
            sums[0] = u16x8_add(sums[0], u16x8_extend_low_u8x16(low));
            sums[1] = u16x8_add(sums[1], u16x8_extend_high_u8x16(low));
            sums[2] = u16x8_add(sums[2], u16x8_extend_low_u8x16(high));
            sums[3] = u16x8_add(sums[3], u16x8_extend_high_u8x16(high));
        }
        let bias = 64 * code_len as i32;
        let mut rows = [0i32; GROUP_ROWS];
        for (k, s) in sums.into_iter().enumerate() {
            let lanes: [u16; 8] = [
                u16x8_extract_lane::<0>(s),
                u16x8_extract_lane::<1>(s),
                u16x8_extract_lane::<2>(s),
                u16x8_extract_lane::<3>(s),
                u16x8_extract_lane::<4>(s),
                u16x8_extract_lane::<5>(s),
                u16x8_extract_lane::<6>(s),
                u16x8_extract_lane::<7>(s),
            ];
            for (i, v) in lanes.into_iter().enumerate() {
                rows[8 * k + i] = i32::from(v) - bias;
            }
        }
        out.copy_from_slice(&rows[..out.len()]);
    }
}

/// Without SIMD128 enabled at build time the scalar reference runs.
#[cfg(not(target_feature = "simd128"))]
pub fn bits_dot_groups(lut: &[u8], groups: &[u8], code_len: usize, out: &mut [i32]) {
    scalar::bits_dot_groups(lut, groups, code_len, out)
}
