//! aarch64 NEON block kernel for grouped bit codes: table lookups with `tbl` (`vqtbl1q_u8`),
//! the same steps as the SIMD128 one. NEON is baseline on aarch64.

use std::arch::aarch64::*;

/// Largest `code_len` [`bits_dot_groups`] takes (its u16 sums hold `2 * code_len` entries of
/// at most 60).
pub const GROUPS_MAX_CODE_LEN: usize = 512;

/// [`super::scalar::bits_dot_groups`], 32 rows at a time: a step loads the 16 bytes of one
/// nibble position and looks up rows 0-15 (low halves) and 16-31 (high halves) in its table;
/// four steps are summed in bytes (at most 4 * 60) before widening to u16. The caller checks
/// `lut.len() == 32 * code_len`, `code_len <= GROUPS_MAX_CODE_LEN` and `groups.len() >=
/// grouped_len(out.len(), code_len)`; the loads go through checked slices regardless.
pub fn bits_dot_groups(lut: &[u8], groups: &[u8], code_len: usize, out: &mut [i32]) {
    use crate::quant::bit_groups::GROUP_ROWS;
    let group_bytes = GROUP_ROWS * code_len;
    let positions = 2 * code_len;
    let bias = 64 * code_len as i32;
    let load = |s: &[u8]| -> uint8x16_t {
        let s = &s[..16];
        // SAFETY: `s` is 16 readable bytes (the slice above is bounds-checked); NEON is
        // baseline on aarch64 and `vld1q_u8` needs no alignment.
        unsafe { vld1q_u8(s.as_ptr()) }
    };
    for (group, out) in groups
        .chunks_exact(group_bytes)
        .zip(out.chunks_mut(GROUP_ROWS))
    {
        // SAFETY: register-only NEON arithmetic, baseline on aarch64 (likewise every
        // intrinsic below that reads or writes no memory).
        let mut sums = unsafe { [vdupq_n_u16(0); 4] };
        let mut p = 0;
        while p < positions {
            let end = (p + 4).min(positions);
            // SAFETY: as above.
            let (mut low, mut high, nibbles) =
                unsafe { (vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0x0f)) };
            while p < end {
                let x = load(&group[16 * p..]);
                let table = load(&lut[16 * p..]);
                // SAFETY: as above.
                unsafe {
                    low = vaddq_u8(low, vqtbl1q_u8(table, vandq_u8(x, nibbles)));
                    high = vaddq_u8(high, vqtbl1q_u8(table, vshrq_n_u8::<4>(x)));
                }
                p += 1;
            }
            // SAFETY: as above.
            unsafe {
                sums[0] = vaddw_u8(sums[0], vget_low_u8(low));
                sums[1] = vaddw_high_u8(sums[1], low);
                sums[2] = vaddw_u8(sums[2], vget_low_u8(high));
                sums[3] = vaddw_high_u8(sums[3], high);
            }
        }
        let mut rows = [0u16; GROUP_ROWS];
        for (k, s) in sums.into_iter().enumerate() {
            let dst = &mut rows[8 * k..8 * k + 8];
            // SAFETY: `dst` is 8 writable u16 (bounds-checked above); NEON is baseline.
            unsafe { vst1q_u16(dst.as_mut_ptr(), s) };
        }
        for (o, r) in out.iter_mut().zip(rows) {
            *o = i32::from(r) - bias;
        }
    }
}
