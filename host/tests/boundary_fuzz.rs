//! Random calls with random arguments across the WIT boundary, into the component through the
//! host, checked against a `BTreeMap` model of the database.
//!
//! Each case opens a fresh database in the sandbox and runs a random sequence of add, upsert
//! (with and without documents), delete, update (metadata and documents), delete and count by a
//! document filter, records (offset and limit), get, contains, documents, search, search-batch,
//! ids, count, persist, compact and reopen, with ids drawn from a small pool (so they collide)
//! that includes the empty id, ids at and past the length limit and odd Unicode; vectors of random
//! length (0, the wrong dimension, a ragged batch), with NaN, infinities, -0.0 and f32::MAX;
//! k of 0, small, 2^20 and u32::MAX; metadata and documents that are JSON, broken JSON, empty or
//! odd Unicode. After every call:
//! - the host did not panic and the guest did not trap: an error is the engine's typed error,
//!   never a trap, limit or setup error, and never Io, Corrupt or Poisoned;
//! - whether the call succeeded is what the model predicts, and a rejected write changed
//!   nothing (batches are atomic);
//! - answers match the model: count, ids in row order, get (vector, metadata, document),
//!   contains, documents, and search hits (count, no duplicates, live ids only, best first, and
//!   the scores of a brute-force cosine scan where those are well defined);
//! - the next call is served.
//!
//! Cases: `PROPTEST_CASES` (default 256: about 30 s in release on 2 shared cores). Every input that
//! ever failed is kept in `boundary_fuzz.proptest-regressions` beside this file and replayed first.

use proptest::prelude::*;
use srvdb::types::{MAX_DIMENSION, MAX_ID_BYTES};
use srvdb::{Delete, OpenOptions, SearchHit, Select, Store, Update, Write};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::{Sandbox, SandboxedDatabase};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let config = SandboxConfig::new();
        assert!(
            config.component.exists(),
            "component {} missing: run `make component` first (make test does)",
            config.component.display()
        );
        Sandbox::new(config).expect("load the component")
    })
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        upsert: bool,
        ids: Vec<String>,
        vectors: Vec<f32>,
        metadatas: Vec<Option<String>>,
        /// `None`: the call without documents.
        documents: Option<Vec<Option<String>>>,
    },
    Delete(Vec<String>),
    /// An update of metadata and/or documents (`None`: that field not given).
    Update {
        ids: Vec<String>,
        metadatas: Option<Vec<Option<String>>>,
        documents: Option<Vec<Option<String>>>,
    },
    /// Delete every record whose document contains the text (a `where_document` filter).
    DeleteContaining(String),
    /// Count the records whose document contains the text.
    CountContaining(String),
    /// `records` with an offset and a limit, no filter.
    Records(usize, Option<usize>),
    Get(String),
    Contains(String),
    Documents(Vec<String>),
    Search(Vec<f32>, u32),
    SearchBatch(Vec<f32>, u32),
    Ids,
    Count,
    Persist,
    Compact,
    Reopen,
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => Just(" ".to_owned()),
        1 => Just("\u{0}".to_owned()),
        1 => Just("é".to_owned()),
        1 => Just("e\u{301}".to_owned()),
        1 => Just("😀\u{202e}".to_owned()),
        1 => Just("x".repeat(MAX_ID_BYTES)),
        1 => Just("x".repeat(MAX_ID_BYTES + 1)),
        1 => "\\PC{1,12}",
    ]
}

fn component() -> impl Strategy<Value = f32> {
    prop_oneof![
        30 => -2.0f32..2.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(-0.0f32),
        1 => Just(f32::MAX),
        1 => Just(f32::MIN_POSITIVE / 2.0),
    ]
}

/// Text for metadata or documents.
fn text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        2 => (0u32..1000).prop_map(|n| Some(format!("{{\"n\": {n}}}"))),
        1 => Just(Some("{not json".to_owned())),
        1 => Just(Some(String::new())),
        1 => Just(Some("ünïcødé 😀 \u{0} \u{feff}".to_owned())),
        1 => "\\PC{0,40}".prop_map(Some),
    ]
}

/// Text a document filter looks for: pieces of what `text()` writes.
fn needle() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["n", "1", "{", "ü", "😀", "\u{0}", "zz"]).prop_map(str::to_owned)
}

/// The `where_document` filter `{"$contains": needle}`, parsed as a caller would.
fn containing(needle: &str) -> srvdb::Filter {
    let text = serde_json::json!({ "$contains": needle }).to_string();
    srvdb::Filter::parse(None, Some(&text)).expect("a valid document filter")
}

fn k() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..6, 1 => Just(1 << 20), 1 => Just(u32::MAX)]
}

/// `n` vectors of about `dim` components: usually exactly, sometimes one value more or less.
fn vectors(n: usize, dim: usize) -> impl Strategy<Value = Vec<f32>> {
    (
        prop_oneof![10 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64)],
        0usize..7,
    )
        .prop_flat_map(move |(jitter, other_dim)| {
            let dim = if other_dim == 6 { 0 } else { dim };
            let len = ((n * dim) as i64 + jitter).max(0) as usize;
            prop::collection::vec(component(), len)
        })
}

/// Vectors of the usual dimension (3), or of another one (1 to 5, or 0).
fn write_op() -> impl Strategy<Value = Op> {
    (
        any::<bool>(),
        prop::collection::vec(id(), 0..5),
        prop_oneof![6 => Just(3usize), 1 => 0usize..6],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(upsert, ids, dim, with_meta, with_docs)| {
            let n = ids.len();
            let metas = if with_meta {
                prop::collection::vec(text(), n..=n + usize::from(n == 2)).boxed()
            } else {
                Just(Vec::new()).boxed()
            };
            let docs = if with_docs {
                prop::collection::vec(text(), n..=n).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            (Just(upsert), Just(ids), vectors(n, dim), metas, docs)
        })
        .prop_map(|(upsert, ids, vectors, metadatas, documents)| Op::Write {
            upsert,
            ids,
            vectors,
            metadatas,
            documents,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => write_op(),
        3 => prop::collection::vec(id(), 0..4).prop_map(Op::Delete),
        3 => id().prop_map(Op::Get),
        1 => id().prop_map(Op::Contains),
        2 => prop::collection::vec(id(), 0..4).prop_map(Op::Documents),
        4 => (vectors(1, 3), k()).prop_map(|(q, k)| Op::Search(q, k)),
        2 => ((0usize..4).prop_flat_map(|n| vectors(n, 3)), k())
            .prop_map(|(q, k)| Op::SearchBatch(q, k)),
        3 => (
            prop::collection::vec(id(), 0..4),
            prop::option::of(prop::collection::vec(text(), 0..4)),
            prop::option::of(prop::collection::vec(text(), 0..4)),
        )
            .prop_map(|(ids, metadatas, documents)| Op::Update {
                ids,
                metadatas,
                documents,
            }),
        1 => needle().prop_map(Op::DeleteContaining),
        1 => needle().prop_map(Op::CountContaining),
        1 => (0usize..6, prop::option::of(0usize..6)).prop_map(|(o, l)| Op::Records(o, l)),
        1 => Just(Op::Ids),
        1 => Just(Op::Count),
        2 => Just(Op::Persist),
        2 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    vector: Vec<f32>,
    metadata: Option<String>,
    document: Option<String>,
    /// Insertion order: `ids()` lists rows in this order (an upsert moves a record last).
    seq: u64,
}

#[derive(Debug, Default)]
struct Model {
    dim: Option<usize>,
    recs: BTreeMap<String, Rec>,
    next_seq: u64,
}

impl Model {
    /// Whether the engine must accept this batch (every rule in `Database::write_batch`).
    fn accepts(
        &self,
        upsert: bool,
        ids: &[String],
        vectors: &[f32],
        metas: &[Option<String>],
        docs: &[Option<String>],
    ) -> bool {
        let n = ids.len();
        if n == 0 {
            return vectors.is_empty() && metas.is_empty() && docs.is_empty();
        }
        if (!metas.is_empty() && metas.len() != n) || (!docs.is_empty() && docs.len() != n) {
            return false;
        }
        let dim_ok = match self.dim {
            Some(d) => vectors.len() == n * d,
            None => {
                vectors.len().is_multiple_of(n)
                    && !vectors.is_empty()
                    && vectors.len() / n <= MAX_DIMENSION as usize
            }
        };
        if !dim_ok || vectors.iter().any(|x| !x.is_finite()) {
            return false;
        }
        let mut seen = HashSet::new();
        ids.iter().all(|id| {
            !id.is_empty()
                && id.len() <= MAX_ID_BYTES
                && seen.insert(id)
                && (upsert || !self.recs.contains_key(id))
        })
    }

    fn apply_write(
        &mut self,
        ids: &[String],
        vectors: &[f32],
        metas: &[Option<String>],
        docs: &[Option<String>],
    ) {
        if ids.is_empty() {
            return;
        }
        let dim = vectors.len() / ids.len();
        self.dim = Some(dim);
        for (i, id) in ids.iter().enumerate() {
            let rec = Rec {
                vector: vectors[i * dim..(i + 1) * dim].to_vec(),
                metadata: metas.get(i).cloned().flatten(),
                document: docs.get(i).cloned().flatten(),
                seq: self.next_seq,
            };
            self.next_seq += 1;
            self.recs.insert(id.clone(), rec);
        }
    }

    /// Whether the engine must accept this update: one entry per id for each field given,
    /// every id live and given once (no ids: nothing may be given).
    fn accepts_update(
        &self,
        ids: &[String],
        metas: Option<&[Option<String>]>,
        docs: Option<&[Option<String>]>,
    ) -> bool {
        let n = ids.len();
        if n == 0 {
            return metas.is_none_or(<[_]>::is_empty) && docs.is_none_or(<[_]>::is_empty);
        }
        let mut seen = HashSet::new();
        metas.is_none_or(|m| m.len() == n)
            && docs.is_none_or(|d| d.len() == n)
            && ids
                .iter()
                .all(|id| seen.insert(id) && self.recs.contains_key(id))
    }

    /// The live ids whose document contains `needle`, in row order.
    fn containing(&self, needle: &str) -> Vec<String> {
        self.ids_in_order()
            .into_iter()
            .filter(|id| {
                self.recs[id]
                    .document
                    .as_deref()
                    .is_some_and(|d| d.contains(needle))
            })
            .collect()
    }

    fn ids_in_order(&self) -> Vec<String> {
        let mut ids: Vec<(&u64, &String)> = self.recs.iter().map(|(id, r)| (&r.seq, id)).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id.clone()).collect()
    }
}

/// Fails the case unless `e` is an engine error of the kinds bad input produces.
fn typed_input_error(e: &srvdb::Error, call: &str) -> Result<(), TestCaseError> {
    match e {
        srvdb::Error::InvalidInput { .. }
        | srvdb::Error::DimensionMismatch { .. }
        | srvdb::Error::DuplicateId { .. }
        | srvdb::Error::NotFound { .. } => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "{call}: expected a typed input error, got {other:?}"
        ))),
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

fn well_defined(v: &[f32]) -> bool {
    let n = norm(v);
    (1e-3..1e3).contains(&n)
}

/// Checks hits for one query against the model: how many, no duplicates, live ids, best
/// first, and (when every cosine is well defined) the brute-force scores.
fn check_hits(
    model: &Model,
    query: &[f32],
    k: u32,
    hits: &[SearchHit],
) -> Result<(), TestCaseError> {
    let expected_len = (k as usize).min(model.recs.len());
    prop_assert_eq!(hits.len(), expected_len, "hit count for k={}", k);
    let mut seen = HashSet::new();
    for h in hits {
        prop_assert!(seen.insert(&h.id), "duplicate hit {:?}", h.id);
        prop_assert!(
            model.recs.contains_key(&h.id),
            "hit {:?} is not a live id",
            h.id
        );
    }
    for w in hits.windows(2) {
        prop_assert!(w[0].score >= w[1].score, "not best first: {:?}", hits);
    }
    if !well_defined(query) || !model.recs.values().all(|r| well_defined(&r.vector)) {
        return Ok(());
    }
    let cosine = |v: &[f32]| {
        let dot: f64 = v
            .iter()
            .zip(query)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        dot / (norm(v) * norm(query))
    };
    let mut truth: Vec<f64> = model.recs.values().map(|r| cosine(&r.vector)).collect();
    truth.sort_by(|a, b| b.total_cmp(a));
    for (rank, h) in hits.iter().enumerate() {
        let own = cosine(&model.recs[&h.id].vector);
        prop_assert!(
            (f64::from(h.score) - own).abs() < 1e-4,
            "hit {:?} scored {} but its cosine is {}",
            h.id,
            h.score,
            own
        );
        prop_assert!(
            (own - truth[rank]).abs() < 1e-4,
            "rank {}: {:?} has cosine {} but the brute-force scan's is {}",
            rank,
            h.id,
            own,
            truth[rank]
        );
    }
    Ok(())
}

fn open(dir: &Path) -> SandboxedDatabase {
    sandbox()
        .open(dir, OpenOptions::default())
        .expect("open the database")
}

/// Compares everything cheap to compare after every call.
fn check_state(db: &SandboxedDatabase, model: &Model) -> Result<(), TestCaseError> {
    let count = db
        .count()
        .map_err(|e| TestCaseError::fail(format!("count: {e}")))?;
    prop_assert_eq!(count, model.recs.len() as u64, "count");
    let dim = db
        .dimension()
        .map_err(|e| TestCaseError::fail(format!("dimension: {e}")))?;
    prop_assert_eq!(dim.map(|d| d as usize), model.dim, "dimension");
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tmp");
    let mut db = open(dir.path());
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let call = format!("step {step}: {op:?}");
        let call: String = call.chars().take(300).collect();
        match op {
            Op::Write {
                upsert,
                ids,
                vectors,
                metadatas,
                documents,
            } => {
                let metas: Vec<Option<srvdb::Metadata>> = metadatas
                    .iter()
                    .map(|m| m.clone().map(srvdb::Metadata::from_text))
                    .collect();
                let docs = documents.clone().unwrap_or_default();
                let result = match (upsert, documents) {
                    (false, None) => db.add(ids, vectors, &metas),
                    (true, None) => db.upsert(ids, vectors, &metas),
                    (upsert, Some(d)) => {
                        let ids = srvdb::store::str_refs(ids);
                        let d: Vec<Option<&str>> = d.iter().map(Option::as_deref).collect();
                        let write = if *upsert {
                            Write::upsert(&ids, vectors)
                        } else {
                            Write::add(&ids, vectors)
                        };
                        db.write(&write.metadatas(&metas).documents(&d))
                    }
                };
                let accepts = model.accepts(*upsert, ids, vectors, metadatas, &docs);
                match result {
                    Ok(()) => {
                        prop_assert!(accepts, "{}: accepted, the model rejects it", call);
                        model.apply_write(ids, vectors, metadatas, &docs);
                    }
                    Err(e) => {
                        typed_input_error(&e, &call)?;
                        prop_assert!(!accepts, "{}: rejected ({}), the model accepts it", call, e);
                    }
                }
            }
            Op::Delete(ids) => {
                let unique: HashSet<&String> = ids.iter().collect();
                let all_known = unique.iter().all(|id| model.recs.contains_key(*id));
                match db.delete(ids) {
                    Ok(n) => {
                        prop_assert!(all_known, "{}: deleted an unknown id", call);
                        prop_assert_eq!(n, unique.len(), "{}: deleted count", call);
                        for id in unique {
                            model.recs.remove(id);
                        }
                    }
                    Err(e) => {
                        typed_input_error(&e, &call)?;
                        prop_assert!(!all_known, "{}: rejected ({}) with every id live", call, e);
                    }
                }
            }
            Op::Update {
                ids,
                metadatas,
                documents,
            } => {
                let id_refs = srvdb::store::str_refs(ids);
                let metas: Option<Vec<Option<srvdb::Metadata>>> = metadatas.as_ref().map(|m| {
                    m.iter()
                        .map(|m| m.clone().map(srvdb::Metadata::from_text))
                        .collect()
                });
                let docs: Option<Vec<Option<&str>>> = documents
                    .as_ref()
                    .map(|d| d.iter().map(Option::as_deref).collect());
                let mut update = Update::ids(&id_refs);
                if let Some(m) = &metas {
                    update = update.metadatas(m);
                }
                if let Some(d) = &docs {
                    update = update.documents(d);
                }
                let accepts = model.accepts_update(ids, metadatas.as_deref(), documents.as_deref());
                match db.update(&update) {
                    Ok(()) => {
                        prop_assert!(accepts, "{}: accepted, the model rejects it", call);
                        for (i, id) in ids.iter().enumerate() {
                            let rec = model.recs.get_mut(id).expect("accepted ids are live");
                            if let Some(m) = metadatas {
                                rec.metadata = m[i].clone();
                            }
                            if let Some(d) = documents {
                                rec.document = d[i].clone();
                            }
                        }
                    }
                    Err(e) => {
                        typed_input_error(&e, &call)?;
                        prop_assert!(!accepts, "{}: rejected ({}), the model accepts it", call, e);
                    }
                }
            }
            Op::DeleteContaining(needle) => {
                let want = model.containing(needle);
                let n = db
                    .remove(&Delete::matching(&containing(needle)))
                    .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?;
                prop_assert_eq!(n, want.len(), "{}: deleted count", call);
                for id in want {
                    model.recs.remove(&id);
                }
            }
            Op::CountContaining(needle) => {
                let n = db
                    .count_matching(&containing(needle))
                    .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?;
                prop_assert_eq!(n, model.containing(needle).len() as u64, "{}", call);
            }
            Op::Records(offset, limit) => {
                let mut select = Select::all().offset(*offset);
                if let Some(l) = limit {
                    select = select.limit(*l);
                }
                let got = db
                    .records(&select)
                    .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?;
                let want: Vec<String> = model
                    .ids_in_order()
                    .into_iter()
                    .skip(*offset)
                    .take(limit.unwrap_or(usize::MAX))
                    .collect();
                let got_ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
                prop_assert_eq!(
                    got_ids,
                    want.iter().map(String::as_str).collect::<Vec<_>>(),
                    "{}",
                    call
                );
                for r in &got {
                    let m = &model.recs[&r.id];
                    prop_assert_eq!(&r.vector, &m.vector, "{}: vector", call);
                    prop_assert_eq!(
                        r.metadata.as_ref().map(|x| x.as_str().to_owned()),
                        m.metadata.clone(),
                        "{}: metadata",
                        call
                    );
                    prop_assert_eq!(&r.document, &m.document, "{}: document", call);
                }
            }
            Op::Get(id) => {
                let got = db
                    .get(id)
                    .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?;
                let want = model.recs.get(id);
                match (got, want) {
                    (None, None) => {}
                    (Some(r), Some(m)) => {
                        prop_assert_eq!(&r.id, id);
                        prop_assert_eq!(&r.vector, &m.vector, "{}: vector", call);
                        prop_assert_eq!(
                            r.metadata.as_ref().map(|x| x.as_str().to_owned()),
                            m.metadata.clone(),
                            "{}: metadata",
                            call
                        );
                        prop_assert_eq!(&r.document, &m.document, "{}: document", call);
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "{call}: got {got:?}, the model has {want:?}"
                        )))
                    }
                }
            }
            Op::Contains(id) => {
                let got = db
                    .contains(id)
                    .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?;
                prop_assert_eq!(got, model.recs.contains_key(id), "{}", call);
            }
            Op::Documents(ids) => {
                let got = db
                    .documents(&srvdb::store::str_refs(ids))
                    .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?;
                let want: Vec<Option<String>> = ids
                    .iter()
                    .map(|id| model.recs.get(id).and_then(|r| r.document.clone()))
                    .collect();
                prop_assert_eq!(got, want, "{}", call);
            }
            Op::Search(query, k) => {
                let result = db.search(query, *k as usize);
                match model.dim {
                    None => prop_assert_eq!(
                        result.map_err(|e| e.to_string()),
                        Ok(Vec::new()),
                        "{}: no dimension yet",
                        call
                    ),
                    Some(d) => {
                        let valid = query.len() == d && query.iter().all(|x| x.is_finite());
                        match result {
                            Ok(hits) => {
                                prop_assert!(valid, "{}: a bad query was answered", call);
                                check_hits(&model, query, *k, &hits)?;
                            }
                            Err(e) => {
                                typed_input_error(&e, &call)?;
                                prop_assert!(!valid, "{}: rejected ({})", call, e);
                            }
                        }
                    }
                }
            }
            Op::SearchBatch(queries, k) => {
                let result = db.search_batch(queries, *k as usize);
                match model.dim {
                    None => prop_assert_eq!(
                        result.map_err(|e| e.to_string()),
                        Ok(Vec::new()),
                        "{}: no dimension yet",
                        call
                    ),
                    Some(d) => {
                        let valid = queries.len().is_multiple_of(d)
                            && queries.iter().all(|x| x.is_finite());
                        match result {
                            Ok(lists) => {
                                prop_assert!(valid, "{}: a bad batch was answered", call);
                                prop_assert_eq!(lists.len(), queries.len() / d, "{}", call);
                                for (q, hits) in queries.chunks(d).zip(&lists) {
                                    check_hits(&model, q, *k, hits)?;
                                }
                            }
                            Err(e) => {
                                typed_input_error(&e, &call)?;
                                prop_assert!(!valid, "{}: rejected ({})", call, e);
                            }
                        }
                    }
                }
            }
            Op::Ids => {
                let got = db
                    .ids()
                    .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?;
                prop_assert_eq!(got, model.ids_in_order(), "{}", call);
            }
            Op::Count => {}
            Op::Persist => db
                .persist()
                .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?,
            Op::Compact => db
                .compact()
                .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?,
            Op::Reopen => {
                // Dropping the handle commits (the guest's destructor), as closing does.
                drop(db);
                db = open(dir.path());
                let got = db
                    .ids()
                    .map_err(|e| TestCaseError::fail(format!("{call}: {e}")))?;
                prop_assert_eq!(got, model.ids_in_order(), "{}: ids after reopening", call);
            }
        }
        check_state(&db, &model).map_err(|e| TestCaseError::fail(format!("after {call}: {e}")))?;
    }
    db.close()
        .map_err(|e| TestCaseError::fail(format!("close: {e}")))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_calls_across_the_wit_boundary(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}
