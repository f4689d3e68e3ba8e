//! Property test against a model: random sequences of add / upsert / delete / commit / crash /
//! search over a small id space (so operations collide), compared after every step with a
//! `BTreeMap` model and its last committed copy. A crash takes the power-loss image of the
//! simulated disk, so the model rolls back to its last commit. After redb's fuzz target.

mod common;
use common::brute_force;
use proptest::prelude::*;
use srvdb::storage::sim::{FaultPlan, SimLocation};
use srvdb::{Database, Error, Metric, OpenOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

const DIM: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    Add(Vec<(u8, [i8; DIM])>),
    Upsert(Vec<(u8, [i8; DIM])>),
    Delete(Vec<u8>),
    Commit,
    Crash,
    Compact,
    Search([i8; DIM], usize),
}

fn op() -> impl Strategy<Value = Op> {
    let item = (0u8..12, proptest::array::uniform5(-4i8..5));
    prop_oneof![
        3 => proptest::collection::vec(item.clone(), 1..4).prop_map(Op::Add),
        2 => proptest::collection::vec(item, 1..4).prop_map(Op::Upsert),
        2 => proptest::collection::vec(0u8..12, 1..3).prop_map(Op::Delete),
        1 => Just(Op::Commit),
        1 => Just(Op::Crash),
        1 => Just(Op::Compact),
        3 => (proptest::array::uniform5(-4i8..5), 0usize..15).prop_map(|(q, k)| Op::Search(q, k)),
    ]
}

fn vec_of(v: &[i8; DIM]) -> Vec<f32> {
    v.iter().map(|&x| f32::from(x) * 0.5).collect()
}

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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut loc = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
        let mut db = open(loc.clone());
        let mut model: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let mut committed = model.clone();
        for op in ops {
            match op {
                Op::Add(items) => {
                    let ids: Vec<String> = items.iter().map(|(i, _)| format!("k{i}")).collect();
                    let vecs: Vec<f32> = items.iter().flat_map(|(_, v)| vec_of(v)).collect();
                    let dup_in_batch = (1..ids.len()).any(|j| ids[..j].contains(&ids[j]));
                    let exists = ids.iter().any(|id| model.contains_key(id));
                    let r = db.add(&ids, &vecs, &[]);
                    if dup_in_batch || exists {
                        prop_assert!(matches!(r, Err(Error::DuplicateId { .. })), "{:?}", r);
                    } else {
                        prop_assert!(r.is_ok(), "{:?}", r);
                        for (id, (_, v)) in ids.into_iter().zip(&items) {
                            model.insert(id, vec_of(v));
                        }
                    }
                }
                Op::Upsert(items) => {
                    let ids: Vec<String> = items.iter().map(|(i, _)| format!("k{i}")).collect();
                    let vecs: Vec<f32> = items.iter().flat_map(|(_, v)| vec_of(v)).collect();
                    let dup_in_batch = (1..ids.len()).any(|j| ids[..j].contains(&ids[j]));
                    let r = db.upsert(&ids, &vecs, &[]);
                    if dup_in_batch {
                        prop_assert!(r.is_err());
                    } else {
                        prop_assert!(r.is_ok(), "{:?}", r);
                        for (id, (_, v)) in ids.into_iter().zip(&items) {
                            model.insert(id, vec_of(v));
                        }
                    }
                }
                Op::Delete(keys) => {
                    let ids: Vec<String> = keys.iter().map(|i| format!("k{i}")).collect();
                    let all_known = ids.iter().all(|id| model.contains_key(id));
                    let r = db.delete(&ids);
                    if all_known {
                        prop_assert!(r.is_ok(), "{:?}", r);
                        for id in &ids {
                            model.remove(id);
                        }
                    } else {
                        prop_assert!(matches!(r, Err(Error::NotFound { .. })), "{:?}", r);
                    }
                }
                Op::Commit => {
                    db.persist().expect("persist");
                    committed = model.clone();
                }
                Op::Compact => {
                    db.compact().expect("compact");
                    committed = model.clone();
                }
                Op::Crash => {
                    // The power-loss image is taken before the handle is dropped (whose drop
                    // would commit): only what was committed survives.
                    let image = Arc::new(loc.crash_image(false));
                    drop(db);
                    loc = image;
                    db = open(loc.clone());
                    model = committed.clone();
                }
                Op::Search(q, k) => {
                    let q = vec_of(&q);
                    let items: Vec<(String, Vec<f32>)> = model.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
                    let got = db.search(&q, k).expect("search");
                    let want = brute_force(Metric::L2, &q, &items, k);
                    prop_assert_eq!(got.len(), want.len());
                    for (g, (_, s)) in got.iter().zip(&want) {
                        prop_assert!((g.score as f64 - s).abs() < 1e-4, "score {} vs {}", g.score, s);
                    }
                }
            }
            prop_assert_eq!(db.count() as usize, model.len());
            let mut ids = db.ids();
            ids.sort();
            prop_assert_eq!(ids, model.keys().cloned().collect::<Vec<_>>());
            for (id, v) in &model {
                let r = db.get(id).expect("get").expect("present");
                prop_assert_eq!(&r.vector, v);
            }
        }
    }
}
