//! Measures the HNSW graph on the shared MiniLM set (20k x 384, 200 queries): build time on
//! all cores, then recall@10 and single-threaded QPS at several `ef`, over the f32 rows and
//! over int8 codes, beside the exact scan.
//!
//! QPS is per second of the search thread's CPU time (`HNSW_PROBE_CLOCK=wall` for wall
//! time), so time spent waiting for a core does not count against it; other work still
//! shares the caches and memory (a traversal waits on memory for most of its time), so passes
//! of one setting still differ by several percent, and rounds by more.
//!
//! `cargo run --release --example hnsw_probe` (data from `SRVDB_DATA_DIR`, else
//! `../shared/data`; absent data is a skip, not a failure). The build runs on the graph's own pool of
//! all cores (`Graph::insert` called from outside rayon; inside a rayon pool it would
//! insert on the calling thread only), `HNSW_PROBE_EFS` the efs (comma-separated),
//! `HNSW_PROBE_REPEATS` the passes (default 9; each pass runs every setting once, and the
//! median pass is reported, the fastest in brackets),
//! `HNSW_PROBE_EXACT=0` skips the exact scan, `HNSW_PROBE_DUMP=<file>` writes the links.
//! `HNSW_PROBE_ROWS=huge` (Linux) makes the searches read a copy of the rows in memory aligned
//! to 2 MiB and advised for transparent huge pages (`madvise(MADV_HUGEPAGE)`), to measure what
//! the row store's pages cost a traversal: each scored row is a TLB miss on 4 KiB pages.

use srvdb::distance::Kernels;
use srvdb::format::RowLayout;
use srvdb::hnsw::graph::{Graph, Space};
use srvdb::hnsw::index::HnswIndex;
use srvdb::index::flat::FlatIndex;
use srvdb::index::{Index, Queries, ScanSet};
use srvdb::quant::codes::CodeTable;
use srvdb::quant::{Codebook, HnswParams, Quantization};
use srvdb::storage::cached::CachedRows;
use srvdb::storage::{RowStore, RowView};
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
    // `HNSW_PROBE_ROWS=huge`: the searches read a copy of the rows in 2 MiB pages.
    let huge = match std::env::var("HNSW_PROBE_ROWS").as_deref() {
        Ok("huge") => Some(HugePageRows::copy(rows.as_ref())?),
        _ => None,
    };
    let searched: &dyn RowView = match &huge {
        Some(h) => h,
        None => rows.as_ref(),
    };
    println!(
        "searches read {} (row 0 at {} mod 64 bytes)",
        if huge.is_some() {
            "a copy of the rows in transparent huge pages"
        } else {
            "the store's rows"
        },
        searched.row(0).map_or(0, |r| r.as_ptr() as usize % 64)
    );
    let set = ScanSet {
        rows: searched,
        tombstones: &[],
    };
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    // Passes over the queries; each pass runs every setting once, in turn.
    let repeats: usize = env_or("HNSW_PROBE_REPEATS", 9).max(1);
    let efs: Vec<usize> = std::env::var("HNSW_PROBE_EFS").map_or(EFS.to_vec(), |s| {
        s.split(',').filter_map(|e| e.trim().parse().ok()).collect()
    });
    // One pass over the queries: recall@10 and QPS.
    let run = |index: &dyn Index| -> (f64, f64) {
        single.install(|| {
            let mut hits = 0usize;
            let started = Clock::now();
            for (q, t) in one.iter().zip(&truth) {
                let found = index.search(&set, q, K);
                hits += found[0]
                    .iter()
                    .filter(|c| t.contains(&(c.row as i32)))
                    .count();
            }
            let took = started.elapsed();
            (hits as f64 / (nq * K) as f64, nq as f64 / took)
        })
    };
    let exact = FlatIndex::new(metric, kernels);
    if env_or("HNSW_PROBE_EXACT", 1) != 0 {
        let mut passes: Vec<(f64, f64)> = (0..repeats.min(3)).map(|_| run(&exact)).collect();
        let (r, qps) = median(&mut passes);
        println!(
            "exact scan: recall@10 {r:.4}, {qps:.0} QPS (1 thread, median of {})",
            passes.len()
        );
    }

    if let Ok(path) = std::env::var("HNSW_PROBE_DUMP") {
        // The links as stored (`Graph::links_bytes`), each value prefixed by its u32 length,
        // after a header of the entry node and its level (u32 each).
        let entry = graph.entry().ok_or("no entry")?;
        let mut out = Vec::new();
        out.extend_from_slice(&entry.node.to_le_bytes());
        out.extend_from_slice(&u32::from(entry.level).to_le_bytes());
        for node in 0..n as u32 {
            let bytes = graph.links_bytes(node);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        std::fs::write(&path, out)?;
        println!("links written to {path}");
    }
    let view = graph.view();
    let train = (0..rows.rows())
        .filter_map(|r| rows.row(r))
        .map(|r| (&r[..dim], r[dim]));
    let codebook = Codebook::train(Quantization::Int8, metric, dim, train);
    let mut codes = CodeTable::new(Arc::new(codebook));
    for r in 0..rows.rows() {
        codes.push_rows(layout, rows.row(r).ok_or("row missing")?);
    }
    let indexes: Vec<[HnswIndex<'_>; 2]> = efs
        .iter()
        .map(|&ef| {
            [
                HnswIndex {
                    graph: &view,
                    codes: None,
                    exact,
                    ef,
                    oversample: 1,
                    matching: None,
                },
                HnswIndex {
                    graph: &view,
                    codes: Some(&codes),
                    exact,
                    ef,
                    oversample: Quantization::Int8.default_oversample(),
                    matching: None,
                },
            ]
        })
        .collect();
    // Every setting once per pass, so a burst of other work on the machine falls on one
    // pass of each setting rather than on all passes of one.
    let mut passes: Vec<[Vec<(f64, f64)>; 2]> = vec![[Vec::new(), Vec::new()]; efs.len()];
    for _ in 0..repeats {
        for (pair, out) in indexes.iter().zip(passes.iter_mut()) {
            for (index, o) in pair.iter().zip(out.iter_mut()) {
                o.push(run(index));
            }
        }
    }
    println!("QPS: median of {repeats} passes (best in brackets)");
    println!("| ef | f32 recall@10 | f32 QPS | int8 recall@10 | int8 QPS |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for (ef, [mut p32, mut p8]) in efs.iter().zip(passes) {
        let (r32, q32) = median(&mut p32);
        let (r8, q8) = median(&mut p8);
        let b32 = p32.iter().map(|p| p.1).fold(0.0, f64::max);
        let b8 = p8.iter().map(|p| p.1).fold(0.0, f64::max);
        println!("| {ef} | {r32:.4} | {q32:.0} ({b32:.0}) | {r8:.4} | {q8:.0} ({b8:.0}) |");
    }
    Ok(())
}

/// The recall (the same every pass) and the median QPS of `passes`.
fn median(passes: &mut [(f64, f64)]) -> (f64, f64) {
    passes.sort_by(|a, b| a.1.total_cmp(&b.1));
    passes
        .get(passes.len() / 2)
        .copied()
        .unwrap_or((f64::NAN, f64::NAN))
}

/// A copy of a view's rows in one allocation aligned to 2 MiB and, on Linux, advised for
/// transparent huge pages before it is written (so the kernel backs it with 2 MiB pages
/// where it can).
struct HugePageRows {
    layout: RowLayout,
    rows: u64,
    data: *mut f32,
    alloc: std::alloc::Layout,
}

// SAFETY: the copy is written once, in `copy`, before the value is shared; afterwards it is
// only read, through `&self`, so sharing it between threads is as safe as sharing a `&[f32]`.
unsafe impl Send for HugePageRows {}
// SAFETY: as for `Send`: no interior mutability after construction.
unsafe impl Sync for HugePageRows {}

impl HugePageRows {
    const ALIGN: usize = 2 << 20;

    fn copy(view: &dyn RowView) -> Result<Self, Box<dyn std::error::Error>> {
        let layout = view.layout();
        let rows = view.rows();
        let floats = rows as usize * layout.stride_f32;
        let size = (floats * 4).next_multiple_of(Self::ALIGN).max(Self::ALIGN);
        let alloc = std::alloc::Layout::from_size_align(size, Self::ALIGN)?;
        // SAFETY: `alloc` has a non-zero size.
        let data = unsafe { std::alloc::alloc(alloc) }.cast::<f32>();
        if data.is_null() {
            return Err("could not allocate the copy of the rows".into());
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: `data..data + size` is the allocation just made, which nothing else
            // uses yet; the advice changes how it is backed, not its contents.
            let advised = unsafe { libc::madvise(data.cast(), size, libc::MADV_HUGEPAGE) };
            if advised != 0 {
                eprintln!("madvise(MADV_HUGEPAGE) failed: the copy may be in 4 KiB pages");
            }
        }
        // SAFETY: `data` holds `size >= floats * 4` bytes, aligned for f32, owned here; every
        // float is written below before any is read.
        let out = unsafe { std::slice::from_raw_parts_mut(data, floats) };
        for (r, dst) in out.chunks_exact_mut(layout.stride_f32).enumerate() {
            dst.copy_from_slice(view.row(r as u64).ok_or("row missing")?);
        }
        Ok(HugePageRows {
            layout,
            rows,
            data,
            alloc,
        })
    }

    fn all(&self) -> &[f32] {
        // SAFETY: `copy` wrote all `rows * stride_f32` floats, and the allocation lives as
        // long as `self`; nothing writes it after `copy`.
        unsafe {
            std::slice::from_raw_parts(self.data, self.rows as usize * self.layout.stride_f32)
        }
    }
}

impl Drop for HugePageRows {
    fn drop(&mut self) {
        // SAFETY: `data` was allocated in `copy` with `alloc`, and is freed once, here.
        unsafe { std::alloc::dealloc(self.data.cast(), self.alloc) };
    }
}

impl RowView for HugePageRows {
    fn layout(&self) -> RowLayout {
        self.layout
    }
    fn rows(&self) -> u64 {
        self.rows
    }
    fn segment_count(&self) -> usize {
        1
    }
    fn segment(&self, _i: usize) -> (u64, &[f32]) {
        (0, self.all())
    }
    fn row(&self, row: u64) -> Option<&[f32]> {
        let stride = self.layout.stride_f32;
        let at = usize::try_from(row).ok()?.checked_mul(stride)?;
        self.all().get(at..at + stride)
    }
}
