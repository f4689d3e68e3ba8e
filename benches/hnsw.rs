//! The HNSW index (issue 17) beside the exact scan of the same database: build time, and
//! single-query search at ef 32, 64 and 128 (f32 and int8 traversal), so the speed-up
//! QPS(hnsw) / QPS(exact) is read off one run.
//!
//! The set: the shared MiniLM embeddings (`SRVDB_DATA_DIR` or `../shared/data`: 20k x 384,
//! 200 held-out queries, the shipped float64 ground truth) when present; with
//! `SRVDB_HNSW_ROWS` above their count, that many rows made from them (each row 50 times
//! plus Gaussian noise of norm 1, re-normalised, as benches/quantized.rs builds its 1M set;
//! ground truth: the exact scan). Without the shared data: `SRVDB_HNSW_ROWS` (default 20 000)
//! clustered synthetic 384-d unit vectors, ground truth the exact scan.
//!
//! For each traversal (f32, then int8: creating one index replaces the other), the build is
//! timed (rows/s, `index_info().bytes`, resident set), then a summary interleaves the exact
//! scan and each ef query by query (a shared machine drifts, and timing one case after the
//! other would put the drift into the ratios) and prints per case: p50 and p99, QPS on one
//! thread of queries, its ratio to the exact scan's, and recall@10. Criterion then runs the
//! exact scan and each ef; `cargo bench --bench hnsw -- nomatch` prints the summary only.
//! Then, at the default ef, filtered searches (1%, 10% and 50% of the rows match) against the
//! exact filtered scan, and last, after deleting 30% of the rows from a fresh f32 graph, the
//! search over the survivors against the exact scan (recall against the exact scan's answer).
//! Under `cargo test` the set shrinks to 2 000 synthetic rows and a few queries.

mod common;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::common;
    use criterion::{BenchmarkId, Criterion, SamplingMode};
    use srvdb::quant::{HnswParams, IndexSpec, Quantization};
    use srvdb::testing::Rng;
    use srvdb::{Database, Delete, Filter, Metadata, Metric, OpenOptions, Query, SearchHit, Store};
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    const K: usize = 10;
    /// The search-time efs measured.
    const EFS: [usize; 3] = [32, 64, 128];
    /// Copies of each MiniLM row in a set larger than MiniLM (benches/quantized.rs's choice).
    const VARIANTS: usize = 50;
    const DIM_SYNTHETIC: usize = 384;

    /// One searched configuration: the exact scan, or the graph at an ef.
    #[derive(Debug, Clone, Copy)]
    enum Case {
        Exact,
        Graph(usize),
    }

    impl Case {
        fn label(self) -> String {
            match self {
                Case::Exact => "exact".to_string(),
                Case::Graph(ef) => format!("ef {ef}"),
            }
        }

        fn request(self, query: Query<'_>) -> Query<'_> {
            match self {
                Case::Exact => query.exact(true),
                Case::Graph(ef) => query.ef(ef),
            }
        }
    }

    fn cases() -> Vec<Case> {
        std::iter::once(Case::Exact)
            .chain(EFS.iter().map(|&ef| Case::Graph(ef)))
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

        /// Recall@K of `hits` for query `i` against the truth.
        fn recall(&self, i: usize, hits: &[SearchHit]) -> f64 {
            common::recall_of(&self.truth[i % self.query_count()], hits)
        }
    }

    /// Scales each `dim`-long row of `v` to unit length.
    fn normalise(v: &mut [f32], dim: usize) {
        for row in v.chunks_mut(dim) {
            let norm = row
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }

    /// `rows` rows: row `r` is `source` row `r / VARIANTS` (cycling) plus Gaussian noise of
    /// expected norm 1, re-normalised.
    fn perturbed(source: &[f32], dim: usize, rows: usize) -> Vec<f32> {
        let sources = source.len() / dim;
        let sigma = 1.0 / (dim as f32).sqrt();
        let mut rng = Rng::new(0x0a7_1700 ^ rows as u64);
        let mut base = Vec::with_capacity(rows * dim);
        for r in 0..rows {
            let src = (r / VARIANTS) % sources;
            base.extend(
                source[src * dim..(src + 1) * dim]
                    .iter()
                    .map(|x| x + sigma * rng.normal()),
            );
        }
        normalise(&mut base, dim);
        base
    }

    /// `n` unit vectors around `n / 100` random centres (at least 8): real embeddings
    /// cluster, and HNSW on uniform noise measures nothing users see.
    fn clustered(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let centres = rng.vectors((n / 100).max(8), dim);
        let count = centres.len() / dim;
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let c = rng.below(count as u64) as usize;
            out.extend(
                centres[c * dim..(c + 1) * dim]
                    .iter()
                    .map(|x| x + 0.9 * rng.normal()),
            );
        }
        normalise(&mut out, dim);
        out
    }

    /// A cosine database holding `base` under ids "0", "1", ... (the row numbers), each with
    /// metadata `{"b": row % 100}`.
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
            // `b`: the row number modulo 100, for filters of 1%, 10% and 50% selectivity.
            let metas: Vec<Option<Metadata>> = (at..at + n)
                .map(|i| Some(Metadata::from_text(format!("{{\"b\": {}}}", i % 100))))
                .collect();
            db.add(&ids, &base[at * dim..(at + n) * dim], &metas)
                .expect("add");
        }
        db.persist().expect("persist");
        (db, dir)
    }

    /// The exact scan's top K of each query (the ground truth of a set without one).
    fn exact_truth(db: &Database, queries: &[f32]) -> Vec<Vec<usize>> {
        db.query(&Query::batch(queries, K).exact(true))
            .expect("exact ground truth")
            .iter()
            .map(|hits| {
                hits.iter()
                    .map(|h| h.id.parse().expect("row-number id"))
                    .collect()
            })
            .collect()
    }

    fn make_set(full: bool) -> Set {
        let start = Instant::now();
        let asked: Option<usize> = std::env::var("SRVDB_HNSW_ROWS")
            .ok()
            .and_then(|v| v.parse().ok());
        let minilm = if full {
            common::load_minilm(K, "synthetic rows instead")
        } else {
            None
        };
        let set = match minilm {
            Some(common::MiniLm {
                base,
                dim,
                queries,
                truth,
            }) => {
                let real = base.len() / dim;
                match asked.filter(|&n| n > real) {
                    None => {
                        let (db, dir) = database(&base, dim);
                        Set {
                            name: format!("minilm-{real}x{dim}"),
                            db,
                            rows: real,
                            dim,
                            queries,
                            truth,
                            _dir: dir,
                        }
                    }
                    Some(rows) => {
                        let base = perturbed(&base, dim, rows);
                        let (db, dir) = database(&base, dim);
                        drop(base);
                        let truth = exact_truth(&db, &queries);
                        Set {
                            name: format!("minilm-perturbed-{rows}x{dim}"),
                            db,
                            rows,
                            dim,
                            queries,
                            truth,
                            _dir: dir,
                        }
                    }
                }
            }
            None => {
                let (rows, nq) = if full {
                    (asked.unwrap_or(20_000), 200)
                } else {
                    (2_000, 5)
                };
                let dim = DIM_SYNTHETIC;
                let base = clustered(rows, dim, 0x0a7_1701);
                let queries = clustered(nq, dim, 0x0a7_1702);
                let (db, dir) = database(&base, dim);
                let truth = exact_truth(&db, &queries);
                Set {
                    name: format!("synthetic-{rows}x{dim}"),
                    db,
                    rows,
                    dim,
                    queries,
                    truth,
                    _dir: dir,
                }
            }
        };
        println!(
            "built {} in {:.1} s",
            set.name,
            start.elapsed().as_secs_f64()
        );
        set
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

    fn traversal_name(q: Option<Quantization>) -> &'static str {
        q.map_or("f32", Quantization::name)
    }

    fn search(set: &Set, case: Case, i: usize) -> Vec<SearchHit> {
        let q = black_box(set.query(i));
        let mut lists = set
            .db
            .query(&case.request(Query::one(q, K)))
            .expect("search");
        black_box(lists.pop().unwrap_or_default())
    }

    /// Creates the HNSW index traversing on `q` and prints its build time, size and the
    /// resident set; false (with the reason) when the engine cannot build it.
    fn create(set: &Set, q: Option<Quantization>) -> bool {
        let spec = IndexSpec::hnsw(q).with_hnsw(HnswParams::default());
        let start = Instant::now();
        match set.db.create_index(&spec) {
            Ok(info) => {
                let secs = start.elapsed().as_secs_f64();
                let (rss, anon, file) = rss_mb();
                let p = info.hnsw.unwrap_or_default();
                println!(
                    "{}: hnsw ({} traversal, m {}, ef_construction {}) over {} rows built in \
                     {secs:.2} s ({:.0} rows/s): {:.1} MB besides the f32 rows; RSS {rss:.0} MB \
                     (anon {anon:.0}, file {file:.0})",
                    set.name,
                    traversal_name(q),
                    p.m,
                    p.ef_construction,
                    info.rows,
                    info.rows as f64 / secs,
                    info.bytes as f64 / 1e6,
                );
                true
            }
            Err(e) => {
                println!(
                    "SKIP {} hnsw {}: create_index failed: {e}",
                    set.name,
                    traversal_name(q)
                );
                false
            }
        }
    }

    fn bench(c: &mut Criterion, set: &Set, q: Option<Quantization>) {
        let mut g = c.benchmark_group(format!("hnsw/{}/{}", set.name, traversal_name(q)));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .sampling_mode(SamplingMode::Flat);
        for case in cases() {
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

    /// The cases of one traversal on `set`, interleaved query by query, `passes` times over
    /// the query set.
    fn summary(set: &Set, q: Option<Quantization>, passes: usize) {
        let cases = cases();
        for i in 0..5 {
            for &case in &cases {
                search(set, case, i);
            }
        }
        let iters = set.query_count() * passes;
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
        let qps = |ms: &[f64]| ms.len() as f64 / (ms.iter().sum::<f64>() / 1e3);
        let exact_qps = qps(&times[0]);
        let (rss, anon, file) = rss_mb();
        println!(
            "\n{} ({} rows), hnsw {} traversal: single queries (k = {K}, {iters} interleaved, \
             one at a time); RSS {rss:.0} MB (anon {anon:.0}, file {file:.0})",
            set.name,
            set.rows,
            traversal_name(q)
        );
        println!(
            "{:>8} | {:>9} {:>9} {:>10} {:>10} {:>9}",
            "case", "p50 ms", "p99 ms", "QPS", "x exact", "recall"
        );
        for (c, case) in cases.iter().enumerate() {
            let qps = qps(&times[c]);
            println!(
                "{:>8} | {:>9.3} {:>9.3} {:>10.0} {:>10.2} {:>9.4}",
                case.label(),
                common::percentile(&times[c], 0.5),
                common::percentile(&times[c], 0.99),
                qps,
                qps / exact_qps,
                recall[c] / iters as f64,
            );
        }
    }

    /// The graph against the exact scan on one request shape, interleaved query by query over
    /// `passes` passes, optionally filtered: (graph QPS / exact QPS, the graph's recall@K
    /// against the exact scan's answer to the same request).
    fn against_exact(set: &Set, passes: usize, filter: Option<&Filter>) -> (f64, f64) {
        fn request<'a>(q: &'a [f32], filter: Option<&'a Filter>) -> Query<'a> {
            match filter {
                Some(f) => Query::one(q, K).filter(f),
                None => Query::one(q, K),
            }
        }
        let iters = set.query_count() * passes;
        let (mut graph_s, mut exact_s, mut recall) = (0.0, 0.0, 0.0);
        for i in 0..iters {
            let q = black_box(set.query(i));
            let start = Instant::now();
            let exact = set
                .db
                .query(&request(q, filter).exact(true))
                .expect("exact search");
            exact_s += start.elapsed().as_secs_f64();
            let start = Instant::now();
            let graph = set.db.query(&request(q, filter)).expect("graph search");
            graph_s += start.elapsed().as_secs_f64();
            let truth: Vec<usize> = exact[0]
                .iter()
                .map(|h| h.id.parse().expect("row-number id"))
                .collect();
            recall += common::recall_of(&truth, &graph[0]);
        }
        (exact_s / graph_s, recall / iters as f64)
    }

    /// Issue 17's filtered and deleted-rows targets at the default ef: filters matching 1%,
    /// 10% and 50% of the rows, then (changing the set: run last) 30% of the rows deleted.
    fn filtered_and_deleted(set: &Set, q: Option<Quantization>, passes: usize, delete: bool) {
        println!(
            "\n{} ({} rows), hnsw {} traversal at the default ef, against the exact scan of \
             the same request (interleaved, {} queries x {passes}):",
            set.name,
            set.rows,
            traversal_name(q),
            set.query_count()
        );
        println!("{:>24} | {:>10} {:>9}", "request", "x exact", "recall");
        for pct in [1, 10, 50] {
            let filter = Filter::parse(Some(&format!("{{\"b\": {{\"$lt\": {pct}}}}}")), None)
                .expect("filter");
            let (speed, recall) = against_exact(set, passes, Some(&filter));
            println!(
                "{:>24} | {speed:>10.2} {recall:>9.4}",
                format!("filter {pct}% of rows")
            );
        }
        if delete {
            let gone: Vec<String> = (0..set.rows)
                .filter(|i| i % 10 < 3)
                .map(|i| i.to_string())
                .collect();
            let start = Instant::now();
            set.db
                .remove(&Delete::ids(&srvdb::store::str_refs(&gone)))
                .expect("delete");
            set.db.persist().expect("commit the deletes");
            let secs = start.elapsed().as_secs_f64();
            let (speed, recall) = against_exact(set, passes, None);
            println!(
                "{:>24} | {speed:>10.2} {recall:>9.4}   (deleted and committed in {secs:.2} s)",
                format!("{} rows deleted (30%)", gone.len())
            );
        }
    }

    pub fn main() {
        let full = common::bench_mode();
        let set = make_set(full);
        let (rss, anon, file) = rss_mb();
        println!("RSS before any index: {rss:.0} MB (anon {anon:.0}, file {file:.0})");
        let mut c = Criterion::default().configure_from_args();
        for q in [None, Some(Quantization::Int8)] {
            if !create(&set, q) {
                continue;
            }
            bench(&mut c, &set, q);
            summary(&set, q, if full { 3 } else { 1 });
            filtered_and_deleted(&set, q, if full { 3 } else { 1 }, false);
        }
        // Deleting changes the set, so last, on the f32 graph built again.
        if create(&set, None) {
            filtered_and_deleted(&set, None, if full { 3 } else { 1 }, true);
        }
        c.final_summary();
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
