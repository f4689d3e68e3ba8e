//! Filtered search against unfiltered: single queries (k = 10) at 50%, 5% and 0.1%
//! selectivity on synthetic 100 000 x 384 (cosine, random unit vectors) and on the MiniLM set
//! (`SRVDB_DATA_DIR` or `../shared/data`; skipped when absent), with a metadata column of the
//! kind users filter on (a `bucket` 0..999 spread over the rows, a `half` flag).
//!
//! `SRVDB_FILTER_ROWS=1000000` runs the synthetic set at 1M x 384 instead.
//!
//! After criterion, a summary re-measures each case with `Instant` and prints its p50 and its
//! ratio to the unfiltered p50. Under `cargo test` the synthetic set shrinks to 2 000 rows.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{BenchmarkId, Criterion, SamplingMode};
    use serde_json::json;
    use srvdb::testing::Rng;
    use srvdb::{npy, Database, Filter, Metadata, Metric, OpenOptions, Store};
    use std::hint::black_box;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    const K: usize = 10;
    const QUERIES: usize = 64;

    /// (label, `where`): the cases, unfiltered first.
    /// `group` holds the same values as `bucket` and has a field index.
    const CASES: [(&str, Option<&str>); 8] = [
        ("unfiltered", None),
        ("50%", Some(r#"{"half": 0}"#)),
        ("25%", Some(r#"{"bucket": {"$lt": 250}}"#)),
        ("10%", Some(r#"{"bucket": {"$lt": 100}}"#)),
        ("5%", Some(r#"{"bucket": {"$lt": 50}}"#)),
        (
            "5% indexed",
            Some(
                r#"{"group": {"$in": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49]}}"#,
            ),
        ),
        ("0.1%", Some(r#"{"bucket": 7}"#)),
        ("0.1% indexed", Some(r#"{"group": 7}"#)),
    ];

    struct Set {
        name: String,
        db: Database,
        dim: usize,
        queries: Vec<f32>,
        _dir: tempfile::TempDir,
    }

    impl Set {
        fn query(&self, i: usize) -> &[f32] {
            let i = i % (self.queries.len() / self.dim);
            &self.queries[i * self.dim..(i + 1) * self.dim]
        }
    }

    fn build(name: String, base: &[f32], dim: usize, queries: Vec<f32>) -> Set {
        let start = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(
            dir.path(),
            OpenOptions::default().with_metric(Metric::Cosine),
        )
        .expect("open database");
        let rows = base.len() / dim;
        let mut at = 0;
        while at < rows {
            let n = 1000.min(rows - at);
            let ids: Vec<String> = (at..at + n).map(|i| format!("v{i}")).collect();
            let metas: Vec<Option<Metadata>> = (at..at + n)
                .map(|i| {
                    let bucket = (i * 7919) % 1000;
                    Some(json!({"bucket": bucket, "group": bucket, "half": i % 2}).into())
                })
                .collect();
            db.add(&ids, &base[at * dim..(at + n) * dim], &metas)
                .expect("add");
            at += n;
        }
        db.create_field_index("group").expect("index");
        db.persist().expect("persist");
        println!(
            "built {name} in {:.1} s; kernels: {}",
            start.elapsed().as_secs_f64(),
            db.kernel_description()
        );
        Set {
            name,
            db,
            dim,
            queries,
            _dir: dir,
        }
    }

    fn synthetic(rows: usize, dim: usize) -> Set {
        let mut rng = Rng::new(0xf117_e500 ^ rows as u64);
        let base = rng.unit_vectors(rows, dim);
        let queries = rng.unit_vectors(QUERIES, dim);
        build(format!("{rows}x{dim}"), &base, dim, queries)
    }

    fn minilm() -> Option<Set> {
        let dir = std::env::var("SRVDB_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
        let (base, queries) = (dir.join("base.npy"), dir.join("queries.npy"));
        if !base.is_file() || !queries.is_file() {
            println!(
                "SKIP MiniLM: no base.npy / queries.npy in {}",
                dir.display()
            );
            return None;
        }
        let base = npy::read::<f32>(&base).expect("base.npy");
        let queries = npy::read::<f32>(&queries).expect("queries.npy");
        Some(build(
            format!("minilm-{}x{}", base.rows, base.cols),
            &base.data,
            base.cols,
            queries.data,
        ))
    }

    fn filters() -> Vec<(&'static str, Option<Filter>)> {
        CASES
            .iter()
            .map(|&(label, w)| {
                (
                    label,
                    w.map(|w| Filter::parse(Some(w), None).expect("filter")),
                )
            })
            .collect()
    }

    fn search(set: &Set, i: usize, filter: Option<&Filter>) {
        let q = black_box(set.query(i));
        let hits = match filter {
            Some(f) => set.db.search_filtered(q, K, f),
            None => set.db.search(q, K),
        };
        black_box(hits.expect("search"));
    }

    fn bench(c: &mut Criterion, set: &Set) {
        let mut g = c.benchmark_group(format!("filter/{}", set.name));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .sampling_mode(SamplingMode::Flat);
        for (label, filter) in filters() {
            g.bench_function(BenchmarkId::new("single_k10", label), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for i in 0..iters as usize {
                        search(set, i, filter.as_ref());
                    }
                    start.elapsed()
                })
            });
        }
        g.finish();
    }

    /// p50 in ms of `iters` timed searches after a few untimed ones.
    fn median(mut ms: Vec<f64>) -> f64 {
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    }

    /// p50 per case, the cases interleaved query by query (a shared machine drifts over a
    /// run, and timing one case after another would put the drift into the ratios), and the
    /// median of each query's filtered / unfiltered time.
    fn summary(sets: &[Set], iters: usize) {
        println!("\nfiltered single search, k = {K}: p50 and ratio to the unfiltered p50");
        println!(
            "{:>22} | {:>12} | {:>10} {:>8} {:>8} | {:>8} | filter only (ms)",
            "set", "case", "p50 ms", "ratio", "paired", "matching"
        );
        let cases = filters();
        for set in sets {
            for i in 0..5 {
                for (_, filter) in &cases {
                    search(set, i, filter.as_ref());
                }
            }
            let mut times = vec![Vec::with_capacity(iters); cases.len()];
            for i in 0..iters {
                for (c, (_, filter)) in cases.iter().enumerate() {
                    let start = Instant::now();
                    search(set, i, filter.as_ref());
                    times[c].push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            let unfiltered = median(times[0].clone());
            for ((label, filter), ms) in cases.iter().zip(&times) {
                let paired = median(ms.iter().zip(&times[0]).map(|(f, u)| f / u).collect());
                let matching = match filter {
                    Some(f) => set.db.count_matching(f).expect("count"),
                    None => set.db.count(),
                };
                // The filter's own cost: its row bitmap, without the scan.
                let eval = filter.as_ref().map_or(0.0, |f| {
                    median(
                        (0..iters)
                            .map(|_| {
                                let start = Instant::now();
                                black_box(set.db.count_matching(f).expect("count"));
                                start.elapsed().as_secs_f64() * 1e3
                            })
                            .collect(),
                    )
                });
                let p50 = median(ms.clone());
                println!(
                    "{:>22} | {:>12} | {:>10.3} {:>8.3} {:>8.3} | {:>8} | {eval:.3}",
                    set.name,
                    label,
                    p50,
                    p50 / unfiltered,
                    paired,
                    matching
                );
            }
        }
    }

    pub fn main() {
        let full = std::env::args().any(|a| a == "--bench")
            && !std::env::args().any(|a| a == "--test" || a == "--list");
        // `SRVDB_FILTER_ROWS` sizes the synthetic set (e.g. 1000000 for the issue's 1M x 384).
        let rows = std::env::var("SRVDB_FILTER_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let mut sets = vec![synthetic(if full { rows } else { 2_000 }, 384)];
        if full {
            sets.extend(minilm());
        }
        let mut c = Criterion::default().configure_from_args();
        for set in &sets {
            bench(&mut c, set);
        }
        c.final_summary();
        summary(&sets, if full { 200 } else { 5 });
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
