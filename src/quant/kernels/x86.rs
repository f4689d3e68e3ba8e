//! x86_64 block kernels: AVX2 + POPCNT and AVX-512 (VNNI, VPOPCNTDQ). The callers in
//! `mod.rs` check the CPU features and the shapes (`codes.len() == out.len() * code_len`,
//! `q.len() <= code_len`, `planes.len() == 4 * words`, `8 * words <= code_len`).

use super::scalar;
use std::arch::x86_64::*;

/// AVX2 and POPCNT (every AVX2 CPU has POPCNT, but it is a separate feature bit).
pub fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("popcnt")
}

/// The AVX-512 subsets the `Avx512` kernels use.
pub fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vpopcntdq")
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
/// is loaded once per block; rows go four at a time (one query vector feeds four products);
/// the last partial step uses masked loads (masked-out bytes read as 0 in both operands).
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
    // Row `r`'s code bytes from step `s`, biased; masked-out bytes become 0 ^ 0x80 = 128,
    // but their query bytes are 0.
    let load = |r: usize, s: usize| {
        let code = &codes[r * code_len..r * code_len + dim];
        // SAFETY: the mask covers bytes 64s..min(64s + 64, dim) of `code` (dim bytes).
        let c = unsafe { _mm512_maskz_loadu_epi8(mask_of(s), code.as_ptr().add(64 * s).cast()) };
        _mm512_xor_si512(c, flip)
    };
    let rows = out.len();
    let mut r = 0;
    while r + 4 <= rows {
        // Ask for the codes a few rows ahead while these are scored: the scan streams codes
        // from memory, and the hardware prefetcher alone leaves the loads waiting.
        let ahead = (r + PREFETCH_ROWS_AHEAD) * code_len;
        let end = (ahead + 4 * code_len).min(codes.len());
        let mut at = ahead;
        while at < end {
            // SAFETY: a prefetch is a hint that never faults and reads nothing into the
            // program; `at < codes.len()`, so the address is inside the live slice.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(codes.as_ptr().add(at).cast::<i8>()) };
            at += 64;
        }
        let mut acc = [_mm512_setzero_si512(); 4];
        for (s, &q) in qv.iter().enumerate() {
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm512_dpbusd_epi32(*a, load(r + i, s), q);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            out[r + i] = _mm512_reduce_add_epi32(*a) - bias;
        }
        r += 4;
    }
    for (r, o) in out.iter_mut().enumerate().skip(r) {
        let mut acc = _mm512_setzero_si512();
        for (s, &q) in qv.iter().enumerate() {
            acc = _mm512_dpbusd_epi32(acc, load(r, s), q);
        }
        *o = _mm512_reduce_add_epi32(acc) - bias;
    }
}

/// Rows ahead of the current four whose codes the AVX-512 int8 kernel prefetches.
const PREFETCH_ROWS_AHEAD: usize = 16;

/// [`scalar::bits_dot_block`] with the POPCNT instruction.
///
/// # Safety
/// The CPU must have POPCNT; `codes.len() >= out.len() * code_len`, `8 * words <= code_len`
/// with `planes.len() == 4 * words`.
#[target_feature(enable = "popcnt")]
pub unsafe fn bits_dot_block_popcnt(
    planes: &[u64],
    codes: &[u8],
    code_len: usize,
    out: &mut [i32],
) {
    let words = planes.len() / 4;
    let (p0, rest) = planes.split_at(words);
    let (p1, rest) = rest.split_at(words);
    let (p2, p3) = rest.split_at(words);
    for (r, o) in out.iter_mut().enumerate() {
        let code = &codes[r * code_len..r * code_len + 8 * words];
        let mut sum = 0i32;
        for (w, c) in code.chunks_exact(8).enumerate() {
            let c = scalar::word(c);
            let t = (p2[w] & c).count_ones() as i32 - 2 * (p3[w] & c).count_ones() as i32;
            let t = 2 * t + (p1[w] & c).count_ones() as i32;
            sum += 2 * t + (p0[w] & c).count_ones() as i32;
        }
        *o = sum;
    }
}

/// [`scalar::bits_dot_block`] eight words at a time with VPOPCNTDQ (masked loads for the
/// last partial group of words). Rows go eight at a time: their eight accumulators are summed
/// together by a transposing tree of shuffles ([`sum_lanes_of_8`]), which costs under two
/// shuffles a row where a horizontal reduction per row costs three.
///
/// # Safety
/// The CPU must have AVX-512 F and VPOPCNTDQ; shapes as [`bits_dot_block_popcnt`].
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
pub unsafe fn bits_dot_block_avx512(
    planes: &[u64],
    codes: &[u8],
    code_len: usize,
    out: &mut [i32],
) {
    let words = planes.len() / 4;
    let steps = words.div_ceil(8);
    let tail: __mmask8 = match words % 8 {
        0 => !0,
        n => (1u8 << n) - 1,
    };
    let mask_of = |s: usize| if s + 1 == steps { tail } else { !0 };
    // The planes, loaded once per block: four vectors per group of eight words.
    let plane_vectors: Vec<[__m512i; 4]> = (0..steps)
        .map(|s| {
            // SAFETY: the mask covers words 8s..min(8s + 8, words) of plane j, which is
            // `planes[j * words..(j + 1) * words]`.
            let plane = |j: usize| unsafe {
                _mm512_maskz_loadu_epi64(mask_of(s), planes.as_ptr().add(j * words + 8 * s).cast())
            };
            [plane(0), plane(1), plane(2), plane(3)]
        })
        .collect();
    // Row `r`'s per-lane sums.
    let lanes_of = |r: usize| {
        let code = &codes[r * code_len..r * code_len + 8 * words];
        let mut acc = _mm512_setzero_si512();
        for (s, q) in plane_vectors.iter().enumerate() {
            // SAFETY: the mask covers words 8s..min(8s + 8, words), inside the code
            // (8 * words bytes).
            let c =
                unsafe { _mm512_maskz_loadu_epi64(mask_of(s), code.as_ptr().add(64 * s).cast()) };
            acc = _mm512_add_epi64(acc, bits_dot_lanes(q, c));
        }
        acc
    };
    let rows = out.len();
    let mut r = 0;
    while r + 8 <= rows {
        let sums = sum_lanes_of_8(std::array::from_fn(|i| lanes_of(r + i)));
        // Each sum is at most 64 * words * 8 in magnitude: i32 holds it.
        let sums = _mm512_cvtepi64_epi32(sums);
        // SAFETY: out[r..r + 8] is 32 writable bytes (r + 8 <= out.len()).
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(r).cast(), sums) };
        r += 8;
    }
    for (r, o) in out.iter_mut().enumerate().skip(r) {
        *o = _mm512_reduce_add_epi64(lanes_of(r)) as i32;
    }
}

/// The four planes' contribution of eight code words `c` against eight plane words each
/// (`q[j]`), per 64-bit lane, folded Horner-style: `((p2 - 2 p3) * 2 + p1) * 2 + p0`.
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
fn bits_dot_lanes(q: &[__m512i; 4], c: __m512i) -> __m512i {
    let count = |p: __m512i| _mm512_popcnt_epi64(_mm512_and_si512(p, c));
    let t = _mm512_sub_epi64(count(q[2]), _mm512_slli_epi64(count(q[3]), 1));
    let t = _mm512_add_epi64(_mm512_slli_epi64(t, 1), count(q[1]));
    _mm512_add_epi64(_mm512_slli_epi64(t, 1), count(q[0]))
}

/// Lane `i` of the result is the sum of the eight i64 lanes of `v[i]`: pairs of vectors are
/// interleaved and added three times (64-bit lanes, then 128-bit lanes twice), 14 shuffles
/// and 7 adds for the eight sums.
#[target_feature(enable = "avx512f")]
fn sum_lanes_of_8(v: [__m512i; 8]) -> __m512i {
    // Lane k (128 bits) of the result: (a's, b's) pair sums from their lane k.
    let pairs = |a, b| _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    // 128-bit lanes: (a0 + a1, a2 + a3, b0 + b1, b2 + b3).
    let halves = |a, b| {
        _mm512_add_epi64(
            _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b),
        )
    };
    let p01 = pairs(v[0], v[1]);
    let p23 = pairs(v[2], v[3]);
    let p45 = pairs(v[4], v[5]);
    let p67 = pairs(v[6], v[7]);
    halves(halves(p01, p23), halves(p45, p67))
}
