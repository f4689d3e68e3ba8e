//! `Store::update`: only what is given changes; metadata and documents change in place (same
//! row, same vector bytes), a new vector moves the record to a new row; an unknown or repeated
//! id, or a bad entry, changes nothing. Checked against a model kept in the test, across
//! commits, reopen and compaction, and under concurrent readers.

mod common;
use common::{seed, tempdir, Rng};
use srvdb::{Database, Error, Metadata, OpenOptions, Store, Update, Write};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const DIM: usize = 8;

fn options() -> OpenOptions {
    OpenOptions {
        auto_commit_rows: 0,
        ..OpenOptions::default()
    }
}

fn meta(text: &str) -> Option<Metadata> {
    Some(Metadata::from_text(text))
}

fn vector(rng: &mut Rng) -> Vec<f32> {
    (0..DIM).map(|_| rng.f32()).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A record as compared: vector bits, metadata, document.
type Stored = (Vec<u32>, Option<Metadata>, Option<String>);

/// id -> record, and the live ids in row order.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    records: BTreeMap<String, Stored>,
    order: Vec<String>,
}

impl Model {
    fn put(&mut self, id: &str, v: &[f32], m: Option<Metadata>, d: Option<String>) {
        self.order.retain(|x| x != id);
        self.order.push(id.to_owned());
        self.records.insert(id.to_owned(), (bits(v), m, d));
    }
}

/// The database's records, read with `get`, and its ids in row order.
fn read(db: &Database) -> Model {
    let order = db.ids();
    let records = order
        .iter()
        .map(|id| {
            let r = db.get(id).expect("get").expect("listed id present");
            (id.clone(), (bits(&r.vector), r.metadata, r.document))
        })
        .collect();
    Model { records, order }
}

/// Three records a, b, c with metadata and documents.
fn three(db: &Database, rng: &mut Rng, model: &mut Model) {
    let ids = ["a", "b", "c"];
    let vs: Vec<Vec<f32>> = ids.iter().map(|_| vector(rng)).collect();
    let metas = vec![meta(r#"{"n":1}"#), meta(r#"{"n":2}"#), None];
    let docs = [Some("doc a"), None, Some("doc c")];
    let flat: Vec<f32> = vs.concat();
    db.write(&Write::add(&ids, &flat).metadatas(&metas).documents(&docs))
        .expect("add");
    for i in 0..3 {
        model.put(ids[i], &vs[i], metas[i].clone(), docs[i].map(str::to_owned));
    }
}

#[test]
fn a_metadata_only_update_keeps_the_row_and_rewrites_no_vector() {
    let dir = tempdir();
    let mut rng = Rng::new(seed());
    let mut model = Model::default();
    {
        let db = Database::open(dir.path(), options()).expect("open");
        three(&db, &mut rng, &mut model);
        db.close().expect("close");
    }
    let vectors = dir.path().join("vectors.bin");
    let before = std::fs::read(&vectors).expect("read vectors.bin");
    {
        let db = Database::open(dir.path(), options()).expect("reopen");
        let new = [meta(r#"{"n":20,"tag":"x"}"#)];
        db.update(&Update::ids(&["b"]).metadatas(&new))
            .expect("update");
        model.records.get_mut("b").expect("b").1 = new[0].clone();
        // Seen at once, before any commit, and the row order is unchanged (same row).
        assert_eq!(read(&db), model);
        db.update(&Update::ids(&["a"]).documents(&[Some("new doc a")]))
            .expect("update document");
        model.records.get_mut("a").expect("a").2 = Some("new doc a".into());
        assert_eq!(read(&db), model);
        assert_eq!(
            db.documents(&["a", "b", "c"]).expect("documents"),
            vec![Some("new doc a".into()), None, Some("doc c".into())]
        );
        db.close().expect("close");
    }
    let after = std::fs::read(&vectors).expect("read vectors.bin");
    assert!(
        before == after,
        "a metadata/document-only update changed vectors.bin ({} -> {} bytes)",
        before.len(),
        after.len()
    );
    let db = Database::open(dir.path(), options()).expect("reopen");
    assert_eq!(read(&db), model, "after reopen");
}

#[test]
fn none_clears_and_omitted_fields_are_kept() {
    let dir = tempdir();
    let mut rng = Rng::new(seed() ^ 1);
    let mut model = Model::default();
    let db = Database::open(dir.path(), options()).expect("open");
    three(&db, &mut rng, &mut model);
    db.persist().expect("persist");
    db.update(
        &Update::ids(&["a", "c"])
            .metadatas(&[None, meta("plain text, not JSON")])
            .documents(&[None, None]),
    )
    .expect("update");
    model.records.get_mut("a").expect("a").1 = None;
    model.records.get_mut("a").expect("a").2 = None;
    model.records.get_mut("c").expect("c").1 = meta("plain text, not JSON");
    model.records.get_mut("c").expect("c").2 = None;
    assert_eq!(read(&db), model);
    db.persist().expect("persist");
    assert_eq!(read(&db), model, "after commit");
    drop(db);
    let db = Database::open(dir.path(), options()).expect("reopen");
    assert_eq!(read(&db), model, "after reopen");
}

#[test]
fn an_update_of_an_uncommitted_row_edits_its_pending_insert() {
    let dir = tempdir();
    let mut rng = Rng::new(seed() ^ 2);
    let mut model = Model::default();
    let db = Database::open(dir.path(), options()).expect("open");
    three(&db, &mut rng, &mut model);
    // Nothing committed yet: the rows live in the pending state only.
    db.update(
        &Update::ids(&["c", "b"])
            .metadatas(&[meta(r#"{"n":3}"#), None])
            .documents(&[Some("doc c2"), Some("doc b2")]),
    )
    .expect("update");
    model.records.get_mut("c").expect("c").1 = meta(r#"{"n":3}"#);
    model.records.get_mut("c").expect("c").2 = Some("doc c2".into());
    model.records.get_mut("b").expect("b").1 = None;
    model.records.get_mut("b").expect("b").2 = Some("doc b2".into());
    assert_eq!(read(&db), model);
    db.persist().expect("persist");
    assert_eq!(read(&db), model, "after commit");
    drop(db);
    let db = Database::open(dir.path(), options()).expect("reopen");
    assert_eq!(read(&db), model, "after reopen");
}

#[test]
fn a_vector_update_moves_the_record_and_keeps_what_was_not_given() {
    let dir = tempdir();
    let mut rng = Rng::new(seed() ^ 3);
    let mut model = Model::default();
    let db = Database::open(dir.path(), options()).expect("open");
    three(&db, &mut rng, &mut model);
    db.persist().expect("persist");
    let v = vector(&mut rng);
    db.update(&Update::ids(&["a"]).vectors(&v))
        .expect("update vector");
    let (_, m, d) = model.records["a"].clone();
    model.put("a", &v, m, d);
    assert_eq!(read(&db), model);
    assert_eq!(db.count(), 3);
    // The new vector is what search finds (exactly: cosine of a vector with itself).
    let hits = db.search(&v, 1).expect("search");
    assert_eq!(hits[0].id, "a");
    assert!((hits[0].score - 1.0).abs() < 1e-5, "{hits:?}");

    // Vector and metadata together; the document is kept.
    let w = vector(&mut rng);
    db.update(
        &Update::ids(&["c"])
            .vectors(&w)
            .metadatas(&[meta(r#"{"n":30}"#)]),
    )
    .expect("update vector and metadata");
    let d = model.records["c"].2.clone();
    model.put("c", &w, meta(r#"{"n":30}"#), d);
    assert_eq!(read(&db), model);
    let all = db.search(&w, 10).expect("search");
    assert_eq!(all.len(), 3, "the old rows are gone from search: {all:?}");
    drop(db);
    let db = Database::open(dir.path(), options()).expect("reopen");
    assert_eq!(read(&db), model, "after reopen");
}

#[test]
fn an_unknown_or_repeated_id_or_a_bad_entry_changes_nothing() {
    let dir = tempdir();
    let mut rng = Rng::new(seed() ^ 4);
    let mut model = Model::default();
    let db = Database::open(dir.path(), options()).expect("open");
    three(&db, &mut rng, &mut model);
    let new = [meta("x"), meta("y")];

    let e = db
        .update(&Update::ids(&["a", "zzz"]).metadatas(&new))
        .expect_err("unknown id");
    assert!(matches!(&e, Error::NotFound { id } if id == "zzz"), "{e:?}");
    assert_eq!(read(&db), model);

    let e = db
        .update(&Update::ids(&["b", "b"]).metadatas(&new))
        .expect_err("repeated id");
    assert!(
        matches!(&e, Error::InvalidInput { reason, index: Some(1) } if reason.contains("\"b\"")),
        "{e:?}"
    );
    assert_eq!(read(&db), model);

    let e = db
        .update(&Update::ids(&["a"]).metadatas(&new))
        .expect_err("two metadatas for one id");
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    let e = db
        .update(&Update::ids(&["a", "b"]).documents(&[Some("x")]))
        .expect_err("one document for two ids");
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");

    let mut two = [vector(&mut rng), vector(&mut rng)].concat();
    let e = db
        .update(&Update::ids(&["a", "b"]).vectors(&two[..DIM + 1]))
        .expect_err("wrong length");
    assert!(matches!(e, Error::DimensionMismatch { .. }), "{e:?}");
    two[DIM + 2] = f32::NAN;
    let e = db
        .update(&Update::ids(&["a", "b"]).vectors(&two))
        .expect_err("NaN");
    assert!(
        matches!(e, Error::InvalidInput { index: Some(1), .. }),
        "{e:?}"
    );
    // An unknown id after a valid vector update: still nothing.
    let e = db
        .update(
            &Update::ids(&["c", "nope"]).vectors(&[vector(&mut rng), vector(&mut rng)].concat()),
        )
        .expect_err("unknown id with vectors");
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    let e = db
        .update(&Update::ids(&[]).metadatas(&new))
        .expect_err("values without ids");
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    assert_eq!(read(&db), model);
    assert_eq!(db.count(), 3);

    // An update that gives nothing checks the ids and changes nothing.
    db.update(&Update::ids(&["a"])).expect("empty update");
    assert!(matches!(
        db.update(&Update::ids(&["gone"])),
        Err(Error::NotFound { .. })
    ));
    db.persist().expect("persist");
    drop(db);
    let db = Database::open(dir.path(), options()).expect("reopen");
    assert_eq!(read(&db), model, "after reopen");
}

#[test]
fn updates_count_toward_auto_commit() {
    let dir = tempdir();
    let mut rng = Rng::new(seed() ^ 5);
    let mut model = Model::default();
    {
        let db = Database::open(
            dir.path(),
            OpenOptions {
                auto_commit_rows: 4,
                ..OpenOptions::default()
            },
        )
        .expect("open");
        three(&db, &mut rng, &mut model);
        // 3 inserts + 1 update reach the threshold of 4: committed without persist.
        db.update(&Update::ids(&["a"]).metadatas(&[meta(r#"{"n":100}"#)]))
            .expect("update");
        model.records.get_mut("a").expect("a").1 = meta(r#"{"n":100}"#);
        // Simulate a crash: leak the handle so nothing is committed on drop.
        std::mem::forget(db);
    }
    // The directory lock of the leaked handle is per process: open through a fresh location
    // is refused, so copy the files out and open the copy.
    let copy = tempdir();
    for name in ["vectors.bin", "metadata.db"] {
        std::fs::copy(dir.path().join(name), copy.path().join(name)).expect("copy");
    }
    let db = Database::open(copy.path(), options()).expect("open copy");
    assert_eq!(read(&db), model);
}

/// Random adds, upserts, deletes, updates (metadata, documents, vectors, mixed), commits,
/// compactions and reopens against the model.
#[test]
fn random_updates_match_the_model_through_commit_compaction_and_reopen() {
    let dir = tempdir();
    let s = seed() ^ 6;
    let mut rng = Rng::new(s);
    let mut model = Model::default();
    let mut db = Database::open(dir.path(), options()).expect("open");
    let mut next = 0usize;
    for step in 0..400 {
        let live: Vec<String> = model.order.clone();
        let pick = |rng: &mut Rng| live[(rng.next_u64() % live.len() as u64) as usize].clone();
        match rng.next_u64() % 10 {
            0..=2 => {
                let id = format!("r{next}");
                next += 1;
                let v = vector(&mut rng);
                let m = (rng.next_u64().is_multiple_of(2))
                    .then(|| Metadata::from_text(format!("{{\"i\":{step}}}")));
                let d = (rng.next_u64().is_multiple_of(2)).then(|| format!("doc {step}"));
                let dr = [d.as_deref()];
                db.write(
                    &Write::add(&[id.as_str()], &v)
                        .metadatas(std::slice::from_ref(&m))
                        .documents(&dr),
                )
                .expect("add");
                model.put(&id, &v, m, d);
            }
            3 if !live.is_empty() => {
                let id = pick(&mut rng);
                db.delete(&[id.as_str()]).expect("delete");
                model.records.remove(&id);
                model.order.retain(|x| *x != id);
            }
            4 if !live.is_empty() => {
                let id = pick(&mut rng);
                let v = vector(&mut rng);
                db.upsert(&[id.as_str()], &v, &[None]).expect("upsert");
                model.put(&id, &v, None, None);
            }
            5..=7 if !live.is_empty() => {
                let mut ids: Vec<String> = (0..1 + rng.next_u64() % 3)
                    .map(|_| pick(&mut rng))
                    .collect();
                ids.sort();
                ids.dedup();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let metas: Vec<Option<Metadata>> = ids
                    .iter()
                    .map(|_| {
                        (!rng.next_u64().is_multiple_of(3))
                            .then(|| Metadata::from_text(format!("{{\"u\":{step}}}")))
                    })
                    .collect();
                let docs_owned: Vec<Option<String>> = ids
                    .iter()
                    .map(|_| (!rng.next_u64().is_multiple_of(3)).then(|| format!("updated {step}")))
                    .collect();
                let docs: Vec<Option<&str>> = docs_owned.iter().map(|d| d.as_deref()).collect();
                let vecs: Vec<f32> = ids.iter().flat_map(|_| vector(&mut rng)).collect();
                let what = rng.next_u64() % 4;
                let mut update = Update::ids(&refs);
                if what & 1 == 1 || what == 0 {
                    update = update.metadatas(&metas);
                }
                if what & 2 == 2 {
                    update = update.documents(&docs);
                }
                let with_vectors = rng.next_u64().is_multiple_of(3);
                if with_vectors {
                    update = update.vectors(&vecs);
                }
                db.update(&update).expect("update");
                for (i, id) in ids.iter().enumerate() {
                    let (v, m, d) = model.records[id].clone();
                    let m = if update.metadatas.is_some() {
                        metas[i].clone()
                    } else {
                        m
                    };
                    let d = if update.documents.is_some() {
                        docs_owned[i].clone()
                    } else {
                        d
                    };
                    if with_vectors {
                        let nv = &vecs[i * DIM..(i + 1) * DIM];
                        model.put(id, nv, m, d);
                    } else {
                        model.records.insert(id.clone(), (v, m, d));
                    }
                }
            }
            8 => db.persist().expect("persist"),
            _ => match rng.next_u64() % 2 {
                0 => db.compact().expect("compact"),
                _ => {
                    drop(db);
                    db = Database::open(dir.path(), options()).expect("reopen");
                }
            },
        }
        if step % 20 == 0 {
            assert_eq!(read(&db), model, "seed {s}, step {step}");
        }
    }
    assert_eq!(read(&db), model, "seed {s}, end");
    db.compact().expect("compact");
    drop(db);
    let db = Database::open(dir.path(), options()).expect("reopen");
    assert_eq!(read(&db), model, "seed {s}, after compaction and reopen");
}

/// Readers never see a record half updated: its vector and metadata change together.
#[test]
fn concurrent_readers_see_the_old_or_the_new_record_never_a_mix() {
    let db = Arc::new(Database::in_memory(options()).expect("in memory"));
    let mut rng = Rng::new(seed() ^ 7);
    let v1 = vector(&mut rng);
    let v2 = vector(&mut rng);
    let others: Vec<f32> = (0..20).flat_map(|_| vector(&mut rng)).collect();
    let other_ids: Vec<String> = (0..20).map(|i| format!("o{i}")).collect();
    db.add(&other_ids, &others, &[]).expect("add others");
    let m1 = meta(r#"{"version":1}"#);
    let m2 = meta(r#"{"version":2}"#);
    db.add(&["x"], &v1, std::slice::from_ref(&m1))
        .expect("add x");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop) = (db.clone(), stop.clone());
            let (v1, v2, m1, m2) = (v1.clone(), v2.clone(), m1.clone(), m2.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) || reads < 50 {
                    let r = db.get("x").expect("get").expect("x is always there");
                    let pair = (bits(&r.vector), r.metadata);
                    assert!(
                        pair == (bits(&v1), m1.clone()) || pair == (bits(&v2), m2.clone()),
                        "a mix of old and new: {pair:?}"
                    );
                    let hits = db.search(&v1, 100).expect("search");
                    assert_eq!(
                        hits.iter().filter(|h| h.id == "x").count(),
                        1,
                        "x must be found exactly once: {hits:?}"
                    );
                    assert_eq!(hits.len(), 21);
                    reads += 1;
                }
            })
        })
        .collect();
    for i in 0..300 {
        let (v, m) = if i % 2 == 0 { (&v2, &m2) } else { (&v1, &m1) };
        db.update(
            &Update::ids(&["x"])
                .vectors(v)
                .metadatas(std::slice::from_ref(m)),
        )
        .expect("update");
        if i % 50 == 0 {
            db.compact().expect("compact");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader");
    }
}
