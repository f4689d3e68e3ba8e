//! Multi-query dot products with AVX-512F: a register tile of `TILE_ROWS` rows x `TILE_QUERIES`
//! queries of 16-lane accumulators. Each step of 16 components loads every row of the tile and
//! every query of the tile once and does one FMA per (row, query) pair, so a 4 x 4 tile does
//! sixteen FMAs for eight loads. The loop runs over row tiles outside and query tiles inside:
//! the few rows of a tile stay in L1 while every query of the group passes over them, so each
//! row is read from L2 or memory once per group instead of once per query tile. Each step
//! prefetches a line of the next row tile, spread over all the query tiles. Components
//! past the last multiple of 16 are read with masked loads, so there is no scalar tail.

use std::arch::x86_64::*;

/// Rows per register tile.
const TILE_ROWS: usize = 4;
/// Queries per register tile.
const TILE_QUERIES: usize = 4;

/// Safe entry point; selected only after `avx512f` was detected (see `multi_dot_for_cpu`).
/// Checks every slice bound once, up front.
pub(crate) fn dot_many_checked(
    queries: &[f32],
    nq: usize,
    rows: &[f32],
    nrows: usize,
    row_stride: usize,
    dim: usize,
    out: &mut [f32],
) {
    if !super::dot_many_shapes_ok(queries, nq, rows, nrows, row_stride, dim, out) {
        // Contract broken by a caller inside the crate; compute nothing rather than read out of
        // bounds. Tests compare against the scalar kernel, so this cannot go unnoticed.
        debug_assert!(false, "avx512 dot_many_checked: bad shapes");
        return;
    }
    if !std::arch::is_x86_feature_detected!("avx512f") {
        debug_assert!(false, "avx512 dot_many_checked selected without avx512f");
        return;
    }
    // SAFETY: avx512f was detected just above. Every pointer the kernel forms is
    // `queries + q * dim + k` or `rows + r * row_stride + k` with q < nq, r < nrows, k < dim,
    // and every write is `out[q * nrows + r]`: inside the bounds checked above. The kernel
    // reads only the shared slices and writes only through `out`, which the `&mut` makes
    // exclusive to this call, so concurrent callers cannot race with it.
    unsafe { dot_many_avx512(queries, nq, rows, nrows, row_stride, dim, out) }
}

/// # Safety
/// The CPU supports AVX-512F, and the shapes satisfy the checks in `dot_many_checked`.
#[target_feature(enable = "avx512f")]
unsafe fn dot_many_avx512(
    queries: &[f32],
    nq: usize,
    rows: &[f32],
    nrows: usize,
    row_stride: usize,
    dim: usize,
    out: &mut [f32],
) {
    let shape = Shape {
        qp: queries.as_ptr(),
        rp: rows.as_ptr(),
        out: out.as_mut_ptr(),
        nq,
        nrows,
        row_stride,
        dim,
    };
    let mut r = 0;
    while r < nrows {
        let rr = (nrows - r).min(TILE_ROWS);
        let mut q = 0;
        while q < nq {
            let qq = (nq - q).min(TILE_QUERIES);
            // SAFETY: r + rr <= nrows and q + qq <= nq, so the tile is inside the shape, and
            // the caller guarantees avx512f.
            unsafe {
                match rr {
                    1 => by_queries::<1>(&shape, r, q, qq),
                    2 => by_queries::<2>(&shape, r, q, qq),
                    3 => by_queries::<3>(&shape, r, q, qq),
                    _ => by_queries::<TILE_ROWS>(&shape, r, q, qq),
                }
            }
            q += qq;
        }
        r += rr;
    }
}

/// Raw views of one `dot_many` call, valid as `dot_many_checked` checked them.
struct Shape {
    qp: *const f32,
    rp: *const f32,
    out: *mut f32,
    nq: usize,
    nrows: usize,
    row_stride: usize,
    dim: usize,
}

/// # Safety
/// AVX-512F available; rows `r..r + R` and queries `q..q + qq` are inside `shape`, and
/// `1 <= qq <= TILE_QUERIES`.
#[target_feature(enable = "avx512f")]
unsafe fn by_queries<const R: usize>(shape: &Shape, r: usize, q: usize, qq: usize) {
    // SAFETY: forwarded from this function's contract; each arm's Q equals qq.
    unsafe {
        match qq {
            1 => tile::<R, 1>(shape, r, q),
            2 => tile::<R, 2>(shape, r, q),
            3 => tile::<R, 3>(shape, r, q),
            _ => tile::<R, TILE_QUERIES>(shape, r, q),
        }
    }
}

/// Scores rows `r..r + R` against queries `q..q + Q`.
///
/// # Safety
/// AVX-512F available; rows `r..r + R` and queries `q..q + Q` are inside `shape`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize, const Q: usize>(shape: &Shape, r: usize, q: usize) {
    let dim = shape.dim;
    let full_end = dim - dim % 16;
    // SAFETY: (all pointer arithmetic, loads and stores below) row i of the tile starts at
    // `rp + (r + i) * row_stride` and query j at `qp + (q + j) * dim`; offsets k < full_end
    // read 16 components up to k + 15 < dim, and the masked tail reads only lanes below
    // dim - full_end, so every read is inside the row or query (masked-off lanes are not
    // accessed). Writes go to `out[(q + j) * nrows + r + i]`, inside the checked output, which
    // the caller's `&mut` borrow keeps exclusive to this call: no other thread touches it.
    // The prefetch address is formed with `wrapping_add` and may lie past the rows; a prefetch
    // is a hint that neither faults nor reads into any Rust value.
    unsafe {
        let rows: [*const f32; R] =
            std::array::from_fn(|i| shape.rp.add((r + i) * shape.row_stride));
        let qs: [*const f32; Q] = std::array::from_fn(|j| shape.qp.add((q + j) * dim));
        let mut acc = [[_mm512_setzero_ps(); Q]; R];
        let steps = full_end / 16;
        let query_tiles = shape.nq.div_ceil(TILE_QUERIES);
        let query_tile = q / TILE_QUERIES;
        let per_step = R.div_ceil(query_tiles);
        let mut k = 0;
        while k < full_end {
            let x: [__m512; Q] = std::array::from_fn(|j| _mm512_loadu_ps(qs[j].add(k)));
            for i in 0..R {
                let v = _mm512_loadu_ps(rows[i].add(k));
                for j in 0..Q {
                    acc[i][j] = _mm512_fmadd_ps(v, x[j], acc[i][j]);
                }
            }
            // Ask for the next row tile (the rows that follow in memory) a few lines per
            // step, spread over all the query tiles of this row tile: it arrives while they
            // run, without a burst of requests that the load queue would drop.
            let step = query_tile * steps + k / 16;
            for p in 0..per_step {
                let line = step * per_step + p;
                if line < R * steps {
                    let (i, col) = (line / steps, (line % steps) * 16);
                    _mm_prefetch::<_MM_HINT_T0>(
                        rows[i].wrapping_add(R * shape.row_stride + col) as *const i8
                    );
                }
            }
            k += 16;
        }
        // The tail: one masked step for the last dim % 16 components.
        let tail = dim - full_end;
        if tail > 0 {
            let mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
            let x: [__m512; Q] = std::array::from_fn(|j| _mm512_maskz_loadu_ps(mask, qs[j].add(k)));
            for i in 0..R {
                let v = _mm512_maskz_loadu_ps(mask, rows[i].add(k));
                for j in 0..Q {
                    acc[i][j] = _mm512_fmadd_ps(v, x[j], acc[i][j]);
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate() {
            for (j, a) in acc_row.iter().enumerate() {
                *shape.out.add((q + j) * shape.nrows + r + i) = _mm512_reduce_add_ps(*a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::check;
    use crate::testing::Rng;

    /// Every remainder path (rows 1..=9, queries 1..=9), dims that are and are not multiples
    /// of 16, strides wider than dim, and rows that start off any 64-byte boundary, against
    /// the scalar reference.
    #[test]
    fn matches_scalar_on_every_tile_shape() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut rng = Rng::new(0x512);
        for dim in [1usize, 7, 15, 16, 17, 31, 33, 100, 384, 385, 1536] {
            for offset in [0usize, 1, 3] {
                let stride = dim + 5;
                for nq in 1..=9usize {
                    for nrows in 1..=9usize {
                        let queries = rng.vectors(nq, dim);
                        let buf = rng.vectors(1, offset + nrows * stride);
                        let rows = &buf[offset..];
                        let mut out = vec![f32::NAN; nq * nrows];
                        dot_many_checked(&queries, nq, rows, nrows, stride, dim, &mut out);
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
