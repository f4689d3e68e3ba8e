//! Power-loss safety, proven with the fault-injecting storage: a workload of adds, deletes,
//! upserts, commits and a compaction runs with the N-th write or sync failing, for every N.
//! The "disk" then keeps only synced bytes (a power cut) or all written bytes (a killed
//! process), and the reopened database must hold exactly the last acknowledged commit or the
//! one that was in flight, never a mix. After redb's crash_consistency and fuzz tests.
//!
//! The bug this guards against: a commit record made durable before the rows it counts (no
//! fsync before the redb commit), or a compaction that leaves half of old and new files.

mod common;
use common::{seed, Rng};
use srvdb::storage::sim::{FaultPlan, SimLocation};
use srvdb::{Database, Metadata, OpenOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

const DIM: usize = 12;
type Model = BTreeMap<String, (Vec<u32>, Option<Metadata>)>;
type Step<'a> = Box<dyn Fn(&Database, &mut Model) -> srvdb::Result<()> + 'a>;

fn vector(rng_seed: u64, i: usize) -> Vec<f32> {
    Rng::new(rng_seed ^ (i as u64 * 0x1234_5678_9ABC)).vectors(1, DIM)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn options() -> OpenOptions {
    OpenOptions {
        auto_commit_rows: 0,
        buffer_bytes: 4096,
        ..OpenOptions::default()
    }
}

/// Runs the workload until the first error. Returns the committed models in order: index 0 is
/// the empty database, and `acked` is how many commits were acknowledged.
fn workload(loc: Arc<SimLocation>, s: u64) -> (Vec<Model>, usize) {
    let mut states: Vec<Model> = vec![Model::new()];
    let mut model = Model::new();
    let mut acked = 0;
    let db = match Database::open_at(loc, options()) {
        Ok(db) => db,
        Err(_) => return (states, acked),
    };
    let add = |db: &Database, model: &mut Model, range: std::ops::Range<usize>, upsert: bool| {
        let ids: Vec<String> = range.clone().map(|i| format!("k{i}")).collect();
        let vecs: Vec<f32> = range
            .clone()
            .flat_map(|i| vector(s + upsert as u64, i))
            .collect();
        let metas: Vec<Option<Metadata>> = range
            .clone()
            .map(|i| (i % 2 == 0).then(|| Metadata::from_text(format!("m{i}"))))
            .collect();
        let r = if upsert {
            db.upsert(&ids, &vecs, &metas)
        } else {
            db.add(&ids, &vecs, &metas)
        };
        for (j, i) in range.enumerate() {
            model.insert(
                ids[j].clone(),
                (bits(&vector(s + upsert as u64, i)), metas[j].clone()),
            );
        }
        r
    };
    let steps: Vec<Step> = vec![
        Box::new(|db, m| add(db, m, 0..40, false)),
        Box::new(|db, m| {
            add(db, m, 40..90, false)?;
            db.delete(&["k3", "k7", "k41"])?;
            for k in ["k3", "k7", "k41"] {
                m.remove(k);
            }
            add(db, m, 10..14, true)
        }),
        Box::new(|_db, _m| Ok(())), // compaction step: see below
        Box::new(|db, m| {
            add(db, m, 90..130, false)?;
            db.delete(&["k90"])?;
            m.remove("k90");
            Ok(())
        }),
    ];
    for (i, step) in steps.iter().enumerate() {
        let r =
            step(&db, &mut model).and_then(|()| if i == 2 { db.compact() } else { db.persist() });
        states.push(model.clone());
        if r.is_err() {
            return (states, acked);
        }
        acked += 1;
    }
    (states, acked)
}

fn read_model(db: &Database) -> Model {
    db.ids()
        .into_iter()
        .map(|id| {
            let r = db.get(&id).expect("get").expect("listed id present");
            (id, (bits(&r.vector), r.metadata))
        })
        .collect()
}

#[test]
fn every_failed_write_or_sync_leaves_a_committed_state() {
    let s = seed();
    // A dry run counts the mutating operations of the whole workload.
    let dry = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
    let (states, acked) = workload(dry.clone(), s);
    assert_eq!(acked, 4, "the workload completes without faults");
    let total_ops = dry.faults().ops();
    assert!(
        total_ops > 20,
        "workload too small to be interesting: {total_ops} ops"
    );
    let full = read_model(
        &Database::open_at(Arc::new(dry.crash_image(false)), options()).expect("reopen dry run"),
    );
    assert_eq!(full, states[4], "a clean run keeps everything");

    let mut outcomes = [0usize; 2];
    for n in 1..=total_ops {
        for keep_unsynced in [false, true] {
            let faults = Arc::new(FaultPlan::never());
            faults.fail_after(n);
            let loc = Arc::new(SimLocation::with_faults(faults.clone()));
            let (states, acked) = workload(loc.clone(), s);
            assert!(faults.has_failed(), "fault {n} never fired");
            let image = Arc::new(loc.crash_image(keep_unsynced));
            let db = Database::open_at(image, options())
                .unwrap_or_else(|e| panic!("fault at op {n} (keep_unsynced {keep_unsynced}): reopen failed: {e} (seed {s})"));
            let got = read_model(&db);
            let in_flight = states.get(acked + 1);
            if got == states[acked] {
                outcomes[0] += 1;
            } else if Some(&got) == in_flight {
                outcomes[1] += 1;
            } else {
                panic!(
                    "fault at op {n} (keep_unsynced {keep_unsynced}): state has {} ids, matches neither commit {acked} ({} ids) nor the one in flight (seed {s})",
                    got.len(),
                    states[acked].len()
                );
            }
            // The recovered database takes writes.
            db.add(&["after"], &vector(s, 999), &[])
                .expect("write after recovery");
            db.persist().expect("commit after recovery");
        }
    }
    eprintln!(
        "{total_ops} fault points x 2 crash images: {} recovered the last acknowledged commit, {} the commit in flight",
        outcomes[0], outcomes[1]
    );
}
