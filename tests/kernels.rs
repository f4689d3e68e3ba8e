//! Every kernel against the scalar f64 reference, for every dimension 1..=1100 and for
//! random values (proptest). A kernel that is fast but wrong fails here, not in a search.

mod common;
use common::{seed, Rng};
use proptest::prelude::*;
use srvdb::distance::{scalar, KernelKind, Kernels, MultiQuery, PackedQueries};

fn kinds() -> Vec<KernelKind> {
    let mut k = vec![KernelKind::Simd128];
    #[cfg(not(target_arch = "wasm32"))]
    k.push(KernelKind::SimSimd);
    k
}

/// f32 accumulation error bound, relative to the sum of magnitudes.
fn tolerance(a: &[f32], b: &[f32]) -> f64 {
    let mag: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 * *y as f64).abs())
        .sum();
    1e-5 * mag.max(1.0)
}

fn l2_tolerance(a: &[f32], b: &[f32]) -> f64 {
    let mag: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    1e-5 * mag.max(1.0)
}

#[test]
fn pairwise_kernels_match_scalar_for_every_dim_up_to_1100() {
    let mut rng = Rng::new(seed());
    for dim in 1..=1100usize {
        let a = rng.vectors(1, dim);
        let b = rng.vectors(1, dim);
        let want_dot = scalar::dot_f32_scalar(&a, &b) as f64;
        let want_l2 = scalar::l2sq_f32_scalar(&a, &b) as f64;
        for kind in kinds() {
            let k = Kernels::of(kind);
            let got = k.dot(&a, &b) as f64;
            assert!(
                (got - want_dot).abs() <= tolerance(&a, &b),
                "{kind:?} dot dim {dim}: {got} vs {want_dot} (seed {})",
                seed()
            );
            let got = k.l2sq(&a, &b) as f64;
            assert!(
                (got - want_l2).abs() <= l2_tolerance(&a, &b),
                "{kind:?} l2sq dim {dim}: {got} vs {want_l2} (seed {})",
                seed()
            );
        }
    }
}

#[test]
fn multi_query_dot_matches_scalar() {
    let mut rng = Rng::new(seed() ^ 1);
    // Odd query counts and row counts exercise every remainder path; strides wider than dim
    // mirror the padded rows of vectors.bin.
    for &(dim, nq, nrows) in &[
        (16, 1, 1),
        (17, 5, 3),
        (384, 7, 9),
        (1100, 4, 2),
        (33, 64, 13),
        (1536, 3, 5),
        // Tiles of the AVX-512 kernel: dims off a multiple of 16, 16 queries (the coalesced
        // group), row and query counts that leave every remainder.
        (31, 9, 7),
        (1537, 16, 5),
        (385, 6, 11),
        // From 64 queries up a group is one GEMM (where the multi-query kernel is not
        // AVX-512): its edges and a group wider than a tile.
        (384, 8, 9),
        (100, 300, 37),
        // Groups the packed kernel takes (12 queries of 1024 components and more): a partial
        // row tile, a second group of lanes half full.
        (1024, 12, 17),
        (1040, 23, 21),
    ] {
        let stride = dim + 16 - dim % 16;
        let queries = rng.vectors(nq, dim);
        let rows = rng.vectors(nrows, stride);
        // The dispatched set, then every multi-query kernel this CPU has, without the GEMM.
        let mut sets = vec![Kernels::best()];
        for m in MultiQuery::available() {
            sets.extend(Kernels::best().without_gemm().with_multi_query(m));
        }
        let check = |name: &str, out: &[f32]| {
            for q in 0..nq {
                for r in 0..nrows {
                    let a = &queries[q * dim..(q + 1) * dim];
                    let b = &rows[r * stride..r * stride + dim];
                    let want = scalar::dot_f32_scalar(a, b) as f64;
                    let got = out[q * nrows + r] as f64;
                    assert!(
                        (got - want).abs() <= tolerance(a, b),
                        "{name} dim {dim} q {q} r {r}: {got} vs {want} (seed {})",
                        seed()
                    );
                }
            }
        };
        for k in sets {
            let mut out = vec![f32::NAN; nq * nrows];
            k.dot_many(&queries, nq, &rows, nrows, stride, dim, &mut out);
            check(&format!("{:?}", k.multi_query()), &out);
        }
        // And the packed kernel, at every group size (whether or not a search would pick it).
        let best = Kernels::best();
        if best.has_packed() {
            let packed = PackedQueries::new(&queries, nq, dim);
            let mut out = vec![f32::NAN; nq * nrows];
            best.dot_many_packed(&packed, &rows, nrows, stride, &mut out);
            check("packed", &out);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn kernels_match_scalar_on_arbitrary_values(
        pairs in (1usize..1100).prop_flat_map(|d| (
            proptest::collection::vec(-1000.0f32..1000.0, d),
            proptest::collection::vec(-1000.0f32..1000.0, d),
        ))
    ) {
        let (a, b) = pairs;
        let want_dot = scalar::dot_f32_scalar(&a, &b) as f64;
        let want_l2 = scalar::l2sq_f32_scalar(&a, &b) as f64;
        for kind in kinds() {
            let k = Kernels::of(kind);
            prop_assert!((k.dot(&a, &b) as f64 - want_dot).abs() <= tolerance(&a, &b), "{:?} dot", kind);
            prop_assert!((k.l2sq(&a, &b) as f64 - want_l2).abs() <= l2_tolerance(&a, &b), "{:?} l2", kind);
        }
    }
}
