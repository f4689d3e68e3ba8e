//! Damaged, foreign, truncated or missing files give a typed `Corrupt` error that names the
//! file: never a panic, never a silently wrong answer.

mod common;
use common::{ids, seed, tempdir, Rng};
use srvdb::{Database, Error, OpenOptions, StorageKind, Store};
use std::path::Path;

fn make_db(dir: &Path) {
    let mut rng = Rng::new(seed());
    let db = Database::open(dir, OpenOptions::default()).expect("create");
    db.add(&ids(0..100), &rng.vectors(100, 20), &[])
        .expect("add");
    db.persist().expect("persist");
}

fn expect_corrupt(dir: &Path, file: &str, what: &str) {
    for kind in [StorageKind::Mmap, StorageKind::File] {
        let result = std::panic::catch_unwind(|| {
            Database::open(dir, OpenOptions::default().with_storage(kind)).map(|_| ())
        });
        match result {
            Err(_) => panic!("{what} ({kind:?}): open panicked"),
            Ok(Ok(())) => panic!("{what} ({kind:?}): opened a damaged database"),
            Ok(Err(Error::Corrupt { file: f, reason })) => {
                assert!(
                    f.ends_with(file),
                    "{what}: error names {} not {file}",
                    f.display()
                );
                eprintln!("{what} ({kind:?}): Corrupt: {reason}");
            }
            Ok(Err(other)) => panic!("{what} ({kind:?}): expected Corrupt, got {other}"),
        }
    }
}

fn patch(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).expect("read");
    f(&mut bytes);
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn truncated_vectors_file() {
    let dir = tempdir();
    make_db(dir.path());
    patch(&dir.path().join("vectors.bin"), |b| {
        b.truncate(b.len() - 100)
    });
    expect_corrupt(dir.path(), "vectors.bin", "rows cut after their commit");
    patch(&dir.path().join("vectors.bin"), |b| b.truncate(30));
    expect_corrupt(dir.path(), "vectors.bin", "header cut short");
    patch(&dir.path().join("vectors.bin"), |b| b.clear());
    expect_corrupt(dir.path(), "vectors.bin", "empty vectors.bin");
}

#[test]
fn garbled_header_bytes() {
    for byte in [0usize, 5, 9, 13, 16, 17, 21, 29] {
        let dir = tempdir();
        make_db(dir.path());
        patch(&dir.path().join("vectors.bin"), |b| b[byte] ^= 0x5A);
        expect_corrupt(
            dir.path(),
            "vectors.bin",
            &format!("flipped header byte {byte}"),
        );
    }
}

#[test]
fn future_format_version() {
    let dir = tempdir();
    make_db(dir.path());
    // A valid header from a newer release: version 2 with a correct checksum.
    patch(&dir.path().join("vectors.bin"), |b| {
        b[8] = 2;
        let mut h: u32 = 0x811c_9dc5;
        for &x in &b[0..28] {
            h ^= u32::from(x);
            h = h.wrapping_mul(0x0100_0193);
        }
        b[28..32].copy_from_slice(&h.to_le_bytes());
    });
    expect_corrupt(dir.path(), "vectors.bin", "format version 2");
}

#[test]
fn foreign_files() {
    let dir = tempdir();
    make_db(dir.path());
    std::fs::write(
        dir.path().join("vectors.bin"),
        b"%PDF-1.7 this is not a vector file at all, honest....................",
    )
    .expect("w");
    expect_corrupt(dir.path(), "vectors.bin", "foreign vectors.bin");

    let dir = tempdir();
    make_db(dir.path());
    std::fs::write(dir.path().join("metadata.db"), vec![0x42u8; 8192]).expect("w");
    expect_corrupt(dir.path(), "metadata.db", "foreign metadata.db");

    let dir = tempdir();
    make_db(dir.path());
    std::fs::write(dir.path().join("metadata.db"), b"").expect("w");
    expect_corrupt(dir.path(), "metadata.db", "empty metadata.db");
}

#[test]
fn missing_metadata_store() {
    let dir = tempdir();
    make_db(dir.path());
    std::fs::remove_file(dir.path().join("metadata.db")).expect("rm");
    expect_corrupt(dir.path(), "metadata.db", "metadata.db deleted");
}

#[test]
fn missing_vectors_file() {
    let dir = tempdir();
    make_db(dir.path());
    std::fs::remove_file(dir.path().join("vectors.bin")).expect("rm");
    expect_corrupt(dir.path(), "vectors.bin", "vectors.bin deleted");
}

#[test]
fn header_from_another_database() {
    // A vectors.bin whose header disagrees with metadata.db (dim 20 vs 8).
    let (a, b) = (tempdir(), tempdir());
    make_db(a.path());
    {
        let db = Database::open(b.path(), OpenOptions::default()).expect("b");
        db.add(&ids(0..300), &Rng::new(1).vectors(300, 8), &[])
            .expect("add");
    }
    std::fs::copy(b.path().join("vectors.bin"), a.path().join("vectors.bin")).expect("cp");
    expect_corrupt(a.path(), "vectors.bin", "vectors.bin from another database");
}

#[test]
fn path_that_is_a_file_is_refused() {
    let dir = tempdir();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").expect("w");
    assert!(matches!(
        Database::open(&file, OpenOptions::default()),
        Err(Error::InvalidInput { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Configuration values in a well-formed metadata.db (issue 13, defect 5). redb's own checksums
// pass: only the values are wrong, written with the redb API as a damaged or foreign writer
// would. Each must be `Corrupt` naming metadata.db and the key, before anything is allocated
// from it, and without touching vectors.bin.

const CONFIG: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("config");

/// Sets (or with `None` removes) `key` in the `config` table of the closed database in `dir`.
fn set_config(dir: &Path, key: &str, value: Option<u64>) {
    let db = redb::Database::open(dir.join("metadata.db")).expect("open metadata.db with redb");
    let txn = db.begin_write().expect("begin_write");
    {
        let mut config = txn.open_table(CONFIG).expect("config table");
        match value {
            Some(v) => {
                config.insert(key, v).expect("insert");
            }
            None => {
                config.remove(key).expect("remove");
            }
        }
    }
    txn.commit().expect("commit");
}

/// A call `probe` makes, and what it returned.
type ProbeCall<'a> = Box<dyn Fn() -> String + 'a>;

/// What a handle opened on a bad value does next: a few calls, each with its result or panic.
fn probe(db: &Database) -> String {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let dim = db.dimension().unwrap_or(0) as usize;
    let v = vec![0.5f32; dim];
    let calls: [(&str, ProbeCall<'_>); 4] = [
        ("dimension()", Box::new(|| format!("{:?}", db.dimension()))),
        ("metric()", Box::new(|| format!("{:?}", db.metric()))),
        (
            "search(one vector, 3)",
            Box::new(|| format!("{:?}", db.search(&v, 3).map(|h| h.len()))),
        ),
        (
            "add([probe], one vector)",
            Box::new(|| format!("{:?}", db.add(&["probe"], &v, &[]).map(|()| "ok"))),
        ),
    ];
    calls
        .iter()
        .map(|(name, call)| match catch_unwind(AssertUnwindSafe(call)) {
            Ok(r) => format!("{name} -> {r}"),
            Err(p) => format!(
                "{name} -> PANIC {}",
                p.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Opening `dir` (both backends) must be `Corrupt` naming metadata.db and `key`, and must leave
/// vectors.bin as it was; `Err` says what happened instead.
fn check_bad_config(dir: &Path, key: &str, what: &str) -> Result<(), String> {
    let vectors = std::fs::read(dir.join("vectors.bin")).ok();
    for kind in [StorageKind::Mmap, StorageKind::File] {
        let result = std::panic::catch_unwind(|| {
            Database::open(dir, OpenOptions::default().with_storage(kind))
        });
        match result {
            Err(_) => return Err(format!("{what} ({kind:?}): open panicked")),
            Ok(Ok(db)) => {
                return Err(format!(
                    "{what} ({kind:?}): opened a database with a bad `{key}`; then {}",
                    probe(&db)
                ))
            }
            Ok(Err(Error::Corrupt { file, reason })) => {
                if !file.ends_with("metadata.db") {
                    return Err(format!(
                        "{what} ({kind:?}): error names {} ({reason}), not metadata.db",
                        file.display()
                    ));
                }
                if !reason.contains(key) {
                    return Err(format!(
                        "{what} ({kind:?}): reason does not name `{key}`: {reason}"
                    ));
                }
                eprintln!("{what} ({kind:?}): Corrupt: {reason}");
            }
            Ok(Err(other)) => {
                return Err(format!("{what} ({kind:?}): expected Corrupt, got {other}"))
            }
        }
        if std::fs::read(dir.join("vectors.bin")).ok() != vectors {
            return Err(format!(
                "{what} ({kind:?}): a refused open changed vectors.bin"
            ));
        }
    }
    Ok(())
}

fn expect_bad_config(dir: &Path, key: &str, what: &str) {
    if let Err(e) = check_bad_config(dir, key, what) {
        panic!("{e}");
    }
}

/// Runs every case (each builds its own directory) and reports all that fail, not the first.
fn expect_bad_configs(cases: Vec<(tempfile::TempDir, &str, String)>) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(dir, key, what)| check_bad_config(dir.path(), key, what).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A committed row count far past what the store holds (2^40) used to size the row -> id table
/// before any cross-check: `vec![None; 2^40]` aborts the process.
#[test]
fn huge_committed_row_count_is_refused_before_allocating() {
    let dir = tempdir();
    make_db(dir.path());
    set_config(dir.path(), "committed_rows", Some(1 << 40));
    expect_bad_config(dir.path(), "committed_rows", "committed_rows = 2^40");
}

/// committed_rows must equal the number of rows with an id: one more used to be blamed on
/// vectors.bin ("rows were lost after their commit"), one fewer is a row past the count.
#[test]
fn committed_rows_must_match_the_row_table() {
    let cases = [101, 99, 0]
        .into_iter()
        .map(|rows| {
            let dir = tempdir();
            make_db(dir.path());
            set_config(dir.path(), "committed_rows", Some(rows));
            let what = format!("committed_rows = {rows} with 100 ids");
            (dir, "committed_rows", what)
        })
        .collect();
    expect_bad_configs(cases);
}

/// Dimension 0 (with no rows yet, so no vectors.bin header to disagree) used to open, and the
/// first add divided by zero.
#[test]
fn dimension_out_of_range_is_refused() {
    let mut cases = Vec::new();
    for (dim, what) in [
        (0, "dimension 0"),
        (
            u64::from(srvdb::types::MAX_DIMENSION) + 1,
            "dimension MAX+1",
        ),
        ((1 << 32) + 20, "dimension 2^32 + 20 (20 once cut to u32)"),
    ] {
        for keep_vectors in [true, false] {
            let dir = tempdir();
            drop(
                Database::open(dir.path(), OpenOptions::default().with_dimension(20))
                    .expect("create"),
            );
            set_config(dir.path(), "dimension", Some(dim));
            if !keep_vectors {
                std::fs::remove_file(dir.path().join("vectors.bin")).expect("rm");
            }
            let what = format!("{what}, vectors.bin kept: {keep_vectors}");
            cases.push((dir, "dimension", what));
        }
    }
    expect_bad_configs(cases);
}

/// A metric code is a byte in the header but a u64 in metadata.db: 257 used to be read `as u8`
/// (1, cosine) and open silently.
#[test]
fn metric_code_out_of_range_is_refused() {
    let cases = [257u64, 9, 0]
        .into_iter()
        .map(|code| {
            let dir = tempdir();
            make_db(dir.path()); // cosine, code 1
            set_config(dir.path(), "metric", Some(code));
            (dir, "metric", format!("metric code {code}"))
        })
        .collect();
    expect_bad_configs(cases);
}

/// The dimension and the metric are recorded together; rows without them used to make open
/// delete vectors.bin as a never-committed first batch.
#[test]
fn rows_without_dimension_or_metric_are_refused() {
    let cases = ["dimension", "metric"]
        .into_iter()
        .map(|key| {
            let dir = tempdir();
            make_db(dir.path());
            set_config(dir.path(), key, None);
            (dir, key, format!("{key} missing, 100 rows"))
        })
        .collect();
    expect_bad_configs(cases);
}

#[test]
fn other_config_values_are_range_checked() {
    let cases: [(&str, Option<u64>, &str); 4] = [
        (
            "format_version",
            Some(2),
            "format_version 2 (a newer release)",
        ),
        ("format_version", None, "format_version missing"),
        ("compaction_pending", Some(7), "compaction_pending 7"),
        (
            "embedder_dimension",
            Some(21),
            "embedder_dimension 21 for dimension 20",
        ),
    ];
    let mut dirs = Vec::new();
    for (key, value, what) in cases {
        let dir = tempdir();
        if key == "embedder_dimension" {
            let spec = srvdb::EmbedderSpec {
                name: "model-x".into(),
                dimension: 20,
            };
            let db = Database::open(dir.path(), OpenOptions::default().with_embedder(spec))
                .expect("create");
            db.add(&ids(0..10), &Rng::new(seed()).vectors(10, 20), &[])
                .expect("add");
            db.close().expect("close");
        } else {
            make_db(dir.path());
        }
        set_config(dir.path(), key, value);
        dirs.push((dir, key, what.to_owned()));
    }
    expect_bad_configs(dirs);
}

/// Changes the `u64`-keyed table `name` of the closed database in `dir` with `edit`, in one
/// redb transaction, as a damaged or foreign writer would.
fn edit_table<V: redb::Value + 'static>(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut redb::Table<'_, u64, V>),
) {
    let db = redb::Database::open(dir.join("metadata.db")).expect("open metadata.db with redb");
    let txn = db.begin_write().expect("begin_write");
    {
        let def: redb::TableDefinition<u64, V> = redb::TableDefinition::new(name);
        edit(&mut txn.open_table(def).expect(name));
    }
    txn.commit().expect("commit");
}

/// A tombstone past the committed rows.
#[test]
fn tombstone_past_the_rows_is_refused() {
    let dir = tempdir();
    make_db(dir.path());
    edit_table::<()>(dir.path(), "tombstones", |t| {
        t.insert(100, ()).expect("insert");
    });
    expect_bad_config(dir.path(), "tombstone", "tombstone for row 100 of 100");
}

/// Two live rows under one id: `get` could answer either, so open refuses the file.
#[test]
fn one_id_live_in_two_rows_is_refused() {
    let dir = tempdir();
    make_db(dir.path());
    edit_table::<&str>(dir.path(), "row_to_id", |t| {
        t.insert(5, "id-6").expect("insert");
    });
    expect_bad_config(dir.path(), "id-6", "id live in two rows");
}

/// The same id in a tombstoned row and a live one is an upsert's ordinary state: it opens, and
/// the id names the live row.
#[test]
fn one_id_in_a_tombstoned_and_a_live_row_opens() {
    let dir = tempdir();
    {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("create");
        db.add(&ids(0..3), &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[])
            .expect("add");
        db.upsert(&["id-1"], &[-1.0, 0.0], &[]).expect("upsert");
        db.persist().expect("persist");
    }
    let db = Database::open(dir.path(), OpenOptions::default()).expect("reopen");
    let got = db.get("id-1").expect("get").expect("id-1 is live");
    assert_eq!(got.vector, vec![-1.0, 0.0]);
    assert_eq!(db.ids(), vec!["id-0", "id-2", "id-1"]);
}

/// A row past the committed rows with an id (and one row without).
#[test]
fn row_id_past_the_rows_is_refused() {
    let dir = tempdir();
    make_db(dir.path());
    edit_table::<&str>(dir.path(), "row_to_id", |t| {
        t.remove(7).expect("remove");
        t.insert(100, "id-7").expect("insert");
    });
    expect_bad_config(dir.path(), "row_to_id", "row id past the rows");
}

// ---------------------------------------------------------------------------------------------
// vectors.bin truncated by another process while an mmap handle is open (issue 13, defect 12).
// Reading a mapped page past the end of the file raises SIGBUS, which kills the process. The
// mmap backend checks the file's length wherever it maps, appends, syncs or closes, and readers
// check before each search or get (a typed `Corrupt`); a truncation between that check and the
// read is the documented limit.

const DIM: usize = 20;
/// Bytes of a row of dimension 20 (20 floats + the norm, padded to 64 bytes).
const STRIDE: u64 = 128;

/// An mmap database with 100 committed rows of dimension 20 (ids `id-0`..`id-99`).
fn mmap_db(dir: &Path) -> Database {
    db_on(dir, StorageKind::Mmap)
}

fn db_on(dir: &Path, kind: StorageKind) -> Database {
    let db = Database::open(dir, OpenOptions::default().with_storage(kind)).expect("open");
    db.add(&ids(0..100), &Rng::new(seed()).vectors(100, DIM), &[])
        .expect("add");
    db.persist().expect("persist");
    db
}

/// Cuts vectors.bin to its header and 10 rows through a separate handle, as another process
/// would. False where the OS refuses to cut a mapped file (Windows: ERROR_USER_MAPPED_FILE),
/// so the hazard these tests cover cannot arise there.
fn truncate_behind_the_handle(dir: &Path) -> bool {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("vectors.bin"))
        .expect("open vectors.bin");
    match f.set_len(64 + 10 * STRIDE) {
        Ok(()) => true,
        Err(e) if cfg!(windows) && e.raw_os_error() == Some(1224) => {
            eprintln!("SKIP: this OS refuses to cut a mapped file ({e})");
            false
        }
        Err(e) => panic!("truncate: {e}"),
    }
}

fn assert_corrupt_vectors<T: std::fmt::Debug>(r: srvdb::Result<T>, what: &str) {
    match r {
        Err(Error::Corrupt { file, reason }) if file.ends_with("vectors.bin") => {
            eprintln!("{what}: Corrupt: {reason}");
        }
        other => panic!("{what}: expected Corrupt naming vectors.bin, got {other:?}"),
    }
}

/// The next append notices. Before: the write re-extended the file with a hole, so rows
/// 10..99 silently became zero vectors, and the next commit made that durable.
#[test]
fn append_after_truncation_is_corrupt() {
    for kind in [StorageKind::Mmap, StorageKind::File] {
        append_after_truncation_is_corrupt_on(kind);
    }
}

fn append_after_truncation_is_corrupt_on(kind: StorageKind) {
    let dir = tempdir();
    let db = db_on(dir.path(), kind);
    if !truncate_behind_the_handle(dir.path()) {
        return;
    }
    let added = db.add(&ids(100..105), &Rng::new(7).vectors(5, DIM), &[]);
    if added.is_ok() {
        let persisted = db.persist();
        let zero = db
            .get("id-50")
            .ok()
            .flatten()
            .is_some_and(|r| r.vector.iter().all(|&x| x == 0.0));
        panic!(
            "{kind:?}: add after truncation: Ok; persist: {persisted:?}; id-50 reads all zeros: {zero}"
        );
    }
    assert_corrupt_vectors(added, "add after truncation");
    assert!(
        matches!(db.persist(), Err(Error::Poisoned { .. })),
        "the failed append must poison the handle"
    );
}

/// A commit notices before it records anything. Before: the delete was committed over a file
/// that had lost 90 committed rows.
#[test]
fn commit_after_truncation_is_corrupt() {
    for kind in [StorageKind::Mmap, StorageKind::File] {
        let dir = tempdir();
        let db = db_on(dir.path(), kind);
        if !truncate_behind_the_handle(dir.path()) {
            continue;
        }
        db.delete(&["id-3"]).expect("delete (in memory)");
        assert_corrupt_vectors(db.persist(), &format!("{kind:?}: persist after truncation"));
    }
}

/// Closing must not hide the damage. Before: the close-time trim of the preallocated tail
/// `set_len` the file back to 100 rows, zero-filled, so the next open succeeded and 90 ids
/// read zero vectors.
#[test]
fn close_after_truncation_leaves_it_detectable() {
    let dir = tempdir();
    let db = mmap_db(dir.path());
    if !truncate_behind_the_handle(dir.path()) {
        return;
    }
    drop(db);
    let len = std::fs::metadata(dir.path().join("vectors.bin"))
        .expect("stat")
        .len();
    assert_eq!(
        len,
        64 + 10 * STRIDE,
        "close changed the length of the truncated file"
    );
    for kind in [StorageKind::Mmap, StorageKind::File] {
        assert_corrupt_vectors(
            Database::open(dir.path(), OpenOptions::default().with_storage(kind)),
            &format!("reopen after truncation ({kind:?})"),
        );
    }
}

/// Readers check too: a search, batch search or get on a view published before the truncation
/// returns `Corrupt` instead of reading the lost pages (which raises SIGBUS and kills the
/// process). Run in a child process (this test binary again, with `SRVDB_TRUNCATE_CHILD=1`), so
/// a regression shows up as the child dying of SIGBUS, not as this test binary dying. Before
/// the per-read check, the child died of SIGBUS on the search. What remains is a truncation
/// between the check and the read (module doc of `storage/mmap.rs`).
#[cfg(target_os = "linux")]
#[test]
fn reads_after_truncation_are_corrupt_not_sigbus() {
    const NAME: &str = "reads_after_truncation_are_corrupt_not_sigbus";
    if std::env::var_os("SRVDB_TRUNCATE_CHILD").is_some() {
        let dir = tempdir();
        let db = mmap_db(dir.path());
        assert!(
            truncate_behind_the_handle(dir.path()),
            "Linux cuts a mapped file"
        );
        assert_corrupt_vectors(db.search(&[0.5; DIM], 5), "search after truncation");
        assert_corrupt_vectors(
            db.search_batch(&[0.5; DIM * 3], 5),
            "search_batch after truncation",
        );
        assert_corrupt_vectors(db.get("id-50"), "get after truncation");
        println!("child: all three reads were Corrupt");
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new(std::env::current_exe().expect("current_exe"))
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env("SRVDB_TRUNCATE_CHILD", "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all three reads were Corrupt"),
        "the child ended with {:?} (signal {:?}): {stdout}{}",
        out.status,
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The fuzz harnesses (fuzz/src/lib.rs, run by cargo-fuzz with `make fuzz`), replayed here on
// their seed corpora and on every input that ever failed, so a regression fails plain
// `cargo test` without cargo-fuzz.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_harness;

fn fuzz_inputs(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("read input");
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

fn replay(target: &str, harness: fn(&[u8])) {
    let inputs = fuzz_inputs(target);
    assert!(
        !inputs.is_empty(),
        "no inputs for fuzz target {target}: fuzz/corpus/{target} is empty"
    );
    for (path, bytes) in inputs {
        let r = std::panic::catch_unwind(|| harness(&bytes));
        assert!(
            r.is_ok(),
            "fuzz target {target} fails on {}",
            path.display()
        );
    }
}

#[test]
fn fuzz_replay_open_vectors() {
    replay("open_vectors", fuzz_harness::open_vectors);
}

#[test]
fn fuzz_replay_open_metadata() {
    replay("open_metadata", fuzz_harness::open_metadata);
}

#[test]
fn fuzz_replay_ops() {
    replay("ops", fuzz_harness::ops);
}

/// Writes the seeds built from a real database (`fuzz/corpus/*/seed-*`). Run after a format
/// change: `cargo test --release -p srvdb --test corruption -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand after a format change"]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    };
    write(
        "open_vectors",
        "seed-vectors-bin",
        &fuzz_harness::template_vectors(),
    );
    write(
        "open_metadata",
        "seed-metadata-db",
        &fuzz_harness::template_metadata_input(),
    );
}

/// Inputs on which a dependency, not SrvDB's own code, fails (fuzz/known-failures/<target>/):
/// redb 4.6 panics (`unreachable!()` in `BtreeMut::get_helper`, from `Database::create`) on the
/// damaged metadata.db of `open_metadata/redb-unreachable-page-type` (a mode byte, then the
/// file). `srvdb::meta::open_redb` opens redb, on any location, through
/// `srvdb::meta::open_guarded`, which turns that panic into `Corrupt`.
#[test]
fn known_failure_redb_panics_on_a_damaged_metadata_db() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/known-failures/open_metadata");
    let input = std::fs::read(root.join("redb-unreachable-page-type")).expect("read input");
    let dir = tempdir();
    make_db(dir.path());
    std::fs::write(dir.path().join("metadata.db"), &input[1..]).expect("write metadata.db");
    expect_corrupt(
        dir.path(),
        "metadata.db",
        "metadata.db on which redb panics",
    );
}

/// `vectors.bin` gone while `metadata.db` committed rows, with a compaction's files beside it
/// (a rename lost to a power cut where directories are not synced, or an outside tool): open
/// reports the damage and removes neither copy, so the user can still restore from them.
#[test]
fn missing_vectors_bin_is_reported_and_the_copies_beside_it_kept() {
    let dir = tempdir();
    make_db(dir.path());
    let old = dir.path().join("vectors.bin.old");
    let compact = dir.path().join("vectors.bin.compact");
    std::fs::rename(dir.path().join("vectors.bin"), &old).expect("move vectors.bin aside");
    let old_bytes = std::fs::read(&old).expect("read vectors.bin.old");
    std::fs::write(&compact, &old_bytes).expect("write vectors.bin.compact");
    expect_corrupt(
        dir.path(),
        "vectors.bin",
        "vectors.bin missing, vectors.bin.old and .compact beside it",
    );
    assert_eq!(
        std::fs::read(&old).ok(),
        Some(old_bytes.clone()),
        "vectors.bin.old"
    );
    assert_eq!(
        std::fs::read(&compact).ok(),
        Some(old_bytes),
        "vectors.bin.compact"
    );
    assert!(
        !dir.path().join("vectors.bin").exists(),
        "vectors.bin made up"
    );
}
