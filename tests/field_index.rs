//! Field indexes: after any sequence of writes, deletes, upserts and updates, after reopen,
//! after compaction and after a crash at every fault point of the simulated storage, an index
//! lists exactly the live rows whose metadata holds each value, as recomputed here from the
//! records (`get`) by an extractor written independently of the engine's: the scalar at the
//! dotted path (an exact top-level key wins), each scalar element of a list, numbers by value.

mod common;
use common::{seed, tempdir, Rng};
use serde_json::Value;
use srvdb::filter::Scalar;
use srvdb::meta::IndexKey;
use srvdb::storage::sim::{Crash, FaultPlan, SimLocation, TornUnit};
use srvdb::{Database, Error, Metadata, OpenOptions, Store, Update, Write};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const DIM: usize = 4;

/// value (as text: `b:true`, `n:1.0`, `s:red`) -> live ids.
type Index = BTreeMap<String, BTreeSet<String>>;

fn options() -> OpenOptions {
    OpenOptions {
        auto_commit_rows: 0,
        buffer_bytes: 4096,
        ..OpenOptions::default()
    }
}

/// The test's own name of a JSON scalar; `None` for null, lists and objects.
fn value_key(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(format!("b:{b}")),
        // `+ 0.0` turns -0.0 into 0.0: the two are one number.
        Value::Number(n) => n.as_f64().map(|x| format!("n:{:?}", x + 0.0)),
        Value::String(s) => Some(format!("s:{s}")),
        _ => None,
    }
}

/// The same name for the engine's key.
fn engine_key(k: &IndexKey) -> String {
    match k {
        IndexKey::Bool(b) => format!("b:{b}"),
        IndexKey::Number(bits) => format!("n:{:?}", f64::from_bits(*bits)),
        IndexKey::String(s) => format!("s:{s}"),
    }
}

/// The scalar a test value name stands for, to ask `rows_equal` with.
fn scalar_of(key: &str) -> Scalar {
    let (kind, rest) = key.split_at(2);
    match kind {
        "b:" => Scalar::Bool(rest == "true"),
        "n:" => Scalar::Number(rest.parse().expect("number")),
        _ => Scalar::String(rest.to_owned()),
    }
}

/// The values of `field` in `metadata`, by the dialect's rules.
fn values_of(metadata: Option<&Metadata>, field: &str) -> BTreeSet<String> {
    let Some(Metadata::Json(text)) = metadata else {
        return BTreeSet::new();
    };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return BTreeSet::new();
    };
    let found = map.get(field).or_else(|| {
        let mut parts = field.split('.');
        let mut v = map.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p)?;
        }
        Some(v)
    });
    match found {
        Some(Value::Array(items)) => items.iter().filter_map(value_key).collect(),
        Some(v) => value_key(v).into_iter().collect(),
        None => BTreeSet::new(),
    }
}

/// The index of `field` recomputed from the records.
fn recomputed(db: &Database, field: &str) -> Index {
    let mut out = Index::new();
    for id in db.ids() {
        let r = db.get(&id).expect("get").expect("listed id present");
        for v in values_of(r.metadata.as_ref(), field) {
            out.entry(v).or_default().insert(id.clone());
        }
    }
    out
}

/// The engine's index of `field` (live rows only; tombstoned rows may be listed), checking
/// that each value's rows are sorted and that `rows_equal` answers the same rows.
fn indexed(db: &Database, field: &str) -> Result<Index, String> {
    let contents = db
        .field_index_contents(field)
        .ok_or_else(|| format!("{field} is not indexed"))?;
    let mut out = Index::new();
    for (key, rows) in contents {
        let name = engine_key(&key);
        let numbers: Vec<u64> = rows.iter().map(|r| r.0).collect();
        if !numbers.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!("{field}={name}: rows not sorted: {numbers:?}"));
        }
        let asked = db.field_index_rows(field, &scalar_of(&name));
        if asked.as_ref() != Some(&numbers) {
            return Err(format!(
                "{field}={name}: rows_equal gives {asked:?}, the index lists {numbers:?}"
            ));
        }
        let live: BTreeSet<String> = rows
            .into_iter()
            .filter(|(_, _, live)| *live)
            .map(|(_, id, _)| id)
            .collect();
        if !live.is_empty() {
            out.insert(name, live);
        }
    }
    Ok(out)
}

/// Every indexed field's index equals its recomputation.
fn check(db: &Database, context: &str) {
    for field in db.field_indexes().expect("field indexes") {
        let got = indexed(db, &field).unwrap_or_else(|e| panic!("{context}: {e}"));
        let want = recomputed(db, &field);
        assert_eq!(got, want, "{context}: index of {field:?}");
    }
}

/// A scalar or a list of them, with the numbers written in several ways.
fn random_value(rng: &mut Rng) -> &'static str {
    const VALUES: [&str; 16] = [
        "\"red\"",
        "\"blue\"",
        "\"1\"",
        "1",
        "1.0",
        "2.5",
        "-0.0",
        "0",
        "true",
        "false",
        "null",
        "[\"red\", 1, true, null, {\"x\": 1}, [2]]",
        "[1.0, 1, \"blue\"]",
        "[]",
        "{\"nested\": \"red\"}",
        "1e300",
    ];
    VALUES[(rng.next_u64() % VALUES.len() as u64) as usize]
}

/// Metadata of every kind: none, plain text, JSON that is not an object, and objects with some
/// of the indexed fields (nested, or as an exact dotted key).
fn random_metadata(rng: &mut Rng) -> Option<Metadata> {
    match rng.next_u64() % 10 {
        0 => None,
        1 => Some(Metadata::from_text("not json {")),
        2 => Some(Metadata::from_text("[1, \"red\"]")),
        3 => Some(Metadata::from_text("\"red\"")),
        _ => {
            let mut parts = Vec::new();
            for (key, p) in [("color", 2), ("n", 2), ("tags", 3)] {
                if rng.next_u64().is_multiple_of(p) {
                    parts.push(format!("\"{key}\": {}", random_value(rng)));
                }
            }
            match rng.next_u64() % 4 {
                0 => parts.push(format!("\"a\": {{\"b\": {}}}", random_value(rng))),
                1 => parts.push(format!("\"a.b\": {}", random_value(rng))),
                2 => parts.push(format!(
                    "\"a\": {{\"b\": {}}}, \"a.b\": {}",
                    random_value(rng),
                    random_value(rng)
                )),
                _ => parts.push("\"a\": 5".into()),
            }
            Some(Metadata::from_text(format!("{{{}}}", parts.join(", "))))
        }
    }
}

fn vector(rng: &mut Rng) -> Vec<f32> {
    (0..DIM).map(|_| rng.f32()).collect()
}

/// One random operation; returns a name for messages.
fn random_step(db: &Database, rng: &mut Rng, next: &mut usize) -> &'static str {
    let live = db.ids();
    let pick = |rng: &mut Rng| live[(rng.next_u64() % live.len() as u64) as usize].clone();
    match rng.next_u64() % 8 {
        0..=2 => {
            let n = 1 + (rng.next_u64() % 4) as usize;
            let ids: Vec<String> = (0..n).map(|i| format!("r{}", *next + i)).collect();
            *next += n;
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let vs: Vec<f32> = (0..n).flat_map(|_| vector(rng)).collect();
            let ms: Vec<Option<Metadata>> = (0..n).map(|_| random_metadata(rng)).collect();
            db.write(&Write::add(&refs, &vs).metadatas(&ms))
                .expect("add");
            "add"
        }
        3 if !live.is_empty() => {
            let id = pick(rng);
            db.delete(&[id]).expect("delete");
            "delete"
        }
        4 if !live.is_empty() => {
            let id = pick(rng);
            let m = [random_metadata(rng)];
            db.upsert(&[id], &vector(rng), &m).expect("upsert");
            "upsert"
        }
        5 | 6 if !live.is_empty() => {
            let mut ids: Vec<String> = (0..2).map(|_| pick(rng)).collect();
            ids.dedup();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let ms: Vec<Option<Metadata>> = ids.iter().map(|_| random_metadata(rng)).collect();
            let vs: Vec<f32> = ids.iter().flat_map(|_| vector(rng)).collect();
            if rng.next_u64().is_multiple_of(3) {
                db.update(&Update::ids(&refs).metadatas(&ms).vectors(&vs))
                    .expect("update with vectors");
                "update vectors"
            } else {
                db.update(&Update::ids(&refs).metadatas(&ms))
                    .expect("update");
                "update metadata"
            }
        }
        _ => {
            db.persist().expect("persist");
            "persist"
        }
    }
}

#[test]
fn indexes_equal_a_recomputation_through_writes_reopen_and_compaction() {
    let dir = tempdir();
    let s = seed();
    let mut rng = Rng::new(s);
    let mut db = Database::open(dir.path(), options()).expect("open");
    db.create_field_index("color").expect("index color");
    db.create_field_index("a.b").expect("index a.b");
    let mut next = 0;
    for step in 0..300 {
        let what = match step {
            // Indexes created and dropped on a database with rows, pending and committed.
            60 => {
                db.create_field_index("n").expect("index n");
                db.create_field_index("tags").expect("index tags");
                "create n, tags"
            }
            200 => {
                assert!(db.drop_field_index("a.b").expect("drop"));
                assert!(db.field_index_contents("a.b").is_none());
                "drop a.b"
            }
            _ if step % 37 == 36 => {
                db.compact().expect("compact");
                "compact"
            }
            _ if step % 23 == 22 => {
                drop(db);
                db = Database::open(dir.path(), options()).expect("reopen");
                "reopen"
            }
            _ => random_step(&db, &mut rng, &mut next),
        };
        check(&db, &format!("seed {s}, step {step} ({what})"));
    }
    let want: Vec<String> = vec!["color".into(), "n".into(), "tags".into()];
    assert_eq!(db.field_indexes().expect("fields"), want);
    drop(db);
    let db = Database::open(dir.path(), options()).expect("reopen");
    assert_eq!(db.field_indexes().expect("fields"), want, "after reopen");
    check(&db, &format!("seed {s}, after reopen"));
    db.compact().expect("compact");
    check(&db, &format!("seed {s}, after the last compaction"));
}

#[test]
fn numbers_are_keyed_by_value_and_types_stay_apart() {
    let db = Database::in_memory(options()).expect("in memory");
    db.create_field_index("v").expect("index");
    let metas = [
        r#"{"v": 1}"#,
        r#"{"v": 1.0}"#,
        r#"{"v": true}"#,
        r#"{"v": "1"}"#,
        r#"{"v": -0.0}"#,
        r#"{"v": 0}"#,
        r#"{"v": [1, 1.0, "x"]}"#,
        r#"{"v": {"w": 1}}"#,
        r#"[{"v": 1}]"#,
    ];
    let ids: Vec<String> = (0..metas.len()).map(|i| format!("m{i}")).collect();
    let ms: Vec<Option<Metadata>> = metas
        .iter()
        .map(|m| Some(Metadata::from_text(*m)))
        .collect();
    let vs = vec![0.5f32; metas.len() * DIM];
    db.add(&ids, &vs, &ms).expect("add");
    let rows = |s: Scalar| db.field_index_rows("v", &s).expect("indexed");
    assert_eq!(rows(Scalar::Number(1.0)), vec![0, 1, 6]);
    assert_eq!(rows(Scalar::Bool(true)), vec![2]);
    assert_eq!(rows(Scalar::String("1".into())), vec![3]);
    assert_eq!(rows(Scalar::Number(0.0)), vec![4, 5]);
    assert_eq!(rows(Scalar::Number(-0.0)), vec![4, 5]);
    assert_eq!(rows(Scalar::String("x".into())), vec![6]);
    assert_eq!(rows(Scalar::Number(f64::NAN)), Vec::<u64>::new());
    assert_eq!(rows(Scalar::Number(2.0)), Vec::<u64>::new());
    assert_eq!(db.field_index_rows("other", &Scalar::Number(1.0)), None);
    check(&db, "in memory");
}

#[test]
fn field_names_are_checked_and_create_and_drop_are_idempotent() {
    let dir = tempdir();
    let db = Database::open(dir.path(), options()).expect("open");
    for bad in ["", "$eq", "$and"] {
        let e = db.create_field_index(bad).expect_err(bad);
        assert!(matches!(e, Error::InvalidInput { .. }), "{bad:?}: {e:?}");
    }
    let huge = "f".repeat(5000);
    assert!(matches!(
        db.create_field_index(&huge),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(db.field_indexes().expect("fields"), Vec::<String>::new());
    db.add(
        &["a"],
        &[1.0; DIM],
        &[Some(Metadata::from_text(r#"{"k": "x"}"#))],
    )
    .expect("add");
    db.create_field_index("k").expect("create");
    db.create_field_index("k").expect("create again is a no-op");
    assert_eq!(db.field_indexes().expect("fields"), vec!["k".to_owned()]);
    assert!(!db.drop_field_index("nope").expect("drop unknown"));
    drop(db);
    let db = Database::open(dir.path(), options()).expect("reopen");
    assert_eq!(db.field_indexes().expect("fields"), vec!["k".to_owned()]);
    check(&db, "after reopen");
    assert!(db.drop_field_index("k").expect("drop"));
    assert!(!db.drop_field_index("k").expect("drop again"));
    drop(db);
    let db = Database::open(dir.path(), options()).expect("reopen");
    assert_eq!(db.field_indexes().expect("fields"), Vec::<String>::new());
    // Re-created, it is built afresh from the rows.
    db.create_field_index("k").expect("create");
    check(&db, "re-created");
    assert_eq!(
        db.field_index_rows("k", &Scalar::String("x".into())),
        Some(vec![0])
    );
}

/// A workload with index creation, drops, updates, upserts, deletes and a compaction.
fn crash_workload(loc: Arc<SimLocation>, s: u64) -> srvdb::Result<()> {
    let mut rng = Rng::new(s);
    let db = Database::open_at(loc, options())?;
    let batch = |db: &Database, rng: &mut Rng, from: usize, n: usize| {
        let ids: Vec<String> = (from..from + n).map(|i| format!("k{i}")).collect();
        let vs: Vec<f32> = (0..n).flat_map(|_| vector(rng)).collect();
        let ms: Vec<Option<Metadata>> = (0..n).map(|_| random_metadata(rng)).collect();
        db.upsert(&ids, &vs, &ms)
    };
    batch(&db, &mut rng, 0, 20)?;
    db.persist()?;
    db.create_field_index("color")?;
    db.create_field_index("n")?;
    batch(&db, &mut rng, 20, 10)?;
    let ms: Vec<Option<Metadata>> = (0..3).map(|_| random_metadata(&mut rng)).collect();
    db.update(&Update::ids(&["k1", "k22", "k5"]).metadatas(&ms))?;
    db.delete(&["k2", "k21"])?;
    db.persist()?;
    batch(&db, &mut rng, 5, 4)?;
    let v: Vec<f32> = (0..2).flat_map(|_| vector(&mut rng)).collect();
    let ms: Vec<Option<Metadata>> = (0..2).map(|_| random_metadata(&mut rng)).collect();
    db.update(&Update::ids(&["k3", "k25"]).metadatas(&ms).vectors(&v))?;
    db.compact()?;
    db.drop_field_index("n")?;
    db.create_field_index("a.b")?;
    let ms: Vec<Option<Metadata>> = (0..2).map(|_| random_metadata(&mut rng)).collect();
    db.update(&Update::ids(&["k4", "k23"]).metadatas(&ms))?;
    db.persist()
}

/// At every fault point of the simulated storage, under power loss, a killed process and a
/// torn write-back, the recovered database's indexes equal the recomputation from its
/// recovered records. (Which commit is recovered is `tests/faults.rs`'s subject.)
#[test]
fn after_a_crash_at_every_fault_point_indexes_equal_the_recovered_records() {
    let s = seed();
    let dry = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
    crash_workload(dry.clone(), s).expect("the workload completes without faults");
    let total = dry.faults().ops();
    assert!(total > 50, "workload too small: {total} ops");
    let mut images = 0;
    let mut with_index = 0;
    for n in 1..=total {
        let faults = Arc::new(FaultPlan::never());
        faults.fail_after(n);
        let loc = Arc::new(SimLocation::with_faults(faults.clone()));
        let _ = crash_workload(loc.clone(), s);
        assert!(faults.has_failed(), "fault {n} never fired");
        let torn = Crash::Torn {
            seed: s ^ n as u64,
            unit: TornUnit::Pages(4096),
        };
        for crash in [Crash::PowerLoss, Crash::ProcessKill, torn] {
            let image = Arc::new(loc.image_after(crash));
            let db = Database::open_at(image, options())
                .unwrap_or_else(|e| panic!("fault {n}, {crash:?}: reopen: {e} (seed {s})"));
            let fields = db.field_indexes().expect("fields");
            if !fields.is_empty() {
                with_index += 1;
            }
            check(&db, &format!("fault {n}, {crash:?}, seed {s}"));
            images += 1;
        }
    }
    assert!(
        with_index > images / 2,
        "most images must hold an index: {with_index} of {images}"
    );
}
