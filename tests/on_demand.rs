//! `StorageKind::OnDemand` (rows read from the file when a reader asks, none kept in memory)
//! answers exactly as a database whose rows are in memory: searches (single, batch, filtered
//! by gather-scan and by blocked scan), `get`, records, deletes, upserts, compaction and reopen,
//! checked against a brute-force reference written here and against a `StorageKind::File`
//! database given the same operations. The scans stream more than one chunk of rows.

mod common;
use common::{assert_topk, reference_score, seed, tempdir, Rng};
use srvdb::{
    quant::{IndexSpec, Quantization},
    Database, Error, Filter, Metadata, Metric, OpenOptions, Query, Select, StorageKind, Store,
    Write,
};
use std::path::Path;

const DIM: usize = 96;
/// More rows than one streamed chunk (4 MiB) of 96-d rows holds, so scans cross chunks.
const ROWS: usize = 12_000;
const GROUPS: usize = 16;

/// The live records, in insertion order: (id, vector, group).
#[derive(Default)]
struct Model {
    live: Vec<(String, Vec<f32>, usize)>,
}

impl Model {
    fn items(&self, group: impl Fn(usize) -> bool) -> Vec<(String, Vec<f32>)> {
        self.live
            .iter()
            .filter(|(_, _, g)| group(*g))
            .map(|(id, v, _)| (id.clone(), v.clone()))
            .collect()
    }
}

fn open(dir: &Path, storage: StorageKind, metric: Metric) -> Database {
    Database::open(
        dir,
        OpenOptions {
            dimension: Some(DIM as u32),
            metric: Some(metric),
            storage,
            ..OpenOptions::default()
        },
    )
    .expect("open")
}

fn vector(rng: &mut Rng) -> Vec<f32> {
    (0..DIM).map(|_| rng.f32()).collect()
}

fn meta(group: usize) -> Option<Metadata> {
    Some(Metadata::from_text(format!("{{\"g\": {group}}}")))
}

/// Adds (or upserts) `recs` to both databases and the model.
fn write(
    dbs: &[&Database; 2],
    model: &mut Model,
    recs: Vec<(String, Vec<f32>, usize)>,
    upsert: bool,
) {
    let ids: Vec<&str> = recs.iter().map(|r| r.0.as_str()).collect();
    let vectors: Vec<f32> = recs.iter().flat_map(|r| r.1.iter().copied()).collect();
    let metas: Vec<Option<Metadata>> = recs.iter().map(|r| meta(r.2)).collect();
    for db in dbs {
        let w = if upsert {
            Write::upsert(&ids, &vectors)
        } else {
            Write::add(&ids, &vectors)
        };
        db.write(&w.metadatas(&metas)).expect("write");
    }
    for r in recs {
        model.live.retain(|x| x.0 != r.0);
        model.live.push(r);
    }
}

/// Every reader of `on_demand` against the reference, and against `file` bit for bit.
fn check(
    metric: Metric,
    on_demand: &Database,
    file: &Database,
    model: &Model,
    rng: &mut Rng,
    when: &str,
) {
    let tol = 1e-4;
    let all = model.items(|_| true);
    assert_eq!(on_demand.count(), all.len() as u64, "{when}");
    // Single queries.
    for i in 0..4 {
        let q = vector(rng);
        let got = on_demand.search(&q, 10).expect("search");
        assert_topk(
            metric,
            &q,
            &all,
            &got,
            10,
            tol,
            &format!("{when}: query {i}"),
        );
        assert_eq!(
            got,
            file.search(&q, 10).expect("search"),
            "{when}: query {i}"
        );
    }
    // A batch: more queries than one group of the multi-query kernel.
    let n = 66;
    let batch: Vec<f32> = (0..n * DIM).map(|_| rng.f32()).collect();
    let got = on_demand.search_batch(&batch, 5).expect("batch");
    assert_eq!(
        got,
        file.search_batch(&batch, 5).expect("batch"),
        "{when}: batch"
    );
    for j in (0..n).step_by(13) {
        let q = &batch[j * DIM..(j + 1) * DIM];
        assert_topk(
            metric,
            q,
            &all,
            &got[j],
            5,
            tol,
            &format!("{when}: batch query {j}"),
        );
    }
    // Filtered: one group in 16 (gather-scan) and half the groups (blocked scan, skip bitmap).
    for (text, allowed) in [
        (
            "{\"g\": 3}",
            Box::new(|g: usize| g == 3) as Box<dyn Fn(usize) -> bool>,
        ),
        ("{\"g\": {\"$lt\": 8}}", Box::new(|g: usize| g < 8)),
    ] {
        let filter = Filter::parse(Some(text), None).expect("filter");
        let items = model.items(allowed);
        for i in 0..2 {
            let q = vector(rng);
            let got = on_demand
                .query(&Query::one(&q, 10).filter(&filter))
                .expect("filtered")
                .pop()
                .unwrap_or_default();
            assert_topk(
                metric,
                &q,
                &items,
                &got,
                10,
                tol,
                &format!("{when}: {text} query {i}"),
            );
            let want = file
                .query(&Query::one(&q, 10).filter(&filter))
                .expect("filtered")
                .pop()
                .unwrap_or_default();
            assert_eq!(got, want, "{when}: {text} query {i}");
        }
    }
    // get: the stored vector, bit for bit.
    for _ in 0..20 {
        let (id, v, g) = &model.live[rng.below(model.live.len() as u64) as usize];
        let record = on_demand.get(id).expect("get").expect("present");
        assert_eq!(&record.vector, v, "{when}: get {id}");
        assert_eq!(record.metadata, meta(*g), "{when}: get {id}");
    }
    assert_eq!(on_demand.get("never-added").expect("get"), None, "{when}");
    // Records of one group, in row order, with their vectors.
    let filter = Filter::parse(Some("{\"g\": 5}"), None).expect("filter");
    let records = on_demand
        .records(&Select::all().filter(&filter))
        .expect("records");
    let want = model.items(|g| g == 5);
    let mut got: Vec<(String, Vec<f32>)> = records.into_iter().map(|r| (r.id, r.vector)).collect();
    let mut want = want;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want, "{when}: records");
    // Scores are the exact ones (the reference in f64, within f32 rounding).
    let q = vector(rng);
    for hit in on_demand.search(&q, 3).expect("search") {
        let v = &all.iter().find(|x| x.0 == hit.id).expect("known").1;
        let s = reference_score(metric, &q, v);
        assert!(
            (s - hit.score as f64).abs() <= tol * s.abs().max(1.0),
            "{when}"
        );
    }
}

fn scenario(metric: Metric) {
    let mut rng = Rng::new(seed() ^ metric as u64);
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let mut model = Model::default();
    let mut on_demand = open(dir_a.path(), StorageKind::OnDemand, metric);
    let mut file = open(dir_b.path(), StorageKind::File, metric);
    let mut next = 0;
    while next < ROWS {
        let recs = (next..(next + 2500).min(ROWS))
            .map(|i| (format!("r{i}"), vector(&mut rng), i % GROUPS))
            .collect();
        write(&[&on_demand, &file], &mut model, recs, false);
        next += 2500;
    }
    check(metric, &on_demand, &file, &model, &mut rng, "after adds");

    // Deletes and upserts (some rows committed, the last ones not yet).
    let doomed: Vec<String> = (0..ROWS).step_by(7).map(|i| format!("r{i}")).collect();
    for db in [&on_demand, &file] {
        assert_eq!(db.delete(&doomed).expect("delete"), doomed.len());
    }
    model.live.retain(|x| !doomed.contains(&x.0));
    let recs = (0..600)
        .map(|i| {
            let i = i * 31 % ROWS + 1;
            (format!("r{i}"), vector(&mut rng), (i + 1) % GROUPS)
        })
        .filter(|r| !doomed.contains(&r.0))
        .collect();
    write(&[&on_demand, &file], &mut model, recs, true);
    check(
        metric,
        &on_demand,
        &file,
        &model,
        &mut rng,
        "after deletes and upserts",
    );

    for db in [&on_demand, &file] {
        db.compact().expect("compact");
    }
    check(
        metric,
        &on_demand,
        &file,
        &model,
        &mut rng,
        "after compaction",
    );

    on_demand.close().expect("close");
    file.close().expect("close");
    on_demand = open(dir_a.path(), StorageKind::OnDemand, metric);
    file = open(dir_b.path(), StorageKind::File, metric);
    check(metric, &on_demand, &file, &model, &mut rng, "after reopen");
}

#[test]
fn on_demand_answers_as_in_memory_rows_cosine() {
    scenario(Metric::Cosine);
}

#[test]
fn on_demand_answers_as_in_memory_rows_l2() {
    scenario(Metric::L2);
}

/// A rows file cut by another process while the database is open: the search fails with an
/// error that says so, it does not answer from the rows that are left.
#[test]
fn a_rows_file_cut_under_an_open_database_is_an_error_not_an_answer() {
    let dir = tempdir();
    let db = open(dir.path(), StorageKind::OnDemand, Metric::Dot);
    let mut rng = Rng::new(seed());
    let ids: Vec<String> = (0..3000).map(|i| format!("r{i}")).collect();
    let vectors: Vec<f32> = (0..3000 * DIM).map(|_| rng.f32()).collect();
    db.add(&ids, &vectors, &vec![None; ids.len()]).expect("add");
    db.persist().expect("persist");
    let q = vector(&mut rng);
    assert_eq!(db.search(&q, 5).expect("search").len(), 5);
    let path = dir.path().join("vectors.bin");
    let len = std::fs::metadata(&path).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(len / 2))
        .expect("cut");
    assert!(
        matches!(db.search(&q, 5), Err(Error::Corrupt { .. })),
        "a search over a cut file must fail"
    );
    assert!(db.get("r2999").is_err(), "a get of a cut row must fail");
}

/// A quantized index on an OnDemand database: its codebook is trained, its codes encoded
/// (create, compaction, re-encoding at open) and its candidates rescored from rows read on
/// demand. The same operations on a File database give the same codebook and codes, so the
/// same hits bit for bit; every hit's score is the exact one, and recall against brute force
/// is high.
#[test]
fn a_quantized_index_over_rows_read_on_demand_answers_as_over_rows_in_memory() {
    let metric = Metric::Cosine;
    let mut rng = Rng::new(seed() ^ 0x1d8);
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let mut model = Model::default();
    let mut on_demand = open(dir_a.path(), StorageKind::OnDemand, metric);
    let mut file = open(dir_b.path(), StorageKind::File, metric);
    let n = 6000;
    let recs = (0..n)
        .map(|i| (format!("r{i}"), vector(&mut rng), i % GROUPS))
        .collect();
    write(&[&on_demand, &file], &mut model, recs, false);
    for db in [&on_demand, &file] {
        db.persist().expect("persist");
        let info = db
            .create_index(&IndexSpec::flat(Quantization::Int8))
            .expect("create_index");
        assert_eq!(info.rows, n as u64);
    }
    let check =
        |on_demand: &Database, file: &Database, model: &Model, rng: &mut Rng, when: &str| {
            assert_eq!(
                on_demand.index_info().expect("info"),
                file.index_info().expect("info"),
                "{when}"
            );
            let all = model.items(|_| true);
            let (mut found, mut wanted) = (0, 0);
            for i in 0..12 {
                let q = vector(rng);
                let got = on_demand.search(&q, 10).expect("search");
                assert_eq!(
                    got,
                    file.search(&q, 10).expect("search"),
                    "{when}: query {i}"
                );
                let truth = common::brute_force(metric, &q, &all, 10);
                wanted += truth.len();
                found += got
                    .iter()
                    .filter(|h| truth.iter().any(|(id, _)| *id == h.id))
                    .count();
                for hit in &got {
                    let v = &all.iter().find(|x| x.0 == hit.id).expect("known").1;
                    let s = reference_score(metric, &q, v);
                    assert!(
                        (s - hit.score as f64).abs() <= 1e-4,
                        "{when}: query {i}: {} scores {s}, reported {}",
                        hit.id,
                        hit.score
                    );
                }
            }
            let recall = found as f64 / wanted as f64;
            assert!(recall >= 0.9, "{when}: recall@10 {recall}");
        };
    check(&on_demand, &file, &model, &mut rng, "after create_index");

    // Deletes, then compaction retrains the codebook on the rows read on demand.
    let doomed: Vec<String> = (0..n).step_by(3).map(|i| format!("r{i}")).collect();
    for db in [&on_demand, &file] {
        db.delete(&doomed).expect("delete");
        db.compact().expect("compact");
    }
    model.live.retain(|x| !doomed.contains(&x.0));
    check(&on_demand, &file, &model, &mut rng, "after compaction");

    // Reopen with the codes file gone: the codes are re-encoded from rows read on demand.
    on_demand.close().expect("close");
    file.close().expect("close");
    for dir in [dir_a.path(), dir_b.path()] {
        std::fs::remove_file(dir.join("index.codes")).expect("remove index.codes");
    }
    on_demand = open(dir_a.path(), StorageKind::OnDemand, metric);
    file = open(dir_b.path(), StorageKind::File, metric);
    check(
        &on_demand,
        &file,
        &model,
        &mut rng,
        "after re-encoding at open",
    );
}
