//! WebAssembly SIMD128 block kernel for int8 codes: sign-extend 8 bytes to i16 lanes and
//! `i32x4.dot_i16x8_s` (exact: each pair of products is at most 2 * 128 * 127).

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
