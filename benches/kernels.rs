//! Distance kernels: pairwise dot / squared L2 for each implementation, and the multi-query
//! `dot_many` the batch search uses, at the two reference dimensions.
//!
//! Pairwise throughput is `2 * dim * 4` bytes per call (both operands, hot in L1). `dot_many`
//! scores 64 queries against one block of rows sized like the flat index's blocks (256 KiB of
//! rows); it reports pairs per second, and bytes per second counted the same way as the
//! pairwise kernels (`2 * dim * 4` per pair) so the two are comparable.

mod common;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{BenchmarkId, Criterion, Throughput};
    use srvdb::distance::{KernelKind, Kernels, MultiQuery, PackedQueries};
    use srvdb::format::RowLayout;
    use srvdb::testing::Rng;
    use std::hint::black_box;
    use std::time::Duration;

    const DIMS: [usize; 2] = [384, 1536];
    const QUERIES: usize = 64;
    /// The flat index's block size.
    const BLOCK_BYTES: usize = 256 << 10;

    /// `n` random components starting on a 64-byte boundary (rows in `vectors.bin` are
    /// 64-byte aligned; this also keeps results from depending on where malloc put the data).
    struct Aligned {
        buf: Vec<f32>,
        start: usize,
        len: usize,
    }

    impl Aligned {
        fn random(rng: &mut Rng, len: usize) -> Self {
            let buf: Vec<f32> = (0..len + 16).map(|_| rng.f32()).collect();
            let start = buf.as_ptr().align_offset(64);
            assert!(start < 16, "f32 buffer cannot be 64-byte aligned");
            Aligned { buf, start, len }
        }

        fn get(&self) -> &[f32] {
            &self.buf[self.start..self.start + self.len]
        }
    }

    fn pairwise(c: &mut Criterion) {
        let kinds = [
            ("scalar", KernelKind::Scalar),
            ("simd128", KernelKind::Simd128),
            ("simsimd", KernelKind::SimSimd),
        ];
        for dim in DIMS {
            let mut rng = Rng::new(0x5eed_0000 + dim as u64);
            let a = Aligned::random(&mut rng, dim);
            let b = Aligned::random(&mut rng, dim);
            let (a, b) = (a.get(), b.get());
            let mut g = c.benchmark_group(format!("pair/d{dim}"));
            g.throughput(Throughput::Bytes((2 * dim * 4) as u64));
            for (name, kind) in kinds {
                let k = Kernels::of(kind);
                g.bench_function(BenchmarkId::new("dot", name), |bch| {
                    bch.iter(|| k.dot(black_box(a), black_box(b)))
                });
                g.bench_function(BenchmarkId::new("l2sq", name), |bch| {
                    bch.iter(|| k.l2sq(black_box(a), black_box(b)))
                });
            }
            g.finish();
        }
    }

    fn multi_query(c: &mut Criterion) {
        let best = Kernels::best();
        println!("Kernels::best() = {}", best.describe());
        for dim in DIMS {
            let layout = RowLayout::new(dim as u32);
            let stride = layout.stride_f32;
            let nrows = (BLOCK_BYTES / layout.stride_bytes()).max(1);
            let mut rng = Rng::new(0xb10c_0000 + dim as u64);
            let queries = Aligned::random(&mut rng, QUERIES * dim);
            let rows = Aligned::random(&mut rng, nrows * stride);
            let (queries, rows) = (queries.get(), rows.get());
            let mut out = vec![0.0f32; QUERIES * nrows];
            let mut g = c.benchmark_group(format!("dot_many/d{dim}"));
            // The default set, then each multi-query kernel this CPU has, at 64 queries (the
            // flat index's group) and 16 (the coalesced group of 16 callers).
            let mut sets = vec![("best".to_string(), best)];
            for m in MultiQuery::available() {
                if let Some(k) = best.without_gemm().with_multi_query(m) {
                    sets.push((m.name().to_string(), k));
                }
            }
            for nq in [QUERIES, 16, 12, 8] {
                let pairs = (nq * nrows) as u64;
                g.throughput(Throughput::ElementsAndBytes {
                    elements: pairs,
                    bytes: pairs * (2 * dim * 4) as u64,
                });
                // The packed kernel (queries packed once, off the clock, as a search does),
                // at every group size, so `PACKED_MIN_QUERIES` can be read off.
                if best.has_packed() {
                    let packed = PackedQueries::new(queries, nq, dim);
                    g.bench_function(format!("packed/{nq}q_x_{nrows}rows"), |bch| {
                        bch.iter(|| {
                            best.dot_many_packed(&packed, black_box(rows), nrows, stride, &mut out);
                            black_box(&out);
                        })
                    });
                }
                for (name, k) in &sets {
                    g.bench_function(format!("{name}/{nq}q_x_{nrows}rows"), |bch| {
                        bch.iter(|| {
                            k.dot_many(
                                black_box(queries),
                                nq,
                                black_box(rows),
                                nrows,
                                stride,
                                dim,
                                &mut out,
                            );
                            black_box(&out);
                        })
                    });
                }
            }
            g.finish();
        }
    }

    /// GEMM against the multi-query and packed kernels by group size, on a block of 1024 rows
    /// (the flat index's GEMM block): where `GEMM_MIN_QUERIES` comes from.
    fn gemm_vs_multi(c: &mut Criterion) {
        const ROWS: usize = 1024;
        let gemm = Kernels::best();
        // `multi` is the dispatched multi-query kernel; then each one this CPU has.
        let mut sets = vec![
            ("gemm".to_string(), gemm),
            ("multi".to_string(), Kernels::best().without_gemm()),
        ];
        for m in MultiQuery::available() {
            if let Some(k) = Kernels::best().without_gemm().with_multi_query(m) {
                sets.push((m.name().to_string(), k));
            }
        }
        for dim in DIMS {
            let stride = RowLayout::new(dim as u32).stride_f32;
            let mut rng = Rng::new(0x6e33 + dim as u64);
            let queries = Aligned::random(&mut rng, 256 * dim);
            let rows = Aligned::random(&mut rng, ROWS * stride);
            let (queries, rows) = (queries.get(), rows.get());
            let mut out = vec![0.0f32; 256 * ROWS];
            let mut g = c.benchmark_group(format!("gemm_vs_multi/d{dim}"));
            for nq in [4usize, 8, 16, 64, 128, 256] {
                g.throughput(Throughput::Elements((nq * ROWS) as u64));
                if gemm.has_packed() {
                    let packed = PackedQueries::new(queries, nq, dim);
                    g.bench_function(format!("packed/{nq}q"), |bch| {
                        bch.iter(|| {
                            gemm.dot_many_packed(&packed, black_box(rows), ROWS, stride, &mut out);
                            black_box(&out);
                        })
                    });
                }
                for (name, k) in &sets {
                    g.bench_function(format!("{name}/{nq}q"), |bch| {
                        bch.iter(|| {
                            k.dot_many_preferring_gemm(
                                black_box(queries),
                                nq,
                                black_box(rows),
                                ROWS,
                                stride,
                                dim,
                                &mut out,
                            );
                            black_box(&out);
                        })
                    });
                }
            }
            g.finish();
        }
    }

    pub fn main() {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .configure_from_args();
        pairwise(&mut c);
        multi_query(&mut c);
        gemm_vs_multi(&mut c);
        c.final_summary();
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
