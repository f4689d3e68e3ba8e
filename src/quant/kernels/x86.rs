//! x86_64 block kernels: AVX2 (int8 codes, grouped bit codes, threshold masks) and AVX-512
//! (VNNI int8 codes, threshold masks). The callers in `mod.rs` check the CPU features and the
//! shapes (`codes.len() == out.len() * code_len`, `q.len() <= code_len`, grouped codes and
//! tables of the lengths [`bits_dot_groups_avx2`] states).

use super::scalar;
use std::arch::x86_64::*;

/// AVX2.
pub fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

/// The AVX-512 subsets the `Avx512` kernels use.
pub fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Int8 dot products, 32 components per step: `vpmaddubsw(|c|, sign(q, c))` is `q * c`
/// summed in pairs, exact because `|c| <= 128` and `|q| <= 127` keep each pair under
/// 2^15; `vpmaddwd` with ones widens to i32. Components past the last multiple of 32 are
/// added in scalar.
///
/// # Safety
/// The CPU must have AVX2; `codes.len() >= out.len() * code_len` and `q.len() <= code_len`.
#[target_feature(enable = "avx2")]
pub unsafe fn dot_i8_block_avx2(q: &[i8], codes: &[u8], code_len: usize, out: &mut [i32]) {
    let dim = q.len();
    let body = dim - dim % 32;
    let ones = _mm256_set1_epi16(1);
    for (r, o) in out.iter_mut().enumerate() {
        let code = &codes[r * code_len..r * code_len + dim];
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        let mut i = 0;
        while i + 64 <= body {
            // SAFETY: i + 64 <= body <= dim = q.len() = code.len(): both 32-byte loads at
            // i and i + 32 are in bounds; unaligned loads are allowed.
            let (c0, q0, c1, q1) = unsafe {
                (
                    _mm256_loadu_si256(code.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(q.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(code.as_ptr().add(i + 32).cast()),
                    _mm256_loadu_si256(q.as_ptr().add(i + 32).cast()),
                )
            };
            let p0 = _mm256_maddubs_epi16(_mm256_abs_epi8(c0), _mm256_sign_epi8(q0, c0));
            let p1 = _mm256_maddubs_epi16(_mm256_abs_epi8(c1), _mm256_sign_epi8(q1, c1));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, ones));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(p1, ones));
            i += 64;
        }
        if i < body {
            // SAFETY: i + 32 == body <= dim: in bounds.
            let (c0, q0) = unsafe {
                (
                    _mm256_loadu_si256(code.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(q.as_ptr().add(i).cast()),
                )
            };
            let p0 = _mm256_maddubs_epi16(_mm256_abs_epi8(c0), _mm256_sign_epi8(q0, c0));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, ones));
        }
        *o = hsum_256(_mm256_add_epi32(acc0, acc1))
            + scalar::dot_i8(&q[body..], super::super::bytes_as_i8(&code[body..]));
    }
}

/// [`dot_i8_block_avx2`] for `N` queries at once (`qs`: `N` queries of `dim` components back
/// to back; `out[j * rows + r]` for query `j` and row `r`): each 32-byte step of a code is
/// loaded and made absolute once for the `N` queries, which takes about a third of the
/// instructions a query at a time spends per step.
///
/// # Safety
/// The CPU must have AVX2; `qs.len() == N * dim`, `dim <= code_len`, `codes.len() >= rows *
/// code_len` and `out.len() >= N * rows`.
#[target_feature(enable = "avx2")]
pub unsafe fn dot_i8_block_multi_avx2<const N: usize>(
    qs: &[i8],
    dim: usize,
    codes: &[u8],
    code_len: usize,
    rows: usize,
    out: &mut [i32],
) {
    let body = dim - dim % 32;
    let ones = _mm256_set1_epi16(1);
    let queries: [&[i8]; N] = std::array::from_fn(|j| &qs[j * dim..(j + 1) * dim]);
    for r in 0..rows {
        let code = &codes[r * code_len..r * code_len + dim];
        let mut acc = [_mm256_setzero_si256(); N];
        let mut i = 0;
        while i < body {
            // SAFETY: i + 32 <= body <= dim = code.len() = each query's length: every
            // 32-byte load below is in bounds; unaligned loads are allowed.
            let c = unsafe { _mm256_loadu_si256(code.as_ptr().add(i).cast()) };
            let magnitude = _mm256_abs_epi8(c);
            for (a, q) in acc.iter_mut().zip(queries) {
                // SAFETY: as above.
                let q = unsafe { _mm256_loadu_si256(q.as_ptr().add(i).cast()) };
                let p = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(q, c));
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(p, ones));
            }
            i += 32;
        }
        for (j, (a, q)) in acc.into_iter().zip(queries).enumerate() {
            out[j * rows + r] =
                hsum_256(a) + scalar::dot_i8(&q[body..], super::super::bytes_as_i8(&code[body..]));
        }
    }
}

/// Sum of the eight i32 lanes.
#[target_feature(enable = "avx2")]
fn hsum_256(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// Int8 dot products, 64 components per step: `vpdpbusd` multiplies unsigned by signed
/// bytes, so the code is biased to `c + 128` (`c ^ 0x80`, always in `0..=255`) and
/// `128 * sum(q)` is subtracted at the end: exact, `vpdpbusd` does not saturate. The query
/// is loaded into vectors once per block; the last partial step uses masked loads (its
/// masked-out query bytes are 0, so whatever the code's become adds nothing).
///
/// Each row's code is read start to end before the next row's, with no software prefetch:
/// the hardware prefetcher then sees one forward stream. At 1M x 384 on Zen 4 this scores at
/// 1.07-1.09x the time of a plain read of the same bytes, where reading four rows side by
/// side, step by step, with prefetches 32 rows ahead took 1.44x (`quant_kernels`' streaming
/// case, docs/performance.md). Rows go in fours so one reduction sums four rows at once.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI; `codes.len() >= out.len() * code_len` and
/// `q.len() <= code_len`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dot_i8_block_avx512(q: &[i8], codes: &[u8], code_len: usize, out: &mut [i32]) {
    let dim = q.len();
    let bias = 128 * q.iter().map(|&x| i32::from(x)).sum::<i32>();
    let flip = _mm512_set1_epi8(-128);
    let steps = dim.div_ceil(64);
    let tail: __mmask64 = match dim % 64 {
        0 => !0,
        n => (1u64 << n) - 1,
    };
    let mask_of = |s: usize| if s + 1 == steps { tail } else { !0 };
    // SAFETY: the mask covers bytes 64s..min(64s + 64, dim) of q (dim bytes).
    let qv: Vec<__m512i> = (0..steps)
        .map(|s| unsafe { _mm512_maskz_loadu_epi8(mask_of(s), q.as_ptr().add(64 * s).cast()) })
        .collect();
    // Row `r`'s sum of `(c + 128) * q` in sixteen lanes, over two chains (even and odd
    // steps) so the additions of one row overlap.
    let whole = steps - usize::from(tail != !0);
    let row = |r: usize| {
        // SAFETY: r < out.len() and `codes.len() >= out.len() * code_len`: row r's code
        // starts inside `codes`, with at least `code_len >= dim` bytes from there.
        let code = unsafe { codes.as_ptr().add(r * code_len) };
        let (mut even, mut odd) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for (s, &qs) in qv.iter().enumerate() {
            // SAFETY: a whole step's 64 bytes lie below `dim`; the last partial step's mask
            // covers bytes 64s..dim, and masked-out bytes are not read (they become
            // 0 ^ 0x80 = 128, but their query bytes are 0).
            let c = unsafe {
                if s < whole {
                    _mm512_loadu_si512(code.add(64 * s).cast())
                } else {
                    _mm512_maskz_loadu_epi8(tail, code.add(64 * s).cast())
                }
            };
            let c = _mm512_xor_si512(c, flip);
            if s % 2 == 0 {
                even = _mm512_dpbusd_epi32(even, c, qs);
            } else {
                odd = _mm512_dpbusd_epi32(odd, c, qs);
            }
        }
        _mm512_add_epi32(even, odd)
    };
    let rows = out.len();
    let bias4 = _mm_set1_epi32(bias);
    let mut r = 0;
    while r + 4 <= rows {
        let (a0, a1, a2, a3) = (row(r), row(r + 1), row(r + 2), row(r + 3));
        // Interleave and add until lane i of each 128-bit quarter holds part of row r + i,
        // then add the four quarters.
        let t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
        let t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
        let u = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
        let h = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64::<1>(u));
        let x = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        let sums = _mm_sub_epi32(x, bias4);
        // SAFETY: r + 4 <= rows = out.len(): the 16-byte unaligned store is inside `out`.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().add(r).cast(), sums) };
        r += 4;
    }
    for (r, o) in out.iter_mut().enumerate().skip(r) {
        *o = _mm512_reduce_add_epi32(row(r)) - bias;
    }
}

/// Int8 dot products of a group of up to fifteen queries packed across the lanes
/// ([`super::PackedI8`]): line `s` holds components `4s..4s + 4` of every query as unsigned
/// `q + 128` (lane `j` for query `j`) and, in lane 15, ones; one `vpdpbusd` per row and step
/// takes the row's four code bytes as a broadcast (signed) operand, so each lane sums one
/// query's products and lane 15 the row's code sum `S`. The dot product is then
/// `lane_j - 128 * S`, in wrapping arithmetic (exact: the true value fits an i32). Against
/// one query at a time this drops the per-pair horizontal sum and loads each row once per
/// group. `out[j * rows + r]` for query `j`, `rows = out.len() / nq`.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI; `1 <= nq <= 15`; `codes.len() >= rows *
/// code_len` and `4 * lines.len() <= code_len`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dot_i8_block_packed_avx512(
    lines: &[super::Line64],
    nq: usize,
    codes: &[u8],
    code_len: usize,
    out: &mut [i32],
) {
    let rows = out.len() / nq;
    let mut r = 0;
    while r < rows {
        let rr = (rows - r).min(PACKED_TILE_ROWS);
        // SAFETY: rows r..r + rr are inside `codes` and `out` (the caller's contract).
        unsafe {
            match rr {
                PACKED_TILE_ROWS => {
                    packed_tile::<PACKED_TILE_ROWS>(lines, nq, codes, code_len, r, out)
                }
                7 => packed_tile::<7>(lines, nq, codes, code_len, r, out),
                6 => packed_tile::<6>(lines, nq, codes, code_len, r, out),
                5 => packed_tile::<5>(lines, nq, codes, code_len, r, out),
                4 => packed_tile::<4>(lines, nq, codes, code_len, r, out),
                3 => packed_tile::<3>(lines, nq, codes, code_len, r, out),
                2 => packed_tile::<2>(lines, nq, codes, code_len, r, out),
                _ => packed_tile::<1>(lines, nq, codes, code_len, r, out),
            }
        }
        r += rr;
    }
}

/// Rows per tile of the packed int8 kernel: eight independent `vpdpbusd` chains.
const PACKED_TILE_ROWS: usize = 8;

/// Rows `r..r + R` of [`dot_i8_block_packed_avx512`].
///
/// # Safety
/// As [`dot_i8_block_packed_avx512`], with `r + R <= rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn packed_tile<const R: usize>(
    lines: &[super::Line64],
    nq: usize,
    codes: &[u8],
    code_len: usize,
    r: usize,
    out: &mut [i32],
) {
    let rows = out.len() / nq;
    let mut acc = [_mm512_setzero_si512(); R];
    for (s, line) in lines.iter().enumerate() {
        // SAFETY: a `Line64` is 64 bytes aligned to 64.
        let x = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
        for (i, a) in acc.iter_mut().enumerate() {
            let at = (r + i) * code_len + 4 * s;
            // SAFETY: 4s + 4 <= 4 * lines.len() <= code_len and row r + i < rows, so the four
            // bytes are inside row r + i's code, inside `codes`.
            let c = unsafe { codes.as_ptr().add(at).cast::<i32>().read_unaligned() };
            *a = _mm512_dpbusd_epi32(*a, x, _mm512_set1_epi32(c));
        }
    }
    let mut lane = [0i32; 16];
    for (i, a) in acc.iter().enumerate() {
        // SAFETY: `lane` is 64 bytes; an unaligned store.
        unsafe { _mm512_storeu_si512(lane.as_mut_ptr().cast(), *a) };
        let correction = lane[15].wrapping_mul(128);
        for (j, &sum) in lane.iter().take(nq).enumerate() {
            out[j * rows + r + i] = sum.wrapping_sub(correction);
        }
    }
}

/// [`scalar::above_masks`], sixteen keys per compare (`vcmpps` into a mask register; the
/// last partial group with a masked load).
///
/// # Safety
/// The CPU must have AVX-512 F; `keys.len() <= 32 * masks.len()`.
#[target_feature(enable = "avx512f")]
pub unsafe fn above_masks_avx512(keys: &[f32], threshold: f32, masks: &mut [u32]) {
    let t = _mm512_set1_ps(threshold);
    for (m, mask) in masks.iter_mut().enumerate() {
        let mut word = 0u32;
        for half in 0..2 {
            let at = 32 * m + 16 * half;
            let n = keys.len().saturating_sub(at).min(16);
            if n == 0 {
                break;
            }
            let lanes: __mmask16 = if n == 16 { !0 } else { (1u16 << n) - 1 };
            // SAFETY: the mask covers keys at..at + n, all inside `keys`.
            let v = unsafe { _mm512_maskz_loadu_ps(lanes, keys.as_ptr().add(at)) };
            let above = _mm512_mask_cmp_ps_mask::<_CMP_NLE_UQ>(lanes, v, t);
            word |= u32::from(above) << (16 * half);
        }
        *mask = word;
    }
}

/// [`scalar::above_masks`], eight keys per compare; the last partial group in scalar.
///
/// # Safety
/// The CPU must have AVX2; `keys.len() <= 32 * masks.len()`.
#[target_feature(enable = "avx2")]
pub unsafe fn above_masks_avx2(keys: &[f32], threshold: f32, masks: &mut [u32]) {
    let t = _mm256_set1_ps(threshold);
    let body = keys.len() - keys.len() % 8;
    masks.fill(0);
    for at in (0..body).step_by(8) {
        // SAFETY: at + 8 <= body <= keys.len().
        let v = unsafe { _mm256_loadu_ps(keys.as_ptr().add(at)) };
        let above = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLE_UQ>(v, t)) as u32;
        masks[at / 32] |= above << (at % 32);
    }
    for (i, &key) in keys.iter().enumerate().skip(body) {
        masks[i / 32] |= u32::from(key > threshold || key.is_nan()) << (i % 32);
    }
}

/// Largest `code_len` [`bits_dot_groups_avx2`] takes: its u16 sums hold up to
/// `2 * code_len` table entries of at most 60 each.
pub const GROUPS_AVX2_MAX_CODE_LEN: usize = 512;

/// [`scalar::bits_dot_groups`] 32 rows at a time: a step loads one code byte of the group
/// (32 bytes: its low nibbles, then its high nibbles) and the two 16-entry tables of those
/// nibble positions (one per 128-bit lane), and `vpshufb` looks up rows 0-15 (the low half
/// of each byte) and rows 16-31 (the high half). Four steps are summed in bytes (at most 4 *
/// 60), then widened into u16 sums; the two lanes are added at the end.
///
/// # Safety
/// The CPU must have AVX2; `lut.len() == 32 * code_len`, `code_len <=
/// GROUPS_AVX2_MAX_CODE_LEN` and `groups.len() >= grouped_len(out.len(), code_len)`.
#[target_feature(enable = "avx2")]
pub unsafe fn bits_dot_groups_avx2(lut: &[u8], groups: &[u8], code_len: usize, out: &mut [i32]) {
    use crate::quant::bit_groups::GROUP_ROWS;
    let group_bytes = GROUP_ROWS * code_len;
    let nibbles = _mm256_set1_epi8(0x0f);
    let zero = _mm256_setzero_si256();
    let bias = _mm256_set1_epi32(64 * code_len as i32);
    for (g, out) in out.chunks_mut(GROUP_ROWS).enumerate() {
        // SAFETY: group `g` is whole inside `groups` (the caller's length bound).
        let base = groups.as_ptr().add(g * group_bytes);
        let mut sums = [zero; 4];
        let mut b = 0;
        while b < code_len {
            let end = (b + 4).min(code_len);
            let (mut low, mut high) = (zero, zero);
            while b < end {
                // SAFETY: `32 b + 32 <= 32 code_len`, inside the group and inside `lut`.
                let x = _mm256_loadu_si256(base.add(32 * b).cast());
                let table = _mm256_loadu_si256(lut.as_ptr().add(32 * b).cast());
                let lo = _mm256_and_si256(x, nibbles);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), nibbles);
                low = _mm256_add_epi8(low, _mm256_shuffle_epi8(table, lo));
                high = _mm256_add_epi8(high, _mm256_shuffle_epi8(table, hi));
                b += 1;
            }
            sums[0] = _mm256_add_epi16(sums[0], _mm256_unpacklo_epi8(low, zero));
            sums[1] = _mm256_add_epi16(sums[1], _mm256_unpackhi_epi8(low, zero));
            sums[2] = _mm256_add_epi16(sums[2], _mm256_unpacklo_epi8(high, zero));
            sums[3] = _mm256_add_epi16(sums[3], _mm256_unpackhi_epi8(high, zero));
        }
        // sums[k]: rows 8k..8k + 8, even positions in the low lane and odd in the high.
        let mut rows = [0i32; GROUP_ROWS];
        for (k, s) in sums.into_iter().enumerate() {
            let both = _mm_add_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            let wide = _mm256_sub_epi32(_mm256_cvtepu16_epi32(both), bias);
            // SAFETY: `rows` has 32 i32 and this writes 8 of them at 8k, k < 4.
            _mm256_storeu_si256(rows.as_mut_ptr().add(8 * k).cast(), wide);
        }
        out.copy_from_slice(&rows[..out.len()]);
    }
}
