//! Search over int8 and binary codes with exact rescoring, against references written here:
//! brute force in f64, the exact pairwise kernel called directly, and the real MiniLM
//! embeddings (skipped when absent). Every test runs all three metrics.

mod common;
use common::{assert_topk, dataset, ids, reference_score, seed, Rng};
use srvdb::distance::Kernels;
use srvdb::format::RowLayout;
use srvdb::index::flat::FlatIndex;
use srvdb::index::{Index, Queries, ScanSet};
use srvdb::quant::codes::CodeTable;
use srvdb::quant::index::QuantizedIndex;
use srvdb::quant::{Codebook, IndexSpec, Quantization, MAX_OVERSAMPLE};
use srvdb::storage::cached::CachedRows;
use srvdb::storage::RowStore;
use srvdb::{Database, Error, Filter, Metadata, Metric, OpenOptions, Query, SearchHit, Store};
use std::sync::Arc;

const METRICS: [Metric; 3] = [Metric::Cosine, Metric::Dot, Metric::L2];
const QUANTIZATIONS: [Quantization; 2] = [Quantization::Int8, Quantization::Binary];

/// Exact scores in f64, computed without any engine code; higher is better.
fn key_f64(metric: Metric, q: &[f32], v: &[f32]) -> f64 {
    let score = reference_score(metric, q, v);
    if metric.higher_is_better() {
        score
    } else {
        -score
    }
}

/// Row numbers of the `k` best of `vectors` (rows of `dim`) for `q`, ties to the lower row.
fn brute_top(metric: Metric, q: &[f32], vectors: &[f32], dim: usize, k: usize) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = vectors
        .chunks_exact(dim)
        .enumerate()
        .map(|(r, v)| (key_f64(metric, q, v), r))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, r)| r).collect()
}

/// Recall@k of `found` (row lists) against `truth` (row lists).
fn recall(found: &[Vec<usize>], truth: &[Vec<usize>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|r| t.contains(r)).count())
        .sum();
    hits as f64 / truth.iter().map(Vec::len).sum::<usize>() as f64
}

/// The scan over codes alone (no database): `vectors` as in-memory rows, codes trained on
/// them, and `queries` searched in one batch with the quantization's default oversample.
fn index_search(
    metric: Metric,
    quantization: Quantization,
    vectors: &[f32],
    dim: usize,
    queries: &[f32],
    k: usize,
) -> Vec<Vec<usize>> {
    let kernels = Kernels::best();
    let layout = RowLayout::new(dim as u32);
    let mut rows = CachedRows::open(None, Default::default(), layout, 0).expect("rows");
    let mut buf = vec![0f32; layout.stride_f32];
    for v in vectors.chunks_exact(dim) {
        layout.encode_row(v, kernels.dot(v, v).sqrt(), &mut buf);
        rows.append(&buf).expect("append");
    }
    let view = rows.view();
    let training = vectors
        .chunks_exact(dim)
        .map(|v| (v, kernels.dot(v, v).sqrt()));
    let codebook = Codebook::train(quantization, metric, dim, training);
    let mut codes = CodeTable::new(Arc::new(codebook));
    for r in 0..view.rows() {
        codes.push_rows(layout, view.row(r).expect("row"));
    }
    let index = QuantizedIndex {
        codes: &codes,
        exact: FlatIndex::new(metric, kernels),
        oversample: quantization.default_oversample(),
    };
    let set = ScanSet {
        rows: view.as_ref(),
        tombstones: &[],
    };
    let qs = Queries {
        data: queries.to_vec(),
        norms: queries
            .chunks_exact(dim)
            .map(|q| kernels.dot(q, q).sqrt())
            .collect(),
        dim,
    };
    index
        .search(&set, &qs, k)
        .into_iter()
        .map(|hits| hits.iter().map(|c| c.row as usize).collect())
        .collect()
}

/// recall@10 with the default oversample, on the real MiniLM embeddings: int8 >= 0.99,
/// binary >= 0.95 (the issue's targets), against a brute force in f64 here.
#[test]
fn recall_at_10_on_real_embeddings_meets_the_targets() {
    let Some(data) = dataset() else { return };
    let k = 10;
    for metric in METRICS {
        let truth: Vec<Vec<usize>> = data
            .queries
            .chunks_exact(data.dim)
            .map(|q| brute_top(metric, q, &data.base, data.dim, k))
            .collect();
        for quantization in QUANTIZATIONS {
            let found = index_search(metric, quantization, &data.base, data.dim, &data.queries, k);
            let r = recall(&found, &truth);
            // The issue's targets: int8 >= 0.99 at oversample <= 4, binary >= 0.95 at <= 10.
            let (want, max_oversample) = match quantization {
                Quantization::Int8 => (0.99, 4),
                Quantization::Binary => (0.95, 10),
            };
            assert!(quantization.default_oversample() <= max_oversample);
            eprintln!("{metric:?} {quantization:?}: recall@10 {r:.4} (oversample default)");
            assert!(
                r >= want,
                "{metric:?} {quantization:?}: recall@10 {r} < {want}"
            );
        }
    }
}

/// Without an index, a bad `oversample` is still an error (a query that runs today must run
/// once an index is created), and `exact` changes nothing.
#[test]
fn oversample_out_of_range_is_an_error_without_an_index_too() {
    let dim = 8;
    let db = Database::in_memory(OpenOptions::default().with_metric(Metric::Cosine)).expect("db");
    let mut rng = Rng::new(seed() ^ 0x05);
    let data = rng.vectors(50, dim);
    db.add(&ids(0..50), &data, &[]).expect("add");
    let q = &data[..dim];
    for bad in [0, MAX_OVERSAMPLE + 1] {
        for request in [Query::one(q, 3), Query::batch(q, 3)] {
            match db.query(&request.oversample(bad)) {
                Err(Error::InvalidInput { reason, .. }) => {
                    assert!(reason.contains("oversample"), "{reason}")
                }
                other => panic!("oversample {bad}: expected InvalidInput, got {other:?}"),
            }
        }
    }
    let plain = db.query(&Query::one(q, 5)).expect("plain");
    let exact = db.query(&Query::one(q, 5).exact(true)).expect("exact");
    let over = db
        .query(&Query::one(q, 5).oversample(MAX_OVERSAMPLE))
        .expect("oversample");
    assert_eq!(plain, exact);
    assert_eq!(plain, over);
}

/// A database in memory holding `vectors` as `id-0..` (with `metadatas`, empty or one each),
/// the ids in `dead` deleted, and an index of `quantization` if given.
fn database(
    metric: Metric,
    quantization: Option<Quantization>,
    vectors: &[f32],
    dim: usize,
    metadatas: &[Option<Metadata>],
    dead: &[String],
) -> Database {
    let db = Database::in_memory(OpenOptions::default().with_metric(metric)).expect("db");
    db.add(&ids(0..vectors.len() / dim), vectors, metadatas)
        .expect("add");
    if !dead.is_empty() {
        db.delete(dead).expect("delete");
    }
    if let Some(q) = quantization {
        let info = db.create_index(&IndexSpec::flat(q)).expect("create_index");
        assert_eq!(info.quantization, Some(q));
    }
    db
}

/// The score the exact pairwise kernel gives `v` for `q`, as a hit reports it (L2: the
/// squared distance), computed here from the kernels and the cosine formula.
fn pairwise_score(metric: Metric, q: &[f32], v: &[f32]) -> f32 {
    let k = Kernels::best();
    match metric {
        Metric::Dot => k.dot(q, v),
        Metric::L2 => k.l2sq(q, v),
        Metric::Cosine => {
            let denom = k.dot(q, q).sqrt() * k.dot(v, v).sqrt();
            if denom > 0.0 {
                k.dot(q, v) / denom
            } else {
                0.0
            }
        }
    }
}

fn row_of(id: &str) -> usize {
    id.strip_prefix("id-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected id {id}"))
}

/// Hits are live rows with the exact pairwise kernel's scores, bit for bit; a batch answers
/// as the same queries one by one; `exact=true` answers as a database without an index.
#[test]
fn hits_carry_exact_scores_batch_equals_singles_and_exact_equals_the_f32_scan() {
    let (n, dim, k, nq) = (3000, 40, 10, 12);
    let mut rng = Rng::new(seed() ^ 0x5CA7);
    let data = rng.vectors(n, dim);
    let dead: Vec<String> = ids(0..n).into_iter().step_by(7).collect();
    let queries = rng.vectors(nq, dim);
    for metric in METRICS {
        let plain = database(metric, None, &data, dim, &[], &dead);
        let want_exact = plain.query(&Query::batch(&queries, k)).expect("plain");
        for quantization in QUANTIZATIONS {
            let db = database(metric, Some(quantization), &data, dim, &[], &dead);
            let ctx = format!("{metric:?} {quantization:?}");
            let batch = db.query(&Query::batch(&queries, k)).expect("batch");
            assert_eq!(batch.len(), nq);
            for (i, hits) in batch.iter().enumerate() {
                let q = &queries[i * dim..(i + 1) * dim];
                assert_eq!(hits.len(), k, "{ctx}");
                for hit in hits {
                    let row = row_of(&hit.id);
                    assert_ne!(row % 7, 0, "{ctx}: deleted {} returned", hit.id);
                    let want = pairwise_score(metric, q, &data[row * dim..(row + 1) * dim]);
                    assert_eq!(hit.score.to_bits(), want.to_bits(), "{ctx}: {}", hit.id);
                }
                let single = db.query(&Query::one(q, k)).expect("single");
                assert_eq!(single[0], *hits, "{ctx}: query {i} alone");
                let exact = db.query(&Query::one(q, k).exact(true)).expect("exact");
                let plain_one = plain.query(&Query::one(q, k)).expect("plain one");
                assert_eq!(exact, plain_one, "{ctx}: exact single, query {i}");
            }
            let exact = db.query(&Query::batch(&queries, k).exact(true));
            assert_eq!(
                exact.expect("exact batch"),
                want_exact,
                "{ctx}: exact batch"
            );
        }
    }
}

/// An oversample that keeps every live row as a candidate gives the brute-force top k.
#[test]
fn oversample_covering_every_live_row_gives_the_brute_force_top_k() {
    let (n, dim, k) = (2000, 24, 5);
    let mut rng = Rng::new(seed() ^ 0xC0DE);
    let data = rng.vectors(n, dim);
    // Half the rows deleted: k * 200 = 1000 candidates cover the 1000 live rows while the
    // code scan still runs over all 2000 codes.
    let dead: Vec<String> = ids(0..n).into_iter().step_by(2).collect();
    let live: Vec<(String, Vec<f32>)> = (1..n)
        .step_by(2)
        .map(|r| (format!("id-{r}"), data[r * dim..(r + 1) * dim].to_vec()))
        .collect();
    let queries = rng.vectors(8, dim);
    for metric in METRICS {
        for quantization in QUANTIZATIONS {
            let db = database(metric, Some(quantization), &data, dim, &[], &dead);
            let found = db
                .query(&Query::batch(&queries, k).oversample(200))
                .expect("query");
            for (i, hits) in found.iter().enumerate() {
                let q = &queries[i * dim..(i + 1) * dim];
                let ctx = format!("{metric:?} {quantization:?} query {i}");
                assert_topk(metric, q, &live, hits, k, 1e-5, &ctx);
            }
        }
    }
}

/// Filters apply during the code scan: no deleted or non-matching row is ever returned, and
/// with an oversample covering every matching row the hits are the brute-force filtered top
/// k. Both the blocked scan (a quarter of the rows match) and the gather-scan (1 in 40), and
/// 1 in 20, where a single query gathers and a batch scans: a query answers the same either way.
#[test]
fn filters_and_deletes_apply_during_the_code_scan() {
    let (n, dim, k) = (4000, 32, 10);
    let mut rng = Rng::new(seed() ^ 0xF117);
    let data = rng.vectors(n, dim);
    let metadatas: Vec<Option<Metadata>> = (0..n)
        .map(|i| {
            Some(Metadata::from_text(format!(
                r#"{{"g": {}, "rare": {}, "tw": {}}}"#,
                i % 4,
                i % 40 == 1,
                i % 20 == 1
            )))
        })
        .collect();
    let dead: Vec<String> = ids(0..n).into_iter().step_by(3).collect();
    let queries = rng.vectors(6, dim);
    let cases = [
        (r#"{"g": 1}"#, (|r: usize| r % 4 == 1) as fn(usize) -> bool),
        (r#"{"rare": true}"#, |r: usize| r % 40 == 1),
        (r#"{"tw": true}"#, |r: usize| r % 20 == 1),
    ];
    for metric in METRICS {
        for quantization in QUANTIZATIONS {
            let db = database(metric, Some(quantization), &data, dim, &metadatas, &dead);
            for (where_json, matches) in cases {
                let filter = Filter::parse(Some(where_json), None).expect("filter");
                let allowed = |r: usize| !r.is_multiple_of(3) && matches(r);
                let items: Vec<(String, Vec<f32>)> = (0..n)
                    .filter(|&r| allowed(r))
                    .map(|r| (format!("id-{r}"), data[r * dim..(r + 1) * dim].to_vec()))
                    .collect();
                let ctx = format!("{metric:?} {quantization:?} {where_json}");
                let default = Query::batch(&queries, k).filter(&filter);
                for (i, hits) in db.query(&default).expect("default").iter().enumerate() {
                    assert_eq!(hits.len(), k, "{ctx}");
                    for hit in hits {
                        assert!(allowed(row_of(&hit.id)), "{ctx}: {} returned", hit.id);
                    }
                    let q = &queries[i * dim..(i + 1) * dim];
                    let one = db
                        .query(&Query::one(q, k).filter(&filter))
                        .expect("single default");
                    let ids = |h: &[SearchHit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
                    assert_eq!(ids(&one[0]), ids(hits), "{ctx}: single vs batch, default");
                }
                // 10 * 100 candidates >= the 667 live rows of g = 1.
                let covering = db
                    .query(&Query::batch(&queries, k).filter(&filter).oversample(100))
                    .expect("covering");
                for (i, hits) in covering.iter().enumerate() {
                    let q = &queries[i * dim..(i + 1) * dim];
                    assert_topk(metric, q, &items, hits, k, 1e-5, &ctx);
                    let one = db
                        .query(&Query::one(q, k).filter(&filter).oversample(100))
                        .expect("single");
                    assert_eq!(one[0], *hits, "{ctx}: single vs batch");
                }
            }
        }
    }
}

/// With an index, an oversample of 0 or past the maximum is rejected on every path.
#[test]
fn bad_oversample_is_rejected_with_an_index() {
    let dim = 16;
    let mut rng = Rng::new(seed() ^ 0xBAD);
    let data = rng.vectors(200, dim);
    let filter = Filter::parse(Some(r#"{"g": 1}"#), None).expect("filter");
    for metric in METRICS {
        for quantization in QUANTIZATIONS {
            let db = database(metric, Some(quantization), &data, dim, &[], &[]);
            let q = &data[..dim];
            for bad in [0, MAX_OVERSAMPLE + 1] {
                let requests = [
                    Query::one(q, 3),
                    Query::batch(q, 3),
                    Query::one(q, 3).filter(&filter),
                    Query::batch(&data[..2 * dim], 3).filter(&filter),
                ];
                for request in requests {
                    match db.query(&request.oversample(bad)) {
                        Err(Error::InvalidInput { reason, .. }) => {
                            assert!(reason.contains("1..=1000"), "{reason}")
                        }
                        other => panic!("oversample {bad}: expected InvalidInput, got {other:?}"),
                    }
                }
            }
            let ok = db.query(&Query::one(q, 3).oversample(MAX_OVERSAMPLE));
            assert_eq!(ok.expect("max oversample")[0].len(), 3);
        }
    }
}

/// Concurrent single searches with different options and k, coalesced over codes, each get
/// the answer the same search gets alone.
#[test]
fn coalesced_searches_answer_as_alone_whatever_their_options() {
    // Int8 codes of 12 000 x 384 are 4.7 MB: past the size below which searches do not
    // coalesce.
    let (n, dim, threads, per_thread) = (12_000, 384, 8, 6);
    let mut rng = Rng::new(seed() ^ 0xC0A1);
    let data = rng.vectors(n, dim);
    let queries = rng.vectors(threads * per_thread, dim);
    let db = Arc::new(database(
        Metric::Cosine,
        Some(Quantization::Int8),
        &data,
        dim,
        &[],
        &[],
    ));
    let options = |i: usize| -> (usize, Option<usize>, bool) {
        let k = [1, 5, 10][i % 3];
        let oversample = [None, Some(1), Some(8)][(i / 3) % 3];
        (k, oversample, i.is_multiple_of(5))
    };
    let request = |q: &[f32], i: usize| {
        let (k, oversample, exact) = options(i);
        let r = Query::one(q, k).exact(exact);
        match oversample {
            Some(o) => db.query(&r.oversample(o)),
            None => db.query(&r),
        }
        .expect("query")
        .remove(0)
    };
    let alone: Vec<Vec<SearchHit>> = (0..threads * per_thread)
        .map(|i| request(&queries[i * dim..(i + 1) * dim], i))
        .collect();
    let together: Vec<Vec<Vec<SearchHit>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (queries, request) = (&queries, &request);
                s.spawn(move || {
                    (0..per_thread)
                        .map(|j| {
                            let i = t * per_thread + j;
                            request(&queries[i * dim..(i + 1) * dim], i)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let stats = db.coalesce_stats();
    eprintln!("coalescing: {stats:?} (alone: one scan per query)");
    for (i, got) in together.into_iter().flatten().enumerate() {
        assert_eq!(got, alone[i], "query {i} with {:?}", options(i));
    }
}
