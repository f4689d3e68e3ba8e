//! Eight threads search and two read records while one writes, upserts, deletes, commits and
//! compacts. The rows pass the 4 MiB coalescing threshold early, so most searches go through the
//! coalesced path against a writer. Every answer must be exactly the brute-force answer for one
//! of the states the writer published while that search ran (no half-applied batch, no deleted
//! row, no torn row), and every `get` must return the id's own vector and metadata.

mod common;
use common::{seed, tempdir, topk_mismatch, Rng};
use srvdb::{Database, Metadata, Metric, OpenOptions, Store};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DIM: usize = 64;
/// 700 rows of 64 dimensions are ~190 KiB: past 4 MiB (coalescing) from batch 23 on.
const BATCH: usize = 700;
const BATCHES: usize = 60;
/// The first batch after which the rows pass 4 MiB.
const COALESCED_FROM: usize = 23;

fn meta_of(i: usize) -> Metadata {
    Metadata::Json(format!("{{\"i\":{i}}}"))
}

/// Ids live after `b` batches: batch b adds its ids and deletes the first id of batch b-1.
fn live_after(b: usize) -> Vec<usize> {
    (0..b * BATCH)
        .filter(|i| !(i % BATCH == 0 && i / BATCH + 1 < b))
        .collect()
}

#[test]
fn searches_and_gets_see_consistent_snapshots_while_one_thread_writes_and_compacts() {
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path(), OpenOptions::default()).expect("open"));
    let mut rng = Rng::new(seed());
    let data = Arc::new(rng.vectors(BATCH * BATCHES, DIM));
    let published = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let writer = {
        let (db, data, published, stop) =
            (db.clone(), data.clone(), published.clone(), stop.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            for b in 1..=BATCHES {
                let range = (b - 1) * BATCH..b * BATCH;
                let ids: Vec<String> = range.clone().map(|i| format!("{i}")).collect();
                let metas: Vec<Option<Metadata>> =
                    range.clone().map(|i| Some(meta_of(i))).collect();
                db.add(&ids, &data[range.start * DIM..range.end * DIM], &metas)
                    .expect("add");
                if b >= 2 {
                    db.delete(&[format!("{}", (b - 2) * BATCH)])
                        .expect("delete");
                    // Same vector and metadata under a new row: the state searches see is
                    // unchanged, the row numbers are not.
                    let i = (b - 2) * BATCH + 1;
                    db.upsert(
                        &[format!("{i}")],
                        &data[i * DIM..(i + 1) * DIM],
                        &[Some(meta_of(i))],
                    )
                    .expect("upsert");
                }
                published.store(b, Ordering::SeqCst);
                if b % 5 == 0 {
                    db.persist().expect("persist");
                }
                if b % 8 == 0 {
                    db.compact().expect("compact");
                }
                // Straight past the coalescing threshold (batch 23), then at a pace that lets
                // the readers run between batches, for at most 6 s.
                if b < COALESCED_FROM {
                    continue;
                }
                std::thread::sleep(Duration::from_millis(40));
                if started.elapsed() > Duration::from_secs(6) && b >= COALESCED_FROM + 8 {
                    break;
                }
            }
            stop.store(true, Ordering::SeqCst);
        })
    };

    let searchers: Vec<_> = (0..8)
        .map(|t| {
            let (db, data, published, stop) = (db.clone(), data.clone(), published.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed() ^ (t as u64 + 1));
                let mut checked = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let q = rng.vectors(1, DIM);
                    let before = published.load(Ordering::SeqCst);
                    let batch_mode = checked % 2 == 1;
                    let hits = if batch_mode {
                        db.search_batch(&q, 10).expect("batch").pop().unwrap_or_default()
                    } else {
                        db.search(&q, 10).expect("search")
                    };
                    let after = published.load(Ordering::SeqCst);
                    // The engine publishes before the writer bumps `published`, so the search may
                    // see batch `after + 1`; and the add is published before its delete, so it
                    // may see the state between them.
                    let mut ok = false;
                    for b in before..=(after + 1).min(BATCHES) {
                        for with_delete in [true, false] {
                            let mut live = live_after(b);
                            if !with_delete && b >= 2 {
                                live.push((b - 2) * BATCH);
                                live.sort_unstable();
                            }
                            let items: Vec<(String, Vec<f32>)> = live
                                .iter()
                                .map(|&i| (format!("{i}"), data[i * DIM..(i + 1) * DIM].to_vec()))
                                .collect();
                            // Tie-tolerant: two rows whose cosines differ by less than an
                            // f32 rounding may come back in either order.
                            ok |= topk_mismatch(Metric::Cosine, &q, &items, &hits, 10, 1e-5)
                                .is_none();
                        }
                    }
                    assert!(ok, "thread {t}: result matches no published state in {before}..={after} (seed {})", seed());
                    checked += 1;
                }
                checked
            })
        })
        .collect();

    let getters: Vec<_> = (0..2)
        .map(|t| {
            let (db, data, published, stop) =
                (db.clone(), data.clone(), published.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed() ^ (0x6E7 + t as u64));
                let mut checked = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let b = published.load(Ordering::SeqCst);
                    if b == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    let i = rng.below((b * BATCH) as u64) as usize;
                    // Ids `k * BATCH` of batches before the newest may be deleted by now.
                    let may_be_gone = i.is_multiple_of(BATCH);
                    match db.get(&format!("{i}")).expect("get") {
                        Some(r) => {
                            assert_eq!(r.vector, &data[i * DIM..(i + 1) * DIM], "vector of {i}");
                            assert_eq!(r.metadata, Some(meta_of(i)), "metadata of {i}");
                        }
                        None => assert!(may_be_gone, "live id {i} not found (batch {b})"),
                    }
                    checked += 1;
                }
                checked
            })
        })
        .collect();

    writer.join().expect("writer");
    let got: usize = getters.into_iter().map(|g| g.join().expect("getter")).sum();
    eprintln!("{got} concurrent gets checked");
    assert!(got >= 100, "too few gets ran: {got}");
    let stats = db.coalesce_stats();
    eprintln!("coalescer: {stats:?}");
    assert!(stats.queries > 0, "no search took the coalesced path");
    let checked: usize = searchers
        .into_iter()
        .map(|s| s.join().expect("searcher"))
        .sum();
    eprintln!("{checked} concurrent searches checked against brute force");
    assert!(checked >= 80, "too few searches ran: {checked}");
}
