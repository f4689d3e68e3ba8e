//! Concurrent single searches on one handle are answered together (query coalescing). Every
//! answer must still be the exact brute-force answer for that query and its own `k`, a caller
//! must see its own committed writes, and a bad query must fail alone.

mod common;
use common::{assert_topk, ids, seed, tempdir, Rng};
use srvdb::{Database, Error, Metric, OpenOptions, Store};
use std::sync::{Arc, Barrier};

const DIM: usize = 96;
/// Enough rows that one scan uses every core and the rows (5 MiB) do not fit the cache, so
/// concurrent searches queue and coalesce.
const ROWS: usize = 12_000;
const THREADS: usize = 16;
const PER_THREAD: usize = 25;

fn open(dir: &std::path::Path, metric: Metric, coalesce: bool) -> Database {
    let opts = OpenOptions {
        coalesce_searches: coalesce,
        ..OpenOptions::default().with_metric(metric)
    };
    Database::open(dir, opts).expect("open")
}

#[test]
fn concurrent_searches_are_coalesced_and_exact() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let dir = tempdir();
        let db = Arc::new(open(dir.path(), metric, true));
        let mut rng = Rng::new(seed() ^ 0xC0A1);
        let data = rng.vectors(ROWS, DIM);
        let names = ids(0..ROWS);
        db.add(&names, &data, &[]).expect("add");
        // Some deleted rows: the group scan must skip them too.
        let dead: Vec<String> = names.iter().step_by(13).cloned().collect();
        db.delete(&dead).expect("delete");
        db.persist().expect("persist");
        let items: Arc<Vec<(String, Vec<f32>)>> = Arc::new(
            names
                .iter()
                .cloned()
                .zip(data.chunks(DIM).map(<[f32]>::to_vec))
                .enumerate()
                .filter(|(i, _)| i % 13 != 0)
                .map(|(_, x)| x)
                .collect(),
        );
        let queries = Arc::new(rng.vectors(THREADS * PER_THREAD, DIM));
        let start = Arc::new(Barrier::new(THREADS));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (db, queries, start) = (db.clone(), queries.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    (0..PER_THREAD)
                        .map(|i| {
                            let qi = t * PER_THREAD + i;
                            // Different k per caller: a group is scanned with the largest.
                            let k = 1 + (qi % 4) * 7;
                            let q = queries[qi * DIM..(qi + 1) * DIM].to_vec();
                            let hits = db.search(&q, k).expect("search");
                            (q, k, hits)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut answered = 0;
        for w in workers {
            for (q, k, hits) in w.join().expect("worker") {
                let ctx = format!("{metric} k={k}");
                assert_topk(metric, &q, &items, &hits, k, 1e-5, &ctx);
                answered += 1;
            }
        }
        assert_eq!(answered, THREADS * PER_THREAD);
        let stats = db.coalesce_stats();
        assert_eq!(stats.queries, (THREADS * PER_THREAD) as u64, "{metric}");
        assert!(
            stats.scans < stats.queries,
            "{metric}: {} scans for {} concurrent queries: nothing was coalesced",
            stats.scans,
            stats.queries
        );
    }
}

#[test]
fn each_caller_sees_its_own_writes() {
    let dir = tempdir();
    let db = Arc::new(open(dir.path(), Metric::Cosine, true));
    let mut rng = Rng::new(seed() ^ 0x5EE);
    db.add(&ids(0..ROWS), &rng.vectors(ROWS, DIM), &[])
        .expect("add");
    let fresh = Arc::new(rng.vectors(THREADS * 8, DIM));
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, fresh, start) = (db.clone(), fresh.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..8 {
                    let j = t * 8 + i;
                    let v = &fresh[j * DIM..(j + 1) * DIM];
                    let id = format!("fresh-{j}");
                    db.add(&[id.as_str()], v, &[]).expect("add");
                    let hits = db.search(v, 1).expect("search");
                    assert_eq!(hits[0].id, id, "thread {t}: its own write is not visible");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
}

#[test]
fn a_bad_query_fails_alone_while_others_search() {
    let dir = tempdir();
    let db = Arc::new(open(dir.path(), Metric::Dot, true));
    let mut rng = Rng::new(seed() ^ 0xBAD);
    db.add(&ids(0..ROWS), &rng.vectors(ROWS, DIM), &[])
        .expect("add");
    let q = Arc::new(rng.vectors(1, DIM));
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (db, q) = (db.clone(), q.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    if t % 2 == 0 {
                        let err = db.search(&q[..DIM - 1], 5).expect_err("short query");
                        assert!(matches!(err, Error::DimensionMismatch { .. }), "{err}");
                        let mut nan = q.to_vec();
                        nan[3] = f32::NAN;
                        let err = db.search(&nan, 5).expect_err("NaN query");
                        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
                    } else {
                        assert_eq!(db.search(&q, 5).expect("search").len(), 5);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
}

#[test]
fn coalescing_can_be_turned_off_and_skips_cache_sized_databases() {
    let mut rng = Rng::new(seed());
    let q = rng.vectors(1, DIM);
    let dir = tempdir();
    let db = open(dir.path(), Metric::Cosine, false);
    db.add(&ids(0..ROWS), &rng.vectors(ROWS, DIM), &[])
        .expect("add");
    assert_eq!(db.search(&q, 3).expect("search").len(), 3);
    assert_eq!(db.coalesce_stats().queries, 0);
    db.set_coalesce_searches(true);
    db.search(&q, 3).expect("search");
    assert_eq!(db.coalesce_stats().queries, 1);
    assert_eq!(db.coalesce_stats().scans, 1);
    // 100 rows fit in cache: searched directly.
    let dir_small = tempdir();
    let small = open(dir_small.path(), Metric::Cosine, true);
    small
        .add(&ids(0..100), &rng.vectors(100, DIM), &[])
        .expect("add");
    assert_eq!(small.search(&q, 3).expect("search").len(), 3);
    assert_eq!(small.coalesce_stats().queries, 0);
}
