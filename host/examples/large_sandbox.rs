//! A database larger than the sandbox's memory: issue 16's target "1M x 1536 opens and answers
//! with recall@10 >= 0.99 (int8, rescored) under the 4 GiB cap".
//!
//! `make component`, then `cargo run --release -p srvdb-host --example large_sandbox`. It
//! builds a database of clustered synthetic rows natively (the exact top 10 of each query is
//! computed by brute force in this file while the rows are generated), creates the int8 index
//! natively, then opens the database in a fresh process inside the sandbox with
//! `StorageKind::OnDemand` (the guest keeps the codes in its memory and reads the f32 rows of
//! the candidates from the file) and reports the open time, p50 latency, recall@10, and the
//! sandboxed process's peak resident memory (`VmHWM`: the guest's linear memory as far as it
//! was touched, plus the host and wasmtime; an upper bound of what the guest used).
//!
//! Environment (all optional):
//! - `LARGE_ROWS` (default 50 000; the target is 1 000 000, 6 GiB of rows on disk), `LARGE_DIM`
//!   (1536), `LARGE_QUERIES` (50);
//! - `LARGE_DIR`: where the database goes (default `target/large-sandbox` in the workspace); it
//!   and its truth file (`<dir>-truth.bin`) are removed afterwards unless `LARGE_KEEP=1`; a kept
//!   pair of the same shape is reused, not rebuilt;
//! - `LARGE_CAP_MIB`: the sandbox's memory cap (default 4096, the most wasm32 addresses);
//! - `LARGE_QUANTIZATION`: `int8` (default), `binary`, or `none` (the exact scan).

use srvdb::quant::{IndexSpec, Quantization};
use srvdb::testing::Rng;
use srvdb::{Database, Metric, OpenOptions, Query, StorageKind, Store};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::Sandbox;
use std::path::{Path, PathBuf};
use std::time::Instant;

type AnyError = Box<dyn std::error::Error>;

/// Hits per query.
const K: usize = 10;
/// Cluster centres of the synthetic rows.
const CENTRES: usize = 1024;
/// Rows generated (and written) at a time.
const BATCH: usize = 4096;
/// The file (beside the database's directory) holding the queries and their exact top 10.
const TRUTH: &str = "truth.bin";

/// The run's shape, from the environment.
#[derive(Debug, Clone)]
struct Shape {
    rows: usize,
    dim: usize,
    queries: usize,
    dir: PathBuf,
    cap_mib: usize,
    quantization: Option<Quantization>,
}

fn env_usize(name: &str, default: usize) -> Result<usize, AnyError> {
    match std::env::var(name) {
        Ok(v) => Ok(v
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{name}={v}: {e}"))?),
        Err(_) => Ok(default),
    }
}

impl Shape {
    fn from_env() -> Result<Self, AnyError> {
        let dir = match std::env::var_os("LARGE_DIR") {
            Some(d) => PathBuf::from(d),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("target/large-sandbox"),
        };
        let quantization = match std::env::var("LARGE_QUANTIZATION").as_deref() {
            Err(_) | Ok("int8") => Some(Quantization::Int8),
            Ok("binary") => Some(Quantization::Binary),
            Ok("none") => None,
            Ok(other) => {
                return Err(format!("LARGE_QUANTIZATION={other}: int8, binary or none").into())
            }
        };
        Ok(Shape {
            rows: env_usize("LARGE_ROWS", 50_000)?,
            dim: env_usize("LARGE_DIM", 1536)?,
            queries: env_usize("LARGE_QUERIES", 50)?.max(1),
            dir,
            cap_mib: env_usize("LARGE_CAP_MIB", 4096)?,
            quantization,
        })
    }
}

/// Row `i` of the synthetic set: a cluster centre plus noise, both from seeded generators, so
/// any row can be made again. Cosine ranks are what is searched.
fn row(centres: &[f32], dim: usize, i: usize, out: &mut [f32]) {
    let mut rng = Rng::new(0x5eed_0000 ^ i as u64);
    let c = rng.below(CENTRES as u64) as usize;
    let centre = &centres[c * dim..(c + 1) * dim];
    for (x, &m) in out.iter_mut().zip(centre) {
        *x = m + 0.45 * rng.f32();
    }
}

fn centres(dim: usize) -> Vec<f32> {
    let mut rng = Rng::new(0xce47);
    (0..CENTRES * dim).map(|_| rng.f32()).collect()
}

/// Queries near rows (a row perturbed), as a user's would be near the data.
fn queries(centres: &[f32], shape: &Shape) -> Vec<f32> {
    let mut rng = Rng::new(0x9e4);
    let mut out = vec![0.0; shape.queries * shape.dim];
    for q in out.chunks_exact_mut(shape.dim) {
        row(centres, shape.dim, rng.below(shape.rows as u64) as usize, q);
        for x in q.iter_mut() {
            *x += 0.2 * rng.f32();
        }
    }
    out
}

/// f32 dot product in eight lanes (so it vectorises), for the brute-force reference.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The best `K` (cosine, then row) of one query so far.
struct Top {
    hits: Vec<(f32, usize)>,
}

impl Top {
    fn push(&mut self, score: f32, row: usize) {
        if self.hits.len() == K && score <= self.hits[K - 1].0 {
            return;
        }
        self.hits.push((score, row));
        self.hits
            .sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.hits.truncate(K);
    }
}

/// Builds the database natively and returns each query's exact top `K` row numbers.
fn build(shape: &Shape, qs: &[f32]) -> Result<Vec<Vec<usize>>, AnyError> {
    use rayon::prelude::*;
    let dim = shape.dim;
    let centres = centres(dim);
    let qnorms: Vec<f32> = qs.chunks_exact(dim).map(|q| dot(q, q).sqrt()).collect();
    let mut tops: Vec<Top> = (0..shape.queries)
        .map(|_| Top { hits: Vec::new() })
        .collect();
    let db = Database::open(
        &shape.dir,
        OpenOptions {
            dimension: Some(dim as u32),
            metric: Some(Metric::Cosine),
            auto_commit_rows: usize::MAX,
            ..OpenOptions::default()
        },
    )?;
    let start = Instant::now();
    let mut data = vec![0.0f32; BATCH * dim];
    let mut first = 0;
    while first < shape.rows {
        let n = BATCH.min(shape.rows - first);
        let rows = &mut data[..n * dim];
        rows.par_chunks_exact_mut(dim)
            .enumerate()
            .for_each(|(i, out)| row(&centres, dim, first + i, out));
        let ids: Vec<String> = (first..first + n).map(|i| format!("r{i}")).collect();
        db.add(&ids, rows, &vec![None; n])?;
        db.persist()?;
        // The exact top K, by brute force over the rows just made.
        let norms: Vec<f32> = rows
            .par_chunks_exact(dim)
            .map(|r| dot(r, r).sqrt())
            .collect();
        tops.par_iter_mut().enumerate().for_each(|(j, top)| {
            let q = &qs[j * dim..(j + 1) * dim];
            for (i, r) in rows.chunks_exact(dim).enumerate() {
                let denom = qnorms[j] * norms[i];
                let score = if denom > 0.0 { dot(q, r) / denom } else { 0.0 };
                top.push(score, first + i);
            }
        });
        first += n;
        if first % (BATCH * 32) < BATCH {
            eprintln!(
                "  {first} rows written ({:.0} s)",
                start.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "native: {} x {dim} written in {:.1} s",
        shape.rows,
        start.elapsed().as_secs_f64()
    );
    if let Some(q) = shape.quantization {
        let start = Instant::now();
        match db.create_index(&IndexSpec::flat(q)) {
            Ok(info) => println!(
                "native: {q:?} index created in {:.1} s: {} rows, {} bytes ({:.3}x the f32 rows)",
                start.elapsed().as_secs_f64(),
                info.rows,
                info.bytes,
                info.bytes as f64 / (shape.rows as f64 * dim as f64 * 4.0)
            ),
            Err(e) => println!("native: no {q:?} index ({e}); the sandbox scans the rows exactly"),
        }
    }
    db.close()?;
    Ok(tops
        .into_iter()
        .map(|t| t.hits.into_iter().map(|(_, r)| r).collect())
        .collect())
}

/// The queries and their truth, for the sandboxed process: little-endian u64 counts (rows,
/// queries, query floats), the f32 queries, then `K` u64 rows per query.
fn save_truth(path: &Path, rows: usize, qs: &[f32], truth: &[Vec<usize>]) -> Result<(), AnyError> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(rows as u64).to_le_bytes());
    bytes.extend_from_slice(&(truth.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(qs.len() as u64).to_le_bytes());
    for x in qs {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    for t in truth {
        for i in 0..K {
            let r = t.get(i).map_or(u64::MAX, |&r| r as u64);
            bytes.extend_from_slice(&r.to_le_bytes());
        }
    }
    std::fs::write(path, bytes)?;
    Ok(())
}

/// The queries and truth saved for `shape`; an error if they were saved for another shape.
fn load_truth(path: &Path, shape: &Shape) -> Result<(Vec<f32>, Vec<Vec<u64>>), AnyError> {
    let bytes = std::fs::read(path)?;
    let word = |at: usize| -> Result<u64, AnyError> {
        let b = bytes.get(at..at + 8).ok_or("truth file too short")?;
        Ok(u64::from_le_bytes(b.try_into()?))
    };
    let (rows, nq, nf) = (word(0)? as usize, word(8)? as usize, word(16)? as usize);
    if (rows, nq, nf) != (shape.rows, shape.queries, shape.queries * shape.dim) {
        return Err(format!(
            "{} was saved for {rows} rows and {nq} queries of {} floats, not this shape: remove it and the database",
            path.display(),
            nf / nq.max(1)
        )
        .into());
    }
    let mut at = 24;
    let mut qs = Vec::with_capacity(nf);
    for _ in 0..nf {
        let b = bytes.get(at..at + 4).ok_or("truth file too short")?;
        qs.push(f32::from_le_bytes(b.try_into()?));
        at += 4;
    }
    let mut truth = Vec::with_capacity(nq);
    for _ in 0..nq {
        let mut t = Vec::with_capacity(K);
        for _ in 0..K {
            t.push(word(at)?);
            at += 8;
        }
        truth.push(t);
    }
    Ok((qs, truth))
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The sandboxed half, in its own process so its peak memory is its own.
fn sandboxed(shape: &Shape, truth_path: &Path) -> Result<(), AnyError> {
    let (qs, truth) = load_truth(truth_path, shape)?;
    let dim = shape.dim;
    let config = SandboxConfig {
        memory_limit_bytes: shape.cap_mib << 20,
        ..SandboxConfig::new()
    };
    let start = Instant::now();
    let sandbox = Sandbox::new(config)?;
    let load = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let db = sandbox.open(
        &shape.dir,
        OpenOptions {
            storage: StorageKind::OnDemand,
            ..OpenOptions::default()
        },
    )?;
    let open = start.elapsed().as_secs_f64();
    let info = db.index_info()?;
    println!(
        "sandbox: component loaded in {load:.2} s; database opened in {open:.2} s (cap {} MiB); index {:?} {:?}, {} rows, {} bytes",
        shape.cap_mib, info.kind, info.quantization, info.rows, info.bytes
    );
    // One query first: the first reads of the rows file are cold.
    db.query(&Query::one(&qs[..dim], K))?;
    let mut times = Vec::with_capacity(truth.len());
    let mut found = 0usize;
    for (j, want) in truth.iter().enumerate() {
        let q = &qs[j * dim..(j + 1) * dim];
        let start = Instant::now();
        let hits = db.query(&Query::one(q, K))?.pop().unwrap_or_default();
        times.push(start.elapsed().as_secs_f64() * 1e3);
        found += hits
            .iter()
            .filter(|h| {
                h.id.strip_prefix('r')
                    .and_then(|r| r.parse::<u64>().ok())
                    .is_some_and(|r| want.contains(&r))
            })
            .count();
    }
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let recall = found as f64 / (truth.len() * K) as f64;
    println!(
        "sandbox: {} x {dim}, {} queries, k={K}: p50 {p50:.2} ms, max {:.2} ms, recall@10 {recall:.4}, peak RSS {:.0} MiB",
        shape.rows,
        truth.len(),
        times[times.len() - 1],
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    db.close()?;
    Ok(())
}

fn main() -> Result<(), AnyError> {
    let shape = Shape::from_env()?;
    let name = shape
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("db");
    let truth_path = shape.dir.with_file_name(format!("{name}-{TRUTH}"));
    if std::env::var_os("LARGE_PHASE").is_some_and(|p| p == "sandbox") {
        return sandboxed(&shape, &truth_path);
    }
    let bytes = shape.rows as f64 * shape.dim as f64 * 4.0;
    println!(
        "{} x {} rows ({:.2} GiB of f32) in {}",
        shape.rows,
        shape.dim,
        bytes / (1u64 << 30) as f64,
        shape.dir.display()
    );
    let centres = centres(shape.dim);
    let qs = queries(&centres, &shape);
    let reuse = shape.dir.join("metadata.db").exists() && load_truth(&truth_path, &shape).is_ok();
    if reuse {
        println!("reusing the database already in {}", shape.dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&shape.dir);
        let truth = build(&shape, &qs)?;
        save_truth(&truth_path, shape.rows, &qs, &truth)?;
    }
    let status = std::process::Command::new(std::env::current_exe()?)
        .env("LARGE_PHASE", "sandbox")
        .env("LARGE_DIR", &shape.dir)
        .status()?;
    if std::env::var_os("LARGE_KEEP").is_none_or(|v| v != "1") {
        std::fs::remove_dir_all(&shape.dir)?;
        std::fs::remove_file(&truth_path)?;
        println!("removed {}", shape.dir.display());
    }
    if !status.success() {
        return Err(format!("the sandboxed run failed ({status})").into());
    }
    Ok(())
}
