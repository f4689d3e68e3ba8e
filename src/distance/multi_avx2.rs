//! Multi-query dot products with AVX2+FMA: a 4-query x 3-row register block (4 x 2 and single
//! pairs for the remainders), so every row load feeds four FMAs and twelve accumulators hide
//! the FMA latency. This is what makes a batch
//! of queries compute-bound instead of memory-bound. Pairwise SimSIMD kernels cannot do this:
//! they see one pair at a time.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Safe entry point; selected only after `avx2` and `fma` were detected (see
/// `multi_dot_for_cpu`). Checks every slice bound once, up front.
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
        debug_assert!(false, "dot_many_checked: bad shapes");
        return;
    }
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    {
        debug_assert!(false, "dot_many_checked selected without avx2+fma");
        return;
    }
    // SAFETY: avx2+fma detected just above; every pointer offset used below stays inside the
    // bounds checked above (q < nq, r < nrows, k < dim).
    unsafe { dot_many_avx2(queries, nq, rows, nrows, row_stride, dim, out) }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// # Safety
/// The CPU supports AVX2 and FMA, and the shapes satisfy the checks in `dot_many_checked`.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_many_avx2(
    queries: &[f32],
    nq: usize,
    rows: &[f32],
    nrows: usize,
    row_stride: usize,
    dim: usize,
    out: &mut [f32],
) {
    let qp = queries.as_ptr();
    let rp = rows.as_ptr();
    let simd_end = dim - dim % 8;
    let mut q = 0;
    while q + 4 <= nq {
        let q0 = qp.add(q * dim);
        let q1 = qp.add((q + 1) * dim);
        let q2 = qp.add((q + 2) * dim);
        let q3 = qp.add((q + 3) * dim);
        let mut r = 0;
        // 4 queries x 3 rows: twelve accumulators, and seven loads feed twelve FMAs (the 4 x 2
        // block below needs six for eight). Operands come from L2, whose bandwidth is what
        // bounds a small group, so fewer loads per FMA is the speed-up.
        while r + 3 <= nrows {
            let ra = rp.add(r * row_stride);
            let rb = rp.add((r + 1) * row_stride);
            let rc = rp.add((r + 2) * row_stride);
            let mut a = [_mm256_setzero_ps(); 4];
            let mut b = [_mm256_setzero_ps(); 4];
            let mut c = [_mm256_setzero_ps(); 4];
            let mut k = 0;
            while k < simd_end {
                let va = _mm256_loadu_ps(ra.add(k));
                let vb = _mm256_loadu_ps(rb.add(k));
                let vc = _mm256_loadu_ps(rc.add(k));
                for (j, qj) in [q0, q1, q2, q3].iter().enumerate() {
                    let x = _mm256_loadu_ps(qj.add(k));
                    a[j] = _mm256_fmadd_ps(va, x, a[j]);
                    b[j] = _mm256_fmadd_ps(vb, x, b[j]);
                    c[j] = _mm256_fmadd_ps(vc, x, c[j]);
                }
                k += 8;
            }
            for (j, qj) in [q0, q1, q2, q3].iter().enumerate() {
                let mut sums = [hsum(a[j]), hsum(b[j]), hsum(c[j])];
                for kk in simd_end..dim {
                    let y = *qj.add(kk);
                    sums[0] += *ra.add(kk) * y;
                    sums[1] += *rb.add(kk) * y;
                    sums[2] += *rc.add(kk) * y;
                }
                for (i, sum) in sums.into_iter().enumerate() {
                    *out.get_unchecked_mut((q + j) * nrows + r + i) = sum;
                }
            }
            r += 3;
        }
        while r + 2 <= nrows {
            let ra = rp.add(r * row_stride);
            let rb = rp.add((r + 1) * row_stride);
            let mut a0 = _mm256_setzero_ps();
            let mut a1 = _mm256_setzero_ps();
            let mut a2 = _mm256_setzero_ps();
            let mut a3 = _mm256_setzero_ps();
            let mut b0 = _mm256_setzero_ps();
            let mut b1 = _mm256_setzero_ps();
            let mut b2 = _mm256_setzero_ps();
            let mut b3 = _mm256_setzero_ps();
            let mut k = 0;
            while k < simd_end {
                let va = _mm256_loadu_ps(ra.add(k));
                let vb = _mm256_loadu_ps(rb.add(k));
                let x0 = _mm256_loadu_ps(q0.add(k));
                let x1 = _mm256_loadu_ps(q1.add(k));
                let x2 = _mm256_loadu_ps(q2.add(k));
                let x3 = _mm256_loadu_ps(q3.add(k));
                a0 = _mm256_fmadd_ps(va, x0, a0);
                a1 = _mm256_fmadd_ps(va, x1, a1);
                a2 = _mm256_fmadd_ps(va, x2, a2);
                a3 = _mm256_fmadd_ps(va, x3, a3);
                b0 = _mm256_fmadd_ps(vb, x0, b0);
                b1 = _mm256_fmadd_ps(vb, x1, b1);
                b2 = _mm256_fmadd_ps(vb, x2, b2);
                b3 = _mm256_fmadd_ps(vb, x3, b3);
                k += 8;
            }
            let mut sa = [hsum(a0), hsum(a1), hsum(a2), hsum(a3)];
            let mut sb = [hsum(b0), hsum(b1), hsum(b2), hsum(b3)];
            for kk in simd_end..dim {
                let xa = *ra.add(kk);
                let xb = *rb.add(kk);
                for (j, qj) in [q0, q1, q2, q3].iter().enumerate() {
                    let y = *qj.add(kk);
                    sa[j] += xa * y;
                    sb[j] += xb * y;
                }
            }
            for j in 0..4 {
                *out.get_unchecked_mut((q + j) * nrows + r) = sa[j];
                *out.get_unchecked_mut((q + j) * nrows + r + 1) = sb[j];
            }
            r += 2;
        }
        while r < nrows {
            for j in 0..4 {
                let s = dot_one(qp.add((q + j) * dim), rp.add(r * row_stride), dim, simd_end);
                *out.get_unchecked_mut((q + j) * nrows + r) = s;
            }
            r += 1;
        }
        q += 4;
    }
    while q < nq {
        for r in 0..nrows {
            let s = dot_one(qp.add(q * dim), rp.add(r * row_stride), dim, simd_end);
            *out.get_unchecked_mut(q * nrows + r) = s;
        }
        q += 1;
    }
}

/// # Safety
/// AVX2+FMA available; `a` and `b` are valid for `dim` reads.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_one(a: *const f32, b: *const f32, dim: usize, simd_end: usize) -> f32 {
    // Four accumulators: a single query is memory-bound only if the FMA chain is not the
    // bottleneck, and one accumulator (FMA latency 4) would make it one.
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut acc2 = _mm256_setzero_ps();
    let mut acc3 = _mm256_setzero_ps();
    let mut k = 0;
    while k + 32 <= simd_end {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(k)), _mm256_loadu_ps(b.add(k)), acc0);
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.add(k + 8)),
            _mm256_loadu_ps(b.add(k + 8)),
            acc1,
        );
        acc2 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.add(k + 16)),
            _mm256_loadu_ps(b.add(k + 16)),
            acc2,
        );
        acc3 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.add(k + 24)),
            _mm256_loadu_ps(b.add(k + 24)),
            acc3,
        );
        k += 32;
    }
    while k < simd_end {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(k)), _mm256_loadu_ps(b.add(k)), acc0);
        k += 8;
    }
    let mut s = hsum(_mm256_add_ps(
        _mm256_add_ps(acc0, acc1),
        _mm256_add_ps(acc2, acc3),
    ));
    for kk in simd_end..dim {
        s += *a.add(kk) * *b.add(kk);
    }
    s
}
