//! Multi-query dot products on 128-bit lanes (`wide::f32x4`): the wasm32 guest's batch kernel
//! (WebAssembly SIMD128 there, SSE natively, where tests check it against the scalar
//! reference). A tile of `Q` queries x `R` rows keeps `Q * R` accumulators, so
//! each row vector loaded feeds `Q` multiply-adds and each query vector `R`, where the
//! pairwise kernel loads both operands for every one.
//!
//! Tiles: 4 queries x 6 rows, then 4 x 2 and 4 x 1 for the rows left over; the queries left
//! over (fewer than 4, a single query included) go 1 query x 4 rows, then pairwise. 24
//! accumulators are more than the 16 vector registers cranelift has on x86_64, so some must
//! wait on the stack, yet in wasmtime this tile measured fastest of those tried (guest batch of 16
//! on 50,000 x 1536, vector-only component, one noisy 2-core VM, queries/s against 4 x 2 in
//! the same run: 4 x 6 1.45x; 4 x 8 level with 4 x 6; 4 x 4 1.2-1.4x; 8 x 2 1.2x; 4 x 3
//! 1.1-1.2x; 3 x 4 and 2 x 8 about 1.05x; 8 x 1 and 2 x 4 0.9-1.0x). Safe
//! code: every query and row is sliced once per tile and split into `[f32; 4]` chunks of one
//! common length, so the inner loop has no bounds checks.

use wide::f32x4;

use super::simd128::dot_f32_simd128;

/// Queries x rows of the main tile.
const QT: usize = 4;
const RT: usize = 6;
/// Rows per tile for a query left over.
const R1: usize = 4;

/// Same contract as [`super::MultiDotFn`]: `out[q * nrows + r]` = dot(query q, row r);
/// queries contiguous with stride `dim`, rows with stride `row_stride`. Checks every bound
/// once, up front; on a broken contract it writes nothing (a crate-internal caller's bug that
/// the kernel tests would show).
pub(crate) fn dot_many_simd128(
    queries: &[f32],
    nq: usize,
    rows: &[f32],
    nrows: usize,
    row_stride: usize,
    dim: usize,
    out: &mut [f32],
) {
    if !super::dot_many_shapes_ok(queries, nq, rows, nrows, row_stride, dim, out) {
        debug_assert!(false, "dot_many_simd128: bad shapes");
        return;
    }
    // In bounds after the check above: q < nq, r < nrows.
    let query = |q: usize| &queries[q * dim..(q + 1) * dim];
    let row = |r: usize| &rows[r * row_stride..r * row_stride + dim];
    let mut q = 0;
    while q + QT <= nq {
        let qs: [&[f32]; QT] = core::array::from_fn(|j| query(q + j));
        let mut r = 0;
        while r + RT <= nrows {
            let sums = tile::<QT, RT>(qs, core::array::from_fn(|i| row(r + i)));
            for (j, s) in sums.iter().enumerate() {
                out[(q + j) * nrows + r..(q + j) * nrows + r + RT].copy_from_slice(s);
            }
            r += RT;
        }
        while r + 2 <= nrows {
            let sums = tile::<QT, 2>(qs, [row(r), row(r + 1)]);
            for (j, s) in sums.iter().enumerate() {
                out[(q + j) * nrows + r..(q + j) * nrows + r + 2].copy_from_slice(s);
            }
            r += 2;
        }
        if r < nrows {
            let sums = tile::<QT, 1>(qs, [row(r)]);
            for (j, s) in sums.iter().enumerate() {
                out[(q + j) * nrows + r] = s[0];
            }
        }
        q += QT;
    }
    while q < nq {
        let qs = [query(q)];
        let mut r = 0;
        while r + R1 <= nrows {
            let [sums] = tile::<1, R1>(qs, core::array::from_fn(|i| row(r + i)));
            out[q * nrows + r..q * nrows + r + R1].copy_from_slice(&sums);
            r += R1;
        }
        while r < nrows {
            out[q * nrows + r] = dot_f32_simd128(qs[0], row(r));
            r += 1;
        }
        q += 1;
    }
}

/// The dot products of `Q` queries with `R` rows, all of one length: `[q][r]`.
#[inline(always)]
fn tile<const Q: usize, const R: usize>(qs: [&[f32]; Q], rs: [&[f32]; R]) -> [[f32; R]; Q] {
    let dim = qs.first().map_or(0, |s| s.len());
    let qc: [&[[f32; 4]]; Q] = core::array::from_fn(|j| qs[j].as_chunks::<4>().0);
    let rc: [&[[f32; 4]]; R] = core::array::from_fn(|i| rs[i].as_chunks::<4>().0);
    // One common length for every operand (they all have `dim` components), so the indexing
    // below needs no bounds checks.
    let n = qc.iter().chain(&rc).map(|c| c.len()).min().unwrap_or(0);
    let qc: [&[[f32; 4]]; Q] = qc.map(|c| &c[..n]);
    let rc: [&[[f32; 4]]; R] = rc.map(|c| &c[..n]);
    let mut acc = [[f32x4::ZERO; R]; Q];
    for k in 0..n {
        let rv: [f32x4; R] = core::array::from_fn(|i| f32x4::from(rc[i][k]));
        for j in 0..Q {
            let x = f32x4::from(qc[j][k]);
            for i in 0..R {
                acc[j][i] = madd(x, rv[i], acc[j][i]);
            }
        }
    }
    let mut sums = [[0.0f32; R]; Q];
    for j in 0..Q {
        for i in 0..R {
            let mut s = acc[j][i].reduce_add();
            for kk in n * 4..dim {
                s += qs[j].get(kk).copied().unwrap_or(0.0) * rs[i].get(kk).copied().unwrap_or(0.0);
            }
            sums[j][i] = s;
        }
    }
    sums
}

/// `a * b + c`: a fused (or, under relaxed SIMD, either) multiply-add where the build has one,
/// else a multiply then an add.
#[inline(always)]
fn madd(a: f32x4, b: f32x4, c: f32x4) -> f32x4 {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    {
        use core::arch::wasm32::{f32x4_relaxed_madd, v128};
        let (a, b, c): (v128, v128, v128) = (a.into(), b.into(), c.into());
        f32x4_relaxed_madd(a, b, c).into()
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "relaxed-simd")))]
    {
        a.mul_add(b, c)
    }
}

#[cfg(test)]
mod tests {
    use super::dot_many_simd128;
    use crate::distance::check;

    /// Values in [-1, 1) from a fixed-seed xorshift: enough spread to catch a misplaced lane.
    fn values(n: usize, state: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Every tile and remainder path: 1..=9 queries (4-query tiles and 1-3 left over), 1..=13
    /// rows (two 6-row tiles, then 2- and 1-row remainders), dims 1..=70 (below one chunk, off a multiple of 4),
    /// rows strided wider than `dim` with junk in the padding. Against the f64 scalar reference.
    #[test]
    fn matches_scalar_reference_on_odd_shapes() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for dim in 1..=70usize {
            for nq in 1..=9usize {
                for nrows in 1..=13usize {
                    let stride = dim + 1 + dim % 5;
                    let queries = values(nq * dim, &mut state);
                    let rows = values((nrows - 1) * stride + dim, &mut state);
                    let mut out = vec![f32::NAN; nq * nrows];
                    dot_many_simd128(&queries, nq, &rows, nrows, stride, dim, &mut out);
                    let context = format!("dim {dim} nq {nq} nrows {nrows}");
                    check::dot_many_output(&queries, nq, &rows, nrows, stride, dim, &out, &context);
                }
            }
        }
    }

    /// A broken shape contract writes nothing instead of reading out of bounds (release
    /// builds; debug builds assert).
    #[test]
    #[cfg(not(debug_assertions))]
    fn bad_shapes_write_nothing() {
        let queries = vec![1.0f32; 8];
        let rows = vec![1.0f32; 7];
        let mut out = vec![f32::NAN; 4];
        dot_many_simd128(&queries, 2, &rows, 2, 4, 4, &mut out);
        assert!(out.iter().all(|x| x.is_nan()));
    }
}
