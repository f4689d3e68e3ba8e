//! Damaged, foreign, truncated or missing files give a typed `Corrupt` error that names the
//! file: never a panic, never a silently wrong answer.

mod common;
use common::{ids, seed, tempdir, Rng};
use srvdb::{Database, Error, OpenOptions, StorageKind};
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
