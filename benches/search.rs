//! End-to-end exact search on a persisted, memory-mapped database: single queries in a rayon
//! pool of 1 and 2 threads, and a batch of 64 queries with 2 threads, on the two reference
//! datasets (50 000 x 1536 and 100 000 x 384, cosine, random unit vectors).
//!
//! After criterion, a summary re-measures with `Instant` and compares each time with the
//! exact-scan floor (bytes read / sequential read bandwidth measured in this process).
//! Under `cargo test` the datasets shrink to a few hundred rows: a smoke test only.

mod common;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::common::{
        bench_mode, measure_read, resident_buffer, scan_bytes, Bandwidth, DATASETS,
    };
    use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
    use rayon::ThreadPool;
    use srvdb::distance::Kernels;
    use srvdb::format::{RowLayout, HEADER_BYTES};
    use srvdb::testing::Rng;
    use srvdb::{Database, Metric, OpenOptions, Store};
    use std::hint::black_box;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    const K: usize = 10;
    const BATCH: usize = 64;
    const INSERT_BATCH: usize = 1000;
    const THREADS: [usize; 2] = [1, 2];

    struct Dataset {
        rows: usize,
        dim: usize,
        db: Database,
        /// `BATCH` unit queries, back to back.
        queries: Vec<f32>,
        vectors_file: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Dataset {
        fn name(&self) -> String {
            format!("{}x{}", self.rows, self.dim)
        }

        fn query(&self, i: usize) -> &[f32] {
            let i = i % BATCH;
            &self.queries[i * self.dim..(i + 1) * self.dim]
        }
    }

    fn build(rows: usize, dim: usize) -> Dataset {
        let start = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(
            dir.path(),
            OpenOptions::default().with_metric(Metric::Cosine),
        )
        .expect("open database");
        let mut rng = Rng::new(0xdb00_0000 ^ ((rows as u64) << 16) ^ dim as u64);
        let mut first_vector = Vec::new();
        let mut at = 0;
        while at < rows {
            let n = INSERT_BATCH.min(rows - at);
            let ids: Vec<String> = (at..at + n).map(|i| format!("v{i}")).collect();
            let vectors = rng.unit_vectors(n, dim);
            if at == 0 {
                first_vector = vectors[..dim].to_vec();
            }
            db.add(&ids, &vectors, &[]).expect("add");
            at += n;
        }
        db.persist().expect("persist");
        let queries = rng.unit_vectors(BATCH, dim);
        // Sanity: a stored vector finds itself first, and k hits come back.
        let hits = db.search(&first_vector, K).expect("search");
        assert_eq!(hits.len(), K.min(rows));
        assert_eq!(hits[0].id, "v0");
        let ds = Dataset {
            rows,
            dim,
            db,
            queries,
            vectors_file: dir.path().join("vectors.bin"),
            _dir: dir,
        };
        println!(
            "built {} ({:.0} MB of rows) in {:.1} s; kernels: {}",
            ds.name(),
            scan_bytes(rows, dim).1 / 1e6,
            start.elapsed().as_secs_f64(),
            ds.db.kernel_description()
        );
        ds
    }

    fn pool(threads: usize) -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool")
    }

    fn bench(c: &mut Criterion, ds: &Dataset, pools: &[ThreadPool]) {
        let mut g = c.benchmark_group(format!("search/{}", ds.name()));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Elements(1));
        for (t, pool) in THREADS.iter().zip(pools) {
            g.bench_function(BenchmarkId::new("single_k10", format!("{t}t")), |b| {
                b.iter_custom(|iters| {
                    pool.install(|| {
                        let start = Instant::now();
                        for i in 0..iters as usize {
                            black_box(ds.db.search(black_box(ds.query(i)), K).expect("search"));
                        }
                        start.elapsed()
                    })
                })
            });
        }
        g.throughput(Throughput::Elements(BATCH as u64));
        let pool2 = &pools[1];
        g.bench_function(BenchmarkId::new("batch64_k10", "2t"), |b| {
            b.iter_custom(|iters| {
                pool2.install(|| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(
                            ds.db
                                .search_batch(black_box(&ds.queries), K)
                                .expect("search_batch"),
                        );
                    }
                    start.elapsed()
                })
            })
        });
        g.finish();
    }

    /// Median and minimum, in ms, of `iters` timed calls of `f` after `warm` untimed ones.
    fn time_ms(warm: usize, iters: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
        for i in 0..warm {
            f(i);
        }
        let mut ms: Vec<f64> = (0..iters)
            .map(|i| {
                let start = Instant::now();
                f(i);
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2], ms[0])
    }

    /// The database's own `vectors.bin`, mapped read-only (header and committed rows).
    fn map_rows(ds: &Dataset) -> Option<memmap2::Mmap> {
        let file = std::fs::File::open(&ds.vectors_file).ok()?;
        let len = RowLayout::new(ds.dim as u32).file_len(ds.rows as u64) as usize;
        // SAFETY: a read-only mapping of a file no one writes while it is mapped (the database
        // is idle during the summary and only ever appends past the mapped length).
        unsafe { memmap2::MmapOptions::new().len(len).map(&file) }.ok()
    }

    /// Read bandwidth of the `vectors.bin` mapping (page-cache pages), for comparison with the
    /// anonymous buffer.
    fn file_bandwidth(ds: &Dataset, threads: usize, reps: usize) -> Option<Bandwidth> {
        let map = map_rows(ds)?;
        let floats: &[f32] = bytemuck::try_cast_slice(&map[..]).ok()?;
        Some(measure_read(floats, threads, reps))
    }

    /// A bare scan of the mapped rows with `Kernels::best().dot` (no top-k, no rayon: each of
    /// `threads` threads takes a contiguous share): separates "kernel + memory" from the rest of
    /// the engine. Median ms of `iters` scans.
    fn kernel_scan_ms(ds: &Dataset, threads: usize, iters: usize) -> Option<f64> {
        let map = map_rows(ds)?;
        let floats: &[f32] = bytemuck::try_cast_slice(&map[HEADER_BYTES..]).ok()?;
        let stride = RowLayout::new(ds.dim as u32).stride_f32;
        let rows = &floats[..ds.rows * stride];
        let kernels = Kernels::best();
        let q = ds.query(0);
        let per_thread = ds.rows.div_ceil(threads) * stride;
        let (median, _) = time_ms(1, iters, |_| {
            let best = std::thread::scope(|s| {
                let handles: Vec<_> = rows
                    .chunks(per_thread)
                    .map(|part| {
                        s.spawn(move || {
                            part.chunks_exact(stride)
                                .map(|row| kernels.dot(q, &row[..q.len()]))
                                .fold(f32::NEG_INFINITY, f32::max)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("scan thread panicked"))
                    .fold(f32::NEG_INFINITY, f32::max)
            });
            black_box(best);
        });
        Some(median)
    }

    fn summary(datasets: &[Dataset], pools: &[ThreadPool], full: bool) {
        let (buf_mib, bw_reps, single_iters, batch_iters) = if full {
            (1024, 6, 20, 8)
        } else {
            (16, 1, 2, 1)
        };
        let buf = resident_buffer(buf_mib << 20);
        let bws: Vec<Bandwidth> = THREADS
            .iter()
            .map(|&t| measure_read(&buf, t, bw_reps))
            .collect();
        drop(buf);

        println!("\n==== summary (Instant; single: median of {single_iters}, batch: median of {batch_iters}) ====");
        for bw in &bws {
            println!(
                "read bandwidth, {buf_mib} MiB anonymous buffer, {} thread(s): best {:.2} GB/s, median {:.2} GB/s",
                bw.threads, bw.best_gbs, bw.median_gbs
            );
        }
        for ds in datasets {
            for &t in &THREADS {
                if let Some(bw) = file_bandwidth(ds, t, bw_reps.min(4)) {
                    println!(
                        "read bandwidth, {} vectors.bin mmap, {t} thread(s): best {:.2} GB/s, median {:.2} GB/s",
                        ds.name(),
                        bw.best_gbs,
                        bw.median_gbs
                    );
                }
            }
        }
        println!("floors use the best anonymous-buffer bandwidth at the same thread count;");
        println!("bare scan = median ms of Kernels::best().dot over the mapped rows, plain threads, no top-k");
        println!(
            "{:>12} {:>3} | {:>9} {:>9} | {:>9} {:>6} | {:>10} {:>6} | {:>10} {:>8} | {:>9}",
            "dataset",
            "thr",
            "single ms",
            "(min)",
            "floor Nd4",
            "ratio",
            "floor strd",
            "ratio",
            "batch ms/q",
            "sgl/bat",
            "bare scan"
        );
        for ds in datasets {
            let (issue_bytes, stored_bytes) = scan_bytes(ds.rows, ds.dim);
            for ((&t, pool), bw) in THREADS.iter().zip(pools).zip(&bws) {
                let (single, single_min) = pool.install(|| {
                    time_ms(3, single_iters, |i| {
                        black_box(ds.db.search(ds.query(i), K).expect("search"));
                    })
                });
                let (batch, _) = pool.install(|| {
                    time_ms(1, batch_iters, |_| {
                        black_box(ds.db.search_batch(&ds.queries, K).expect("search_batch"));
                    })
                });
                let batch_per_q = batch / BATCH as f64;
                let bare = kernel_scan_ms(ds, t, single_iters).unwrap_or(f64::NAN);
                let floor_issue = bw.floor_ms(issue_bytes);
                let floor_stored = bw.floor_ms(stored_bytes);
                println!(
                    "{:>12} {:>3} | {:>9.3} {:>9.3} | {:>9.3} {:>6.2} | {:>10.3} {:>6.2} | {:>10.3} {:>8.2} | {:>9.3}",
                    ds.name(),
                    t,
                    single,
                    single_min,
                    floor_issue,
                    single / floor_issue,
                    floor_stored,
                    single / floor_stored,
                    batch_per_q,
                    single / batch_per_q,
                    bare
                );
            }
        }
    }

    /// Queries per second from `callers` OS threads each calling `search` (the process's global
    /// rayon pool does the scanning), with query coalescing on and off.
    fn concurrent(datasets: &[Dataset], full: bool) {
        const CALLERS: usize = 16;
        let per_caller = if full { 50 } else { 4 };
        println!("\n==== {CALLERS} caller threads, single searches, k = {K} ====");
        println!(
            "{:>12} | {:>13} {:>13} {:>8} | {:>17}",
            "dataset", "coalesced QPS", "separate QPS", "ratio", "queries per scan"
        );
        for ds in datasets {
            let mut qps = [0.0f64; 2];
            let mut per_scan = 0.0;
            for (slot, on) in [(0, true), (1, false)] {
                ds.db.set_coalesce_searches(on);
                let before = ds.db.coalesce_stats();
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for c in 0..CALLERS {
                        scope.spawn(move || {
                            for i in 0..per_caller {
                                black_box(
                                    ds.db
                                        .search(ds.query(c * per_caller + i), K)
                                        .expect("search"),
                                );
                            }
                        });
                    }
                });
                qps[slot] = (CALLERS * per_caller) as f64 / start.elapsed().as_secs_f64();
                if on {
                    let after = ds.db.coalesce_stats();
                    per_scan = (after.queries - before.queries) as f64
                        / (after.scans - before.scans).max(1) as f64;
                }
            }
            ds.db.set_coalesce_searches(true);
            println!(
                "{:>12} | {:>13.0} {:>13.0} {:>8.2} | {:>17.1}",
                ds.name(),
                qps[0],
                qps[1],
                qps[0] / qps[1],
                per_scan
            );
        }
    }

    pub fn main() {
        let full = bench_mode();
        let sizes: Vec<(usize, usize)> = if full {
            DATASETS.to_vec()
        } else {
            DATASETS.iter().map(|&(n, d)| (n / 100, d)).collect()
        };
        let pools: Vec<ThreadPool> = THREADS.iter().map(|&t| pool(t)).collect();
        let datasets: Vec<Dataset> = sizes.iter().map(|&(n, d)| build(n, d)).collect();

        let mut c = Criterion::default().configure_from_args();
        for ds in &datasets {
            bench(&mut c, ds, &pools);
        }
        c.final_summary();
        summary(&datasets, &pools, full);
        concurrent(&datasets, full);
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
