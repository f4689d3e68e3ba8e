//! A read-only open through the sandbox: the host takes the directory's shared lock while the
//! guest opens (WASI has no file locks) and preopens the directory read-only, so sandboxed
//! readers sit beside native ones, keep answering from their commit while a writer commits
//! beside them, refuse writers of either kind only while they open, answer as the native
//! engine does, refuse writes with the same `ReadOnly` error, and change no byte of the
//! directory.

mod common;
use common::component_config;
use srvdb::storage::fs::DirLock;
use srvdb::{Database, Error, LockHolder, OpenOptions, Store, Write};
use srvdb_host::Sandbox;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn listing(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| {
                    let path = e.expect("entry").path();
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    (path, bytes)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_sandboxed_reader_shares_the_lock_and_writes_nothing() {
    let sandbox = Sandbox::new(component_config()).expect("load the component");
    let dir = tempfile::tempdir().expect("tmp");
    {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
        Store::add(&db, &["a", "b", "c"], &[1.0, 0.0, 0.0, 1.0, 0.6, 0.8], &[]).expect("add");
        db.close().expect("close");
    }
    let before = listing(dir.path());
    let ro = OpenOptions::default().read_only();

    let sandboxed = sandbox
        .open(dir.path(), ro.clone())
        .expect("sandboxed reader");
    let native = Database::open(dir.path(), ro.clone()).expect("native reader beside it");
    // The scores are computed here, not taken from either engine: cosine of (0.9, 0.1) with
    // a = (1, 0), c = (0.6, 0.8), b = (0, 1).
    let q = [0.9f32, 0.1];
    let norm = (0.81f32 + 0.01).sqrt();
    let want = [
        ("a", 0.9 / norm),
        ("c", (0.54 + 0.08) / norm),
        ("b", 0.1 / norm),
    ];
    for (name, db) in [("sandboxed", &sandboxed as &dyn Store), ("native", &native)] {
        let hits = db.search(&q, 3).expect("search");
        let got: Vec<(&str, f32)> = hits.iter().map(|h| (h.id.as_str(), h.score)).collect();
        assert_eq!(got.len(), 3, "{name}");
        for ((id, score), (want_id, want_score)) in got.iter().zip(want) {
            assert_eq!(*id, want_id, "{name}");
            assert!((score - want_score).abs() < 1e-5, "{name}: {id} {score}");
        }
    }

    // Writes are refused with the same error as natively.
    let native_err = native
        .write(&Write::add(&["d"], &[1.0, 1.0]))
        .expect_err("native write");
    let sandboxed_err = sandboxed
        .write(&Write::add(&["d"], &[1.0, 1.0]))
        .expect_err("sandboxed write");
    assert!(
        matches!(sandboxed_err, Error::ReadOnly { .. }),
        "{sandboxed_err:?}"
    );
    assert_eq!(sandboxed_err.to_string(), native_err.to_string());
    assert!(matches!(sandboxed.compact(), Err(Error::ReadOnly { .. })));

    assert_eq!(
        listing(dir.path()),
        before,
        "a reader changed the directory"
    );

    // Readers hold the lock only while they open: a writer opens beside them, commits a row
    // that would lead their query, and compacts; both readers still answer from their commit.
    {
        let writer = Database::open(dir.path(), OpenOptions::default()).expect("writer beside");
        Store::add(&writer, &["d"], &[0.9, 0.1], &[]).expect("add");
        writer.persist().expect("commit");
        writer.compact().expect("compact");
        for (name, db) in [("sandboxed", &sandboxed as &dyn Store), ("native", &native)] {
            let hits = db.search(&q, 4).expect("search beside the writer");
            let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
            assert_eq!(ids, ["a", "c", "b"], "{name} beside the writer");
        }
        writer.close().expect("close writer");
    }
    sandboxed.close().expect("close sandboxed reader");
    drop(native);
    let fresh = sandbox
        .open(dir.path(), ro.clone())
        .expect("sandboxed reader after the writer");
    let ids: Vec<String> = fresh
        .search(&q, 4)
        .expect("search")
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(ids, ["d", "a", "c", "b"], "the new commit");

    // While a reader opens it holds the shared lock: writers of either kind are refused then,
    // and name the readers.
    let opening = DirLock::acquire_shared(dir.path()).expect("shared lock");
    for err in [
        Database::open(dir.path(), OpenOptions::default()).expect_err("native writer"),
        sandbox
            .open(dir.path(), OpenOptions::default())
            .expect_err("sandboxed writer"),
    ] {
        assert!(
            matches!(
                err,
                Error::Locked {
                    holder: LockHolder::Readers,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    drop(opening);
    fresh.close().expect("close");

    // A writer holds it: a sandboxed reader is refused, naming the writer.
    let writer = Database::open(dir.path(), OpenOptions::default()).expect("writer");
    let err = sandbox
        .open(dir.path(), ro.clone())
        .expect_err("reader beside a writer");
    assert!(
        matches!(
            err,
            Error::Locked {
                holder: LockHolder::Writer,
                ..
            }
        ),
        "{err:?}"
    );
    drop(writer);

    // A missing directory is neither created nor opened.
    let missing = dir.path().join("missing");
    let err = sandbox.open(&missing, ro).expect_err("missing");
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert!(!missing.exists());
}
