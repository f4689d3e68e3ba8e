//! The check both packed product kernels pass (`matmul_avx512.rs`, `matmul_avx2.rs`): odd
//! shapes (one row, one column, partial tiles and panels, `k` across slices) against a plain
//! f64 loop, with and without the fused GELU, and a refusal of mismatched shapes.

/// A kernel under test: packs `weight` (`n` rows of `k`), then `out (m x n) += a · W` (and the
/// GELU when asked); `None` when the CPU cannot run it.
pub(super) type Product =
    dyn Fn(&[f32], usize, usize, &mut [f32], &[f32], usize, bool) -> Option<Result<(), String>>;

/// Runs `product` over `shapes` (m, k, n) and compares every output with the f64 reference.
pub(super) fn check_odd_shapes(shapes: &[(usize, usize, usize)], product: &Product) {
    let mut seed = 0x9e37_79b9_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed % 2001) as f32 / 1000.0 - 1.0
    };
    for &(m, k, n) in shapes {
        let weight: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
        let start: Vec<f32> = (0..m * n).map(|_| next()).collect();
        let mut out = start.clone();
        let Some(done) = product(&weight, n, k, &mut out, &a, m, false) else {
            return;
        };
        done.unwrap();
        let mut activated = start.clone();
        product(&weight, n, k, &mut activated, &a, m, true)
            .unwrap()
            .unwrap();
        for r in 0..m {
            for j in 0..n {
                let mut want = f64::from(start[r * n + j]);
                let mut mag = want.abs();
                for kk in 0..k {
                    let p = f64::from(a[r * k + kk]) * f64::from(weight[j * k + kk]);
                    want += p;
                    mag += p.abs();
                }
                let got = f64::from(out[r * n + j]);
                assert!(
                    (got - want).abs() <= 1e-6 * mag.max(1.0),
                    "m {m} k {k} n {n} ({r}, {j}): {got} vs {want}"
                );
                // The scalar GELU (itself tested against erf's series) of the f64 sum.
                let gelu = f64::from(super::bert::gelu_one(want as f32));
                let got = f64::from(activated[r * n + j]);
                assert!(
                    (got - gelu).abs() <= 2e-6 * mag.max(1.0),
                    "gelu, m {m} k {k} n {n} ({r}, {j}): {got} vs {gelu}"
                );
            }
        }
        let mut out = start.clone();
        assert!(product(&weight, n, k, &mut out, &a[1..], m, false)
            .unwrap()
            .is_err());
    }
}
