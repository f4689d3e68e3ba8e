//! Measures the HNSW graph on the shared MiniLM set (20k x 384, 200 queries): build time on
//! all cores, then recall@10 and single-threaded QPS at several `ef`, over the f32 rows and
//! over int8 codes, beside the exact scan.
//!
//! QPS is per second of the search thread's CPU time (`HNSW_PROBE_CLOCK=wall` for wall
//! time), so other work on the machine does not count against it.
//!
//! `cargo run --release --example hnsw_probe` (data from `SRVDB_DATA_DIR`, else
//! `../shared/data`; absent data is a skip, not a failure). The build runs on the graph's own pool of
//! all cores (`Graph::insert` called from outside rayon; inside a rayon pool it would
//! insert on the calling thread only), `HNSW_PROBE_EFS` the efs (comma-separated),
//! `HNSW_PROBE_REPEATS` the passes per setting (the fastest is reported; default 3).

use srvdb::distance::Kernels;
use srvdb::format::RowLayout;
use srvdb::hnsw::graph::{Graph, Space};
use srvdb::hnsw::index::HnswIndex;
use srvdb::index::flat::FlatIndex;
use srvdb::index::{Index, Queries, ScanSet};
use srvdb::quant::codes::CodeTable;
use srvdb::quant::{Codebook, HnswParams, Quantization};
use srvdb::storage::cached::CachedRows;
use srvdb::storage::RowStore;
use srvdb::Metric;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const K: usize = 10;
const EFS: [usize; 5] = [16, 32, 64, 128, 256];

/// Time spent on the CPU by the calling thread (`HNSW_PROBE_CLOCK=wall` for wall time): on a
/// machine shared with other work, wall time counts the time the thread waited for a core.
struct Clock {
    cpu: bool,
    wall: Instant,
    thread: f64,
}

impl Clock {
    fn now() -> Self {
        Clock {
            cpu: std::env::var("HNSW_PROBE_CLOCK").map_or(true, |c| c != "wall"),
            wall: Instant::now(),
            thread: thread_cpu_seconds(),
        }
    }

    fn elapsed(&self) -> f64 {
        if self.cpu {
            thread_cpu_seconds() - self.thread
        } else {
            self.wall.elapsed().as_secs_f64()
        }
    }
}

/// The number in environment variable `name`, or `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(default)
}

#[cfg(unix)]
fn thread_cpu_seconds() -> f64 {
    cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process (every build thread): on a shared machine a fairer measure
/// of a parallel build's work than wall time.
#[cfg(unix)]
fn process_cpu_seconds() -> f64 {
    cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Without POSIX CPU clocks (Windows) CPU times print as NaN; wall times are still measured.
#[cfg(not(unix))]
fn thread_cpu_seconds() -> f64 {
    f64::NAN
}

#[cfg(not(unix))]
fn process_cpu_seconds() -> f64 {
    f64::NAN
}

#[cfg(unix)]
fn cpu_seconds(clock: libc::clockid_t) -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, exclusively borrowed timespec for the call's duration.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var("SRVDB_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if !dir.join("base.npy").is_file() {
        eprintln!(
            "SKIP: no base.npy in {} (set SRVDB_DATA_DIR)",
            dir.display()
        );
        return Ok(());
    }
    let base = srvdb::npy::read::<f32>(&dir.join("base.npy"))?;
    let queries = srvdb::npy::read::<f32>(&dir.join("queries.npy"))?;
    let gt = srvdb::npy::read::<i32>(&dir.join("gt_cosine.npy"))?;
    let (n, dim, nq) = (base.rows, base.cols, queries.rows);
    let layout = RowLayout::new(dim as u32);
    let mut store = CachedRows::open(None, Default::default(), layout, 0)?;
    let mut buf = vec![0f32; layout.stride_f32];
    for v in base.data.chunks_exact(dim) {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        layout.encode_row(v, norm, &mut buf);
        store.append(&buf)?;
    }
    let rows = store.view();
    let kernels = Kernels::best();
    let metric = Metric::Cosine;
    let space = Space { metric, kernels };
    // The graph's private pool has a thread per core.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let params = HnswParams::default();
    let graph = Arc::new(Graph::new(params, 0x5EED));
    let started = Instant::now();
    let cpu = process_cpu_seconds();
    let mut dirty = BTreeSet::new();
    graph.insert(rows.as_ref(), space, n as u64, &mut dirty)?;
    let build = started.elapsed();
    let build_cpu = process_cpu_seconds() - cpu;
    println!(
        "MiniLM {n} x {dim}, m {} ef_construction {}, kernels {}: build {:.2} s on {threads} threads ({:.2} CPU-s), links {:.1} MB",
        params.m,
        params.ef_construction,
        kernels.describe(),
        build.as_secs_f64(),
        build_cpu,
        graph.bytes() as f64 / 1e6
    );

    let one: Vec<Queries> = queries
        .data
        .chunks_exact(dim)
        .map(|q| Queries {
            data: q.to_vec(),
            norms: vec![q.iter().map(|x| x * x).sum::<f32>().sqrt()],
            dim,
        })
        .collect();
    let truth: Vec<&[i32]> = gt.data.chunks_exact(gt.cols).map(|g| &g[..K]).collect();
    let set = ScanSet {
        rows: rows.as_ref(),
        tombstones: &[],
    };
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    // Passes over the queries per setting; the fastest is reported.
    let repeats: usize = env_or("HNSW_PROBE_REPEATS", 3);
    let efs: Vec<usize> = std::env::var("HNSW_PROBE_EFS").map_or(EFS.to_vec(), |s| {
        s.split(',').filter_map(|e| e.trim().parse().ok()).collect()
    });
    let run = |index: &dyn Index| -> (f64, f64) {
        single.install(|| {
            let mut best = f64::INFINITY;
            let mut hits = 0usize;
            for _ in 0..repeats {
                hits = 0;
                let started = Clock::now();
                for (q, t) in one.iter().zip(&truth) {
                    let found = index.search(&set, q, K);
                    hits += found[0]
                        .iter()
                        .filter(|c| t.contains(&(c.row as i32)))
                        .count();
                }
                best = best.min(started.elapsed());
            }
            (hits as f64 / (nq * K) as f64, nq as f64 / best)
        })
    };
    let exact = FlatIndex::new(metric, kernels);
    let (r, qps) = run(&exact);
    println!("exact scan: recall@10 {r:.4}, {qps:.0} QPS (1 thread)");

    let view = graph.view();
    println!("| ef | f32 recall@10 | f32 QPS | int8 recall@10 | int8 QPS |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let train = (0..rows.rows())
        .filter_map(|r| rows.row(r))
        .map(|r| (&r[..dim], r[dim]));
    let codebook = Codebook::train(Quantization::Int8, metric, dim, train);
    let mut codes = CodeTable::new(Arc::new(codebook));
    for r in 0..rows.rows() {
        codes.push_rows(layout, rows.row(r).ok_or("row missing")?);
    }
    for ef in efs {
        let f32_index = HnswIndex {
            graph: &view,
            codes: None,
            exact,
            ef,
            oversample: 1,
            matching: None,
        };
        let (r32, q32) = run(&f32_index);
        let int8_index = HnswIndex {
            graph: &view,
            codes: Some(&codes),
            exact,
            ef,
            oversample: Quantization::Int8.default_oversample(),
            matching: None,
        };
        let (r8, q8) = run(&int8_index);
        println!("| {ef} | {r32:.4} | {q32:.0} | {r8:.4} | {q8:.0} |");
    }
    Ok(())
}
