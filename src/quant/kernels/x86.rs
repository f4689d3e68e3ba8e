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
        && is_x86_feature_detected!("avx512ifma")
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
/// shuffles a row where a horizontal reduction per row costs three. Codes of six words
/// (dimensions 321 to 384) with nothing between them go through [`bits_dot_rows_of_6`]
/// instead, which fills every lane.
///
/// # Safety
/// The CPU must have AVX-512 F, VPOPCNTDQ and IFMA; shapes as [`bits_dot_block_popcnt`].
#[target_feature(enable = "avx512f,avx512vpopcntdq,avx512ifma")]
pub unsafe fn bits_dot_block_avx512(
    planes: &[u64],
    codes: &[u8],
    code_len: usize,
    out: &mut [i32],
) {
    let words = planes.len() / 4;
    let mut r = 0;
    if words == 6 && code_len == 48 {
        // SAFETY: the caller's shapes, with code_len == 8 * words == 48.
        r = unsafe { bits_dot_rows_of_6(planes, codes, out) };
    }
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
            acc = bits_dot_lanes_ifma(acc, q, c);
        }
        acc
    };
    let rows = out.len();
    while r + 8 <= rows {
        let sums = sum_lanes_of_8(std::array::from_fn(|i| lanes_of(r + i)));
        // The low 32 bits of each sum are the row's value (see `bits_dot_lanes_ifma`).
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
/// (`q[j]`), per 64-bit lane, added to `acc`: `p0 + 2 p1 + 4 p2 - 8 p3` (`pj` the popcount of
/// `q[j] & c`) by three 52-bit multiply-adds. `-8` is `2^52 - 8` to the multiply-add (its
/// operands are unsigned 52-bit), so a lane with `p3 > 0` gains `2^52` beside the value: lane
/// sums stay far below 2^63, and the low 32 bits of any sum of lanes are the true sum, which
/// fits in i32 (at most `8 * 64 * words` in magnitude).
#[target_feature(enable = "avx512f,avx512vpopcntdq,avx512ifma")]
fn bits_dot_lanes_ifma(acc: __m512i, q: &[__m512i; 4], c: __m512i) -> __m512i {
    let count = |p: __m512i| _mm512_popcnt_epi64(_mm512_and_si512(p, c));
    let acc = _mm512_add_epi64(acc, count(q[0]));
    let acc = _mm512_madd52lo_epu64(acc, count(q[1]), _mm512_set1_epi64(2));
    let acc = _mm512_madd52lo_epu64(acc, count(q[2]), _mm512_set1_epi64(4));
    _mm512_madd52lo_epu64(acc, count(q[3]), _mm512_set1_epi64((1 << 52) - 8))
}

/// Rows of six-word codes (`code_len` 48: 384-d binary codes), eight at a time: eight rows
/// are six full vectors of words, so every lane does work (the generic path leaves two of
/// eight lanes empty). Lane `l` of vector `v` holds word `(8v + l) % 6` of its row, so it is
/// scored against the planes in that order (the pattern repeats every three vectors); the
/// per-word sums are then added in pairs of words (unpack) and the pairs in threes (two
/// two-source permutes per operand) into one lane per row. Returns the rows scored (a multiple
/// of 8); the caller scores the rest.
///
/// # Safety
/// As [`bits_dot_block_avx512`], with `planes.len() == 24` and `code_len == 48`.
#[target_feature(enable = "avx512f,avx512vpopcntdq,avx512ifma")]
unsafe fn bits_dot_rows_of_6(planes: &[u64], codes: &[u8], out: &mut [i32]) -> usize {
    const WORDS: usize = 6;
    // Plane j's words in the order vector v (v % 3) meets them.
    let pattern: [[__m512i; 4]; 3] = std::array::from_fn(|v| {
        std::array::from_fn(|j| {
            let words: [u64; 8] = std::array::from_fn(|l| planes[j * WORDS + (8 * v + l) % WORDS]);
            // SAFETY: `words` is 64 readable bytes.
            unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
        })
    });
    // After the pair sums, pair p (words 2p, 2p + 1 of the eight rows' 48) is in vector
    // p / 8 at lane 2 (p % 4) + (p % 8) / 4 (`unpack` interleaves the two vectors' pairs).
    // Row r is pairs 3r, 3r + 1, 3r + 2; `gather(i)` takes pair 3r + i into lane r from the
    // three pair vectors: first from the two vectors A, B (indices 0..16), then keeping
    // that lane or taking from C (indices 8..16 of the second permute).
    let index = |i: usize, second: bool| -> __m512i {
        let lanes: [i64; 8] = std::array::from_fn(|r| {
            let p = 3 * r + i;
            let (vector, lane) = (p / 8, 2 * (p % 4) + (p % 8) / 4);
            match (second, vector) {
                (false, 0) => lane as i64,
                (false, 1) => 8 + lane as i64,
                (false, _) => 0,
                (true, 2) => 8 + lane as i64,
                (true, _) => r as i64,
            }
        });
        // SAFETY: `lanes` is 64 readable bytes.
        unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
    };
    let first = [index(0, false), index(1, false), index(2, false)];
    let second = [index(0, true), index(1, true), index(2, true)];
    let pairs = |a, b| _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    let rows = out.len().min(codes.len() / (8 * WORDS));
    let mut r = 0;
    while r + 8 <= rows {
        let base = codes[r * 8 * WORDS..(r + 8) * 8 * WORDS].as_ptr();
        let t: [__m512i; 6] = std::array::from_fn(|v| {
            // SAFETY: vector v is bytes 64v..64v + 64 of the eight rows' 384 bytes.
            let c = unsafe { _mm512_loadu_si512(base.add(64 * v).cast()) };
            bits_dot_lanes_ifma(_mm512_setzero_si512(), &pattern[v % 3], c)
        });
        let (a, b, c) = (pairs(t[0], t[1]), pairs(t[2], t[3]), pairs(t[4], t[5]));
        let take = |i: usize| {
            _mm512_permutex2var_epi64(_mm512_permutex2var_epi64(a, first[i], b), second[i], c)
        };
        let sums = _mm512_add_epi64(_mm512_add_epi64(take(0), take(1)), take(2));
        let sums = _mm512_cvtepi64_epi32(sums);
        // SAFETY: out[r..r + 8] is 32 writable bytes (r + 8 <= rows <= out.len()).
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(r).cast(), sums) };
        r += 8;
    }
    r
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
