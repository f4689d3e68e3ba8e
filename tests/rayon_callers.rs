//! The database called from inside rayon's global pool (`par_iter` over batches or queries)
//! while threads outside the pool call it too. The pool is pinned to two threads so that, on
//! any machine, every worker can be busy inside the database at once: that is when a thread
//! holding the writer lock (or leading a coalesced scan) and waiting for pool work would wait
//! forever. Before the fix both tests hung: `add` held the writer lock while it ran its NaN
//! check and row encoding on the pool, and a non-pool caller leading a coalesced scan waited
//! for workers that were queued behind it.

mod common;
use common::{assert_topk, ids, items, seed, tempdir, Rng};
use srvdb::{Database, Metric, OpenOptions, Store};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Every test here runs on a global pool of two threads (the first test to run builds it).
fn two_thread_pool() {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global();
    assert_eq!(
        rayon::current_num_threads(),
        2,
        "the global pool was built elsewhere"
    );
}

/// Runs `f` on its own thread and fails the test if it has not returned within `secs`
/// (a deadlocked thread is left behind; the test binary exits anyway).
fn must_finish(secs: u64, what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no answer in {secs} s (deadlock)"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the worker panicked"),
    }
}

/// `add` called from inside rayon's pool, with batches large enough that the add's own
/// validation and encoding would run on the pool too, while a thread outside the pool adds as
/// well. Before the fix the writer lock was held while the add waited for pool work: a worker
/// waiting there picked up another `add` and blocked on the lock its own stack held.
#[test]
fn add_from_rayon_workers_finishes() {
    use rayon::prelude::*;
    two_thread_pool();
    const DIM: usize = 64;
    const BATCH: usize = 1_100; // > 2^16 values: the parallel NaN check runs
    const BATCHES: usize = 24;
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path(), OpenOptions::default()).expect("open"));
    let data = Arc::new(Rng::new(seed()).vectors(BATCH * (BATCHES + 4), DIM));
    {
        let (db, data) = (db.clone(), data.clone());
        must_finish(60, "par_iter of adds", move || {
            let outside = {
                let (db, data) = (db.clone(), data.clone());
                std::thread::spawn(move || {
                    for b in BATCHES..BATCHES + 4 {
                        let names = ids(b * BATCH..(b + 1) * BATCH);
                        db.add(&names, &data[b * BATCH * DIM..(b + 1) * BATCH * DIM], &[])
                            .expect("add outside the pool");
                    }
                })
            };
            (0..BATCHES).into_par_iter().for_each(|b| {
                let names = ids(b * BATCH..(b + 1) * BATCH);
                db.add(&names, &data[b * BATCH * DIM..(b + 1) * BATCH * DIM], &[])
                    .expect("add in the pool");
            });
            outside.join().expect("outside thread");
        });
    }
    assert_eq!(db.count(), (BATCH * (BATCHES + 4)) as u64);
    let probe = BATCH * 7 + 3;
    let got = db
        .get(&format!("id-{probe}"))
        .expect("get")
        .expect("present");
    assert_eq!(got.vector, &data[probe * DIM..(probe + 1) * DIM]);
}

/// `search` called from inside rayon's pool on a database past the coalescing threshold (each
/// scan runs on the pool too), with callers outside the pool searching at the same time. Every
/// answer must be the brute-force answer.
#[test]
fn search_from_rayon_workers_finishes_and_is_exact() {
    use rayon::prelude::*;
    two_thread_pool();
    const DIM: usize = 96;
    const ROWS: usize = 14_000; // ~5.4 MiB of rows: past the 4 MiB coalescing threshold
    const QUERIES: usize = 48;
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path(), OpenOptions::default()).expect("open"));
    let mut rng = Rng::new(seed() ^ 0x5EA);
    let data = rng.vectors(ROWS, DIM);
    let names = ids(0..ROWS);
    db.add(&names, &data, &[]).expect("add");
    db.persist().expect("persist");
    let items = Arc::new(items(&data, DIM));
    let queries = Arc::new(rng.vectors(QUERIES, DIM));
    let check = {
        let items = items.clone();
        move |q: &[f32], hits: &[srvdb::SearchHit], k: usize| {
            assert_topk(
                Metric::Cosine,
                q,
                &items,
                hits,
                k,
                1e-4,
                "search from the pool",
            );
        }
    };
    let (db2, queries2, check2) = (db.clone(), queries.clone(), check.clone());
    must_finish(60, "par_iter of searches", move || {
        let outside: Vec<_> = (0..3)
            .map(|t| {
                let (db, queries, check) = (db2.clone(), queries2.clone(), check2.clone());
                std::thread::spawn(move || {
                    for i in (t..QUERIES).step_by(3) {
                        let q = &queries[i * DIM..(i + 1) * DIM];
                        let hits = db.search(q, 10).expect("search outside");
                        check(q, &hits, 10);
                    }
                })
            })
            .collect();
        (0..QUERIES).into_par_iter().for_each(|i| {
            let q = &queries2[i * DIM..(i + 1) * DIM];
            let hits = db2.search(q, 10).expect("search in the pool");
            check2(q, &hits, 10);
        });
        for t in outside {
            t.join().expect("outside searcher");
        }
    });
}
