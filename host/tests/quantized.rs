//! Quantized indexes through the component (`SandboxedDatabase`): the same writes, index and
//! queries on a native database and a sandboxed one give the same ids, scores (up to the f32
//! kernels' summation order: AVX2 natively, SIMD128 in the guest) and `index_info`, for int8
//! and binary codes, with and without filters, before and after reopening, and with the rows
//! read on demand. Independently of the native engine, `exact=true` must equal brute force
//! computed here, and deleted records must never come back.

mod common;
use common::component_config;
use srvdb::quant::{IndexKind, IndexSpec, Quantization};
use srvdb::{
    Database, Filter, Metadata, Metric, OpenOptions, Query, SearchHit, StorageKind, Store,
};
use srvdb_host::Sandbox;
use std::collections::{BTreeMap, BTreeSet};

const DIM: usize = 24;
const ROWS: usize = 600;
const K: usize = 10;
const QUERIES: usize = 6;

/// Every record the test wrote and which are live, to check answers without the engine.
struct Model {
    live: BTreeMap<String, Vec<f32>>,
    deleted: BTreeSet<String>,
}

fn vector(rng: &mut srvdb::testing::Rng) -> Vec<f32> {
    (0..DIM).map(|_| rng.normal()).collect()
}

fn metadata(i: usize) -> Metadata {
    // `group` matches a quarter of the records (the code scan with a skip bitmap), `rare`
    // one in fifty (selective enough for the exact gather-scan).
    Metadata::from_text(format!(
        r#"{{"group": {}, "rare": {}}}"#,
        i % 4,
        i.is_multiple_of(50)
    ))
}

/// Adds rows, builds the index, then adds, deletes and upserts more, on `db`; returns what
/// is live. The same seed gives the same calls on every store.
fn populate(db: &dyn Store, quantization: Quantization, seed: u64) -> Model {
    let mut rng = srvdb::testing::Rng::new(seed);
    let mut model = Model {
        live: BTreeMap::new(),
        deleted: BTreeSet::new(),
    };
    let mut add = |db: &dyn Store, range: std::ops::Range<usize>, model: &mut Model| {
        let ids: Vec<String> = range.clone().map(|i| format!("r{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut vectors = Vec::with_capacity(ids.len() * DIM);
        for id in &ids {
            let v = vector(&mut rng);
            vectors.extend_from_slice(&v);
            model.live.insert((*id).to_owned(), v);
        }
        let metas: Vec<Option<Metadata>> = range.map(|i| Some(metadata(i))).collect();
        db.write(&srvdb::Write::upsert(&ids, &vectors).metadatas(&metas))
            .expect("write");
    };
    add(db, 0..ROWS * 2 / 3, &mut model);
    let info = db
        .create_index(&IndexSpec::flat(quantization))
        .expect("create_index");
    assert_eq!(info.kind, IndexKind::Flat);
    assert_eq!(info.quantization, Some(quantization));
    assert_eq!(info.rows, (ROWS * 2 / 3) as u64, "rows covered at creation");
    assert!(info.bytes > 0, "an index holds codes");
    // Rows after the index: their codes are written with them.
    add(db, ROWS * 2 / 3..ROWS, &mut model);
    // Upserts of existing ids: new rows, the old ones deleted.
    add(db, 100..130, &mut model);
    let gone: Vec<String> = (0..ROWS).step_by(7).map(|i| format!("r{i}")).collect();
    let gone_refs: Vec<&str> = gone.iter().map(String::as_str).collect();
    db.remove(&srvdb::Delete::ids(&gone_refs)).expect("delete");
    for id in gone {
        model.live.remove(&id);
        model.deleted.insert(id);
    }
    db.persist().expect("persist");
    model
}

/// The queries every comparison runs: each a name and its request options.
fn requests<'a>(
    queries: &'a [f32],
    group: &'a Filter,
    rare: &'a Filter,
) -> Vec<(String, Query<'a>)> {
    let mut out = Vec::new();
    for (i, q) in queries.chunks(DIM).enumerate() {
        out.push((format!("q{i} default"), Query::one(q, K)));
        out.push((format!("q{i} oversample 1"), Query::one(q, K).oversample(1)));
        out.push((
            format!("q{i} oversample 30"),
            Query::one(q, K).oversample(30),
        ));
        out.push((format!("q{i} exact"), Query::one(q, K).exact(true)));
        out.push((format!("q{i} group"), Query::one(q, K).filter(group)));
        out.push((format!("q{i} rare"), Query::one(q, K).filter(rare)));
    }
    out.push(("batch".into(), Query::batch(queries, K)));
    // Six queries: the packed int8 path (four, then two), its candidates unrescued by a
    // wider oversample.
    out.push((
        "batch oversample 1".into(),
        Query::batch(queries, K).oversample(1),
    ));
    out.push(("batch group".into(), Query::batch(queries, K).filter(group)));
    out.push((
        "batch exact".into(),
        Query::batch(queries, K).exact(true).oversample(2),
    ));
    out
}

fn answers(db: &dyn Store, requests: &[(String, Query<'_>)]) -> Vec<Vec<Vec<SearchHit>>> {
    requests
        .iter()
        .map(|(name, r)| db.query(r).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

/// Same ids in the same order; scores equal up to the f32 kernels' rounding.
fn assert_same(label: &str, native: &[Vec<Vec<SearchHit>>], sandboxed: &[Vec<Vec<SearchHit>>]) {
    assert_eq!(native.len(), sandboxed.len());
    for (n, s) in native.iter().zip(sandboxed) {
        assert_eq!(n.len(), s.len(), "{label}: lists");
        for (n, s) in n.iter().zip(s) {
            let ids = |h: &[SearchHit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(n), ids(s), "{label}: ids");
            for (a, b) in n.iter().zip(s) {
                let tolerance = 1e-5 * a.score.abs().max(1.0);
                assert!(
                    (a.score - b.score).abs() <= tolerance,
                    "{label}: {} scores {} natively, {} sandboxed",
                    a.id,
                    a.score,
                    b.score
                );
            }
        }
    }
}

/// Checks answers against the model: full lists, no deleted id, filters honoured, and the
/// exact requests equal to brute force in f64.
fn check_against_model(
    label: &str,
    metric: Metric,
    model: &Model,
    requests: &[(String, Query<'_>)],
    found: &[Vec<Vec<SearchHit>>],
) {
    let items: Vec<(String, Vec<f32>)> = model
        .live
        .iter()
        .map(|(id, v)| (id.clone(), v.clone()))
        .collect();
    for ((name, request), lists) in requests.iter().zip(found) {
        assert!(!lists.is_empty(), "{label} {name}: no answer");
        for hits in lists {
            // Far more than K live records match `group`, about 12 match `rare`.
            assert!(
                hits.len() >= K.min(5),
                "{label} {name}: {} hits",
                hits.len()
            );
            if !name.contains("rare") {
                assert_eq!(hits.len(), K, "{label} {name}: hits");
            }
            for h in hits {
                assert!(
                    !model.deleted.contains(&h.id),
                    "{label} {name}: deleted {} returned",
                    h.id
                );
                let row: usize = h.id[1..].parse().expect("id");
                if name.contains("group") {
                    assert_eq!(row % 4, 0, "{label} {name}: {} does not match", h.id);
                }
                if name.contains("rare") {
                    assert_eq!(row % 50, 0, "{label} {name}: {} does not match", h.id);
                }
            }
        }
        if request.exact {
            let queries = match request.queries {
                srvdb::Queries::One(q) | srvdb::Queries::Batch(q) => q,
            };
            for (q, hits) in queries.chunks(DIM).zip(lists) {
                let want = common_brute_force(metric, q, &items, K);
                let got: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                let want_ids: Vec<&str> = want.iter().map(|(id, _)| id.as_str()).collect();
                assert_eq!(got, want_ids, "{label} {name}: exact != brute force");
                for (h, (_, score)) in hits.iter().zip(&want) {
                    assert!(
                        (f64::from(h.score) - score).abs() <= 1e-4 * score.abs().max(1.0),
                        "{label} {name}: {} score {} vs {score}",
                        h.id,
                        h.score
                    );
                }
            }
        }
    }
}

/// Brute force top-k in f64, best first (no engine code).
fn common_brute_force(
    metric: Metric,
    q: &[f32],
    items: &[(String, Vec<f32>)],
    k: usize,
) -> Vec<(String, f64)> {
    let score = |v: &[f32]| -> f64 {
        let dot: f64 = q
            .iter()
            .zip(v)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        match metric {
            Metric::Dot => dot,
            Metric::Cosine => {
                let n = |x: &[f32]| x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
                dot / (n(q) * n(v))
            }
            Metric::L2 => q
                .iter()
                .zip(v)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                .sum(),
        }
    };
    let mut scored: Vec<(String, f64)> =
        items.iter().map(|(id, v)| (id.clone(), score(v))).collect();
    scored.sort_by(|a, b| {
        if metric == Metric::L2 {
            a.1.total_cmp(&b.1)
        } else {
            b.1.total_cmp(&a.1)
        }
    });
    scored.truncate(k);
    scored
}

fn run(metric: Metric, quantization: Quantization) {
    let seed = srvdb::testing::seed();
    eprintln!("seed {seed} (SRVDB_SEED replays it), {metric} {quantization:?}");
    let label = format!("{metric} {}", quantization.name());
    let root = tempfile::tempdir().expect("temporary directory");
    let (native_dir, sandboxed_dir) = (root.path().join("native"), root.path().join("sandboxed"));
    let options = OpenOptions::default().with_metric(metric);
    let sandbox = Sandbox::new(component_config()).expect("load the component");

    let mut rng = srvdb::testing::Rng::new(seed ^ 0x9e37);
    let queries: Vec<f32> = (0..QUERIES).flat_map(|_| vector(&mut rng)).collect();
    let group = Filter::parse(Some(r#"{"group": 0}"#), None).expect("filter");
    let rare = Filter::parse(Some(r#"{"rare": true}"#), None).expect("filter");
    let requests = requests(&queries, &group, &rare);

    let native = Database::open(&native_dir, options.clone()).expect("native open");
    let model = populate(&native, quantization, seed);
    let sandboxed = sandbox
        .open(&sandboxed_dir, options.clone())
        .expect("sandboxed open");
    populate(&sandboxed, quantization, seed);

    let info = native.index_info().expect("native index_info");
    assert_eq!(info, sandboxed.index_info().expect("sandboxed index_info"));
    assert_eq!(info.quantization, Some(quantization));
    assert_eq!(
        info.rows,
        (ROWS + 30) as u64,
        "rows: every row, deleted ones included"
    );

    let want = answers(&native, &requests);
    check_against_model(&label, metric, &model, &requests, &want);
    assert_same(&label, &want, &answers(&sandboxed, &requests));

    // Across reopen: the codes come back from the sandboxed engine's file.
    sandboxed.close().expect("close");
    let sandboxed = sandbox
        .open(&sandboxed_dir, options.clone())
        .expect("reopen");
    assert_eq!(
        info,
        sandboxed.index_info().expect("index_info after reopen")
    );
    assert_same(
        &format!("{label} reopened"),
        &want,
        &answers(&sandboxed, &requests),
    );
    sandboxed.close().expect("close");

    // Rows read on demand: codes in memory, candidates' rows from the file.
    let on_demand = sandbox
        .open(
            &sandboxed_dir,
            options.clone().with_storage(StorageKind::OnDemand),
        )
        .expect("open with rows on demand");
    assert_eq!(info, on_demand.index_info().expect("index_info on demand"));
    assert_same(
        &format!("{label} rows on demand"),
        &want,
        &answers(&on_demand, &requests),
    );

    // Dropping the index through the component: back to the exact scan, and nothing to drop
    // the second time.
    assert!(on_demand.drop_index().expect("drop_index"));
    assert!(!on_demand.drop_index().expect("drop_index again"));
    let none = on_demand.index_info().expect("index_info after drop");
    assert_eq!((none.quantization, none.rows, none.bytes), (None, 0, 0));
    on_demand.close().expect("close");
    native.close().expect("native close");
}

#[test]
fn int8_cosine_answers_as_natively() {
    run(Metric::Cosine, Quantization::Int8);
}

#[test]
fn int8_l2_answers_as_natively() {
    run(Metric::L2, Quantization::Int8);
}

#[test]
fn binary_cosine_answers_as_natively() {
    run(Metric::Cosine, Quantization::Binary);
}

#[test]
fn binary_dot_answers_as_natively() {
    run(Metric::Dot, Quantization::Binary);
}

/// Bad specs and oversample values fail the same way in the guest as natively.
#[test]
fn bad_requests_fail_as_natively() {
    let root = tempfile::tempdir().expect("temporary directory");
    let sandbox = Sandbox::new(component_config()).expect("load the component");
    let native = Database::open(root.path().join("n"), OpenOptions::default()).expect("open");
    let sandboxed = sandbox
        .open(root.path().join("s"), OpenOptions::default())
        .expect("open");
    let mut rng = srvdb::testing::Rng::new(srvdb::testing::seed());
    let vectors: Vec<f32> = (0..20).flat_map(|_| vector(&mut rng)).collect();
    let ids: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    native.add(&ids, &vectors, &[]).expect("add");
    sandboxed.add(&ids, &vectors, &[]).expect("add");
    let plain = IndexSpec {
        kind: IndexKind::Flat,
        quantization: None,
        hnsw: None,
    };
    let n = native.create_index(&plain).expect_err("flat without codes");
    let s = sandboxed
        .create_index(&plain)
        .expect_err("flat without codes");
    assert_eq!(format!("{n:?}"), format!("{s:?}"));
    for oversample in [0, srvdb::quant::MAX_OVERSAMPLE + 1] {
        native
            .create_index(&IndexSpec::flat(Quantization::Int8))
            .expect("create_index");
        sandboxed
            .create_index(&IndexSpec::flat(Quantization::Int8))
            .expect("create_index");
        let q = &vectors[..DIM];
        let request = Query::one(q, 3).oversample(oversample);
        let n = native.query(&request).expect_err("bad oversample natively");
        let s = sandboxed
            .query(&request)
            .expect_err("bad oversample sandboxed");
        assert_eq!(
            format!("{n:?}"),
            format!("{s:?}"),
            "oversample {oversample}"
        );
    }
}
