//! Search against an independent brute-force reference: random data for every metric, storage
//! backend and batch shape, with deletes and upserts; and the real sentence embeddings against
//! their exact ground truth.

mod common;
use common::{assert_topk, dataset, ids, seed, tempdir, Rng};
use srvdb::{Database, Metric, OpenOptions, StorageKind, Store};

fn backends() -> Vec<(&'static str, Option<StorageKind>)> {
    vec![
        ("mmap", Some(StorageKind::Mmap)),
        ("file", Some(StorageKind::File)),
        ("memory", None),
    ]
}

fn open(kind: Option<StorageKind>, metric: Metric, dir: &std::path::Path) -> Database {
    let opts = OpenOptions::default().with_metric(metric);
    match kind {
        Some(k) => Database::open(dir, opts.with_storage(k)).expect("open"),
        None => Database::in_memory(opts).expect("in memory"),
    }
}

#[test]
fn random_data_matches_brute_force_for_every_metric_and_backend() {
    let mut rng = Rng::new(seed());
    // 9000 rows crosses the parallel threshold and several blocks; dim 37 has a SIMD tail.
    for &(n, dim) in &[(300usize, 37usize), (9000, 64)] {
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for (name, kind) in backends() {
                let dir = tempdir();
                let db = open(kind, metric, dir.path());
                let data = rng.vectors(n, dim);
                let names = ids(0..n);
                for chunk in 0..4 {
                    let (a, b) = (chunk * n / 4, (chunk + 1) * n / 4);
                    db.add(&names[a..b], &data[a * dim..b * dim], &[])
                        .expect("add");
                }
                let mut items: Vec<(String, Vec<f32>)> = names
                    .iter()
                    .cloned()
                    .zip(data.chunks(dim).map(|c| c.to_vec()))
                    .collect();
                // Delete every 7th, upsert every 11th with a fresh vector.
                let del: Vec<String> = names.iter().step_by(7).cloned().collect();
                db.delete(&del).expect("delete");
                items.retain(|(id, _)| !del.contains(id));
                let up: Vec<String> = items
                    .iter()
                    .skip(3)
                    .step_by(11)
                    .map(|(id, _)| id.clone())
                    .collect();
                let up_vecs = rng.vectors(up.len(), dim);
                db.upsert(&up, &up_vecs, &[]).expect("upsert");
                for (i, id) in up.iter().enumerate() {
                    let slot = items.iter_mut().find(|(x, _)| x == id).expect("present");
                    slot.1 = up_vecs[i * dim..(i + 1) * dim].to_vec();
                }
                assert_eq!(db.count() as usize, items.len());
                let queries = rng.vectors(70, dim);
                for k in [0usize, 1, 10, 100] {
                    let ctx = format!("{name} {metric} n={n} dim={dim} k={k}");
                    let batch = db.search_batch(&queries, k).expect("batch");
                    assert_eq!(batch.len(), 70, "{ctx}");
                    for (qi, q) in queries.chunks(dim).enumerate().take(12) {
                        let single = db.search(q, k).expect("search");
                        assert_topk(
                            metric,
                            q,
                            &items,
                            &single,
                            k,
                            1e-5,
                            &format!("{ctx} single q{qi}"),
                        );
                        assert_topk(
                            metric,
                            q,
                            &items,
                            &batch[qi],
                            k,
                            1e-5,
                            &format!("{ctx} batch q{qi}"),
                        );
                    }
                    for (qi, q) in queries.chunks(dim).enumerate().skip(60) {
                        assert_topk(
                            metric,
                            q,
                            &items,
                            &batch[qi],
                            k,
                            1e-5,
                            &format!("{ctx} batch q{qi}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn edge_cases_are_answered_not_errors() {
    let db = Database::in_memory(OpenOptions::default()).expect("open");
    assert!(db.search(&[1.0, 2.0], 10).expect("empty db").is_empty());
    assert!(db
        .search_batch(&[1.0, 2.0], 10)
        .expect("empty db batch")
        .is_empty());
    db.add(&["a", "b", "c"], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[])
        .expect("add");
    assert!(db.search(&[1.0, 0.0], 0).expect("k=0").is_empty());
    let all = db.search(&[1.0, 0.0], 50).expect("k > count");
    assert_eq!(
        all.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        vec!["a", "c", "b"]
    );
    assert!((all[0].score - 1.0).abs() < 1e-6);
    // A zero query has cosine 0 with everything, and is still answered.
    assert_eq!(db.search(&[0.0, 0.0], 2).expect("zero query").len(), 2);
    assert!(matches!(
        db.search(&[1.0, 0.0, 0.0], 1),
        Err(srvdb::Error::DimensionMismatch {
            expected: 2,
            got: 3,
            ..
        })
    ));
    assert!(matches!(
        db.search(&[f32::NAN, 0.0], 1),
        Err(srvdb::Error::InvalidInput { .. })
    ));
}

#[test]
fn real_embeddings_match_ground_truth() {
    let Some(data) = dataset() else { return };
    let dir = tempdir();
    let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
    let names = ids(0..data.n);
    for start in (0..data.n).step_by(5000) {
        let end = (start + 5000).min(data.n);
        db.add(
            &names[start..end],
            &data.base[start * data.dim..end * data.dim],
            &[],
        )
        .expect("add");
    }
    db.persist().expect("persist");
    let items: Vec<(String, Vec<f32>)> = names
        .iter()
        .cloned()
        .zip(data.base.chunks(data.dim).map(|c| c.to_vec()))
        .collect();
    let batch = db.search_batch(&data.queries, 100).expect("batch");
    let mut exact_top10 = 0usize;
    for (qi, q) in data.queries.chunks(data.dim).enumerate() {
        let single = db.search(q, 10).expect("search");
        assert_topk(
            Metric::Cosine,
            q,
            &items,
            &single,
            10,
            1e-5,
            &format!("real q{qi}"),
        );
        assert_topk(
            Metric::Cosine,
            q,
            &items,
            &batch[qi],
            100,
            1e-5,
            &format!("real batch q{qi}"),
        );
        let gt: Vec<String> = data.gt[qi * 100..qi * 100 + 10]
            .iter()
            .map(|&r| format!("id-{r}"))
            .collect();
        exact_top10 += single.iter().zip(&gt).filter(|(h, g)| &h.id == *g).count();
    }
    let recall = exact_top10 as f64 / (10 * data.nq) as f64;
    eprintln!("real embeddings: rank-exact agreement with ground truth top-10 = {recall:.4}");
    assert!(
        recall >= 0.999,
        "top-10 disagrees with ground truth: {recall}"
    );
}

/// Batches wider than one GEMM group (256 queries) and a partial last group below the GEMM
/// threshold, over rows that span several GEMM blocks (1024 rows), with deleted rows: every
/// answer against brute force.
#[test]
fn wide_batches_match_brute_force() {
    let mut rng = Rng::new(seed() ^ 0x6E33);
    let (n, dim, nq) = (2500usize, 40usize, 260usize);
    for metric in [Metric::Cosine, Metric::Dot] {
        let dir = tempdir();
        let db = open(Some(StorageKind::Mmap), metric, dir.path());
        let items = add_then_delete_every(&db, &rng.vectors(n, dim), dim, 5);
        let queries = rng.vectors(nq, dim);
        let batch = db.search_batch(&queries, 10).expect("batch");
        assert_eq!(batch.len(), nq);
        for (qi, (q, hits)) in queries.chunks(dim).zip(&batch).enumerate() {
            assert_topk(
                metric,
                q,
                &items,
                hits,
                10,
                1e-5,
                &format!("{metric} q{qi}"),
            );
        }
    }
}

/// Groups of queries that the packed kernel scores where the CPU has it (at least 12 queries
/// of at least 1024 components; see `distance::PACKED_MIN_QUERIES`) and the sizes around
/// them: fewer than 12, a partial second group of sixteen lanes, several groups. Enough rows
/// for the parallel scan and a block tail, with deleted rows: every answer against brute
/// force, and the same answers as the queries searched one at a time.
#[test]
fn packed_query_groups_match_brute_force() {
    let mut rng = Rng::new(seed() ^ 0x9AC);
    let (n, dim) = (8_700usize, 1_040usize);
    for metric in [Metric::Cosine, Metric::Dot] {
        let dir = tempdir();
        let db = open(Some(StorageKind::Mmap), metric, dir.path());
        let items = add_then_delete_every(&db, &rng.vectors(n, dim), dim, 7);
        for nq in [11usize, 12, 16, 23, 40] {
            let queries = rng.vectors(nq, dim);
            let batch = db.search_batch(&queries, 10).expect("batch");
            assert_eq!(batch.len(), nq);
            for (qi, (q, hits)) in queries.chunks(dim).zip(&batch).enumerate() {
                let ctx = format!("{metric} batch of {nq}, q{qi}");
                assert_topk(metric, q, &items, hits, 10, 1e-5, &ctx);
                let alone = db.search(q, 10).expect("search");
                let ids =
                    |h: &[srvdb::SearchHit]| h.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
                for (a, b) in alone.iter().zip(hits) {
                    assert!(
                        (a.score - b.score).abs() <= 1e-5 * a.score.abs().max(1.0),
                        "{ctx}: alone {:?} vs in the batch {:?}",
                        ids(&alone),
                        ids(hits)
                    );
                }
            }
        }
    }
}

/// Adds `data` as rows `0..` (ids from `common::ids`), deletes every `nth` of them from the
/// first, and returns the survivors as `(id, vector)` for the brute-force reference.
fn add_then_delete_every(
    db: &Database,
    data: &[f32],
    dim: usize,
    nth: usize,
) -> Vec<(String, Vec<f32>)> {
    let names = ids(0..data.len() / dim);
    db.add(&names, data, &[]).expect("add");
    let dead: Vec<String> = names.iter().step_by(nth).cloned().collect();
    db.delete(&dead).expect("delete");
    names
        .into_iter()
        .zip(data.chunks(dim).map(<[f32]>::to_vec))
        .enumerate()
        .filter(|(i, _)| i % nth != 0)
        .map(|(_, x)| x)
        .collect()
}
