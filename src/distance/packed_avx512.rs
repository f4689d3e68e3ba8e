//! Multi-query dot products with AVX-512F over queries packed across the lanes
//! ([`PackedQueries`]): lane `j` of a register holds component `k` of query `j`, so one FMA
//! scores one row against sixteen queries, its component broadcast straight from memory. A
//! tile of `TILE_ROWS` rows keeps one accumulator per row; each pair's sum builds up in its
//! own lane, so nothing is reduced across lanes at the end.
//!
//! Against the row-major kernel (`multi_avx512.rs`, a 4 x 4 tile) the FMAs are the same in
//! number for 16 queries, but each step loads one line of packed queries for sixteen FMAs
//! instead of four query registers (from L2: sixteen 1536-d queries are 96 KiB) for sixteen,
//! so the scan stops waiting on L2 and runs at the FMA or memory rate. The packing is a
//! transpose of the queries, done once per search, not per block of rows. This is the layout
//! of a GEMM micro-kernel; a group of fewer than 16 queries wastes the unused lanes, so the
//! flat index takes this path only for groups that fill most of them (see `Kernels`).
//!
//! Accuracy: each lane adds its products in order, in chunks of `CHUNK` components whose
//! sums are then added, so the rounding error grows with the chunk, not the dimension.

use super::{PackedCall, PackedQueries};
use std::arch::x86_64::*;

/// Rows per register tile: sixteen accumulators keep both FMA pipes busy through the FMA
/// latency (the chunk sums may spill: they are touched once per `CHUNK`). 16 rows measured
/// 1,554-1,593 QPS on a batch of 16 over 50,000 x 1536, 8 rows 1,050-1,501, 12 rows
/// 1,383-1,449.
const TILE_ROWS: usize = 16;
/// Components summed in one accumulator before it is added to the row's total.
const CHUNK: usize = 128;

/// Safe entry point; selected only after `avx512f` was detected (see `Kernels`). Checks
/// every slice bound once, up front.
pub(crate) fn dot_many_packed_checked(
    packed: &PackedQueries,
    rows: &[f32],
    nrows: usize,
    row_stride: usize,
    out: &mut [f32],
) {
    let Some(shape) = packed.call(rows, nrows, row_stride, out) else {
        debug_assert!(false, "avx512 packed: bad shapes");
        return;
    };
    if !std::arch::is_x86_feature_detected!("avx512f") {
        debug_assert!(false, "avx512 packed kernel selected without avx512f");
        return;
    }
    // SAFETY: avx512f was detected just above. The packed lanes hold `groups * dim` aligned
    // 16-float lines (a `PackedQueries` invariant); every row pointer the kernel forms is
    // `rows + r * row_stride + k` with r < nrows, k < dim, and every write is
    // `out[q * nrows + r]` with q < nq: inside the bounds checked above. The kernel reads
    // only the shared slices (nothing writes them while they are borrowed) and writes only
    // through `out`, which the `&mut` makes exclusive to this call.
    unsafe { dot_many_packed_avx512(&shape) }
}

/// # Safety
/// AVX-512F available; `shape` as `dot_many_packed_checked` checked it.
#[target_feature(enable = "avx512f")]
unsafe fn dot_many_packed_avx512(shape: &PackedCall) {
    for g in 0..shape.nq.div_ceil(16) {
        let mut r = 0;
        while r < shape.nrows {
            let rr = (shape.nrows - r).min(TILE_ROWS);
            // SAFETY: r + rr <= nrows and g < groups: the tile is inside the shape.
            unsafe {
                match rr {
                    TILE_ROWS => tile::<TILE_ROWS>(shape, g, r),
                    15 => tile::<15>(shape, g, r),
                    14 => tile::<14>(shape, g, r),
                    13 => tile::<13>(shape, g, r),
                    12 => tile::<12>(shape, g, r),
                    11 => tile::<11>(shape, g, r),
                    10 => tile::<10>(shape, g, r),
                    9 => tile::<9>(shape, g, r),
                    8 => tile::<8>(shape, g, r),
                    7 => tile::<7>(shape, g, r),
                    6 => tile::<6>(shape, g, r),
                    5 => tile::<5>(shape, g, r),
                    4 => tile::<4>(shape, g, r),
                    3 => tile::<3>(shape, g, r),
                    2 => tile::<2>(shape, g, r),
                    _ => tile::<1>(shape, g, r),
                }
            }
            r += rr;
        }
    }
}

/// Scores rows `r..r + R` against the sixteen queries of group `g`.
///
/// # Safety
/// AVX-512F available; rows `r..r + R` are inside `shape` and `g < nq.div_ceil(16)`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize>(shape: &PackedCall, g: usize, r: usize) {
    let dim = shape.dim;
    // SAFETY: (all pointer arithmetic, loads and stores below) row i of the tile starts at
    // `rp + (r + i) * row_stride` and is read at offsets k < dim; the group's lines start at
    // `lanes + g * dim * 16`, 64-byte aligned, and line k < dim is read whole. Writes go to
    // `out[(16 g + j) * nrows + r + i]` for 16 g + j < nq only, inside the checked output,
    // which the caller's `&mut` borrow keeps exclusive to this call. Prefetch addresses are
    // formed with `wrapping_add` and may lie past the rows; a prefetch is a hint that neither
    // faults nor reads into any Rust value.
    unsafe {
        let rows: [*const f32; R] =
            std::array::from_fn(|i| shape.rp.add((r + i) * shape.row_stride));
        let lines = shape.lanes.add(g * dim * 16);
        let mut total = [_mm512_setzero_ps(); R];
        let mut k = 0;
        while k < dim {
            let end = (k + CHUNK).min(dim);
            let mut acc = [_mm512_setzero_ps(); R];
            // Whole lines of the rows: sixteen components per row, and a prefetch of one
            // line of the next tile (the rows that follow in memory) per step.
            while k + 16 <= end {
                for u in 0..16 {
                    let x = _mm512_load_ps(lines.add((k + u) * 16));
                    for i in 0..R {
                        let v = _mm512_set1_ps(*rows[i].add(k + u));
                        acc[i] = _mm512_fmadd_ps(v, x, acc[i]);
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
                let x = _mm512_load_ps(lines.add(k * 16));
                for i in 0..R {
                    let v = _mm512_set1_ps(*rows[i].add(k));
                    acc[i] = _mm512_fmadd_ps(v, x, acc[i]);
                }
                k += 1;
            }
            for i in 0..R {
                total[i] = _mm512_add_ps(total[i], acc[i]);
            }
        }
        let queries = (shape.nq - g * 16).min(16);
        let mut lane = [0.0f32; 16];
        for (i, t) in total.iter().enumerate() {
            _mm512_storeu_ps(lane.as_mut_ptr(), *t);
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

    /// Every tile remainder (rows 1..=25), partial and several query groups (1..=33), dims
    /// around the line and chunk sizes, strides wider than dim and rows off any 64-byte
    /// boundary, against the scalar reference.
    #[test]
    fn matches_scalar_on_every_tile_shape() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut rng = Rng::new(0x9ac);
        for dim in [1usize, 7, 15, 16, 17, 100, 127, 128, 129, 384, 1536] {
            for offset in [0usize, 3] {
                let stride = dim + 5;
                for nq in [1usize, 2, 15, 16, 17, 31, 32, 33] {
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
