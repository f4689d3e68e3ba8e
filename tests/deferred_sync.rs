//! Deferred syncs (`srvdb::storage::deferred_sync`, `Database::open_deferring_syncs`): a
//! database written through a deferred-sync location fsyncs nothing, and after the caller's
//! sync pass over the closed database a power loss keeps every committed row, id, metadata
//! and document. Checked with the fault-injecting simulated storage, whose power-loss image
//! holds only synced bytes under synced names, against the records written (kept by the
//! test) and brute-force search; and natively, on a real directory, against the same.

mod common;
use common::{assert_topk, seed, tempdir, write_documents, Rng};
use srvdb::storage::deferred_sync::{sync_files, DeferredSyncLocation};
use srvdb::storage::sim::{Crash, FaultPlan, SimLocation};
use srvdb::storage::Location;
use srvdb::{Database, Metadata, Metric, OpenOptions, StorageKind, Store, WriteMode};
use std::collections::BTreeMap;
use std::sync::Arc;

const DIM: usize = 16;
/// id -> (vector, metadata, document), as written.
type Model = BTreeMap<String, (Vec<f32>, Option<Metadata>, Option<String>)>;

fn options() -> OpenOptions {
    OpenOptions {
        auto_commit_rows: 0,
        buffer_bytes: 4096,
        ..OpenOptions::default()
    }
    .with_dimension(DIM as u32)
    .with_metric(Metric::Cosine)
}

/// Writes `batches` batches of 50 records (every other one with metadata, every third with a
/// document), one commit per batch, and returns what was written.
fn load(db: &Database, batches: usize, rng: &mut Rng) -> Model {
    let mut model = Model::new();
    for b in 0..batches {
        let ids: Vec<String> = (0..50).map(|i| format!("b{b}-r{i}")).collect();
        let vectors = rng.vectors(ids.len(), DIM);
        let metas: Vec<Option<Metadata>> = (0..ids.len())
            .map(|i| (i % 2 == 0).then(|| Metadata::from_text(format!("meta {b}/{i}"))))
            .collect();
        let docs: Vec<Option<String>> = (0..ids.len())
            .map(|i| (i % 3 == 0).then(|| format!("document {b}/{i}")))
            .collect();
        write_documents(db, WriteMode::Add, &ids, &vectors, &metas, &docs).expect("add");
        db.persist().expect("persist");
        for (i, id) in ids.iter().enumerate() {
            let v = vectors[i * DIM..(i + 1) * DIM].to_vec();
            model.insert(id.clone(), (v, metas[i].clone(), docs[i].clone()));
        }
    }
    model
}

/// Asserts that `db` holds exactly `model` (bit for bit), and that its searches agree with a
/// brute-force top 10 over `model`'s vectors.
fn assert_holds(db: &Database, model: &Model, rng: &mut Rng, context: &str) {
    let ids = db.ids();
    let want: Vec<&String> = model.keys().collect();
    let mut got = ids.clone();
    got.sort();
    assert_eq!(got.iter().collect::<Vec<_>>(), want, "{context}: ids");
    for (id, (vector, metadata, document)) in model {
        let r = db.get(id).expect("get").expect("a written id");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&r.vector), bits(vector), "{context}: vector of {id}");
        assert_eq!(&r.metadata, metadata, "{context}: metadata of {id}");
        assert_eq!(&r.document, document, "{context}: document of {id}");
    }
    let items: Vec<(String, Vec<f32>)> = model
        .iter()
        .map(|(id, (v, _, _))| (id.clone(), v.clone()))
        .collect();
    for _ in 0..5 {
        let q = rng.vectors(1, DIM);
        let hits = db.search(&q, 10).expect("search");
        assert_topk(Metric::Cosine, &q, &items, &hits, 10, 1e-4, context);
    }
}

#[test]
fn deferred_location_syncs_nothing_and_the_sync_pass_makes_every_commit_survive_power_loss() {
    let mut rng = Rng::new(seed());
    let faults = Arc::new(FaultPlan::never());
    let sim = Arc::new(SimLocation::with_faults(faults.clone()));
    let deferred = Arc::new(DeferredSyncLocation::new(sim.clone()));
    let db = Database::open_at(deferred, options()).expect("open");
    let model = load(&db, 4, &mut rng);
    db.close().expect("close");
    assert!(
        faults.ops() > 0,
        "the load wrote through the simulated disk"
    );
    assert_eq!(
        faults.syncs(),
        0,
        "a deferred-sync location syncs no file and no directory (seed {})",
        seed()
    );
    // Nothing was synced, so a power cut now leaves nothing: the deferral is real.
    assert!(
        sim.image_after(Crash::PowerLoss).file_names().is_empty(),
        "before the sync pass no name is durable"
    );

    let names = sim.file_names();
    sync_files(sim.as_ref(), &names).expect("sync pass");
    assert_eq!(
        faults.syncs(),
        names.len() as i64 + 1,
        "the sync pass syncs each file once, then the directory"
    );
    let image = Arc::new(sim.image_after(Crash::PowerLoss));
    assert_eq!(
        image.file_names(),
        names,
        "every name survives the power cut"
    );
    let reopened = Database::open_at(image, options()).expect("reopen after power loss");
    assert_holds(
        &reopened,
        &model,
        &mut rng,
        "after the sync pass and a power cut",
    );
}

#[test]
fn a_deferred_database_reads_as_usual_while_open_and_after_reopening() {
    let mut rng = Rng::new(seed() ^ 1);
    let sim = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
    let db = Database::open_at(Arc::new(DeferredSyncLocation::new(sim.clone())), options())
        .expect("open");
    let model = load(&db, 3, &mut rng);
    assert_holds(&db, &model, &mut rng, "open, deferred");
    db.close().expect("close");
    // A killed process (or a clean close) keeps what the page cache holds.
    let image = Arc::new(sim.image_after(Crash::ProcessKill));
    let reopened = Database::open_at(image, options()).expect("reopen");
    assert_holds(&reopened, &model, &mut rng, "reopened, not synced");
}

#[test]
fn a_native_deferred_load_reopens_whole_after_sync_directory() {
    for storage in [StorageKind::Mmap, StorageKind::File, StorageKind::OnDemand] {
        let mut rng = Rng::new(seed() ^ 2);
        let dir = tempdir();
        let path = dir.path().join("shard");
        let opts = options().with_storage(storage);
        let db = Database::open_deferring_syncs(&path, opts.clone()).expect("open");
        let model = load(&db, 3, &mut rng);
        // The sync pass refuses a database that is still open.
        let refused = srvdb::storage::fs::sync_directory(&path);
        assert!(
            matches!(refused, Err(srvdb::Error::Locked { .. })),
            "{storage:?}: {refused:?}"
        );
        db.close().expect("close");
        srvdb::storage::fs::sync_directory(&path).expect("sync pass");
        let reopened = Database::open(&path, opts).expect("reopen");
        assert_holds(&reopened, &model, &mut rng, &format!("{storage:?}"));
    }
}

#[test]
fn deferred_syncs_refuse_read_only_options() {
    let dir = tempdir();
    let r = Database::open_deferring_syncs(dir.path(), options().read_only());
    assert!(matches!(r, Err(srvdb::Error::InvalidInput { .. })), "{r:?}");
}

#[test]
fn sync_files_skips_missing_names() {
    let faults = Arc::new(FaultPlan::never());
    let sim = SimLocation::with_faults(faults.clone());
    let f = sim.create("a").expect("create");
    f.write_at(0, b"x").expect("write");
    sync_files(&sim, &["a".into(), "missing".into()]).expect("sync pass");
    assert_eq!(faults.syncs(), 2, "one file and the directory");
    let image = sim.image_after(Crash::PowerLoss);
    assert_eq!(image.file_names(), vec!["a"]);
}
