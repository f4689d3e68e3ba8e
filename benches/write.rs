//! Write throughput with a durable commit after every batch, on the native backends: what the
//! storage layer (rows fsync, redb commit, directory syncs) costs per commit.
//!
//! - `bulk`: 100 000 x 384 vectors added in batches of 1000, each batch persisted (memory-mapped
//!   rows);
//! - `single`: 10 000 cycles of one add and one persist, on the memory-mapped and on the
//!   `std::fs` (cached) rows.
//!
//! `cargo bench --bench write` runs each workload `SRVDB_WRITE_REPS` times (default 3) in a new
//! database under `SRVDB_BENCH_DIR` (default: the system's temporary directory; put it on the
//! disk you care about, a tmpfs makes every fsync free) and prints the best and median times.
//! To compare two builds, run both binaries back to back on the same disk: the figures are
//! only comparable within one machine and one moment. Under `cargo test` it runs once on a few
//! hundred rows: a smoke test only.

mod common;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::common::bench_mode;
    use srvdb::testing::Rng;
    use srvdb::{Database, OpenOptions, StorageKind, Store};
    use std::path::PathBuf;
    use std::time::Instant;

    const DIM: usize = 384;

    fn options(storage: StorageKind) -> OpenOptions {
        OpenOptions {
            storage,
            auto_commit_rows: 0,
            ..OpenOptions::default()
        }
    }

    fn bench_dir() -> PathBuf {
        std::env::var_os("SRVDB_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
    }

    /// Adds `rows` vectors in batches of `batch`, persisting after each; returns the seconds.
    fn run(storage: StorageKind, rows: usize, batch: usize, data: &[f32]) -> f64 {
        let dir = tempfile::tempdir_in(bench_dir()).expect("a temporary directory");
        let db = Database::open(dir.path(), options(storage)).expect("open");
        let ids: Vec<String> = (0..rows).map(|i| format!("v{i}")).collect();
        let started = Instant::now();
        for start in (0..rows).step_by(batch) {
            let end = (start + batch).min(rows);
            let vectors = &data[(start % 1000) * DIM..(start % 1000 + end - start) * DIM];
            db.add(&ids[start..end], vectors, &[]).expect("add");
            db.persist().expect("persist");
        }
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(db.count(), rows as u64, "every vector was stored");
        secs
    }

    pub fn main() {
        let full = bench_mode();
        let reps: usize = std::env::var("SRVDB_WRITE_REPS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(if full { 3 } else { 1 });
        let (bulk_rows, single_rows) = if full {
            (100_000, 10_000)
        } else {
            (2_000, 200)
        };
        // 1000 distinct vectors, reused: generating 100 000 would dominate a smoke run.
        let data = Rng::new(14).vectors(1000 + 1, DIM);
        println!(
            "write throughput, dim {DIM}, {reps} run(s) each, in {}",
            bench_dir().display()
        );
        let cases = [
            (
                "bulk: 1000-row batches + persist, mmap",
                StorageKind::Mmap,
                bulk_rows,
                1000,
            ),
            (
                "single: 1 row + persist, mmap",
                StorageKind::Mmap,
                single_rows,
                1,
            ),
            (
                "single: 1 row + persist, file",
                StorageKind::File,
                single_rows,
                1,
            ),
        ];
        for (name, storage, rows, batch) in cases {
            let mut secs: Vec<f64> = (0..reps)
                .map(|_| run(storage, rows, batch, &data))
                .collect();
            secs.sort_by(f64::total_cmp);
            let commits = rows.div_ceil(batch) as f64;
            println!(
                "  {name:<42} {rows:>7} rows: best {:8.3} s, median {:8.3} s ({:7.1} us per commit, {:9.0} rows/s)",
                secs[0],
                secs[secs.len() / 2],
                secs[secs.len() / 2] / commits * 1e6,
                rows as f64 / secs[secs.len() / 2]
            );
        }
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
