//! Reads during compaction. `compact()` renumbers the rows: a `get` or `documents` call that
//! runs meanwhile must pair an id with its own vector, metadata and document, never with a
//! record that held the same row number in the other numbering, and never miss a live id.
//! The reference is what the test itself wrote for each id.

mod common;
use common::{seed, tempdir, write_documents, Rng};
use srvdb::{Database, Metadata, OpenOptions, StorageKind, Store};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const DIM: usize = 8;
const ROWS: usize = 40_000;

fn vector_of(i: usize) -> Vec<f32> {
    let mut rng = Rng::new((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0_FFEE);
    rng.vectors(1, DIM)
}

fn meta_of(i: usize) -> Metadata {
    Metadata::Json(format!("{{\"id\":\"r{i}\"}}"))
}

fn doc_of(i: usize) -> String {
    format!("document of r{i}")
}

/// Counts of what the readers saw.
#[derive(Default)]
struct Seen {
    calls: AtomicU64,
    wrong: AtomicU64,
}

/// `rounds` compactions in a row (each after deleting more rows) while `readers` threads call
/// `get` and `documents` on ids that stay live throughout.
fn race(storage: StorageKind, readers: usize, rounds: usize) {
    let dir = tempdir();
    let opts = OpenOptions {
        storage,
        dimension: Some(DIM as u32),
        ..OpenOptions::default()
    };
    let db = Arc::new(Database::open(dir.path(), opts).expect("open"));
    let ids: Vec<String> = (0..ROWS).map(|i| format!("r{i}")).collect();
    let vectors: Vec<f32> = (0..ROWS).flat_map(vector_of).collect();
    let metas: Vec<Option<Metadata>> = (0..ROWS).map(|i| Some(meta_of(i))).collect();
    let docs: Vec<Option<String>> = (0..ROWS).map(|i| Some(doc_of(i))).collect();
    write_documents(&*db, srvdb::WriteMode::Add, &ids, &vectors, &metas, &docs).expect("add");
    // Every other row is deleted now; of the rest, every fourth goes before each later round.
    // Ids divisible by 4 are never deleted: those are the ones the readers ask for.
    let odd: Vec<&String> = ids.iter().skip(1).step_by(2).collect();
    db.delete(&odd).expect("delete");
    db.persist().expect("persist");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let workers: Vec<_> = (0..readers)
        .map(|t| {
            let (db, stop, seen) = (db.clone(), stop.clone(), seen.clone());
            let mut rng = Rng::new(seed() ^ t as u64);
            std::thread::spawn(move || {
                let mut first_wrong = None;
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.below((ROWS / 4) as u64) as usize * 4;
                    let id = format!("r{i}");
                    let ok = match db.get(&id) {
                        Ok(Some(r)) => {
                            r.id == id
                                && r.vector == vector_of(i)
                                && r.metadata == Some(meta_of(i))
                                && r.document.as_deref() == Some(doc_of(i).as_str())
                        }
                        _ => false,
                    };
                    // Two ids at once: a hit list's documents are read this way.
                    let j = (i + 8) % ROWS;
                    let ok = ok
                        && match db.documents(&[id.as_str(), &format!("r{j}")]) {
                            Ok(d) => d == vec![Some(doc_of(i)), Some(doc_of(j))],
                            Err(_) => false,
                        };
                    seen.calls.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        seen.wrong.fetch_add(1, Ordering::Relaxed);
                        first_wrong.get_or_insert(id);
                    }
                }
                first_wrong
            })
        })
        .collect();

    while seen.calls.load(Ordering::Relaxed) < 100 {
        std::thread::yield_now();
    }
    for round in 0..rounds {
        if round > 0 {
            // Ids 2 mod 4 that are still live: delete a quarter of them.
            let more: Vec<String> = (0..ROWS)
                .filter(|i| i % 4 == 2 && (i / 4) % rounds == round)
                .map(|i| format!("r{i}"))
                .collect();
            db.delete(&more).expect("delete before compaction");
        }
        db.compact().expect("compact");
    }
    // Let the readers also run against the final state for a moment.
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let firsts: Vec<_> = workers
        .into_iter()
        .map(|w| w.join().expect("reader panicked"))
        .collect();
    let (calls, wrong) = (
        seen.calls.load(Ordering::Relaxed),
        seen.wrong.load(Ordering::Relaxed),
    );
    assert!(calls > 0, "the readers never ran");
    assert_eq!(
        wrong, 0,
        "{wrong} of {calls} reads during {rounds} compactions ({storage:?}) returned a missing or \
         wrong record; first: {firsts:?}"
    );
    // And the result is right: every id divisible by 4 is there, odd ids are gone.
    assert!(db.get("r1").expect("get").is_none());
    assert_eq!(
        db.get("r40").expect("get").map(|r| r.metadata),
        Some(Some(meta_of(40)))
    );
    // Each compaction moved the file the readers mapped aside and removed it once the new
    // rows had its name. Only Windows keeps it while a reader maps it.
    if !cfg!(windows) {
        assert!(
            !dir.path().join("vectors.bin.old").exists(),
            "vectors.bin.old outlived the compaction ({storage:?})"
        );
    }
}

#[test]
fn get_during_compaction_mmap() {
    race(StorageKind::Mmap, 2, 1);
}

#[test]
fn get_during_two_compactions_in_a_row_mmap() {
    race(StorageKind::Mmap, 2, 2);
}

#[test]
fn get_during_compaction_file() {
    race(StorageKind::File, 2, 2);
}

/// A `vectors.bin.old` left behind (where a reader still mapped it, on Windows, or by a crash
/// right after the compaction's renames) is never read: the next compaction removes it before
/// it moves the current file aside, and open removes it too. Every answer is the one written.
#[test]
fn a_leftover_replaced_rows_file_is_removed_and_never_read() {
    let dir = tempdir();
    let leftover = dir.path().join("vectors.bin.old");
    let opts = || OpenOptions {
        storage: StorageKind::Mmap,
        dimension: Some(DIM as u32),
        ..OpenOptions::default()
    };
    let n = 64;
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let vectors: Vec<f32> = (0..n).flat_map(vector_of).collect();
    let check = |db: &Database, live: &dyn Fn(usize) -> bool, when: &str| {
        for i in 0..n {
            let got = db.get(&format!("r{i}")).expect("get").map(|r| r.vector);
            let want = live(i).then(|| vector_of(i));
            assert_eq!(got, want, "r{i} {when}");
        }
    };
    {
        let db = Database::open(dir.path(), opts()).expect("open");
        db.add(&ids, &vectors, &[]).expect("add");
        let odd: Vec<&String> = ids.iter().skip(1).step_by(2).collect();
        db.delete(&odd).expect("delete");
        db.persist().expect("persist");
        std::fs::write(&leftover, b"not rows").expect("plant a leftover");
        db.compact().expect("compact over a leftover");
        assert!(!leftover.exists(), "compaction left vectors.bin.old");
        check(&db, &|i| i % 2 == 0, "after the compaction");
    }
    std::fs::write(&leftover, b"not rows").expect("plant a leftover");
    let db = Database::open(dir.path(), opts()).expect("reopen over a leftover");
    assert!(!leftover.exists(), "open left vectors.bin.old");
    check(&db, &|i| i % 2 == 0, "after reopening");
}
