//! Property test against a model: random sequences of add / upsert / delete / commit / compact /
//! search / injected fault / crash over a small id space (so operations collide), compared after
//! every step with a `BTreeMap` model and its last committed copy. After redb's fuzz target.
//!
//! A crash takes one of the simulated disk's crash images (power loss, killed process, or a
//! torn write-back: see `srvdb::storage::sim`), so the model rolls back to its last commit. An
//! injected fault fails the n-th mutating operation from then on (a write, a sync, a rename,
//! a directory sync, ...) and every later one, as a power cut would; the answers are then not
//! checked until the next crash, after which the database must hold the last committed state,
//! or the state of the commit or compaction the fault interrupted, and take new writes.
//!
//! The bug this guards against: any operation sequence after which the engine answers
//! differently from the model (a lost or resurrected record, metadata or a document paired
//! with the wrong record after compaction, a crash image that does not reopen).

mod common;
use common::{brute_force, write_documents};
use proptest::prelude::*;
use srvdb::storage::sim::{Crash, FaultPlan, SimLocation, TornUnit};
use srvdb::{Database, Error, Metadata, Metric, OpenOptions, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

const DIM: usize = 5;

/// One record: (id number, vector, with metadata and a document).
type Item = (u8, [i8; DIM], bool);

#[derive(Debug, Clone)]
enum Op {
    Add(Vec<Item>),
    Upsert(Vec<Item>),
    Delete(Vec<u8>),
    Commit,
    Compact,
    Search([i8; DIM], usize),
    /// Fail the n-th mutating operation from now on, and all later ones.
    Fault(i64),
    /// Crash: 0 power loss, 1 killed process, 2 and 3 torn (pages, whole writes), with a seed.
    Crash(u8, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let item = (0u8..12, proptest::array::uniform5(-4i8..5), any::<bool>());
    prop_oneof![
        3 => proptest::collection::vec(item.clone(), 1..4).prop_map(Op::Add),
        2 => proptest::collection::vec(item, 1..4).prop_map(Op::Upsert),
        2 => proptest::collection::vec(0u8..12, 1..3).prop_map(Op::Delete),
        2 => Just(Op::Commit),
        1 => Just(Op::Compact),
        2 => (proptest::array::uniform5(-4i8..5), 0usize..15).prop_map(|(q, k)| Op::Search(q, k)),
        1 => (1i64..40).prop_map(Op::Fault),
        2 => (0u8..4, any::<u64>()).prop_map(|(kind, seed)| Op::Crash(kind, seed)),
    ]
}

fn crash_of(kind: u8, seed: u64) -> Crash {
    match kind {
        0 => Crash::PowerLoss,
        1 => Crash::ProcessKill,
        2 => Crash::Torn {
            seed,
            unit: TornUnit::Pages(512),
        },
        _ => Crash::Torn {
            seed,
            unit: TornUnit::Writes,
        },
    }
}

fn vec_of(v: &[i8; DIM]) -> Vec<f32> {
    v.iter().map(|&x| f32::from(x) * 0.5).collect()
}

/// A record as the model keeps it: vector, metadata, document.
type Rec = (Vec<f32>, Option<String>, Option<String>);
type Model = BTreeMap<String, Rec>;

fn options() -> OpenOptions {
    OpenOptions {
        auto_commit_rows: 0,
        dimension: Some(DIM as u32),
        metric: Some(Metric::L2),
        ..OpenOptions::default()
    }
}

fn open(loc: Arc<SimLocation>) -> Database {
    Database::open_at(loc, options()).expect("open")
}

/// Everything the database holds, read through `ids` and `get`.
fn read_all(db: &Database) -> Model {
    db.ids()
        .into_iter()
        .map(|id| {
            let r = db.get(&id).expect("get").expect("listed id present");
            let meta = r.metadata.map(|m| m.as_str().to_owned());
            (id, (r.vector, meta, r.document))
        })
        .collect()
}

/// Writes `items` with `upsert` semantics or not, and returns what the model must become if
/// the write is accepted. `serial` makes each write's metadata and documents unique, so a
/// record paired with another one's data shows.
fn write(
    db: &Database,
    items: &[Item],
    upsert: bool,
    serial: usize,
) -> (srvdb::Result<()>, Vec<(String, Rec)>) {
    let ids: Vec<String> = items.iter().map(|(i, _, _)| format!("k{i}")).collect();
    let vecs: Vec<f32> = items.iter().flat_map(|(_, v, _)| vec_of(v)).collect();
    let texts: Vec<Option<String>> = items
        .iter()
        .map(|(i, _, with)| with.then(|| format!("k{i}#{serial}")))
        .collect();
    let metas: Vec<Option<Metadata>> = texts
        .iter()
        .map(|t| t.clone().map(Metadata::from_text))
        .collect();
    let docs: Vec<Option<String>> = texts
        .iter()
        .map(|t| t.clone().map(|t| format!("doc {t}")))
        .collect();
    let r = if upsert {
        write_documents(db, srvdb::WriteMode::Upsert, &ids, &vecs, &metas, &docs)
    } else {
        write_documents(db, srvdb::WriteMode::Add, &ids, &vecs, &metas, &docs)
    };
    let recs = ids
        .into_iter()
        .zip(items)
        .zip(texts.into_iter().zip(docs))
        .map(|((id, (_, v, _)), (meta, doc))| (id, (vec_of(v), meta, doc)))
        .collect();
    (r, recs)
}

/// Runs `ops` (then a power cut) against the engine and the model.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut loc = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
    let mut db = open(loc.clone());
    let mut model = Model::new();
    let mut committed = model.clone();
    // The state a commit interrupted by the fault would make, if it reached its point.
    let mut in_flight: Option<Model> = None;
    let final_crash = Op::Crash(0, 0);
    for (serial, op) in ops.iter().chain([&final_crash]).enumerate() {
        // Once a fault has fired the device is gone and the handle poisoned: every write
        // fails, reads still answer from memory, and the model stays as it was.
        let broken = loc.faults().has_failed();
        match op {
            Op::Add(items) | Op::Upsert(items) => {
                let upsert = matches!(op, Op::Upsert(_));
                let ids: Vec<String> = items.iter().map(|(i, _, _)| format!("k{i}")).collect();
                let dup_in_batch = (1..ids.len()).any(|j| ids[..j].contains(&ids[j]));
                let exists = ids.iter().any(|id| model.contains_key(id));
                let (r, recs) = write(&db, items, upsert, serial);
                if broken || loc.faults().has_failed() {
                    prop_assert!(r.is_err(), "{:?} accepted after the device failed", op);
                } else if dup_in_batch || (exists && !upsert) {
                    prop_assert!(matches!(r, Err(Error::DuplicateId { .. })), "{:?}", r);
                } else {
                    prop_assert!(r.is_ok(), "{:?}", r);
                    model.extend(recs);
                }
            }
            Op::Delete(keys) => {
                let ids: Vec<String> = keys.iter().map(|i| format!("k{i}")).collect();
                let all_known = ids.iter().all(|id| model.contains_key(id));
                let r = db.delete(&ids);
                if broken || loc.faults().has_failed() {
                    prop_assert!(r.is_err(), "{:?} accepted after the device failed", op);
                } else if all_known {
                    prop_assert!(r.is_ok(), "{:?}", r);
                    for id in &ids {
                        model.remove(id);
                    }
                } else {
                    prop_assert!(matches!(r, Err(Error::NotFound { .. })), "{:?}", r);
                }
            }
            Op::Commit | Op::Compact => {
                let r = if matches!(op, Op::Commit) {
                    db.persist()
                } else {
                    db.compact()
                };
                if broken {
                    prop_assert!(r.is_err(), "{:?} accepted after the device failed", op);
                } else if loc.faults().has_failed() {
                    // Interrupted: it may or may not have reached its commit point.
                    prop_assert!(r.is_err(), "{:?} hid the fault", op);
                    in_flight = Some(model.clone());
                } else {
                    prop_assert!(r.is_ok(), "{:?}: {:?}", op, r);
                    committed = model.clone();
                }
            }
            Op::Search(q, k) => {
                let q = vec_of(q);
                let got = db.search(&q, *k).expect("search");
                {
                    let items: Vec<(String, Vec<f32>)> = model
                        .iter()
                        .map(|(a, b)| (a.clone(), b.0.clone()))
                        .collect();
                    let want = brute_force(Metric::L2, &q, &items, *k);
                    prop_assert_eq!(got.len(), want.len());
                    for (g, (_, s)) in got.iter().zip(&want) {
                        prop_assert!(
                            (g.score as f64 - s).abs() < 1e-4,
                            "score {} vs {}",
                            g.score,
                            s
                        );
                    }
                }
            }
            Op::Fault(n) => {
                if !broken {
                    loc.faults().fail_after(*n);
                }
            }
            Op::Crash(kind, seed) => {
                // The image is taken before the handle is dropped (a drop would commit):
                // only what was committed survives.
                let crash = crash_of(*kind, *seed);
                let image = Arc::new(loc.image_after(crash));
                let fired = loc.faults().failed_op();
                drop(db);
                loc = image;
                db = Database::open_at(loc.clone(), options()).map_err(|e| {
                    TestCaseError::fail(format!("reopen after {crash:?} (fault on {fired:?}): {e}"))
                })?;
                let got = read_all(&db);
                let ok = got == committed || in_flight.as_ref() == Some(&got);
                prop_assert!(
                    ok,
                    "after {:?} (fault on {:?}): {} ids, last commit {}, in flight {:?}\n got {:?}\n committed {:?}",
                    crash, fired, got.len(), committed.len(), in_flight.as_ref().map(|m| m.len()), got, committed
                );
                model = got;
                committed = model.clone();
                in_flight = None;
            }
        }
        prop_assert_eq!(db.count() as usize, model.len());
        prop_assert_eq!(&read_all(&db), &model);
    }
    // The last state survives one more clean reopen, and takes writes.
    let (r, recs) = write(&db, &[(99, [1; DIM], true)], false, usize::MAX);
    prop_assert!(r.is_ok(), "write after recovery: {:?}", r);
    model.extend(recs);
    db.persist().expect("persist after recovery");
    let image = Arc::new(loc.image_after(Crash::PowerLoss));
    drop(db);
    prop_assert_eq!(read_all(&open(image)), model);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}

/// The smallest sequence the property test found (after 2,986 cases) once killed-process
/// images kept unsynced state unsynced: a compaction whose rename's directory sync fails, a
/// killed process, a restart that clears the pending compaction without syncing the
/// directory, and a power cut: the reopened database pairs ids with other records' vectors.
#[test]
fn a_killed_compaction_then_a_power_cut() {
    let zero = [0i8; DIM];
    let ops = [
        Op::Add(vec![(5, zero, true), (2, zero, false)]),
        Op::Delete(vec![5]),
        Op::Add(vec![(0, [0, 0, 0, 0, -1], false)]),
        Op::Delete(vec![1]),
        Op::Add(vec![(0, zero, false)]),
        Op::Fault(29),
        Op::Compact,
        Op::Crash(1, 0),
    ];
    if let Err(e) = run(&ops) {
        panic!("{e}");
    }
}
