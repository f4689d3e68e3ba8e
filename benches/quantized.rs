//! Quantized search (issue 16) beside the exact f32 scan: int8 codes at oversample 1-4 and
//! 1-bit codes at 5, 10 and 20, each rescored exactly, on real MiniLM embeddings.
//!
//! Two sets, both needing the shared MiniLM data (`SRVDB_DATA_DIR` or `../shared/data`;
//! skipped, with a message, when absent):
//! - `minilm-20000x384`: the 20k sentence embeddings, their 200 queries and the shipped
//!   float64 ground truth;
//! - `perturbed-1000000x384`: each MiniLM row 50 times, plus Gaussian noise of norm about
//!   `SRVDB_QUANT_NOISE` (default 1.0), re-normalised; queried with the same 200 queries, its
//!   ground truth is the exact scan's top 10. Its mean top-1 minus top-10 cosine (the "gap")
//!   and the distinct source rows among the true top 10 are printed beside the real set's
//!   gap: with less noise the top 10 are copies of one or two sentences (at 1M rows, noise
//!   0.25: 1.4 distinct sources, gap 0.013; 0.5: 1.9, 0.024; 1.0: 3.3, 0.037; the real set:
//!   10 sentences, gap 0.121). `SRVDB_QUANT_ROWS` sizes it (default 1 000 000).
//!
//! `SRVDB_QUANT_SETS=minilm` or `=perturbed` runs one set, `SRVDB_QUANT_ONLY=int8` or
//! `=binary` one quantization (both: everything, the default).
//!
//! For each set and each quantization (one index at a time: creating the other replaces it),
//! a summary interleaves the cases query by query (the exact scan first, forced with
//! `Query::exact(true)`), and prints per case: single-query p50 and p99, their ratio to the
//! exact p50, the median paired ratio, recall@10, and the per-query time of batches of 100
//! queries beside the exact batch (the f32 GEMM path). Memory: `index_info().bytes` against
//! the f32 bytes (rows x dim x 4), and the process's resident set (anonymous and file-backed).
//!
//! Criterion runs the exact scan and each quantization at its default oversample. Under
//! `cargo test` the perturbed set shrinks to 2 000 rows and the summary to a few queries.

mod common;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::common;
    use criterion::{BenchmarkId, Criterion, SamplingMode};
    use srvdb::quant::{IndexSpec, Quantization};
    use srvdb::testing::Rng;
    use srvdb::{Database, Metric, OpenOptions, Query, SearchHit, Store};
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    const K: usize = 10;
    /// Queries per batch in the batch cases.
    const BATCH: usize = 100;
    /// Variants of each MiniLM row in the perturbed set.
    const VARIANTS: usize = 50;

    /// One searched configuration: the exact scan, or a quantization at an oversample.
    #[derive(Debug, Clone, Copy)]
    enum Case {
        Exact,
        Quantized(Quantization, usize),
    }

    impl Case {
        fn label(self) -> String {
            match self {
                Case::Exact => "f32 exact".to_string(),
                Case::Quantized(q, os) => format!("{} x{os}", q.name()),
            }
        }

        fn request(self, query: Query<'_>) -> Query<'_> {
            match self {
                Case::Exact => query.exact(true),
                Case::Quantized(_, os) => query.oversample(os),
            }
        }
    }

    /// The cases of one quantization, the exact scan first.
    fn cases(q: Quantization) -> Vec<Case> {
        let oversamples: &[usize] = match q {
            Quantization::Int8 => &[1, 2, 3, 4],
            Quantization::Binary => &[5, 10, 20],
        };
        std::iter::once(Case::Exact)
            .chain(oversamples.iter().map(|&os| Case::Quantized(q, os)))
            .collect()
    }

    struct Set {
        name: String,
        db: Database,
        rows: usize,
        dim: usize,
        queries: Vec<f32>,
        /// The true top-K row numbers of each query.
        truth: Vec<Vec<usize>>,
        /// Copies of each source row (the perturbed set), for the near-duplicate count.
        variants: Option<usize>,
        _dir: tempfile::TempDir,
    }

    impl Set {
        fn query_count(&self) -> usize {
            self.queries.len() / self.dim
        }

        fn query(&self, i: usize) -> &[f32] {
            let i = i % self.query_count();
            &self.queries[i * self.dim..(i + 1) * self.dim]
        }

        /// Queries `first..first + BATCH` (wrapping around the query set), back to back.
        fn batch(&self, first: usize) -> Vec<f32> {
            (first..first + BATCH)
                .flat_map(|i| self.query(i).iter().copied())
                .collect()
        }

        /// Recall@K of `hits` for query `i` against the truth.
        fn recall(&self, i: usize, hits: &[SearchHit]) -> f64 {
            common::recall_of(&self.truth[i % self.query_count()], hits)
        }
    }

    /// A cosine database holding `base` under ids "0", "1", ... (the row numbers).
    fn database(base: &[f32], dim: usize) -> (Database, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(
            dir.path(),
            OpenOptions::default().with_metric(Metric::Cosine),
        )
        .expect("open database");
        let rows = base.len() / dim;
        let step = 10_000;
        for at in (0..rows).step_by(step) {
            let n = step.min(rows - at);
            let ids: Vec<String> = (at..at + n).map(|i| i.to_string()).collect();
            db.add(&ids, &base[at * dim..(at + n) * dim], &[])
                .expect("add");
        }
        db.persist().expect("persist");
        (db, dir)
    }

    fn real_set(m: &common::MiniLm) -> Set {
        let start = Instant::now();
        let rows = m.base.len() / m.dim;
        let (db, dir) = database(&m.base, m.dim);
        let name = format!("minilm-{rows}x{}", m.dim);
        println!("built {name} in {:.1} s", start.elapsed().as_secs_f64());
        Set {
            name,
            db,
            rows,
            dim: m.dim,
            queries: m.queries.clone(),
            truth: m.truth.clone(),
            variants: None,
            _dir: dir,
        }
    }

    /// `rows` rows: row `r` is MiniLM row `r / VARIANTS` (cycling) plus Gaussian noise of
    /// expected norm `noise`, scaled back to unit length. Ground truth: the exact scan.
    fn perturbed_set(m: &common::MiniLm, rows: usize, noise: f32, queries: usize) -> Set {
        let start = Instant::now();
        let dim = m.dim;
        let sources = m.base.len() / dim;
        let sigma = noise / (dim as f32).sqrt();
        let mut rng = Rng::new(0x0a7_1600 ^ rows as u64);
        let mut base = Vec::with_capacity(rows * dim);
        for r in 0..rows {
            let src = (r / VARIANTS) % sources;
            let row = &m.base[src * dim..(src + 1) * dim];
            let at = base.len();
            base.extend(row.iter().map(|x| x + sigma * rng.normal()));
            let v = &mut base[at..];
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
        }
        let (db, dir) = database(&base, dim);
        drop(base);
        let queries = m.queries[..queries * dim].to_vec();
        let truth = db
            .query(&Query::batch(&queries, K).exact(true))
            .expect("exact ground truth")
            .iter()
            .map(|hits| {
                hits.iter()
                    .map(|h| h.id.parse().expect("row-number id"))
                    .collect()
            })
            .collect();
        let name = format!("perturbed-{rows}x{dim}");
        println!(
            "built {name} (noise {noise}) in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Set {
            name,
            db,
            rows,
            dim,
            queries,
            truth,
            variants: Some(VARIANTS),
            _dir: dir,
        }
    }

    /// Mean over the queries of the distinct source rows among the true top K (K: every
    /// neighbour is a different sentence; 1: all are copies of one).
    fn distinct_sources(set: &Set, variants: usize) -> f64 {
        let total: usize = set
            .truth
            .iter()
            .map(|rows| {
                let mut sources: Vec<usize> = rows.iter().map(|r| r / variants).collect();
                sources.sort_unstable();
                sources.dedup();
                sources.len()
            })
            .sum();
        total as f64 / set.truth.len().max(1) as f64
    }

    /// Mean cosine of the 1st and the K-th exact neighbour over the set's queries.
    fn neighbour_scores(set: &Set) -> (f64, f64) {
        let lists = set
            .db
            .query(&Query::batch(&set.queries, K).exact(true))
            .expect("exact search");
        let n = lists.len().max(1) as f64;
        let first = lists.iter().map(|h| f64::from(h[0].score)).sum::<f64>() / n;
        let last = lists.iter().map(|h| f64::from(h[K - 1].score)).sum::<f64>() / n;
        (first, last)
    }

    /// The process's resident set, in MB: (total, anonymous, file-backed), from
    /// /proc/self/status (zeros where it is not Linux).
    fn rss_mb() -> (f64, f64, f64) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kib| kib.parse::<f64>().ok())
                .map_or(0.0, |kib| kib * 1024.0 / 1e6)
        };
        (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
    }

    fn search(set: &Set, case: Case, i: usize) -> Vec<SearchHit> {
        let q = black_box(set.query(i));
        let mut lists = set
            .db
            .query(&case.request(Query::one(q, K)))
            .expect("search");
        black_box(lists.pop().unwrap_or_default())
    }

    fn search_batch(set: &Set, case: Case, queries: &[f32]) -> Vec<Vec<SearchHit>> {
        black_box(
            set.db
                .query(&case.request(Query::batch(black_box(queries), K)))
                .expect("batch search"),
        )
    }

    fn bench(c: &mut Criterion, set: &Set, q: Quantization) {
        let mut g = c.benchmark_group(format!("quantized/{}", set.name));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .sampling_mode(SamplingMode::Flat);
        for case in [Case::Exact, Case::Quantized(q, q.default_oversample())] {
            g.bench_function(BenchmarkId::new("single_k10", case.label()), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for i in 0..iters as usize {
                        search(set, case, i);
                    }
                    start.elapsed()
                })
            });
        }
        g.finish();
    }

    fn median(ms: &[f64]) -> f64 {
        common::percentile(ms, 0.5)
    }

    /// Creates the `q` index on `set` and prints its size and the resident set; false (with
    /// the reason) when the engine cannot build it.
    fn create(set: &Set, q: Quantization) -> bool {
        let start = Instant::now();
        match set.db.create_index(&IndexSpec::flat(q)) {
            Ok(info) => {
                let f32_bytes = (set.rows * set.dim * 4) as f64;
                let (rss, anon, file) = rss_mb();
                println!(
                    "{}: {} index over {} rows built in {:.2} s: {:.1} MB = {:.4}x the f32 \
                     rows ({:.1} MB); RSS {rss:.0} MB (anon {anon:.0}, file {file:.0})",
                    set.name,
                    q.name(),
                    info.rows,
                    start.elapsed().as_secs_f64(),
                    info.bytes as f64 / 1e6,
                    info.bytes as f64 / f32_bytes,
                    f32_bytes / 1e6,
                );
                true
            }
            Err(e) => {
                println!("SKIP {} {}: create_index failed: {e}", set.name, q.name());
                false
            }
        }
    }

    /// One quantization's cases on `set`, interleaved query by query (a shared machine
    /// drifts over a run, and timing one case after another would put the drift into the
    /// ratios): single queries, then batches of `BATCH`.
    fn summary(set: &Set, q: Quantization, iters: usize, rounds: usize) {
        let cases = cases(q);
        for i in 0..5 {
            for &case in &cases {
                search(set, case, i);
            }
        }
        let mut times = vec![Vec::with_capacity(iters); cases.len()];
        let mut recall = vec![0.0; cases.len()];
        for i in 0..iters {
            for (c, &case) in cases.iter().enumerate() {
                let start = Instant::now();
                let hits = search(set, case, i);
                times[c].push(start.elapsed().as_secs_f64() * 1e3);
                recall[c] += set.recall(i, &hits);
            }
        }
        let (rss, anon, file) = rss_mb();
        // Batches: per-query time of each batch, and recall over its answers.
        let mut batch_times = vec![Vec::with_capacity(rounds); cases.len()];
        let mut batch_recall = vec![0.0; cases.len()];
        for r in 0..rounds {
            let first = r * BATCH;
            let queries = set.batch(first);
            for (c, &case) in cases.iter().enumerate() {
                let start = Instant::now();
                let lists = search_batch(set, case, &queries);
                batch_times[c].push(start.elapsed().as_secs_f64() * 1e3 / BATCH as f64);
                batch_recall[c] += lists
                    .iter()
                    .enumerate()
                    .map(|(j, hits)| set.recall(first + j, hits))
                    .sum::<f64>()
                    / BATCH as f64;
            }
        }
        let exact = median(&times[0]);
        let exact_batch = median(&batch_times[0]);
        println!(
            "\n{} ({} rows), {}: single queries (k = {K}, {iters} interleaved) and batches \
             of {BATCH} ({rounds} interleaved); RSS after the single queries {rss:.0} MB \
             (anon {anon:.0}, file {file:.0})",
            set.name,
            set.rows,
            q.name()
        );
        println!(
            "{:>12} | {:>9} {:>9} {:>7} {:>7} {:>9} | {:>12} {:>7} {:>9}",
            "case",
            "p50 ms",
            "p99 ms",
            "ratio",
            "paired",
            "recall",
            "batch ms/q",
            "ratio",
            "recall"
        );
        for (c, case) in cases.iter().enumerate() {
            let paired: Vec<f64> = times[c].iter().zip(&times[0]).map(|(t, e)| t / e).collect();
            let p50 = median(&times[c]);
            let bp50 = median(&batch_times[c]);
            println!(
                "{:>12} | {:>9.3} {:>9.3} {:>7.3} {:>7.3} {:>9.4} | {:>12.4} {:>7.3} {:>9.4}",
                case.label(),
                p50,
                common::percentile(&times[c], 0.99),
                p50 / exact,
                median(&paired),
                recall[c] / iters as f64,
                bp50,
                bp50 / exact_batch,
                batch_recall[c] / rounds as f64,
            );
        }
    }

    pub fn main() {
        let full = common::bench_mode();
        let Some(minilm) = common::load_minilm(K, "SKIP quantized") else {
            return;
        };
        let rows = std::env::var("SRVDB_QUANT_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let noise = std::env::var("SRVDB_QUANT_NOISE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        // `SRVDB_QUANT_SETS` (`minilm`, `perturbed`, or both comma-separated) and
        // `SRVDB_QUANT_ONLY` (`int8` or `binary`) narrow a run while iterating on one case.
        let sets_wanted = std::env::var("SRVDB_QUANT_SETS").unwrap_or_default();
        let wants = |set: &str| sets_wanted.is_empty() || sets_wanted.split(',').any(|s| s == set);
        let only: Option<Quantization> = std::env::var("SRVDB_QUANT_ONLY")
            .ok()
            .and_then(|v| v.parse().ok());
        let (iters, rounds) = if full { (200, 6) } else { (5, 1) };
        let mut sets = Vec::new();
        if full && wants("minilm") {
            sets.push(real_set(&minilm));
        }
        let queries = minilm.queries.len() / minilm.dim;
        if !full || wants("perturbed") {
            sets.push(perturbed_set(
                &minilm,
                if full { rows } else { 2_000 },
                noise,
                if full { queries } else { 5 },
            ));
        }
        drop(minilm);
        println!("\nexact neighbours (mean over the queries): top-1, top-{K} cosine and the gap");
        for set in &sets {
            let (first, last) = neighbour_scores(set);
            let sources = set.variants.map_or(String::new(), |v| {
                format!(
                    ", {:.2} distinct source rows in the top {K}",
                    distinct_sources(set, v)
                )
            });
            println!(
                "{:>24}: top-1 {first:.4}, top-{K} {last:.4}, gap {:.4}{sources}",
                set.name,
                first - last
            );
        }
        let (rss, anon, file) = rss_mb();
        println!("RSS before any index: {rss:.0} MB (anon {anon:.0}, file {file:.0})");
        let mut c = Criterion::default().configure_from_args();
        for set in &sets {
            for q in [Quantization::Int8, Quantization::Binary] {
                if only.is_some_and(|o| o != q) || !create(set, q) {
                    continue;
                }
                bench(&mut c, set, q);
                summary(set, q, iters, rounds);
            }
            set.db.drop_index().expect("drop_index");
        }
        c.final_summary();
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
