//! WebAssembly SIMD128 block kernels: int8 codes by sign-extending 8 bytes to i16 lanes and
//! `i32x4.dot_i16x8_s` (exact: each pair of products is at most 2 * 128 * 127); grouped bit
//! codes by table lookups (`i8x16.swizzle`).

use super::scalar;

/// [`scalar::dot_i8_block`], 16 components per step; the last `dim % 16` in scalar.
#[cfg(target_feature = "simd128")]
pub fn dot_i8_block(q: &[i8], codes: &[u8], code_len: usize, out: &mut [i32]) {
    use core::arch::wasm32::*;
    let dim = q.len();
    let body = dim - dim % 16;
    // SAFETY: each load reads 16 bytes at i with i + 16 <= body <= q.len(); wasm loads
    // need no alignment.
    let qv: Vec<v128> = (0..body)
        .step_by(16)
        .map(|i| unsafe { v128_load(q.as_ptr().add(i).cast()) })
        .collect();
    for (r, o) in out.iter_mut().enumerate() {
        let code = &codes[r * code_len..r * code_len + dim];
        let mut acc = i32x4_splat(0);
        for (s, &qs) in qv.iter().enumerate() {
            // SAFETY: 16 * s + 16 <= body <= dim = code.len().
            let c = unsafe { v128_load(code.as_ptr().add(16 * s).cast()) };
            acc = i32x4_add(
                acc,
                i32x4_dot_i16x8(i16x8_extend_low_i8x16(c), i16x8_extend_low_i8x16(qs)),
            );
            acc = i32x4_add(
                acc,
                i32x4_dot_i16x8(i16x8_extend_high_i8x16(c), i16x8_extend_high_i8x16(qs)),
            );
        }
        let sum = i32x4_extract_lane::<0>(acc)
            + i32x4_extract_lane::<1>(acc)
            + i32x4_extract_lane::<2>(acc)
            + i32x4_extract_lane::<3>(acc);
        *o = sum + scalar::dot_i8(&q[body..], super::super::bytes_as_i8(&code[body..]));
    }
}

/// Without SIMD128 enabled at build time the scalar reference runs.
#[cfg(not(target_feature = "simd128"))]
pub fn dot_i8_block(q: &[i8], codes: &[u8], code_len: usize, out: &mut [i32]) {
    scalar::dot_i8_block(q, codes, code_len, out)
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
