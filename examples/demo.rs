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

use srvdb::{Database, Metadata, OpenOptions, SearchHit, Store};
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
    write_npy_row(&query_file, &data.queries[..data.dim])?;
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
    let base = read_npy(&dir.join("base.npy"), "<f4")?;
    let queries = read_npy(&dir.join("queries.npy"), "<f4")?;
    let gt = read_npy(&dir.join("gt_cosine.npy"), "<i4")?;
    let base_text = read_lines(&dir.join("base.txt"))?;
    let query_text = read_lines(&dir.join("queries.txt"))?;

    let [n, dim] = base.shape2()?;
    let [nq, qdim] = queries.shape2()?;
    let [gq, gk] = gt.shape2()?;
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
    let gt_rows = gt.to_i32();
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
        base: base.to_f32(),
        base_text,
        queries: queries.to_f32(),
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

/// A 2-D array from a `.npy` file: its shape and raw little-endian element bytes.
struct Npy {
    path: PathBuf,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Npy {
    fn shape2(&self) -> DemoResult<[usize; 2]> {
        match self.shape[..] {
            [a, b] => Ok([a, b]),
            _ => Err(format!(
                "{}: shape {:?}, expected 2-D",
                self.path.display(),
                self.shape
            )
            .into()),
        }
    }

    fn to_f32(&self) -> Vec<f32> {
        self.data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn to_i32(&self) -> Vec<i32> {
        self.data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// Reads a NumPy `.npy` file (format 1.0, 2.0 or 3.0) of C-order, 4-byte elements of type
/// `descr` (`<f4` or `<i4`).
fn read_npy(path: &Path, descr: &str) -> DemoResult<Npy> {
    let bad = |what: String| -> Box<dyn Error> { format!("{}: {what}", path.display()).into() };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file".into()));
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => {
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated or non-text header".into()))?;

    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let got_descr = field("descr")
        .and_then(|v| v.strip_prefix('\''))
        .and_then(|v| v.split('\'').next())
        .ok_or_else(|| bad(format!("no descr in header {header:?}")))?;
    if got_descr != descr {
        return Err(bad(format!("dtype {got_descr}, expected {descr}")));
    }
    if !field("fortran_order").is_some_and(|v| v.starts_with("False")) {
        return Err(bad("Fortran-order arrays are not supported".into()));
    }
    let shape_text = field("shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| bad(format!("no shape in header {header:?}")))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad shape ({shape_text}): {e}")))?;

    let want = shape.iter().product::<usize>() * 4;
    let data = &bytes[data_start..];
    if data.len() != want {
        return Err(bad(format!(
            "shape {shape:?} needs {want} data bytes, the file has {}",
            data.len()
        )));
    }
    Ok(Npy {
        path: path.to_owned(),
        shape,
        data: data.to_vec(),
    })
}

/// Clustered, L2-normalised random vectors (`clusters` Gaussian blobs), with brute-force
/// cosine ground truth. Seeded, so every run sees the same data.
fn synthetic(n: usize, nq: usize, dim: usize, clusters: usize, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let centers: Vec<f32> = (0..clusters * dim).map(|_| rng.normal()).collect();
    let point = |rng: &mut Rng| -> (usize, Vec<f32>) {
        let c = rng.below(clusters);
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

/// SplitMix64: small, seedable, good enough for demo data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// Writes one float32 row as a NumPy v1 `.npy` file (shape (1, d)).
fn write_npy_row(path: &Path, row: &[f32]) -> Result<(), Box<dyn std::error::Error>> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': (1, {}), }}",
        row.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for x in row {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()).into())
}
