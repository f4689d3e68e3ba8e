//! Many queries against a block of rows as one matrix product (`scores = Q · Rᵀ`), through the
//! `gemm` crate. A GEMM packs both operands into cache-sized panels and keeps a register tile
//! of partial sums, so it runs near the FMA peak where the 4 × 2 multi-query kernel is bound by
//! loads from L2. Worth it from a handful of queries up (see `GEMM_MIN_QUERIES`).

/// Same contract as [`super::MultiDotFn`]: `out[q * nrows + r]` = dot(query q, row r); queries
/// contiguous with stride `dim`, rows with stride `row_stride`. Checks every bound up front.
pub(crate) fn dot_many_gemm(
    queries: &[f32],
    nq: usize,
    rows: &[f32],
    nrows: usize,
    row_stride: usize,
    dim: usize,
    out: &mut [f32],
) {
    if !super::dot_many_shapes_ok(queries, nq, rows, nrows, row_stride, dim, out) {
        debug_assert!(false, "dot_many_gemm: bad shapes");
        return;
    }
    if nq == 0 || nrows == 0 {
        return;
    }
    if dim == 0 {
        out[..nq * nrows].fill(0.0);
        return;
    }
    let (Ok(nrows_i), Ok(stride_i), Ok(dim_i)) = (
        isize::try_from(nrows),
        isize::try_from(row_stride),
        isize::try_from(dim),
    ) else {
        debug_assert!(false, "dot_many_gemm: shape overflows isize");
        return;
    };
    // SAFETY: the bounds were checked above. `dst` is `nq × nrows` row-major (column stride 1,
    // row stride nrows) inside `out`; `lhs` is the `nq × dim` queries (row stride dim); `rhs`
    // is the `dim × nrows` transpose of the rows, read in place: element (k, r) is
    // `rows[r * row_stride + k]` (row stride 1, column stride row_stride), so the furthest
    // element read is `(nrows - 1) * row_stride + dim - 1 < rows.len()`. `read_dst` is false,
    // so `out` is only written. No other reference to `out` exists during the call.
    unsafe {
        gemm::gemm(
            nq,
            nrows,
            dim,
            out.as_mut_ptr(),
            1,
            nrows_i,
            false,
            queries.as_ptr(),
            1,
            dim_i,
            rows.as_ptr(),
            stride_i,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
