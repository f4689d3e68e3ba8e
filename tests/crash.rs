//! Crash consistency with real processes: a child ingests and commits in a loop and is
//! SIGKILLed at random moments. After every kill the database must reopen to exactly the last
//! acknowledged commit (or the one after it, if the kill landed between commit and
//! acknowledgement), bit for bit, and take new writes.
//!
//! The bug this guards against: rows appended but not committed (or committed before their
//! bytes were synced) showing up, or committed rows missing, after a crash.

mod common;
use common::{seed, tempdir, Rng};
use srvdb::{Database, OpenOptions, StorageKind, Store};

const DIM: usize = 32;
const BATCH: usize = 300;
const KILLS: usize = 24;

fn vector_of(id: usize) -> Vec<f32> {
    let mut rng = Rng::new((id as u64).wrapping_mul(0x9E37_79B9) ^ 0xC0FFEE);
    rng.vectors(1, DIM)
}

/// The ids live after `c` commits: batch b (1-based) adds b's ids and deletes one id of b-1.
fn live_after(c: usize) -> Vec<usize> {
    let deleted: std::collections::HashSet<usize> = (2..=c).map(|b| (b - 1) * BATCH - 3).collect();
    (0..c * BATCH).filter(|i| !deleted.contains(i)).collect()
}

fn options() -> OpenOptions {
    OpenOptions {
        auto_commit_rows: 0,
        storage: StorageKind::Mmap,
        ..OpenOptions::default()
    }
}

/// The child: continue from commit `start`, commit forever, acknowledge each commit.
fn child(dir: &str, start: usize) {
    let db = Database::open(dir, options()).expect("child open");
    let mut c = start;
    loop {
        c += 1;
        let ids: Vec<String> = ((c - 1) * BATCH..c * BATCH)
            .map(|i| format!("id-{i}"))
            .collect();
        let vectors: Vec<f32> = ((c - 1) * BATCH..c * BATCH).flat_map(vector_of).collect();
        db.add(&ids, &vectors, &[]).expect("child add");
        if c >= 2 {
            db.delete(&[format!("id-{}", (c - 1) * BATCH - 3)])
                .expect("child delete");
        }
        db.persist().expect("child persist");
        println!("committed {c}");
    }
}

fn state_matches(db: &Database, c: usize) -> Result<(), String> {
    let want = live_after(c);
    if db.count() as usize != want.len() {
        return Err(format!(
            "count {} != {} for commit {c}",
            db.count(),
            want.len()
        ));
    }
    for &i in &want {
        let rec = db
            .get(&format!("id-{i}"))
            .map_err(|e| e.to_string())?
            .ok_or(format!("id-{i} missing"))?;
        let bits: Vec<u32> = rec.vector.iter().map(|x| x.to_bits()).collect();
        let want_bits: Vec<u32> = vector_of(i).iter().map(|x| x.to_bits()).collect();
        if bits != want_bits {
            return Err(format!("id-{i} differs"));
        }
    }
    Ok(())
}

#[test]
fn sigkill_at_random_moments_keeps_exactly_the_committed_rows() {
    if let Ok(dir) = std::env::var("SRVDB_CRASH_CHILD") {
        let start = std::env::var("SRVDB_CRASH_START")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        child(&dir, start);
        return;
    }
    let dir = tempdir();
    let dir_str = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut rng = Rng::new(seed());
    let mut committed = 0usize;
    let mut mid_commit_kills = 0;
    for kill in 0..KILLS {
        let acked = common::run_and_kill(
            "sigkill_at_random_moments_keeps_exactly_the_committed_rows",
            &[
                ("SRVDB_CRASH_CHILD", dir_str.clone()),
                ("SRVDB_CRASH_START", committed.to_string()),
            ],
            committed,
            &mut rng,
            15_000,
        );

        let db = Database::open(dir.path(), options())
            .unwrap_or_else(|e| panic!("kill {kill}: reopen failed: {e}"));
        let now = if state_matches(&db, acked).is_ok() {
            acked
        } else {
            match state_matches(&db, acked + 1) {
                Ok(()) => {
                    mid_commit_kills += 1;
                    acked + 1
                }
                Err(e) => panic!(
                    "kill {kill}: state is neither commit {acked} nor {} ({e}); seed {}",
                    acked + 1,
                    seed()
                ),
            }
        };
        committed = now;
        drop(db);
    }
    eprintln!("{KILLS} kills, {committed} commits survived, {mid_commit_kills} kills between commit and acknowledgement");
    assert!(committed > 0, "the child never committed");
    // The database still takes writes.
    let db = Database::open(dir.path(), options()).expect("final open");
    db.add(&["after-crashes"], &vector_of(0), &[])
        .expect("write after crashes");
    db.persist().expect("persist");
    assert!(db.contains("after-crashes"));
}
