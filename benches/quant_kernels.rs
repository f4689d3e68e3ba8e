//! Code-scoring throughput: `Codebook::score_block` over one block of rows for int8 and
//! binary codes on every kernel this CPU runs, beside the f32 dot product over the same rows
//! (`Kernels::best()`, pairwise per row and the multi-query kernel with one query), at the two
//! reference dimensions. Throughput is rows per second; the ratios to the f32 lines are
//! the point.
//!
//! Then one streaming case the block cases cannot show: the int8 scan of 1,000,000 x 384
//! codes held as the engine holds them (a `CodeTable`), in the scan's blocks, beside a plain
//! read of the same bytes in the same run (the memory's limit for one thread).
//!
//! `cargo bench --bench quant_kernels` (filter: `-- quant/d384`; `-- quant/stream` for the
//! streaming case alone, which any other filter skips).

#[cfg(not(target_arch = "wasm32"))]
mod common;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{Criterion, Throughput};
    use srvdb::distance::Kernels;
    use srvdb::format::RowLayout;
    use srvdb::quant::codes::{CodeTable, CODE_CHUNK_ROWS};
    use srvdb::quant::index::CODE_BLOCK_BYTES;
    use srvdb::quant::{Codebook, Kernel, Quantization};
    use srvdb::testing::Rng;
    use srvdb::Metric;
    use std::hint::black_box;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

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

    /// Rows of the streaming case under `cargo bench` (20,000 under `cargo test`).
    const STREAM_ROWS: usize = 1_000_000;

    /// One thread scores every code of a 1M-row int8 table block by block, and reads the
    /// same blocks plainly, alternately, 10 passes each; prints the medians and the ratio.
    fn stream(full: bool) {
        let (rows, dim, passes) = if full {
            (STREAM_ROWS, 384, 10)
        } else {
            (20_000, 384, 1)
        };
        let mut rng = Rng::new(0x5eed);
        let sample = rng.unit_vectors(1024, dim);
        let book = Codebook::train(
            Quantization::Int8,
            Metric::Cosine,
            dim,
            sample.chunks_exact(dim).map(|r| (r, norm(r))),
        );
        let len = book.code_len();
        let mut table = CodeTable::new(Arc::new(book));
        let book = Arc::clone(table.codebook());
        // Random code bytes: the kernel's time does not depend on their values.
        let mut batch = vec![0u8; CODE_CHUNK_ROWS * len];
        let mut left = rows;
        while left > 0 {
            let n = left.min(CODE_CHUNK_ROWS);
            for b in batch[..n * len].iter_mut() {
                *b = rng.below(256) as u8;
            }
            table.push_codes(&batch[..n * len]);
            left -= n;
        }
        let query = rng.unit_vectors(1, dim);
        let prepared = book.prepare(&query, norm(&query));
        // Blocks as the code scan cuts them (`QuantizedIndex`).
        let block_rows = CODE_BLOCK_BYTES / len;
        let blocks = table.blocks(rows as u64, block_rows);
        let mut out = vec![0f32; block_rows];
        let mut score = || {
            let start = Instant::now();
            for block in &blocks {
                book.score_block(&prepared, block.codes, &mut out[..block.rows]);
                black_box(&out);
            }
            start.elapsed().as_secs_f64()
        };
        let read = || {
            let start = Instant::now();
            let mut total = 0f32;
            for block in &blocks {
                // Codes start on 4-byte boundaries (a 388-byte stride); any tail bytes are
                // left out of the read, a few per block.
                let words = block.codes.len() / 4;
                match bytemuck::try_cast_slice::<u8, f32>(&block.codes[..4 * words]) {
                    Ok(floats) => total += super::common::sum_f32(black_box(floats)),
                    Err(e) => panic!("a block of codes is not 4-byte aligned ({e}): no plain read"),
                }
            }
            black_box(total);
            start.elapsed().as_secs_f64()
        };
        score();
        read();
        let (mut scored, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..passes {
            scored.push(score());
            plain.push(read());
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (s, r) = (median(&mut scored), median(&mut plain));
        let bytes = (rows * len) as f64;
        println!(
            "quant/stream int8 {rows} x {dim} ({} kernel, one thread, median of {passes}): \
             score {:.2} ms ({:.1} ns/row, {:.1} GB/s), plain read {:.2} ms ({:.1} GB/s), \
             score / read {:.2}x",
            Kernel::best().name(),
            s * 1e3,
            s * 1e9 / rows as f64,
            bytes / s / 1e9,
            r * 1e3,
            bytes / r / 1e9,
            s / r,
        );
    }

    pub fn main() {
        let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
        if filter.is_none_or(|f| "quant/stream".contains(f.as_str())) {
            stream(super::common::bench_mode());
        }
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
