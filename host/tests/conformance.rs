//! One scenario, written once, run against the native engine and through the sandboxed
//! component: the same ids in the same order, scores within 1e-5, the same typed errors.
//! Then the sandbox itself: escapes refused, limits enforced, traps survived.

mod common;
use common::component_config;
use srvdb::{Database, Error, Metadata, Metric, OpenOptions, Record, SandboxFailure, SearchHit};
use srvdb_host::{Sandbox, SandboxedDatabase};

/// The operations the scenario needs, over both engines.
trait Engine {
    fn add(&self, ids: &[&str], v: &[f32], m: &[Option<Metadata>]) -> Result<(), Error>;
    fn upsert(&self, ids: &[&str], v: &[f32]) -> Result<(), Error>;
    fn delete(&self, ids: &[&str]) -> Result<usize, Error>;
    fn get(&self, id: &str) -> Result<Option<Record>, Error>;
    fn search(&self, q: &[f32], k: usize) -> Result<Vec<SearchHit>, Error>;
    fn search_batch(&self, q: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>, Error>;
    fn count(&self) -> u64;
    fn ids(&self) -> Vec<String>;
    fn persist(&self) -> Result<(), Error>;
    fn compact(&self) -> Result<(), Error>;
}

impl Engine for Database {
    fn add(&self, ids: &[&str], v: &[f32], m: &[Option<Metadata>]) -> Result<(), Error> {
        Database::add(self, ids, v, m)
    }
    fn upsert(&self, ids: &[&str], v: &[f32]) -> Result<(), Error> {
        Database::upsert(self, ids, v, &[])
    }
    fn delete(&self, ids: &[&str]) -> Result<usize, Error> {
        Database::delete(self, ids)
    }
    fn get(&self, id: &str) -> Result<Option<Record>, Error> {
        Database::get(self, id)
    }
    fn search(&self, q: &[f32], k: usize) -> Result<Vec<SearchHit>, Error> {
        Database::search(self, q, k)
    }
    fn search_batch(&self, q: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>, Error> {
        Database::search_batch(self, q, k)
    }
    fn count(&self) -> u64 {
        Database::count(self)
    }
    fn ids(&self) -> Vec<String> {
        Database::ids(self)
    }
    fn persist(&self) -> Result<(), Error> {
        Database::persist(self)
    }
    fn compact(&self) -> Result<(), Error> {
        Database::compact(self)
    }
}

fn engine<T>(r: Result<T, Error>) -> Result<T, Error> {
    r.map_err(|e| match e {
        Error::Sandbox { .. } => panic!("sandbox failure, not an engine error: {e}"),
        e => e,
    })
}

impl Engine for SandboxedDatabase {
    fn add(&self, ids: &[&str], v: &[f32], m: &[Option<Metadata>]) -> Result<(), Error> {
        engine(srvdb::Store::add(self, ids, v, m))
    }
    fn upsert(&self, ids: &[&str], v: &[f32]) -> Result<(), Error> {
        engine(srvdb::Store::upsert(self, ids, v, &[]))
    }
    fn delete(&self, ids: &[&str]) -> Result<usize, Error> {
        engine(srvdb::Store::delete(self, ids))
    }
    fn get(&self, id: &str) -> Result<Option<Record>, Error> {
        engine(srvdb::Store::get(self, id))
    }
    fn search(&self, q: &[f32], k: usize) -> Result<Vec<SearchHit>, Error> {
        engine(srvdb::Store::search(self, q, k))
    }
    fn search_batch(&self, q: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>, Error> {
        engine(srvdb::Store::search_batch(self, q, k))
    }
    fn count(&self) -> u64 {
        engine(srvdb::Store::count(self)).expect("count")
    }
    fn ids(&self) -> Vec<String> {
        engine(srvdb::Store::ids(self)).expect("ids")
    }
    fn persist(&self) -> Result<(), Error> {
        engine(srvdb::Store::persist(self))
    }
    fn compact(&self) -> Result<(), Error> {
        engine(srvdb::Store::compact(self))
    }
}

fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n * dim)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Everything the scenario observed, to compare between engines.
#[derive(Debug)]
struct Trace {
    hits: Vec<Vec<SearchHit>>,
    errors: Vec<String>,
    counts: Vec<u64>,
    ids: Vec<String>,
    records: Vec<Option<Record>>,
}

/// Phase 1 (before a reopen) and phase 2 (after it) of the scenario.
fn phase1(db: &dyn Engine, t: &mut Trace) {
    let dim = 24;
    let v = data(500, dim, 7);
    let ids: Vec<String> = (0..500).map(|i| format!("doc-{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
    let metas: Vec<Option<Metadata>> = (0..500)
        .map(|i| (i % 2 == 0).then(|| Metadata::from_text(format!("{{\"n\": {i}}}"))))
        .collect();
    db.add(&id_refs, &v, &metas).expect("add");
    let kind = |r: Result<(), Error>| match r {
        Err(Error::DuplicateId { .. }) => "duplicate".to_owned(),
        Err(Error::DimensionMismatch { expected, got, .. }) => format!("dim {expected} {got}"),
        Err(Error::InvalidInput { .. }) => "invalid".to_owned(),
        Err(e) => format!("other {e}"),
        Ok(()) => "ok".to_owned(),
    };
    t.errors.push(kind(db.add(&["doc-1"], &v[..dim], &[])));
    t.errors.push(kind(db.add(&["new"], &v[..dim - 1], &[])));
    t.errors.push(kind(db.add(&["nan"], &[f32::NAN; 24], &[])));
    t.errors.push(match db.delete(&["nope"]) {
        Err(Error::NotFound { id }) => format!("not found {id}"),
        other => format!("{other:?}"),
    });
    let q = data(6, dim, 99);
    t.hits.push(db.search(&q[..dim], 10).expect("search"));
    t.hits.extend(db.search_batch(&q, 7).expect("batch"));
    assert_eq!(db.delete(&["doc-3", "doc-4", "doc-5"]).expect("delete"), 3);
    db.upsert(&["doc-6", "extra"], &v[..2 * dim])
        .expect("upsert");
    t.hits.push(db.search(&q[..dim], 20).expect("search"));
    t.counts.push(db.count());
    db.persist().expect("persist");
}

fn phase2(db: &dyn Engine, t: &mut Trace) {
    let dim = 24;
    let q = data(6, dim, 99);
    t.counts.push(db.count());
    t.hits.push(
        db.search(&q[dim..2 * dim], 15)
            .expect("search after reopen"),
    );
    db.compact().expect("compact");
    t.hits.push(
        db.search(&q[dim..2 * dim], 15)
            .expect("search after compact"),
    );
    t.counts.push(db.count());
    t.ids = db.ids();
    for id in ["doc-0", "doc-1", "doc-3", "doc-6", "extra"] {
        t.records.push(db.get(id).expect("get"));
    }
}

fn compare(a: &Trace, b: &Trace) {
    assert_eq!(a.errors, b.errors, "typed errors");
    assert_eq!(a.counts, b.counts, "counts");
    assert_eq!(a.ids, b.ids, "ids");
    assert_eq!(a.records, b.records, "records");
    assert_eq!(a.hits.len(), b.hits.len());
    for (x, y) in a.hits.iter().zip(&b.hits) {
        assert_eq!(
            x.iter().map(|h| &h.id).collect::<Vec<_>>(),
            y.iter().map(|h| &h.id).collect::<Vec<_>>(),
            "hit ids"
        );
        for (p, q) in x.iter().zip(y) {
            assert!(
                (p.score - q.score).abs() <= 1e-5,
                "score {} vs {}",
                p.score,
                q.score
            );
        }
    }
}

fn empty_trace() -> Trace {
    Trace {
        hits: vec![],
        errors: vec![],
        counts: vec![],
        ids: vec![],
        records: vec![],
    }
}

#[test]
fn native_and_sandboxed_engines_agree() {
    let sandbox = Sandbox::new(component_config()).expect("load component");
    let (dn, ds) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (mut tn, mut ts) = (empty_trace(), empty_trace());
    let opts = OpenOptions::default().with_metric(Metric::Cosine);
    {
        let native = Database::open(dn.path(), opts.clone()).expect("native");
        phase1(&native, &mut tn);
    }
    {
        let sandboxed = sandbox.open(ds.path(), opts.clone()).expect("sandboxed");
        phase1(&sandboxed, &mut ts);
        sandboxed.close().expect("close");
    }
    {
        let native = Database::open(dn.path(), opts.clone()).expect("native reopen");
        phase2(&native, &mut tn);
    }
    {
        let sandboxed = sandbox
            .open(ds.path(), opts.clone())
            .expect("sandboxed reopen");
        phase2(&sandboxed, &mut ts);
    }
    compare(&tn, &ts);
    // The files are the same format: the native engine opens what the sandbox wrote.
    let cross = Database::open(ds.path(), opts).expect("native opens the sandbox's files");
    assert_eq!(cross.ids(), tn.ids);
}

fn expect_refused(r: Result<SandboxedDatabase, Error>, what: &str) {
    match r {
        Ok(_) => panic!("{what}: the guest opened a path outside its directory"),
        Err(Error::Io { .. } | Error::InvalidInput { .. }) => {}
        Err(other) => panic!("{what}: expected a clean I/O refusal, got {other}"),
    }
}

#[test]
fn paths_outside_the_preopened_directory_are_refused() {
    let sandbox = Sandbox::new(component_config()).expect("load");
    let root = tempfile::tempdir().expect("tmp");
    let inside = root.path().join("db");
    std::fs::create_dir_all(&inside).expect("mkdir");
    expect_refused(
        sandbox.open_guest_path(&inside, "/db/../escape"),
        "../ escape",
    );
    expect_refused(
        sandbox.open_guest_path(&inside, "/tmp/escape"),
        "absolute path",
    );
    expect_refused(sandbox.open_guest_path(&inside, "/"), "root");
    assert!(
        !root.path().join("escape").exists(),
        "nothing was created outside"
    );
    // The host still serves a legitimate open afterwards.
    let db = sandbox
        .open(&inside, OpenOptions::default())
        .expect("open after refusals");
    db.add(&["a"], &[1.0, 2.0], &[]).expect("add");
}

#[test]
fn fuel_budget_breach_is_an_error_and_the_host_goes_on() {
    let mut config = component_config();
    config.fuel_per_call = Some(30_000_000);
    let sandbox = Sandbox::new(config).expect("load");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("open");
    let dim = 64;
    srvdb::Store::add(
        &db,
        &(0..200).map(|i| i.to_string()).collect::<Vec<_>>(),
        &data(200, dim, 1),
        &[],
    )
    .expect("small add fits");
    db.persist().expect("persist");
    // A batch search over many queries needs far more fuel than one call is given.
    let queries = data(2000, dim, 2);
    match srvdb::Store::search_batch(&db, &queries, 10) {
        Err(Error::Sandbox {
            failure: SandboxFailure::Limit,
            detail,
        }) => assert!(detail.contains("fuel"), "{detail}"),
        other => panic!("expected a fuel limit, got {other:?}"),
    }
    // The instance was replaced and the database reopened at its last commit.
    assert_eq!(srvdb::Store::count(&db).expect("count after trap"), 200);
    assert_eq!(
        srvdb::Store::search(&db, &queries[..dim], 3)
            .expect("search after trap")
            .len(),
        3
    );
}

#[test]
fn memory_cap_breach_is_an_error_and_the_host_goes_on() {
    let mut config = component_config();
    config.memory_limit_bytes = 48 << 20;
    let sandbox = Sandbox::new(config).expect("load");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("open");
    db.add(&["small"], &[1.0; 8], &[]).expect("small add");
    db.persist().expect("persist");
    // 64 MB of vectors cannot even be passed into a 48 MiB guest.
    let huge = vec![0.25f32; 8 * 2_000_000];
    let huge_ids: Vec<String> = (0..2_000_000).map(|i| format!("h{i}")).collect();
    match srvdb::Store::add(&db, &huge_ids, &huge, &[]) {
        Err(Error::Sandbox {
            failure: SandboxFailure::Limit | SandboxFailure::Trap,
            ..
        }) => {}
        other => panic!("expected the memory cap to stop the call, got {other:?}"),
    }
    assert!(
        srvdb::Store::contains(&db, "small").expect("contains after trap"),
        "committed data survives the reset"
    );
    db.add(&["after"], &[2.0; 8], &[]).expect("add after trap");
}
