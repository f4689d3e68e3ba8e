//! The 16-caller exact search of issue 20 in one process, beside the references it is judged
//! against: 16 OS threads each call `search` on one handle (50 000 x 1536, cosine, random unit
//! vectors, in memory), with coalescing on and off, and the same run measures
//!
//! - the GEMM ceiling: the `gemm` crate's FLOP/s on both cores (256 queries x 1024 rows x
//!   1536 per call, one block per core at a time), over `2 n d` FLOP per query;
//! - one batch of 16 queries (`search_batch`): what a group of 16 costs without the hand-offs.
//!
//! `cargo bench --bench concurrent` (SRVDB_BENCH_ROUNDS, default 3, repeats the measurements).
//! Under `cargo test` the data set shrinks to a few hundred rows: a smoke test only.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use srvdb::distance::Kernels;
    use srvdb::testing::Rng;
    use srvdb::{Database, Metric, OpenOptions, Store};
    use std::hint::black_box;
    use std::time::Instant;

    const K: usize = 10;
    const CALLERS: usize = 16;

    fn full() -> bool {
        std::env::args().any(|a| a == "--bench")
    }

    /// GFLOP/s of the GEMM kernel on every rayon thread at once.
    fn gemm_gflops(dim: usize, reps: usize) -> f64 {
        use rayon::prelude::*;
        let (m, n) = (256, 1024);
        let threads = rayon::current_num_threads();
        let mut rng = Rng::new(7);
        let q = rng.unit_vectors(m, dim);
        let rows = rng.unit_vectors(n * threads, dim);
        let k = Kernels::best();
        let run = || {
            rows.par_chunks(n * dim).for_each(|block| {
                let mut out = vec![0.0f32; m * n];
                for _ in 0..reps {
                    k.dot_many_preferring_gemm(&q, m, block, n, dim, dim, &mut out);
                    black_box(&out);
                }
            })
        };
        run();
        let start = Instant::now();
        run();
        (2 * m * n * dim * threads * reps) as f64 / start.elapsed().as_secs_f64() / 1e9
    }

    fn callers_qps(db: &Database, queries: &[f32], dim: usize, per_caller: usize) -> (f64, f64) {
        let before = db.coalesce_stats();
        let start = Instant::now();
        std::thread::scope(|scope| {
            for c in 0..CALLERS {
                scope.spawn(move || {
                    for i in 0..per_caller {
                        let at = (c * per_caller + i) % (queries.len() / dim);
                        black_box(
                            db.search(&queries[at * dim..(at + 1) * dim], K)
                                .expect("search"),
                        );
                    }
                });
            }
        });
        let qps = (CALLERS * per_caller) as f64 / start.elapsed().as_secs_f64();
        let after = db.coalesce_stats();
        let per_scan =
            (after.queries - before.queries) as f64 / (after.scans - before.scans).max(1) as f64;
        (qps, per_scan)
    }

    pub fn main() {
        let full = full();
        let (rows, dim) = if full { (50_000, 1536) } else { (500, 1536) };
        let rounds: usize = std::env::var("SRVDB_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full { 3 } else { 1 });
        let per_caller = if full { 50 } else { 2 };
        let db = Database::in_memory(OpenOptions::default().with_metric(Metric::Cosine))
            .expect("in-memory database");
        let mut rng = Rng::new(0xc0a1);
        let mut at = 0;
        while at < rows {
            let n = 1000.min(rows - at);
            let ids: Vec<String> = (at..at + n).map(|i| format!("v{i}")).collect();
            db.add(&ids, &rng.unit_vectors(n, dim), &[]).expect("add");
            at += n;
        }
        let queries = rng.unit_vectors(256, dim);
        println!(
            "{rows} x {dim}, k = {K}, {CALLERS} callers x {per_caller} queries, {} rayon threads; kernels: {}",
            rayon::current_num_threads(),
            db.kernel_description()
        );
        println!(
            "{:>5} | {:>9} {:>11} | {:>10} {:>9} | {:>11} {:>9} | {:>9} {:>9}",
            "round",
            "GEMM GF/s",
            "ceiling QPS",
            "coalesced",
            "per scan",
            "batch-16 QPS",
            "separate",
            "/ceiling",
            "/batch16"
        );
        for round in 0..rounds {
            let gf = gemm_gflops(dim, if full { 20 } else { 1 });
            let ceiling = gf * 1e9 / (2.0 * rows as f64 * dim as f64);
            let batch = &queries[..CALLERS * dim];
            black_box(db.search_batch(batch, K).expect("batch"));
            let reps = if full { 10 } else { 1 };
            let start = Instant::now();
            for _ in 0..reps {
                black_box(db.search_batch(batch, K).expect("batch"));
            }
            let batch_qps = (reps * CALLERS) as f64 / start.elapsed().as_secs_f64();
            db.set_coalesce_searches(true);
            let (on, per_scan) = callers_qps(&db, &queries, dim, per_caller);
            db.set_coalesce_searches(false);
            let (off, _) = callers_qps(&db, &queries, dim, per_caller.div_ceil(4));
            db.set_coalesce_searches(true);
            println!(
                "{round:>5} | {gf:>9.1} {ceiling:>11.0} | {on:>10.0} {per_scan:>9.1} | {batch_qps:>11.0} {off:>9.0} | {:>9.2} {:>9.2}",
                on / ceiling,
                on / batch_qps
            );
        }
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
