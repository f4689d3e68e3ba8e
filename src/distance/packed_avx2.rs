//! Multi-query dot products with AVX2+FMA over queries packed across the lanes
//! ([`PackedQueries`], the layout the AVX-512 kernel reads): each 16-query line is two 8-lane
//! halves, so one broadcast of a row's component feeds an FMA per half. A tile keeps one or
//! two accumulators per row (one when the group holds at most eight queries); each pair's sum
//! builds up in its own lane.
//!
//! Why on AVX2 too: the row-major kernel (`multi_avx2.rs`, 4 queries x 3 rows) reloads four
//! query registers for every twelve FMAs, from L2 once sixteen 1536-d queries (96 KiB) no
//! longer fit in L1 (32 KiB on Zen 3); here each step loads one or two query registers for
//! `2 R` FMAs. Accuracy as in `packed_avx512.rs`: chunks of `CHUNK` components per lane.

use super::{PackedCall, PackedQueries};
use std::arch::x86_64::*;

/// Rows per tile for a full group (two halves): twelve accumulators, two query registers
/// and the broadcast fit the sixteen ymm registers.
const TILE_ROWS: usize = 6;
/// Rows per tile for a group of at most eight queries (one half).
const TILE_ROWS_HALF: usize = 12;
/// Components summed in one accumulator before it is added to the row's total.
const CHUNK: usize = 128;

/// Safe entry point; selected only after `avx2` and `fma` were detected (see `Kernels`).
/// Checks every slice bound once, up front.
pub(crate) fn dot_many_packed_checked(
    packed: &PackedQueries,
    rows: &[f32],
    nrows: usize,
    row_stride: usize,
    out: &mut [f32],
) {
    let Some(shape) = packed.call(rows, nrows, row_stride, out) else {
        debug_assert!(false, "avx2 packed: bad shapes");
        return;
    };
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    {
        debug_assert!(false, "avx2 packed kernel selected without avx2+fma");
        return;
    }
    // SAFETY: avx2 and fma were detected just above. The packed lanes hold `groups * dim`
    // 64-byte-aligned 16-float lines (a `PackedQueries` invariant); every row pointer the
    // kernel reads is `rows + r * row_stride + k` with r < nrows, k < dim, and every write is
    // `out[q * nrows + r]` with q < nq: inside the bounds checked above. The kernel reads only
    // the shared slices (nothing writes them while they are borrowed) and writes only through
    // `out`, which the `&mut` makes exclusive to this call.
    unsafe { dot_many_packed_avx2(&shape) }
}

/// # Safety
/// AVX2 and FMA available; `shape` as `dot_many_packed_checked` checked it.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_many_packed_avx2(shape: &PackedCall) {
    for g in 0..shape.nq.div_ceil(16) {
        let half = shape.nq - g * 16 <= 8;
        let most = if half { TILE_ROWS_HALF } else { TILE_ROWS };
        let mut r = 0;
        while r < shape.nrows {
            let rr = (shape.nrows - r).min(most);
            // SAFETY: r + rr <= nrows and g < groups: the tile is inside the shape.
            unsafe {
                if half {
                    match rr {
                        TILE_ROWS_HALF => tile::<TILE_ROWS_HALF, 1>(shape, g, r),
                        11 => tile::<11, 1>(shape, g, r),
                        10 => tile::<10, 1>(shape, g, r),
                        9 => tile::<9, 1>(shape, g, r),
                        8 => tile::<8, 1>(shape, g, r),
                        7 => tile::<7, 1>(shape, g, r),
                        6 => tile::<6, 1>(shape, g, r),
                        5 => tile::<5, 1>(shape, g, r),
                        4 => tile::<4, 1>(shape, g, r),
                        3 => tile::<3, 1>(shape, g, r),
                        2 => tile::<2, 1>(shape, g, r),
                        _ => tile::<1, 1>(shape, g, r),
                    }
                } else {
                    match rr {
                        TILE_ROWS => tile::<TILE_ROWS, 2>(shape, g, r),
                        5 => tile::<5, 2>(shape, g, r),
                        4 => tile::<4, 2>(shape, g, r),
                        3 => tile::<3, 2>(shape, g, r),
                        2 => tile::<2, 2>(shape, g, r),
                        _ => tile::<1, 2>(shape, g, r),
                    }
                }
            }
            r += rr;
        }
    }
}

/// Scores rows `r..r + R` against the queries of group `g`, `H` halves of eight lanes.
///
/// # Safety
/// AVX2 and FMA available; rows `r..r + R` are inside `shape`, `g < nq.div_ceil(16)`, and
/// `H == 1` only when the group holds at most eight queries.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const R: usize, const H: usize>(shape: &PackedCall, g: usize, r: usize) {
    let dim = shape.dim;
    // SAFETY: (all pointer arithmetic, loads and stores below) row i of the tile starts at
    // `rp + (r + i) * row_stride` and is read at offsets k < dim; the group's lines start at
    // `lanes + g * dim * 16`, 64-byte aligned, and of line k < dim the first `8 H` floats are
    // read (32-byte-aligned loads). Writes go to `out[(16 g + j) * nrows + r + i]` for
    // 16 g + j < nq only, inside the checked output, which the caller's `&mut` borrow keeps
    // exclusive to this call. Prefetch addresses are formed with `wrapping_add` and may lie
    // past the rows; a prefetch is a hint that neither faults nor reads into any Rust value.
    unsafe {
        let rows: [*const f32; R] =
            std::array::from_fn(|i| shape.rp.add((r + i) * shape.row_stride));
        let lines = shape.lanes.add(g * dim * 16);
        let mut total = [[_mm256_setzero_ps(); H]; R];
        let mut k = 0;
        while k < dim {
            let end = (k + CHUNK).min(dim);
            let mut acc = [[_mm256_setzero_ps(); H]; R];
            // Sixteen components (one line of each row) per step, and a prefetch of one line
            // of the next tile's rows.
            while k + 16 <= end {
                for u in 0..16 {
                    let line = lines.add((k + u) * 16);
                    let x: [__m256; H] = std::array::from_fn(|h| _mm256_load_ps(line.add(8 * h)));
                    for i in 0..R {
                        let v = _mm256_broadcast_ss(&*rows[i].add(k + u));
                        for h in 0..H {
                            acc[i][h] = _mm256_fmadd_ps(v, x[h], acc[i][h]);
                        }
                    }
                    if u < R {
                        _mm_prefetch::<_MM_HINT_T0>(
                            rows[u].wrapping_add(R * shape.row_stride + k) as *const i8
                        );
                    }
                }
                k += 16;
            }
            while k < end {
                let line = lines.add(k * 16);
                let x: [__m256; H] = std::array::from_fn(|h| _mm256_load_ps(line.add(8 * h)));
                for i in 0..R {
                    let v = _mm256_broadcast_ss(&*rows[i].add(k));
                    for h in 0..H {
                        acc[i][h] = _mm256_fmadd_ps(v, x[h], acc[i][h]);
                    }
                }
                k += 1;
            }
            for i in 0..R {
                for h in 0..H {
                    total[i][h] = _mm256_add_ps(total[i][h], acc[i][h]);
                }
            }
        }
        let queries = (shape.nq - g * 16).min(8 * H);
        let mut lane = [0.0f32; 16];
        for (i, t) in total.iter().enumerate() {
            for (h, half) in t.iter().enumerate() {
                _mm256_storeu_ps(lane.as_mut_ptr().add(8 * h), *half);
            }
            for (j, score) in lane.iter().take(queries).enumerate() {
                *shape.out.add((g * 16 + j) * shape.nrows + r + i) = *score;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::check;
    use crate::testing::Rng;

    /// Every tile remainder (rows 1..=25, both tile widths), partial and several query groups
    /// (1..=33, so groups of at most eight and of more), dims around the line and chunk sizes,
    /// strides wider than dim and rows off any 32-byte boundary, against the scalar reference.
    #[test]
    fn matches_scalar_on_every_tile_shape() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let mut rng = Rng::new(0xa2c);
        for dim in [1usize, 7, 15, 16, 17, 100, 127, 128, 129, 384, 1536] {
            for offset in [0usize, 3] {
                let stride = dim + 5;
                for nq in [1usize, 2, 8, 9, 15, 16, 17, 24, 25, 31, 32, 33] {
                    for nrows in 1..=25usize {
                        let queries = rng.vectors(nq, dim);
                        let buf = rng.vectors(1, offset + nrows * stride);
                        let rows = &buf[offset..];
                        let packed = PackedQueries::new(&queries, nq, dim);
                        let mut out = vec![f32::NAN; nq * nrows];
                        dot_many_packed_checked(&packed, rows, nrows, stride, &mut out);
                        let context = format!("dim {dim} nq {nq} nrows {nrows} off {offset}");
                        check::dot_many_output(
                            &queries, nq, rows, nrows, stride, dim, &out, &context,
                        );
                    }
                }
            }
        }
    }
}
