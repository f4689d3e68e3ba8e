//! Defects found by the reliability review (issue 13), one test each: closing a poisoned
//! handle, oversized values, a huge write buffer at compaction, and coalesced queries with very
//! different `k`. Callers inside rayon's pool are in `rayon_callers.rs`.

mod common;
use common::{assert_topk, ids, items, seed, tempdir, write_documents, Rng};
use srvdb::storage::sim::{FaultPlan, SimLocation};
use srvdb::types::{MAX_DOCUMENT_BYTES, MAX_METADATA_BYTES};
use srvdb::{Database, Error, Metadata, Metric, OpenOptions, Store};
use std::sync::Arc;

/// A handle poisoned by a failed commit must say so at `close`, since the writes it
/// acknowledged since its last commit are gone. Before the fix `close` returned `Ok(())`.
#[test]
fn close_on_a_poisoned_handle_reports_the_poisoning() {
    let faults = Arc::new(FaultPlan::never());
    let loc = Arc::new(SimLocation::with_faults(faults.clone()));
    let opts = OpenOptions {
        auto_commit_rows: 0,
        ..OpenOptions::default()
    };
    let db = Database::open_at(loc, opts).expect("open");
    db.add(&["a"], &[1.0, 2.0], &[]).expect("add");
    db.persist().expect("persist");
    db.add(&["b"], &[3.0, 4.0], &[]).expect("add");
    faults.fail_after(1);
    assert!(
        db.persist().is_err(),
        "the injected fault must fail the commit"
    );
    match db.close() {
        Err(Error::Poisoned { reason }) => assert!(reason.contains("simulated"), "{reason}"),
        other => panic!("close on a poisoned handle returned {other:?}"),
    }
}

/// Oversized metadata or documents are refused at `add`, with the limit in the message, and
/// nothing else is lost: the handle stays usable and earlier pending batches commit. Before the
/// fix such a value was accepted, and a value past redb's limit failed at commit, poisoning the
/// handle and dropping every pending batch.
#[test]
fn oversized_values_are_refused_at_add_without_losing_other_writes() {
    let dir = tempdir();
    let opts = OpenOptions {
        auto_commit_rows: 0,
        ..OpenOptions::default()
    };
    let db = Database::open(dir.path(), opts.clone()).expect("open");
    db.add(
        &["kept"],
        &[1.0, 0.0],
        &[Some(Metadata::from_text("small"))],
    )
    .expect("add");

    let big_meta = Metadata::Text("m".repeat(MAX_METADATA_BYTES + 1));
    match db.add(&["x", "y"], &[0.0, 1.0, 1.0, 1.0], &[None, Some(big_meta)]) {
        Err(Error::InvalidInput { reason, index }) => {
            assert_eq!(index, Some(1));
            assert!(reason.contains(&MAX_METADATA_BYTES.to_string()), "{reason}");
        }
        other => panic!("oversized metadata: {other:?}"),
    }
    let big_doc = "d".repeat(MAX_DOCUMENT_BYTES + 1);
    match write_documents(
        &db,
        srvdb::WriteMode::Add,
        &["z"],
        &[0.5, 0.5],
        &[],
        &[Some(big_doc)],
    ) {
        Err(Error::InvalidInput { reason, index }) => {
            assert_eq!(index, Some(0));
            assert!(reason.contains(&MAX_DOCUMENT_BYTES.to_string()), "{reason}");
        }
        other => panic!("oversized document: {other:?}"),
    }
    // At the limit exactly is fine.
    let at_limit = "d".repeat(MAX_DOCUMENT_BYTES);
    write_documents(
        &db,
        srvdb::WriteMode::Add,
        &["w"],
        &[0.5, 0.5],
        &[],
        &[Some(at_limit.as_str())],
    )
    .expect("a document at the limit");
    assert!(!db.contains("x") && !db.contains("y") && !db.contains("z"));
    db.persist().expect("the handle is not poisoned");
    db.close().expect("close");

    let db = Database::open(dir.path(), opts).expect("reopen");
    assert_eq!(db.count(), 2);
    let kept = db.get("kept").expect("get").expect("kept survives");
    assert_eq!(kept.metadata, Some(Metadata::from_text("small")));
    let w = db.get("w").expect("get").expect("w survives");
    assert_eq!(w.document.map(|d| d.len()), Some(MAX_DOCUMENT_BYTES));
}

/// A write buffer far larger than the database must not size the compaction's slab: before the
/// fix `compact` reserved `buffer_bytes` up front and aborted on a capacity overflow.
#[test]
fn compaction_with_a_huge_write_buffer() {
    let dir = tempdir();
    let opts = OpenOptions {
        buffer_bytes: usize::MAX / 2,
        ..OpenOptions::default()
    };
    let db = Database::open(dir.path(), opts).expect("open");
    let data = Rng::new(seed()).vectors(10, 4);
    let names = ids(0..10);
    db.add(&names, &data, &[]).expect("add");
    db.delete(&["id-3", "id-7"]).expect("delete");
    db.compact().expect("compact");
    assert_eq!(db.count(), 8);
    for i in [0, 5, 9] {
        let r = db.get(&format!("id-{i}")).expect("get").expect("live");
        assert_eq!(r.vector, &data[i * 4..(i + 1) * 4]);
    }
    assert!(db.get("id-3").expect("get").is_none());
}

/// Coalesced searches with very different `k` on one handle: each answer is exact for its own
/// `k`, whether the query shared a scan or not.
#[test]
fn coalesced_searches_with_mixed_k_are_exact() {
    const DIM: usize = 64;
    const ROWS: usize = 20_000; // 5+ MiB of rows: coalescing is on
    const THREADS: usize = 8;
    let dir = tempdir();
    let db = Arc::new(Database::open(dir.path(), OpenOptions::default()).expect("open"));
    let mut rng = Rng::new(seed() ^ 0x4B);
    let data = rng.vectors(ROWS, DIM);
    let names = ids(0..ROWS);
    db.add(&names, &data, &[]).expect("add");
    let items = Arc::new(items(&data, DIM));
    let queries = Arc::new(rng.vectors(THREADS * 6, DIM));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, items, queries) = (db.clone(), items.clone(), queries.clone());
            std::thread::spawn(move || {
                for j in 0..6 {
                    let i = t * 6 + j;
                    let q = &queries[i * DIM..(i + 1) * DIM];
                    // One thread in four asks for (far) more hits than there are rows.
                    let k = match t % 4 {
                        0 => 1_000_000,
                        1 => 300,
                        2 => 1,
                        _ => 10,
                    };
                    let hits = db.search(q, k).expect("search");
                    assert_eq!(hits.len(), k.min(ROWS));
                    let check = k.min(300);
                    assert_topk(
                        Metric::Cosine,
                        q,
                        &items,
                        &hits[..check],
                        check,
                        1e-4,
                        &format!("k={k}"),
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("searcher");
    }
}
