//! WebAssembly SIMD128 block kernels: int8 codes by sign-extending 8 bytes to i16 lanes and
//! `i32x4.dot_i16x8_s` (exact: each pair of products is at most 2 * 128 * 127); grouped bit
//! codes by table lookups (`i8x16.swizzle`).

use super::scalar;

/// [`scalar::dot_i8_block`], 16 components per step; the last `dim % 16` in scalar. Four
/// rows go together, so one widened query step feeds four independent accumulators.
#[cfg(target_feature = "simd128")]
pub fn dot_i8_block(q: &[i8], codes: &[u8], code_len: usize, out: &mut [i32]) {
    use core::arch::wasm32::*;
    let dim = q.len();
    let body = dim - dim % 16;
    let wide = widen(&[q], body);
    let rows = out.len();
    assert!(
        dim <= code_len && codes.len() >= rows * code_len,
        "dot_i8_block: shapes"
    );
    let tail = |r: usize| {
        let code = &codes[r * code_len + body..r * code_len + dim];
        scalar::dot_i8(&q[body..], super::super::bytes_as_i8(code))
    };
    let mut r = 0;
    while r + 4 <= rows {
        let base = codes[r * code_len..].as_ptr();
        let mut acc = [i32x4_splat(0); 4];
        for (s, q) in wide.chunks_exact(2).enumerate() {
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: row r + i < rows has `code_len >= dim >= 16 * s + 16` bytes at
                // `(r + i) * code_len` in `codes` (asserted above); loads need no alignment.
                let c = unsafe { v128_load(base.add(i * code_len + 16 * s).cast()) };
                *a = i32x4_add(*a, i32x4_dot_i16x8(i16x8_extend_low_i8x16(c), q[0]));
                *a = i32x4_add(*a, i32x4_dot_i16x8(i16x8_extend_high_i8x16(c), q[1]));
            }
        }
        for (i, a) in acc.into_iter().enumerate() {
            out[r + i] = hsum(a) + tail(r + i);
        }
        r += 4;
    }
    if r < rows {
        dot_i8_block_multi::<1>(
            q,
            dim,
            &codes[r * code_len..],
            code_len,
            rows - r,
            &mut out[r..],
        );
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
    use core::arch::wasm32::*;
    assert!(
        qs.len() == N * dim
            && dim <= code_len
            && codes.len() >= rows * code_len
            && out.len() >= N * rows,
        "dot_i8_block_multi: shapes"
    );
    let body = dim - dim % 16;
    let queries: [&[i8]; N] = std::array::from_fn(|j| &qs[j * dim..(j + 1) * dim]);
    let wide = widen(&queries, body);
    for r in 0..rows {
        let code = &codes[r * code_len..r * code_len + dim];
        let mut acc = [i32x4_splat(0); N];
        for (s, q) in wide.chunks_exact(2 * N).enumerate() {
            // SAFETY: 16 * s + 16 <= body <= dim = code.len(); loads need no alignment.
            let c = unsafe { v128_load(code.as_ptr().add(16 * s).cast()) };
            let (low, high) = (i16x8_extend_low_i8x16(c), i16x8_extend_high_i8x16(c));
            for (a, q) in acc.iter_mut().zip(q.chunks_exact(2)) {
                *a = i32x4_add(*a, i32x4_dot_i16x8(low, q[0]));
                *a = i32x4_add(*a, i32x4_dot_i16x8(high, q[1]));
            }
        }
        let tail = super::super::bytes_as_i8(&code[body..]);
        for (j, (a, q)) in acc.into_iter().zip(queries).enumerate() {
            out[j * rows + r] = hsum(a) + scalar::dot_i8(&q[body..], tail);
        }
    }
}

/// The first `body` components (a multiple of 16) of each query as i16 vectors, step by
/// step: step `s` of query `j` is its low and high eight components at `2 * (s * N + j)`.
#[cfg(target_feature = "simd128")]
fn widen(queries: &[&[i8]], body: usize) -> Vec<core::arch::wasm32::v128> {
    use core::arch::wasm32::*;
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
