//! Code-scoring throughput: `Codebook::score_block` over one block of rows for int8 and
//! binary codes on every kernel this CPU runs, beside the f32 dot product over the same rows
//! (`Kernels::best()`, pairwise per row and the multi-query kernel with one query), at the two
//! reference dimensions. Throughput is rows per second; the ratios to the f32 lines are
//! the point.
//!
//! `cargo bench --bench quant_kernels` (filter: `-- quant/d384`).

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{Criterion, Throughput};
    use srvdb::distance::Kernels;
    use srvdb::format::RowLayout;
    use srvdb::quant::{Codebook, Kernel, Quantization};
    use srvdb::testing::Rng;
    use srvdb::Metric;
    use std::hint::black_box;
    use std::time::Duration;

    const DIMS: [usize; 2] = [384, 1536];
    /// Rows per block: the middle of what the code scan hands `score_block` (1-16k).
    const ROWS: usize = 4096;

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    fn score_block(c: &mut Criterion) {
        for dim in DIMS {
            let mut rng = Rng::new(0x9a47 + dim as u64);
            let layout = RowLayout::new(dim as u32);
            let stride = layout.stride_f32;
            let data = rng.unit_vectors(ROWS, dim);
            // The rows as `vectors.bin` holds them: components, norm, padding.
            let mut rows = vec![0f32; ROWS * stride];
            for (src, dst) in data.chunks_exact(dim).zip(rows.chunks_exact_mut(stride)) {
                dst[..dim].copy_from_slice(src);
                dst[dim] = norm(src);
            }
            let query = rng.unit_vectors(1, dim);
            let mut out = vec![0f32; ROWS];
            let mut g = c.benchmark_group(format!("quant/d{dim}"));
            g.throughput(Throughput::Elements(ROWS as u64));

            let f32k = Kernels::best();
            g.bench_function("f32 dot per row", |b| {
                b.iter(|| {
                    for (row, o) in rows.chunks_exact(stride).zip(out.iter_mut()) {
                        *o = f32k.dot(&query, &row[..dim]);
                    }
                    black_box(&out);
                })
            });
            g.bench_function("f32 dot_many (1 query)", |b| {
                b.iter(|| {
                    f32k.dot_many(&query, 1, &rows, ROWS, stride, dim, &mut out);
                    black_box(&out);
                })
            });

            for quantization in [Quantization::Int8, Quantization::Binary] {
                let book = Codebook::train(
                    quantization,
                    Metric::Cosine,
                    dim,
                    data.chunks_exact(dim).map(|r| (r, norm(r))),
                );
                let len = book.code_len();
                let mut codes = vec![0u8; ROWS * len];
                for (r, code) in data.chunks_exact(dim).zip(codes.chunks_exact_mut(len)) {
                    book.encode(r, norm(r), code);
                }
                let prepared = book.prepare(&query, norm(&query));
                // As the scan holds them: binary codes in groups of 32 rows.
                let codes = book.scan_layout(&codes).into_owned();
                for kernel in Kernel::available() {
                    let name = format!("{} {}", quantization.name(), kernel.name());
                    g.bench_function(name, |b| {
                        b.iter(|| {
                            book.score_block_with(kernel, &prepared, &codes, &mut out);
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
        score_block(&mut c);
        c.final_summary();
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
