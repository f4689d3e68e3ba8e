//! Persistence: what was committed comes back after a reopen, byte for byte, on both
//! disk backends; deletes, upserts and compaction survive; the configuration is enforced.

mod common;
use common::{ids, seed, tempdir, Rng};
use srvdb::{Database, Error, Metadata, Metric, OpenOptions, StorageKind, Store};

fn opts(kind: StorageKind) -> OpenOptions {
    OpenOptions::default().with_storage(kind)
}

fn snapshot(db: &Database, queries: &[f32]) -> Vec<Vec<(String, f32)>> {
    db.search_batch(queries, 15)
        .expect("search")
        .into_iter()
        .map(|hits| hits.into_iter().map(|h| (h.id, h.score)).collect())
        .collect()
}

#[test]
fn reopen_gives_identical_records_and_results() {
    for kind in [StorageKind::Mmap, StorageKind::File] {
        let dir = tempdir();
        let mut rng = Rng::new(seed());
        let dim = 48;
        let data = rng.vectors(2500, dim);
        let names = ids(0..2500);
        let metas: Vec<Option<Metadata>> = (0..2500)
            .map(|i| match i % 3 {
                0 => Some(Metadata::from_text(format!("{{\"n\": {i}}}"))),
                1 => Some(Metadata::from_text(format!("plain text {i}, not JSON"))),
                _ => None,
            })
            .collect();
        let queries = rng.vectors(5, dim);
        let before;
        {
            let db = Database::open(dir.path(), opts(kind)).expect("open");
            db.add(&names, &data, &metas).expect("add");
            db.delete(&["id-3", "id-10"]).expect("delete");
            db.upsert(
                &["id-4"],
                &data[..dim],
                &[Some(Metadata::from_text("\"replaced\""))],
            )
            .expect("upsert");
            db.persist().expect("persist");
            before = snapshot(&db, &queries);
        }
        let db = Database::open(dir.path(), opts(kind)).expect("reopen");
        assert_eq!(db.count(), 2498);
        assert_eq!(db.dimension(), Some(dim as u32));
        assert_eq!(snapshot(&db, &queries), before, "{kind:?}");
        assert!(db.get("id-3").expect("get").is_none());
        let r = db.get("id-4").expect("get").expect("present");
        assert_eq!(r.vector, data[..dim].to_vec());
        assert_eq!(r.metadata, Some(Metadata::Json("\"replaced\"".into())));
        for i in [0usize, 1, 2, 2499] {
            let r = db.get(&format!("id-{i}")).expect("get").expect("present");
            assert_eq!(
                r.vector.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                data[i * dim..(i + 1) * dim]
                    .iter()
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>(),
                "bit-identical row {i}"
            );
            assert_eq!(r.metadata, metas[i], "metadata {i}");
        }
        assert_eq!(
            db.get("id-1")
                .expect("get")
                .and_then(|r| r.metadata)
                .map(|m| m.as_str().to_owned()),
            Some("plain text 1, not JSON".to_owned())
        );
        let mut live = db.ids();
        live.sort();
        let mut want: Vec<String> = names
            .iter()
            .filter(|n| *n != "id-3" && *n != "id-10")
            .cloned()
            .collect();
        want.sort();
        assert_eq!(live, want);
    }
}

#[test]
fn compaction_survives_reopen_and_keeps_answers() {
    for kind in [StorageKind::Mmap, StorageKind::File] {
        let dir = tempdir();
        let mut rng = Rng::new(seed() ^ 7);
        let dim = 24;
        let data = rng.vectors(1000, dim);
        let names = ids(0..1000);
        let queries = rng.vectors(4, dim);
        let metas: Vec<Option<Metadata>> = (0..1000)
            .map(|i| Some(Metadata::from_text(format!("m{i}"))))
            .collect();
        let expected;
        {
            let db = Database::open(dir.path(), opts(kind)).expect("open");
            db.add(&names, &data, &metas).expect("add");
            let dead: Vec<String> = names.iter().step_by(3).cloned().collect();
            db.delete(&dead).expect("delete");
            expected = snapshot(&db, &queries);
            let size_before = std::fs::metadata(dir.path().join("vectors.bin"))
                .expect("stat")
                .len();
            db.compact().expect("compact");
            assert_eq!(
                snapshot(&db, &queries),
                expected,
                "after compact, same handle"
            );
            let size_after = std::fs::metadata(dir.path().join("vectors.bin"))
                .expect("stat")
                .len();
            assert!(
                size_after < size_before,
                "compaction shrank vectors.bin: {size_before} -> {size_after}"
            );
            // Writes keep working after compaction.
            db.add(&["new"], &data[..dim], &[None])
                .expect("add after compact");
            db.delete(&["new"]).expect("delete after compact");
        }
        let db = Database::open(dir.path(), opts(kind)).expect("reopen");
        assert_eq!(db.count(), 666);
        assert_eq!(snapshot(&db, &queries), expected, "{kind:?} after reopen");
        let r = db.get("id-1").expect("get").expect("present");
        assert_eq!(r.vector, data[dim..2 * dim].to_vec());
        assert_eq!(r.metadata, Some(Metadata::Text("m1".into())));
        assert!(!dir.path().join("vectors.bin.compact").exists());
    }
}

#[test]
fn uncommitted_writes_vanish_and_committed_ones_stay() {
    let dir = tempdir();
    let o = OpenOptions {
        auto_commit_rows: 0,
        ..OpenOptions::default()
    };
    {
        let db = Database::open(dir.path(), o.clone()).expect("open");
        db.add(&["a"], &[1.0, 2.0], &[]).expect("add");
        db.persist().expect("persist");
        db.add(&["b"], &[3.0, 4.0], &[]).expect("add");
        assert_eq!(db.count(), 2, "visible before commit");
        // Simulate a crash: skip the commit that Drop would do.
        std::mem::forget(db);
    }
    // The leaked handle still holds the lock file; a crashed process would have released it.
    // Reopen through a copy of the directory instead.
    let copy = tempdir();
    for f in ["vectors.bin", "metadata.db"] {
        std::fs::copy(dir.path().join(f), copy.path().join(f)).expect("copy");
    }
    let db = Database::open(copy.path(), o).expect("reopen");
    assert_eq!(db.ids(), vec!["a".to_string()]);
    db.add(&["c"], &[5.0, 6.0], &[])
        .expect("writes after recovery");
}

/// An id added and then upserted before one commit, among ids in no key order, keeps its
/// later row after a reopen, and every other id its own.
#[test]
fn an_id_upserted_before_its_commit_keeps_its_later_row() {
    let dir = tempdir();
    let o = OpenOptions {
        auto_commit_rows: 0,
        ..OpenOptions::default()
    };
    let names: Vec<String> = (0..300).map(|i| format!("k{}", (i * 7919) % 300)).collect();
    let data: Vec<f32> = (0..300).flat_map(|i| [i as f32, 1.0]).collect();
    {
        let db = Database::open(dir.path(), o.clone()).expect("open");
        db.add(&names, &data, &[]).expect("add");
        db.upsert(&["k17", "k3"], &[-1.0, -2.0, -3.0, -4.0], &[])
            .expect("upsert");
        db.persist().expect("persist");
    }
    let db = Database::open(dir.path(), o).expect("reopen");
    assert_eq!(db.count(), 300);
    let vector = |id: &str| db.get(id).expect("get").expect("present").vector;
    assert_eq!(vector("k17"), vec![-1.0, -2.0]);
    assert_eq!(vector("k3"), vec![-3.0, -4.0]);
    for (i, name) in names.iter().enumerate() {
        if name != "k17" && name != "k3" {
            assert_eq!(vector(name), vec![i as f32, 1.0], "{name}");
        }
    }
}

#[test]
fn auto_commit_every_threshold_vectors() {
    let dir = tempdir();
    let o = OpenOptions {
        auto_commit_rows: 10,
        ..OpenOptions::default()
    };
    {
        let db = Database::open(dir.path(), o.clone()).expect("open");
        for i in 0..25 {
            db.add(&[format!("v{i}")], &[i as f32, 1.0], &[])
                .expect("add");
        }
        std::mem::forget(db);
    }
    let copy = tempdir();
    for f in ["vectors.bin", "metadata.db"] {
        std::fs::copy(dir.path().join(f), copy.path().join(f)).expect("copy");
    }
    let db = Database::open(copy.path(), o).expect("reopen");
    assert_eq!(db.count(), 20, "two auto-commits of 10");
}

#[test]
fn configuration_is_fixed_and_enforced() {
    let dir = tempdir();
    {
        let db = Database::open(
            dir.path(),
            OpenOptions::default()
                .with_dimension(3)
                .with_metric(Metric::L2),
        )
        .expect("create");
        assert_eq!(db.dimension(), Some(3));
    }
    // Dimension given up front is durable even with no vectors.
    let db = Database::open(dir.path(), OpenOptions::default()).expect("reopen");
    assert_eq!(db.dimension(), Some(3));
    assert_eq!(db.metric(), Metric::L2);
    assert!(matches!(
        db.add(&["x"], &[1.0, 2.0], &[]),
        Err(Error::DimensionMismatch {
            expected: 3,
            got: 2,
            ..
        })
    ));
    drop(db);
    assert_other_metric_refused(dir.path(), Metric::Cosine);
    assert!(matches!(
        Database::open(dir.path(), OpenOptions::default().with_dimension(4)),
        Err(Error::DimensionMismatch {
            expected: 3,
            got: 4,
            ..
        })
    ));
}

/// Opening with a metric other than the recorded one is refused.
fn assert_other_metric_refused(path: &std::path::Path, other: Metric) {
    assert!(matches!(
        Database::open(path, OpenOptions::default().with_metric(other)),
        Err(Error::InvalidInput { .. })
    ));
}

/// A metric given at creation is durable before any row fixes the dimension: reopening
/// without one used to fall back to cosine, and the first rows were then scored as cosine.
#[test]
fn metric_without_dimension_is_durable() {
    for metric in [Metric::L2, Metric::Dot] {
        let dir = tempdir();
        drop(
            Database::open(dir.path(), OpenOptions::default().with_metric(metric)).expect("create"),
        );
        let db = Database::open(dir.path(), OpenOptions::default()).expect("reopen");
        assert_eq!(db.metric(), metric);
        assert_eq!(db.dimension(), None);
        // For the query [1, 0], cosine ties [1, 0] and [10, 0] (the earlier row wins), dot
        // ranks [10, 0] first, L2 [1, 0]; `metric()` above tells L2 from cosine.
        db.add(&["near", "far"], &[1.0, 0.0, 10.0, 0.0], &[])
            .expect("add");
        let top = db.search(&[1.0, 0.0], 1).expect("search")[0].id.clone();
        let want = if metric == Metric::L2 { "near" } else { "far" };
        assert_eq!(top, want, "{metric}: the recorded metric ranks the rows");
        drop(db);
        assert_other_metric_refused(dir.path(), Metric::Cosine);
    }
}

#[test]
fn bad_batches_are_rejected_whole() {
    let db = Database::in_memory(OpenOptions::default()).expect("open");
    db.add(&["a"], &[1.0, 2.0], &[]).expect("add");
    let cases: Vec<(Vec<&str>, Vec<f32>)> = vec![
        (vec!["b", "a"], vec![1.0, 1.0, 2.0, 2.0]), // existing id
        (vec!["b", "b"], vec![1.0, 1.0, 2.0, 2.0]), // duplicate in batch
        (vec!["b", ""], vec![1.0, 1.0, 2.0, 2.0]),  // empty id
        (vec!["b", "c"], vec![1.0, 1.0, f32::NAN, 2.0]), // NaN
        (vec!["b", "c"], vec![1.0, f32::INFINITY, 1.0, 2.0]), // inf
        (vec!["b", "c"], vec![1.0, 1.0, 2.0]),      // ragged
        (vec!["b", "c"], vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]), // wrong dim
    ];
    for (i, (ids, vecs)) in cases.iter().enumerate() {
        let err = db.add(ids, vecs, &[]).expect_err("must fail");
        eprintln!("case {i}: {err}");
        assert_eq!(db.count(), 1, "case {i} wrote something");
        assert!(!db.contains("b"), "case {i}");
    }
    let long = "x".repeat(srvdb::types::MAX_ID_BYTES + 1);
    assert!(matches!(
        db.add(&[long.as_str()], &[1.0, 1.0], &[]),
        Err(Error::InvalidInput { index: Some(0), .. })
    ));
    assert!(matches!(
        db.add(&["b", "a"], &[1.0, 1.0, 2.0, 2.0], &[]),
        Err(Error::DuplicateId { index: Some(1), .. })
    ));
    assert!(matches!(
        db.delete(&["a", "nope"]),
        Err(Error::NotFound { .. })
    ));
    assert!(db.contains("a"), "failed delete removed nothing");
    assert_eq!(db.delete(&["a", "a"]).expect("delete"), 1);
    assert_eq!(db.count(), 0);
}

#[test]
fn second_writer_gets_locked() {
    let dir = tempdir();
    let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
    let err = Database::open(dir.path(), OpenOptions::default()).expect_err("second open");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(db);
    Database::open(dir.path(), OpenOptions::default()).expect("open after close");
}

/// An in-memory database has no files to reopen: compaction used to look for the rows it had
/// just written under `vectors.bin.compact`, find nothing, and poison the handle.
#[test]
fn in_memory_database_compacts() {
    let db = Database::in_memory(OpenOptions::default()).expect("open");
    let all = ids(0..10);
    let vectors: Vec<f32> = (0..10).flat_map(|i| [i as f32, 1.0]).collect();
    db.add(&all, &vectors, &[]).expect("add");
    db.delete(&ids(0..5)).expect("delete");
    db.compact().expect("compact");
    assert_eq!(db.ids(), ids(5..10));
    for i in 5..10 {
        let record = db.get(&format!("id-{i}")).expect("get").expect("live");
        assert_eq!(record.vector, vec![i as f32, 1.0], "row of id-{i}");
    }
    db.add(&["new"], &[0.5, 0.5], &[])
        .expect("add after compaction");
    db.delete(&["id-5"]).expect("delete");
    db.compact().expect("a second compaction");
    let mut want = ids(6..10);
    want.push("new".into());
    assert_eq!(db.ids(), want);
    let hits = db.search(&[0.5, 0.5], 1).expect("search");
    assert_eq!(hits[0].id, "new", "cosine 1 against the query itself");
}
