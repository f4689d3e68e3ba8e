//! The sandbox's price, measured against the native engine in the same run:
//! - single-query exact search, one thread each (the guest is single-threaded; native runs in a
//!   one-thread rayon pool), on 50,000 x 1536 and 100,000 x 384;
//! - a batch of 16 queries (`search_batch`, cosine, k = 10) on the same two datasets: the
//!   guest (one thread) against native on the default rayon pool (all cores), as queries/s;
//! - the call overhead of a k = 10 search on a ten-vector database (where the scan is nothing).
//!
//! `cargo bench -p srvdb-host --bench sandbox` (needs `make component` first).
//! `SRVDB_BENCH_SCALE=0.1` shrinks the datasets; `SRVDB_COMPONENT` picks another component (the
//! vector-only one, say) and an empty `SRVDB_CACHE_DIR` times its compilation.

use srvdb::{Database, OpenOptions, Store};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::Sandbox;
use std::time::Instant;

/// `n` seeded unit vectors of `dim` components.
fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    srvdb::testing::Rng::new(seed).unit_vectors(n, dim)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let scale: f64 = std::env::var("SRVDB_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let config = SandboxConfig::new();
    let started = Instant::now();
    let sandbox = match Sandbox::new(config.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return;
        }
    };
    // With an empty SRVDB_CACHE_DIR this is the compile time; with a warm cache, the load.
    println!(
        "component {} ({} bytes): compiled or loaded from the cache in {:.2} s",
        config.component.display(),
        std::fs::metadata(&config.component).map_or(0, |m| m.len()),
        started.elapsed().as_secs_f64()
    );
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    println!("      dataset | native 1t ms   sandbox ms     ratio | sandbox kernel");
    let mut batch_rows = Vec::new();
    for (n, dim) in [(50_000usize, 1536usize), (100_000, 384)] {
        let n = ((n as f64 * scale) as usize).max(100);
        let dir = tempfile::tempdir().expect("tmp");
        let data = vectors(n, dim, 11);
        let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        {
            let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
            for start in (0..n).step_by(5000) {
                let end = (start + 5000).min(n);
                db.add(&ids[start..end], &data[start * dim..end * dim], &[])
                    .expect("add");
            }
            db.close().expect("close");
        }
        let queries = vectors(16, dim, 5);
        let (native_ms, native_batch_ms) = {
            let db = Database::open(dir.path(), OpenOptions::default()).expect("reopen");
            let mut i = 0;
            let single = one_thread.install(|| {
                time_ms(15, || {
                    let q = &queries[(i % 16) * dim..(i % 16 + 1) * dim];
                    i += 1;
                    std::hint::black_box(db.search(q, 10).expect("search"));
                })
            });
            // The batch natively on every core (the default pool); the guest has one thread.
            let batch = time_ms(7, || {
                std::hint::black_box(db.search_batch(&queries, 10).expect("batch"));
            });
            (single, batch)
        };
        let db = sandbox
            .open(dir.path(), OpenOptions::default())
            .expect("sandbox open");
        let mut i = 0;
        let sandbox_ms = time_ms(15, || {
            let q = &queries[(i % 16) * dim..(i % 16 + 1) * dim];
            i += 1;
            std::hint::black_box(db.search(q, 10).expect("sandbox search"));
        });
        let kernel = db.kernel().unwrap_or_default();
        let sandbox_batch_ms = time_ms(7, || {
            std::hint::black_box(db.search_batch(&queries, 10).expect("sandbox batch"));
        });
        batch_rows.push((format!("{n}x{dim}"), native_batch_ms, sandbox_batch_ms));
        println!(
            "{:>13} | {native_ms:>12.2} {sandbox_ms:>12.2} {:>8.2}x | {kernel}  (sandbox throughput = {:.0}% of native)",
            format!("{n}x{dim}"),
            sandbox_ms / native_ms,
            100.0 * native_ms / sandbox_ms
        );
    }

    println!(
        "batch of 16 | native ({} threads) QPS  sandbox QPS   sandbox/native",
        rayon::current_num_threads()
    );
    for (name, native_ms, sandbox_ms) in batch_rows {
        println!(
            "{name:>11} | {:>22.0} {:>12.0} {:>15.2}x",
            16e3 / native_ms,
            16e3 / sandbox_ms,
            native_ms / sandbox_ms
        );
    }

    // Call overhead: a search where the scan costs almost nothing.
    let dir = tempfile::tempdir().expect("tmp");
    let tiny = vectors(10, 16, 3);
    let ids: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
        db.add(&ids, &tiny, &[]).expect("add");
    }
    let q = &tiny[..16];
    let native_us = {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
        time_ms(2001, || {
            std::hint::black_box(db.search(q, 10).expect("search"));
        }) * 1e3
    };
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("sandbox open");
    let sandbox_us = time_ms(2001, || {
        std::hint::black_box(db.search(q, 10).expect("search"));
    }) * 1e3;
    println!(
        "k=10 search on 10 x 16: native {native_us:.2} us, sandboxed {sandbox_us:.2} us: call overhead {:.2} us",
        sandbox_us - native_us
    );
}
