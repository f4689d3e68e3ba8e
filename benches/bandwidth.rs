//! Sequential memory read bandwidth with 1 and 2 threads over a buffer much larger than the
//! caches, and the floor it sets for an exact scan of the two reference datasets.
//!
//! `cargo bench --bench bandwidth` (1 GiB buffer, 10 passes per thread count). The buffer size can
//! be changed with `SRVDB_BW_MIB`. Under `cargo test` it runs once on a small buffer.

mod common;

use common::{bench_mode, measure_read, resident_buffer, scan_bytes, DATASETS};

fn main() {
    let full = bench_mode();
    let mib: usize = std::env::var("SRVDB_BW_MIB")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(if full { 1024 } else { 16 });
    let reps = if full { 10 } else { 1 };
    let buf = resident_buffer(mib << 20);
    println!(
        "sequential read bandwidth, {mib} MiB buffer, {reps} passes (GB = 1e9 bytes), cpus available: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let results: Vec<_> = [1usize, 2]
        .into_iter()
        .map(|t| {
            let bw = measure_read(&buf, t, reps);
            println!(
                "  {t} thread(s): best {:6.2} GB/s   median {:6.2} GB/s",
                bw.best_gbs, bw.median_gbs
            );
            bw
        })
        .collect();
    drop(buf);

    println!("\nexact-scan floor = bytes read / best bandwidth");
    println!(
        "  {:>15} {:>4} {:>12} {:>12} {:>14} {:>12}",
        "dataset", "thr", "N*d*4 MB", "floor ms", "N*stride MB", "floor ms"
    );
    for (rows, dim) in DATASETS {
        let (issue_bytes, stored_bytes) = scan_bytes(rows, dim);
        for bw in &results {
            println!(
                "  {:>15} {:>4} {:>12.1} {:>12.2} {:>14.1} {:>12.2}",
                format!("{rows}x{dim}"),
                bw.threads,
                issue_bytes / 1e6,
                bw.floor_ms(issue_bytes),
                stored_bytes / 1e6,
                bw.floor_ms(stored_bytes),
            );
        }
    }
}
