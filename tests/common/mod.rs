//! Shared test helpers: seeded data, an independent brute-force reference, the real dataset
//! (or a visible skip), and scratch directories.
#![allow(dead_code)]

use srvdb::{Metric, SearchHit};
use std::path::PathBuf;

/// The seed: fixed by default, overridable with `SRVDB_SEED`, printed in failures.
pub fn seed() -> u64 {
    std::env::var("SRVDB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026)
}

/// SplitMix64: tiny, seeded, independent of the code under test.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn vectors(&mut self, n: usize, dim: usize) -> Vec<f32> {
        (0..n * dim).map(|_| self.f32()).collect()
    }
}

/// Exact scores in f64, computed without any engine code.
pub fn reference_score(metric: Metric, q: &[f32], v: &[f32]) -> f64 {
    let dot: f64 = q.iter().zip(v).map(|(a, b)| *a as f64 * *b as f64).sum();
    match metric {
        Metric::Dot => dot,
        Metric::Cosine => {
            let nq: f64 = q.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let nv: f64 = v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            if nq == 0.0 || nv == 0.0 {
                0.0
            } else {
                dot / (nq * nv)
            }
        }
        Metric::L2 => q
            .iter()
            .zip(v)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum(),
    }
}

/// Brute-force top-k over `(id, vector)` pairs: (id, score), best first, ties by order.
pub fn brute_force(
    metric: Metric,
    q: &[f32],
    items: &[(String, Vec<f32>)],
    k: usize,
) -> Vec<(String, f64)> {
    let mut scored: Vec<(usize, f64)> = items
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (i, reference_score(metric, q, v)))
        .collect();
    scored.sort_by(|a, b| {
        let ord = if metric == Metric::L2 {
            a.1.total_cmp(&b.1)
        } else {
            b.1.total_cmp(&a.1)
        };
        ord.then(a.0.cmp(&b.0))
    });
    scored
        .into_iter()
        .take(k)
        .map(|(i, s)| (items[i].0.clone(), s))
        .collect()
}

/// Asserts that `got` is a correct top-k given the reference: see [`topk_mismatch`].
pub fn assert_topk(
    metric: Metric,
    q: &[f32],
    items: &[(String, Vec<f32>)],
    got: &[SearchHit],
    k: usize,
    tol: f64,
    context: &str,
) {
    if let Some(problem) = topk_mismatch(metric, q, items, got, k, tol) {
        panic!("{context}: {problem} (seed {})", seed());
    }
}

/// Why `got` is not a correct top-k of `items`, or `None` if it is: same length as the
/// reference, scores within `tol` position by position, every id known with its true score
/// within `tol`, no id twice, and every id within `tol` of the k-th best (so only ties may
/// differ: two rows whose scores differ by less than an f32 rounding may come in either order).
pub fn topk_mismatch(
    metric: Metric,
    q: &[f32],
    items: &[(String, Vec<f32>)],
    got: &[SearchHit],
    k: usize,
    tol: f64,
) -> Option<String> {
    let want = brute_force(metric, q, items, k);
    if got.len() != want.len() {
        return Some(format!(
            "{} results, the reference has {}",
            got.len(),
            want.len()
        ));
    }
    let truth: std::collections::HashMap<&str, &Vec<f32>> =
        items.iter().map(|(id, v)| (id.as_str(), v)).collect();
    for (i, (hit, (want_id, want_score))) in got.iter().zip(&want).enumerate() {
        let scale = want_score.abs().max(1.0);
        if (hit.score as f64 - want_score).abs() > tol * scale {
            return Some(format!(
                "rank {i}: score {} vs reference {want_score} (want id {want_id}, got {})",
                hit.score, hit.id
            ));
        }
        let Some(v) = truth.get(hit.id.as_str()) else {
            return Some(format!("unknown id {}", hit.id));
        };
        let true_score = reference_score(metric, q, v);
        if (true_score - hit.score as f64).abs() > tol * scale {
            return Some(format!(
                "id {} reported {} but scores {true_score}",
                hit.id, hit.score
            ));
        }
    }
    let ids: std::collections::HashSet<&str> = got.iter().map(|h| h.id.as_str()).collect();
    if ids.len() != got.len() {
        return Some("duplicate ids in results".into());
    }
    if let Some((_, kth)) = want.last() {
        for hit in got {
            let s = reference_score(metric, q, truth[hit.id.as_str()]);
            let ok = if metric == Metric::L2 {
                s <= kth + tol * kth.abs().max(1.0)
            } else {
                s >= kth - tol * kth.abs().max(1.0)
            };
            if !ok {
                return Some(format!(
                    "id {} (score {s}) is not in the top {k} (k-th {kth})",
                    hit.id
                ));
            }
        }
    }
    None
}

/// The real embeddings beside the checkout, or `None` (and a visible note) when absent.
pub struct Dataset {
    pub base: Vec<f32>,
    pub queries: Vec<f32>,
    pub gt: Vec<i32>,
    pub dim: usize,
    pub n: usize,
    pub nq: usize,
}

fn data_dir() -> PathBuf {
    std::env::var("SRVDB_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

/// Reads a little-endian NumPy v1 array: (shape, raw data bytes).
pub fn read_npy(path: &std::path::Path) -> Option<(Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return None;
    }
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).ok()?;
    let shape_start = header.find("'shape': (")? + "'shape': (".len();
    let shape_end = shape_start + header[shape_start..].find(')')?;
    let shape = header[shape_start..shape_end]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().ok())
        .collect::<Option<Vec<usize>>>()?;
    Some((shape, bytes[10 + header_len..].to_vec()))
}

pub fn dataset() -> Option<Dataset> {
    let dir = data_dir();
    let load = |name: &str| read_npy(&dir.join(name));
    let (Some((bs, b)), Some((qs, q)), Some((_, g))) =
        (load("base.npy"), load("queries.npy"), load("gt_cosine.npy"))
    else {
        eprintln!(
            "SKIP: real embeddings not found in {} (set SRVDB_DATA_DIR)",
            dir.display()
        );
        return None;
    };
    let f32s = |b: &[u8]| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<_>>()
    };
    let i32s = |b: &[u8]| {
        b.chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<_>>()
    };
    Some(Dataset {
        base: f32s(&b),
        queries: f32s(&q),
        gt: i32s(&g),
        dim: bs[1],
        n: bs[0],
        nq: qs[0],
    })
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("srvdb-test-")
        .tempdir()
        .expect("temp dir")
}

pub fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("id-{i}")).collect()
}

/// `(id, vector)` pairs for the brute-force reference: ids `id-0..` (see [`ids`]) with the
/// vectors of `data`, `dim` components each.
pub fn items(data: &[f32], dim: usize) -> Vec<(String, Vec<f32>)> {
    ids(0..data.len() / dim)
        .into_iter()
        .zip(data.chunks(dim).map(<[f32]>::to_vec))
        .collect()
}

/// Writes `ids` with their documents in `mode`, from the owned strings tests build (a
/// [`srvdb::Write`] borrows `&str`s).
pub fn write_documents<S: AsRef<str>, D: AsRef<str>>(
    db: &impl srvdb::Store,
    mode: srvdb::WriteMode,
    ids: &[S],
    vectors: &[f32],
    metadatas: &[Option<srvdb::Metadata>],
    documents: &[Option<D>],
) -> srvdb::Result<()> {
    let ids = srvdb::store::str_refs(ids);
    let documents: Vec<Option<&str>> = documents
        .iter()
        .map(|d| d.as_ref().map(AsRef::as_ref))
        .collect();
    let write = srvdb::Write::new(mode, &ids, vectors).metadatas(metadatas);
    db.write(&write.documents(&documents))
}
