//! Errors keep their shape across the sandbox: each situation is produced once natively and
//! once through the component, on the same directory, and both must give the same
//! `srvdb::Error` case, the same fields and the same message. Before, five WIT cases carried
//! the guest's whole message, which the host wrapped again ("I/O error while the sandboxed
//! engine: I/O error while ..."), paths came back as the guest's `/db/...`, and a memory-cap
//! trap was recognised by searching its text for "memory".

mod common;
use common::component_config;
use srvdb::{Database, Delete, Error, OpenOptions, SandboxFailure, Store, Write};
use srvdb_host::Sandbox;
use std::path::Path;

fn sandbox() -> Sandbox {
    Sandbox::new(component_config()).expect("load the component")
}

/// Runs `op` on the native engine, then through the sandbox, on the same directory (each
/// handle closed before the other opens it), and returns both errors.
/// A call that must fail, on either engine.
type Op<'a> = &'a dyn Fn(&dyn Store) -> srvdb::Result<()>;

fn both(dir: &Path, op: Op<'_>) -> (Error, Error) {
    let native = {
        let db = Database::open(dir, OpenOptions::default()).expect("native open");
        let err = op(&db).expect_err("native: the call must fail");
        db.close().expect("native close");
        err
    };
    let sandboxed = {
        let db = sandbox()
            .open(dir, OpenOptions::default())
            .expect("sandboxed open");
        let err = op(&db).expect_err("sandboxed: the call must fail");
        db.close().expect("sandboxed close");
        err
    };
    (native, sandboxed)
}

/// The same case (compared through `Debug`, which shows every field) and the same message.
fn assert_same(native: &Error, sandboxed: &Error) {
    assert_eq!(
        format!("{sandboxed:?}"),
        format!("{native:?}"),
        "sandboxed error fields differ from the native engine's"
    );
    assert_eq!(sandboxed.to_string(), native.to_string());
}

/// A database of three 2-d vectors, committed.
fn seeded() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
    Store::add(&db, &["a", "b", "c"], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[]).expect("add");
    db.close().expect("close");
    dir
}

#[test]
fn input_errors_are_the_native_engines() {
    let dir = seeded();
    let cases: [(&str, Op<'_>); 5] = [
        ("duplicate id", &|db| {
            db.write(&Write::add(&["x", "b"], &[0.0; 4]))
        }),
        ("dimension mismatch", &|db| {
            db.write(&Write::add(&["x", "y"], &[0.0; 5]))
        }),
        ("query dimension", &|db| {
            db.search(&[1.0, 2.0, 3.0], 1).map(drop)
        }),
        ("NaN", &|db| db.write(&Write::add(&["x"], &[f32::NAN, 0.0]))),
        ("unknown id", &|db| {
            db.remove(&Delete::ids(&["a", "nope"])).map(drop)
        }),
    ];
    for (what, op) in cases {
        let (native, sandboxed) = both(dir.path(), op);
        eprintln!("{what}: {native}");
        assert_same(&native, &sandboxed);
    }
    // Nothing of the rejected calls was written, on either side.
    let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
    assert_eq!(Store::ids(&db).expect("ids"), ["a", "b", "c"]);
}

/// A damaged vectors file: the error names the file on the host, not `/db/vectors.bin`.
#[test]
fn a_corrupt_file_names_the_host_path() {
    let dir = seeded();
    let file = dir.path().join("vectors.bin");
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[..8].copy_from_slice(b"NOTSRVDB");
    std::fs::write(&file, &bytes).expect("write");

    let native = Database::open(dir.path(), OpenOptions::default()).expect_err("native open");
    let sandboxed = sandbox()
        .open(dir.path(), OpenOptions::default())
        .expect_err("sandboxed open");
    match &sandboxed {
        Error::Corrupt { file: at, .. } => assert_eq!(at, &file),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_same(&native, &sandboxed);
}

/// A path the engine cannot open: an I/O error with the host path in its context and the
/// guest's error kind. The message of the I/O error itself is the guest's (WASI numbers its
/// OS errors differently from the host), so only the kind and the context are compared.
#[test]
fn an_io_error_keeps_its_kind_and_host_context() {
    let dir = seeded();
    // `vectors.bin` replaced by a directory: opening it as the vectors file fails.
    let file = dir.path().join("vectors.bin");
    std::fs::remove_file(&file).expect("rm");
    std::fs::create_dir(&file).expect("mkdir");
    let open = |native: bool| -> srvdb::Result<()> {
        if native {
            let db = Database::open(dir.path(), OpenOptions::default())?;
            Store::add(&db, &["a"], &[1.0, 0.0], &[])?;
            db.persist()
        } else {
            let db = sandbox().open(dir.path(), OpenOptions::default())?;
            Store::add(&db, &["a"], &[1.0, 0.0], &[])?;
            db.persist()
        }
    };
    let native = open(true).expect_err("native");
    let sandboxed = open(false).expect_err("sandboxed");
    eprintln!("native: {native}\nsandboxed: {sandboxed}");
    match (&native, &sandboxed) {
        (
            Error::Io {
                context: nc,
                source: ns,
            },
            Error::Io {
                context: sc,
                source: ss,
            },
        ) => {
            assert_eq!(sc, nc, "context");
            assert_eq!(ss.kind(), ns.kind(), "kind");
            assert!(
                !sandboxed.to_string().contains("sandboxed engine"),
                "wrapped twice: {sandboxed}"
            );
        }
        _ => panic!("expected two I/O errors, got {native:?} and {sandboxed:?}"),
    }
}

/// Another handle holds the directory: `Locked`, naming the host directory.
#[test]
fn a_locked_database_names_the_host_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    let holder = Database::open(dir.path(), OpenOptions::default()).expect("open");
    let native = Database::open(dir.path(), OpenOptions::default()).expect_err("native");
    let sandboxed = sandbox()
        .open(dir.path(), OpenOptions::default())
        .expect_err("sandboxed");
    match &sandboxed {
        Error::Locked { path, .. } => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_same(&native, &sandboxed);
    drop(holder);
}

/// A guest that outgrows its memory cap is `Sandbox { failure: Limit }` (not a bare trap),
/// classified from the store's limiter, and the handle goes on serving.
#[test]
fn a_memory_cap_breach_is_a_limit() {
    let mut config = component_config();
    config.memory_limit_bytes = 48 << 20;
    let sandbox = Sandbox::new(config).expect("load");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("open");
    db.add(&["small"], &[1.0; 8], &[]).expect("small add");
    db.persist().expect("persist");
    // 64 MB of vectors cannot be passed into a 48 MiB guest.
    let huge = vec![0.25f32; 8 * 2_000_000];
    let huge_ids: Vec<String> = (0..2_000_000).map(|i| format!("h{i}")).collect();
    match db.add(&huge_ids, &huge, &[]) {
        Err(Error::Sandbox {
            failure: SandboxFailure::Limit,
            detail,
        }) => assert!(detail.contains("memory cap"), "{detail}"),
        other => panic!("expected a memory limit, got {other:?}"),
    }
    assert!(db.contains("small").expect("contains after the reset"));
    // The instance was replaced and the database reopened: the handle serves again.
    db.add(&["after"], &[2.0; 8], &[])
        .expect("add after the reset");
}
