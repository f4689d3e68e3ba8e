//! Documents stored with rows, and the recorded text embedder. Guards against documents
//! drifting from their rows (a delete, an upsert or a compaction that moves a row but not its
//! text would return another record's text with a hit) and against vectors of two models being
//! mixed in one database. The reference is a `HashMap` of what each id should hold. Needs no
//! model: vectors are seeded random, the embedder only a name and a dimension.

mod common;

use common::{ids, tempdir, write_documents, Rng};
use srvdb::{Database, EmbedderSpec, Error, OpenOptions, StorageKind, Store};
use std::collections::HashMap;

const DIM: usize = 8;

fn docs_of(db: &Database, reference: &HashMap<String, Option<String>>, seed: u64) {
    let mut keys: Vec<&String> = reference.keys().collect();
    keys.sort();
    let keys: Vec<&str> = keys.into_iter().map(String::as_str).collect();
    let got = db.documents(&keys).expect("documents");
    for (id, doc) in keys.iter().zip(got) {
        assert_eq!(&doc, &reference[*id], "document of {id} (seed {seed})");
        let record = db.get(id).expect("get").expect("record");
        assert_eq!(
            &record.document, &reference[*id],
            "get({id}).document (seed {seed})"
        );
    }
}

#[test]
fn documents_follow_rows_through_upsert_delete_compact_and_reopen() {
    let seed = common::seed();
    for kind in [StorageKind::Mmap, StorageKind::File] {
        let dir = tempdir();
        let opts = OpenOptions {
            auto_commit_rows: 0,
            ..OpenOptions::default()
        }
        .with_storage(kind);
        let mut rng = Rng::new(seed);
        let mut reference: HashMap<String, Option<String>> = HashMap::new();
        let db = Database::open(dir.path(), opts.clone()).expect("open");

        let first = ids(0..20);
        let texts: Vec<Option<String>> = (0..20)
            .map(|i| (i % 3 != 0).then(|| format!("document {i}: text ✓")))
            .collect();
        write_documents(
            &db,
            srvdb::WriteMode::Add,
            &first,
            &rng.vectors(20, DIM),
            &[],
            &texts,
        )
        .expect("add");
        for (id, t) in first.iter().zip(&texts) {
            reference.insert(id.clone(), t.clone());
        }
        docs_of(&db, &reference, seed); // pending, not yet committed
        db.persist().expect("persist");
        docs_of(&db, &reference, seed);

        // Upsert replaces the text (or removes it), delete removes it.
        let up = ids(5..8);
        let new_texts = vec![
            Some("five again".to_owned()),
            None,
            Some("seven again".into()),
        ];
        write_documents(
            &db,
            srvdb::WriteMode::Upsert,
            &up,
            &rng.vectors(3, DIM),
            &[],
            &new_texts,
        )
        .expect("upsert");
        for (id, t) in up.iter().zip(&new_texts) {
            reference.insert(id.clone(), t.clone());
        }
        db.delete(&ids(10..14)).expect("delete");
        for id in ids(10..14) {
            reference.remove(&id);
        }
        // Plain add leaves no document.
        db.add(&ids(20..22), &rng.vectors(2, DIM), &[])
            .expect("add plain");
        reference.insert("id-20".into(), None);
        reference.insert("id-21".into(), None);
        docs_of(&db, &reference, seed);
        assert_eq!(
            db.documents(&["id-10", "nope"]).expect("documents"),
            vec![None, None]
        );

        db.compact().expect("compact");
        docs_of(&db, &reference, seed);
        db.close().expect("close");

        let db = Database::open(dir.path(), opts).expect("reopen");
        docs_of(&db, &reference, seed);
        assert_eq!(db.count() as usize, reference.len(), "seed {seed}");
    }
}

#[test]
fn uncommitted_documents_vanish_with_their_rows() {
    let dir = tempdir();
    let opts = OpenOptions {
        auto_commit_rows: 0,
        ..OpenOptions::default()
    };
    {
        let db = Database::open(dir.path(), opts.clone()).expect("open");
        write_documents(
            &db,
            srvdb::WriteMode::Add,
            &["a"],
            &[1.0, 0.0],
            &[],
            &[Some("kept")],
        )
        .expect("add");
        db.persist().expect("persist");
        write_documents(
            &db,
            srvdb::WriteMode::Add,
            &["b"],
            &[0.0, 1.0],
            &[],
            &[Some("lost")],
        )
        .expect("add");
        std::mem::forget(db); // a crash: no commit on drop
    }
    // The leaked handle still holds the lock; a crashed process would have released it.
    // Reopen a copy of the directory instead.
    let copy = tempdir();
    for f in ["vectors.bin", "metadata.db"] {
        std::fs::copy(dir.path().join(f), copy.path().join(f)).expect("copy");
    }
    let db = Database::open(copy.path(), opts).expect("reopen");
    assert_eq!(
        db.documents(&["a", "b"]).expect("documents"),
        vec![Some("kept".to_owned()), None]
    );
}

#[test]
fn document_count_must_match_ids() {
    let db = Database::in_memory(OpenOptions::default()).expect("open");
    let err = write_documents(
        &db,
        srvdb::WriteMode::Add,
        &["a", "b"],
        &[1.0, 0.0, 0.0, 1.0],
        &[],
        &[Some("one")],
    )
    .expect_err("one document for two ids");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(db.count(), 0);
}

fn spec(name: &str, dimension: u32) -> EmbedderSpec {
    EmbedderSpec {
        name: name.into(),
        dimension,
    }
}

#[test]
fn the_embedder_is_recorded_and_a_different_one_refused() {
    let dir = tempdir();
    let mini = spec("all-MiniLM-L6-v2", 384);
    {
        let db = Database::open(
            dir.path(),
            OpenOptions::default().with_embedder(mini.clone()),
        )
        .expect("create");
        assert_eq!(db.embedder(), Some(&mini));
        assert_eq!(db.dimension(), Some(384));
    }
    // Reopening without an embedder is fine (vector access), and still reports it.
    {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("plain reopen");
        assert_eq!(db.embedder(), Some(&mini));
    }
    for other in [spec("all-mpnet-base-v2", 768), spec("other-384", 384)] {
        let err = Database::open(
            dir.path(),
            OpenOptions::default().with_embedder(other.clone()),
        )
        .expect_err("another embedder");
        match &err {
            Error::EmbedderMismatch { stored, asked } => {
                assert!(stored.contains("all-MiniLM-L6-v2"), "{err}");
                assert!(asked.contains(&other.name), "{err}");
            }
            other => panic!("expected EmbedderMismatch, got {other:?}"),
        }
    }
    let db = Database::open(
        dir.path(),
        OpenOptions::default().with_embedder(mini.clone()),
    )
    .expect("same embedder");
    db.add(&["x"], &[0.5; 384], &[]).expect("add");
    db.compact().expect("compact keeps the record");
    drop(db);
    let db = Database::open(dir.path(), OpenOptions::default()).expect("reopen");
    assert_eq!(db.embedder(), Some(&mini));
}

#[test]
fn vectors_without_a_recorded_embedder_refuse_one() {
    let dir = tempdir();
    {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("create");
        db.add(&["raw"], &[0.1; 384], &[]).expect("add");
    }
    let err = Database::open(
        dir.path(),
        OpenOptions::default().with_embedder(spec("all-MiniLM-L6-v2", 384)),
    )
    .expect_err("unknown vectors");
    assert!(matches!(err, Error::EmbedderMismatch { .. }), "{err}");
    // An empty database of the right dimension adopts the embedder.
    let dir = tempdir();
    drop(Database::open(dir.path(), OpenOptions::default().with_dimension(384)).expect("create"));
    let db = Database::open(
        dir.path(),
        OpenOptions::default().with_embedder(spec("all-MiniLM-L6-v2", 384)),
    )
    .expect("adopt");
    assert_eq!(
        db.embedder().map(|e| e.name.as_str()),
        Some("all-MiniLM-L6-v2")
    );
    // A dimension that disagrees with the embedder's is refused before anything is written.
    let dir = tempdir();
    let err = Database::open(
        dir.path(),
        OpenOptions {
            dimension: Some(512),
            embedder: Some(spec("all-MiniLM-L6-v2", 384)),
            ..OpenOptions::default()
        },
    )
    .expect_err("dimension disagrees");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
}
