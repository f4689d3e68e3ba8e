//! Shared test helpers: seeded data, an independent brute-force reference, the real dataset
//! (or a visible skip), and scratch directories.
// Each test uses a subset of these helpers and re-exports.
#![allow(dead_code, unused_imports)]

use srvdb::{npy, Metric, SearchHit};
use std::path::PathBuf;

/// The seed (fixed by default, overridable with `SRVDB_SEED`, printed in failures) and the
/// seeded generator: one of each for the whole workspace, in `srvdb::testing`.
pub use srvdb::testing::{seed, Rng};

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

/// `SRVDB_DATA_DIR`, else `../shared/data` beside the workspace root (found from the manifest
/// directory, which is `host/` when the host's tests include this file).
fn data_dir() -> PathBuf {
    std::env::var("SRVDB_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let root = manifest
                .ancestors()
                .find(|d| d.join("Cargo.lock").is_file())
                .unwrap_or(manifest);
            root.join("../shared/data")
        })
}

/// The real embeddings, read with the workspace's one `.npy` reader (`srvdb::npy`). Absent
/// files are a visible skip; files that are there but do not parse fail the test.
pub fn dataset() -> Option<Dataset> {
    let dir = data_dir();
    let names = ["base.npy", "queries.npy", "gt_cosine.npy"];
    if let Some(missing) = names.iter().find(|n| !dir.join(n).is_file()) {
        eprintln!(
            "SKIP: real embeddings not found in {} (no {missing}; set SRVDB_DATA_DIR)",
            dir.display()
        );
        return None;
    }
    let path = |name: &str| dir.join(name);
    let base = npy::read::<f32>(&path("base.npy"))
        .unwrap_or_else(|e| panic!("{}: {e}", path("base.npy").display()));
    let queries = npy::read::<f32>(&path("queries.npy"))
        .unwrap_or_else(|e| panic!("{}: {e}", path("queries.npy").display()));
    let gt = npy::read::<i32>(&path("gt_cosine.npy"))
        .unwrap_or_else(|e| panic!("{}: {e}", path("gt_cosine.npy").display()));
    Some(Dataset {
        dim: base.cols,
        n: base.rows,
        nq: queries.rows,
        base: base.data,
        queries: queries.data,
        gt: gt.data,
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

/// Runs test `test` of this test binary as a child process (with `env` set, stdout piped),
/// lets it print a random number (0-3) of `committed N` lines after `committed`, kills it with
/// SIGKILL after a further random delay of up to `max_delay_us`, and returns the last `N` it
/// printed (or `committed`): the crash tests' way of stopping a writer at a random moment.
#[allow(dead_code)] // used by the crash tests, not by every test binary
pub fn run_and_kill(
    test: &str,
    env: &[(&str, String)],
    committed: usize,
    rng: &mut Rng,
    max_delay_us: u64,
) -> usize {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(&exe);
    child.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    for (name, value) in env {
        child.env(name, value);
    }
    let mut child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The test harness prints "test <name> ... " without a newline before the
            // child's first line, so the marker is searched for, not expected at the start.
            if let Some((_, n)) = line.split_once("committed ") {
                let _ = tx.send(n.trim().parse::<usize>().unwrap_or(0));
            }
        }
    });
    let wait_commits = rng.below(4) as usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = committed;
    while acked < committed + wait_commits && Instant::now() < deadline {
        if let Ok(n) = rx.recv_timeout(Duration::from_millis(50)) {
            acked = n;
        }
    }
    std::thread::sleep(Duration::from_micros(rng.below(max_delay_us)));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    while let Ok(n) = rx.try_recv() {
        acked = n;
    }
    acked
}
