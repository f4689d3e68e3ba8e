//! Shared by the benches: a sequential read-bandwidth probe that gives
//! the floor an exact scan cannot beat (`bytes scanned / bandwidth`). Seeded data
//! comes from the workspace's one generator, `srvdb::testing::Rng`.

// Each bench uses a different subset of these helpers.
#![allow(dead_code)]

use std::time::Instant;

/// Portable read kernel: 32 independent accumulators, so the adds never limit the loads.
#[inline(always)]
fn sum_portable(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let chunks = x.chunks_exact(32);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += *x;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// The same loop compiled for AVX2 (4 x 256-bit accumulators, 128 bytes per iteration).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2(x: &[f32]) -> f32 {
    sum_portable(x)
}

/// Sums `x`: reads every byte once, sequentially.
pub fn sum_f32(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU just above.
        return unsafe { sum_avx2(x) };
    }
    sum_portable(x)
}

/// Read bandwidth of one configuration, in GB/s (1e9 bytes per second).
#[derive(Debug, Clone, Copy)]
pub struct Bandwidth {
    pub threads: usize,
    pub best_gbs: f64,
    pub median_gbs: f64,
    pub bytes: usize,
    pub reps: usize,
}

impl Bandwidth {
    /// Milliseconds to stream `bytes` at the best measured bandwidth.
    pub fn floor_ms(&self, bytes: f64) -> f64 {
        bytes / (self.best_gbs * 1e9) * 1e3
    }
}

/// A buffer of `bytes` (rounded down to f32s), written once so every page is resident.
pub fn resident_buffer(bytes: usize) -> Vec<f32> {
    let n = bytes / 4;
    let mut v = Vec::with_capacity(n);
    v.extend((0..n).map(|i| (i & 1023) as f32 * 1e-3));
    v
}

/// Streams `buf` with `threads` threads (each reads one contiguous share) `reps` times after one
/// warm-up pass; reports the best and the median pass.
pub fn measure_read(buf: &[f32], threads: usize, reps: usize) -> Bandwidth {
    let threads = threads.max(1);
    let share = buf.len().div_ceil(threads);
    let pass = || -> f64 {
        let start = Instant::now();
        let total: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(share)
                .map(|part| s.spawn(move || sum_f32(std::hint::black_box(part))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("reader thread panicked"))
                .sum()
        });
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(total);
        secs
    };
    pass();
    let mut secs: Vec<f64> = (0..reps.max(1)).map(|_| pass()).collect();
    secs.sort_by(f64::total_cmp);
    let bytes = std::mem::size_of_val(buf);
    let gbs = |s: f64| bytes as f64 / s / 1e9;
    Bandwidth {
        threads,
        best_gbs: gbs(secs[0]),
        median_gbs: gbs(secs[secs.len() / 2]),
        bytes,
        reps: secs.len(),
    }
}

/// True when running as `cargo bench` (criterion's benchmark mode); false under `cargo test`,
/// `--test` or `--list`, where the benches should only smoke-test on small inputs.
pub fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

/// The two datasets of the issue: (rows, dimension).
pub const DATASETS: [(usize, usize); 2] = [(50_000, 1536), (100_000, 384)];

/// Bytes an exact scan reads: the issue's `N x d x 4`, and what is actually stored per row.
pub fn scan_bytes(rows: usize, dim: usize) -> (f64, f64) {
    let stride = srvdb::format::RowLayout::new(dim as u32).stride_bytes();
    ((rows * dim * 4) as f64, (rows * stride) as f64)
}

/// The shared MiniLM set (`../shared/data` or `SRVDB_DATA_DIR`): its rows, held-out queries
/// and the shipped cosine top `k` of each query.
#[cfg(not(target_arch = "wasm32"))]
pub struct MiniLm {
    pub base: Vec<f32>,
    pub dim: usize,
    pub queries: Vec<f32>,
    pub truth: Vec<Vec<usize>>,
}

/// Where the shared data is: `SRVDB_DATA_DIR`, else `../shared/data` beside the checkout.
#[cfg(not(target_arch = "wasm32"))]
pub fn data_dir() -> std::path::PathBuf {
    std::env::var("SRVDB_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
        })
}

/// The shared MiniLM set with each query's true top `k`, or None (saying so, and that
/// `instead` is used) when it is absent.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_minilm(k: usize, instead: &str) -> Option<MiniLm> {
    use srvdb::npy;
    let dir = data_dir();
    let files = ["base.npy", "queries.npy", "gt_cosine.npy"].map(|f| dir.join(f));
    if files.iter().any(|f| !f.is_file()) {
        println!(
            "no base.npy / queries.npy / gt_cosine.npy in {} (set SRVDB_DATA_DIR): {instead}",
            dir.display()
        );
        return None;
    }
    let base = npy::read::<f32>(&files[0]).expect("base.npy");
    let queries = npy::read::<f32>(&files[1]).expect("queries.npy");
    let gt = npy::read::<i32>(&files[2]).expect("gt_cosine.npy");
    let truth = gt
        .data
        .chunks(gt.cols)
        .map(|row| row[..k].iter().map(|&r| r as usize).collect())
        .collect();
    Some(MiniLm {
        base: base.data,
        dim: base.cols,
        queries: queries.data,
        truth,
    })
}

/// Recall of `hits` (ids are row numbers) against `truth`.
#[cfg(not(target_arch = "wasm32"))]
pub fn recall_of(truth: &[usize], hits: &[srvdb::SearchHit]) -> f64 {
    let found = hits
        .iter()
        .filter(|h| h.id.parse::<usize>().is_ok_and(|r| truth.contains(&r)))
        .count();
    found as f64 / truth.len().max(1) as f64
}

/// The `p` quantile (0..=1) of `ms`, nearest rank; NaN when empty.
pub fn percentile(ms: &[f64], p: f64) -> f64 {
    let mut ms = ms.to_vec();
    ms.sort_by(f64::total_cmp);
    let at = ((ms.len() as f64 - 1.0) * p).round() as usize;
    ms.get(at).copied().unwrap_or(f64::NAN)
}
