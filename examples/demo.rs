//! End-to-end demo: build a database from sentence embeddings, reopen it, search it, and check
//! recall against exact ground truth.
//!
//! Data: the MiniLM sentence set in `../shared/data` (relative to the repository root), or the
//! directory named by `SRVDB_DATA_DIR`: `base.npy` (N x d float32), `base.txt` (one sentence per
//! line), `queries.npy`, `queries.txt` and `gt_cosine.npy` (int32, the exact top-100 rows of
//! each query). Without it the demo generates seeded, clustered synthetic vectors and says so.
//!
//! Run with `cargo run --release --example demo`. (`make demo` runs the text demo,
//! `examples/stdlib_search.py`, not this one.)

use srvdb::testing::Rng;
use srvdb::{npy, Database, Metadata, OpenOptions, SearchHit, Store};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type DemoResult<T> = Result<T, Box<dyn Error>>;

/// Rows per `add` call.
const BATCH: usize = 2000;
/// Queries whose hits are printed in full.
const SHOWN_QUERIES: usize = 5;
/// Hits printed per shown query.
const SHOWN_HITS: usize = 5;
/// The k of recall@k.
const RECALL_K: usize = 10;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> DemoResult<()> {
    let data = load_data()?;
    println!(
        "data: {}\n  {} base vectors, {} queries, dimension {}",
        data.source,
        data.base_count(),
        data.query_count(),
        data.dim
    );

    let db_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo-db");
    if db_dir.exists() {
        std::fs::remove_dir_all(&db_dir)
            .map_err(|e| format!("removing the old demo database {}: {e}", db_dir.display()))?;
    }
    println!("database: {}", db_dir.display());

    // 1. Ingest in batches, each sentence stored as JSON metadata next to its vector.
    let db = Database::open(&db_dir, OpenOptions::default())?;
    println!("kernels: {}", db.kernel_description());
    let started = Instant::now();
    for (b, first) in (0..data.base_count()).step_by(BATCH).enumerate() {
        let end = (first + BATCH).min(data.base_count());
        let ids: Vec<String> = (first..end).map(row_id).collect();
        let vectors = &data.base[first * data.dim..end * data.dim];
        let metas: Vec<Option<Metadata>> = data.base_text[first..end]
            .iter()
            .map(|text| Some(Metadata::from(serde_json::json!({ "text": text }))))
            .collect();
        let t = Instant::now();
        db.add(&ids, vectors, &metas)?;
        println!(
            "  batch {:>2}: rows {first:>5}..{end:<5} in {:>7.1} ms (count {})",
            b + 1,
            ms(t.elapsed()),
            db.count()
        );
    }
    let t = Instant::now();
    db.persist()?;
    let persist_time = t.elapsed();
    let ingest_time = started.elapsed();
    println!(
        "ingested {} vectors in {:.2} s: {:.0} vectors/s, durable (add commits by itself once {} changes are pending; final persist {:.1} ms)",
        data.base_count(),
        ingest_time.as_secs_f64(),
        data.base_count() as f64 / ingest_time.as_secs_f64(),
        OpenOptions::default().auto_commit_rows,
        ms(persist_time)
    );

    // 2. Close and reopen: everything below reads what is on disk.
    db.close()?;
    let t = Instant::now();
    let db = Database::open(&db_dir, OpenOptions::default())?;
    println!(
        "reopened in {:.1} ms: {} records, dimension {}, metric {}",
        ms(t.elapsed()),
        db.count(),
        db.dimension().unwrap_or(0),
        db.metric()
    );
    if db.count() != data.base_count() as u64 {
        return Err(format!(
            "reopened database holds {} records, expected {}",
            db.count(),
            data.base_count()
        )
        .into());
    }

    // 3. A few queries in full.
    for q in 0..SHOWN_QUERIES.min(data.query_count()) {
        let query = &data.queries[q * data.dim..(q + 1) * data.dim];
        println!("\nquery {q}: {}", clip(&data.query_text[q], 110));
        for hit in db.search(query, SHOWN_HITS)? {
            let text = text_of(&db, &hit.id)?;
            println!("  {:.3}  {:<10} {}", hit.score, hit.id, clip(&text, 90));
        }
    }

    // 4. Every query at once, against the exact ground truth.
    let nq = data.query_count();
    db.search_batch(&data.queries, RECALL_K)?; // warm-up: page in the mapped rows
    let t = Instant::now();
    let results = db.search_batch(&data.queries, RECALL_K)?;
    let batch_time = t.elapsed();
    let recall = recall_at_k(&results, &data.ground_truth, RECALL_K)?;

    let t = Instant::now();
    for q in 0..nq {
        db.search(&data.queries[q * data.dim..(q + 1) * data.dim], RECALL_K)?;
    }
    let single_time = t.elapsed();

    println!(
        "\n{nq} queries, k = {RECALL_K}, exact search over {} rows:",
        db.count()
    );
    println!("  recall@{RECALL_K} vs ground truth: {recall:.4}");
    println!(
        "  search_batch: {:.1} ms total, {:.3} ms per query",
        ms(batch_time),
        ms(batch_time) / nq as f64
    );
    println!(
        "  search, one query at a time: {:.3} ms per query",
        ms(single_time) / nq as f64
    );
    db.close()?;

    // The first query, saved so it can be asked again through the sandboxed component
    // (`srvdb-host search target/demo-db --query-file target/demo-query.npy`).
    let query_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo-query.npy");
    npy::write(&query_file, 1, data.dim, &data.queries[..data.dim])
        .map_err(|e| format!("writing {}: {e}", query_file.display()))?;
    println!(
        "\nwrote query 0 to {} for the sandboxed run",
        query_file.display()
    );
    Ok(())
}

/// The id of base row `row`.
fn row_id(row: usize) -> String {
    format!("doc-{row}")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `text` field of a record's metadata.
fn text_of(db: &Database, id: &str) -> DemoResult<String> {
    let record = db.get(id)?.ok_or_else(|| format!("hit {id} not found"))?;
    let json = record.metadata.map(|m| m.to_json()).unwrap_or_default();
    Ok(json
        .get("text")
        .and_then(|t| t.as_str())
        .unwrap_or("<no text>")
        .to_owned())
}

/// At most `max` characters of `s`, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// Mean fraction of the true top `k` found in each result's top `k`.
fn recall_at_k(results: &[Vec<SearchHit>], truth: &[Vec<usize>], k: usize) -> DemoResult<f64> {
    if results.len() != truth.len() {
        return Err(format!("{} results for {} queries", results.len(), truth.len()).into());
    }
    let mut total = 0.0;
    for (hits, gt) in results.iter().zip(truth) {
        let want: Vec<String> = gt.iter().take(k).map(|&r| row_id(r)).collect();
        let found = hits.iter().take(k).filter(|h| want.contains(&h.id)).count();
        total += found as f64 / k as f64;
    }
    Ok(total / truth.len().max(1) as f64)
}

/// Vectors, sentences and ground truth, from files or generated.
struct Data {
    source: String,
    dim: usize,
    base: Vec<f32>,
    base_text: Vec<String>,
    queries: Vec<f32>,
    query_text: Vec<String>,
    /// Base rows nearest each query by cosine, best first.
    ground_truth: Vec<Vec<usize>>,
}

impl Data {
    fn base_count(&self) -> usize {
        self.base_text.len()
    }

    fn query_count(&self) -> usize {
        self.query_text.len()
    }
}

fn load_data() -> DemoResult<Data> {
    if let Some(dir) = std::env::var_os("SRVDB_DATA_DIR") {
        let dir = PathBuf::from(dir);
        if !dir.join("base.npy").is_file() {
            return Err(format!("SRVDB_DATA_DIR={}: no base.npy there", dir.display()).into());
        }
        return load_files(&dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if dir.join("base.npy").is_file() {
        return load_files(&dir);
    }
    println!(
        "no dataset at {} (set SRVDB_DATA_DIR to use one): generating synthetic data",
        dir.display()
    );
    Ok(synthetic(20_000, 200, 384, 64, 20_261_124))
}

fn load_files(dir: &Path) -> DemoResult<Data> {
    let t = Instant::now();
    let base = read_npy::<f32>(&dir.join("base.npy"))?;
    let queries = read_npy::<f32>(&dir.join("queries.npy"))?;
    let gt = read_npy::<i32>(&dir.join("gt_cosine.npy"))?;
    let base_text = read_lines(&dir.join("base.txt"))?;
    let query_text = read_lines(&dir.join("queries.txt"))?;

    let (n, dim) = (base.rows, base.cols);
    let (nq, qdim) = (queries.rows, queries.cols);
    let (gq, gk) = (gt.rows, gt.cols);
    if qdim != dim {
        return Err(format!("queries.npy has dimension {qdim}, base.npy {dim}").into());
    }
    if base_text.len() != n || query_text.len() != nq {
        return Err(format!(
            "{} base sentences for {n} base vectors, {} query sentences for {nq} queries",
            base_text.len(),
            query_text.len()
        )
        .into());
    }
    if gq != nq || gk < RECALL_K {
        return Err(format!("gt_cosine.npy is {gq} x {gk}, expected {nq} x >= {RECALL_K}").into());
    }
    let gt_rows = gt.data;
    if let Some(bad) = gt_rows.iter().find(|&&r| r < 0 || r as usize >= n) {
        return Err(format!("gt_cosine.npy names row {bad}, outside 0..{n}").into());
    }
    let ground_truth = gt_rows
        .chunks_exact(gk)
        .map(|row| row.iter().map(|&r| r as usize).collect())
        .collect();
    let data = Data {
        source: format!(
            "{} (loaded in {:.0} ms)",
            dir.canonicalize()
                .unwrap_or_else(|_| dir.to_owned())
                .display(),
            ms(t.elapsed())
        ),
        dim,
        base: base.data,
        base_text,
        queries: queries.data,
        query_text,
        ground_truth,
    };
    Ok(data)
}

fn read_lines(path: &Path) -> DemoResult<Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// Reads a `.npy` file of `T` with the workspace's reader (`srvdb::npy`), naming the file in
/// any error.
fn read_npy<T: npy::Element>(path: &Path) -> DemoResult<npy::Matrix<T>> {
    npy::read(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Clustered, L2-normalised random vectors (`clusters` Gaussian blobs), with brute-force
/// cosine ground truth. Seeded, so every run sees the same data.
fn synthetic(n: usize, nq: usize, dim: usize, clusters: usize, seed: u64) -> Data {
    let mut rng = Rng::new(seed);
    let centers: Vec<f32> = (0..clusters * dim).map(|_| rng.normal()).collect();
    let point = |rng: &mut Rng| -> (usize, Vec<f32>) {
        let c = rng.below(clusters as u64) as usize;
        let mut v: Vec<f32> = centers[c * dim..(c + 1) * dim]
            .iter()
            .map(|x| x + 0.6 * rng.normal())
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        (c, v)
    };
    let mut base = Vec::with_capacity(n * dim);
    let mut base_text = Vec::with_capacity(n);
    for i in 0..n {
        let (c, v) = point(&mut rng);
        base.extend_from_slice(&v);
        base_text.push(format!("synthetic point {i} from cluster {c}"));
    }
    let mut queries = Vec::with_capacity(nq * dim);
    let mut query_text = Vec::with_capacity(nq);
    for i in 0..nq {
        let (c, v) = point(&mut rng);
        queries.extend_from_slice(&v);
        query_text.push(format!("synthetic query {i} near cluster {c}"));
    }
    // Exact truth in f64: all vectors are unit length, so cosine is the inner product.
    let ground_truth = queries
        .chunks_exact(dim)
        .map(|q| {
            let mut scored: Vec<(f64, usize)> = base
                .chunks_exact(dim)
                .enumerate()
                .map(|(row, b)| {
                    let dot = q.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y));
                    (dot.sum(), row)
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.iter().take(100).map(|&(_, row)| row).collect()
        })
        .collect();
    Data {
        source: format!("synthetic, {clusters} clusters, seed {seed}"),
        dim,
        base,
        base_text,
        queries,
        query_text,
        ground_truth,
    }
}
