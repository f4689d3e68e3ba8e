//! The compiled-component cache: the first load compiles and writes an artifact into an
//! owner-only directory, the second loads it, and a damaged artifact is replaced, not trusted.
//! A cached artifact is native code run in the host, so an artifact compiled from other bytes
//! must never be loaded under this component's name (it was, when the name was a 64-bit
//! `DefaultHasher` value and nothing bound the file's contents to it), and a directory others
//! can write is not used at all.

use srvdb::{OpenOptions, Store};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::Sandbox;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// The tests set `SRVDB_CACHE_DIR`, which the whole process shares: one at a time.
static ENV: Mutex<()> = Mutex::new(());

fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect()
}

/// The smallest valid component (a header and nothing else): it compiles and loads, but does
/// not export SrvDB's interface, so a database cannot be opened with it.
fn empty_component(dir: &Path) -> PathBuf {
    let path = dir.join("empty.wasm");
    std::fs::write(&path, b"\0asm\x0d\x00\x01\x00").expect("write component");
    path
}

/// Opens a database with `sandbox`: works only if it runs the real component's code.
fn works(sandbox: &Sandbox, what: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .unwrap_or_else(|e| panic!("{what}: the sandbox does not run SrvDB's code: {e}"));
    db.add(&["a"], &[1.0, 0.0], &[]).expect("add");
    assert_eq!(db.search(&[1.0, 0.0], 1).expect("search")[0].id, "a");
}

#[test]
fn an_artifact_compiled_from_other_bytes_is_never_loaded() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let cache = tempfile::tempdir().expect("tmp");
    let scratch = tempfile::tempdir().expect("tmp");
    std::env::set_var("SRVDB_CACHE_DIR", cache.path());
    works(
        &Sandbox::new(SandboxConfig::new()).expect("first load"),
        "first load",
    );
    let real = files_in(cache.path());
    assert_eq!(real.len(), 1, "one artifact: {real:?}");
    let real = real.into_iter().next().expect("artifact");
    let empty = SandboxConfig {
        component: empty_component(scratch.path()),
        ..SandboxConfig::new()
    };
    Sandbox::new(empty.clone()).expect("compile the empty component");
    let other: Vec<_> = files_in(cache.path())
        .into_iter()
        .filter(|f| *f != real)
        .collect();
    assert_eq!(other.len(), 1, "the empty component's artifact: {other:?}");
    // Valid machine code for this engine, compiled from other bytes, under the real name.
    std::fs::copy(&other[0], &real).expect("plant");
    works(
        &Sandbox::new(SandboxConfig::new()).expect("load with a planted artifact"),
        "planted artifact in a private directory",
    );
    works(
        &Sandbox::new(SandboxConfig::new()).expect("load the rewritten artifact"),
        "after the planted artifact was replaced",
    );

    #[cfg(unix)]
    {
        // A directory its group may write is not used: neither read nor written.
        use std::os::unix::fs::PermissionsExt;
        std::fs::copy(&other[0], &real).expect("plant again");
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o770))
            .expect("chmod");
        let before = files_in(cache.path());
        let planted = std::fs::read(&real).expect("read");
        works(
            &Sandbox::new(SandboxConfig::new()).expect("load beside a group-writable cache"),
            "planted artifact in a group-writable directory",
        );
        assert_eq!(files_in(cache.path()), before, "nothing written there");
        assert_eq!(std::fs::read(&real).expect("read"), planted, "nor replaced");
    }
    std::env::remove_var("SRVDB_CACHE_DIR");
}

#[test]
fn second_load_uses_the_cache_and_damage_is_recompiled() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let cache = tempfile::tempdir().expect("tmp");
    std::env::set_var("SRVDB_CACHE_DIR", cache.path());
    let t = Instant::now();
    Sandbox::new(SandboxConfig::new()).expect("first load");
    let cold = t.elapsed();
    let files: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one artifact written: {files:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cache.path())
            .expect("stat")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "cache directory is owner-only");
    }
    let t = Instant::now();
    let sandbox = Sandbox::new(SandboxConfig::new()).expect("cached load");
    let warm = t.elapsed();
    eprintln!("component load: compile {cold:?}, from cache {warm:?}");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("open with cached code");
    db.add(&["a"], &[1.0, 0.0], &[]).expect("add");
    assert_eq!(db.search(&[1.0, 0.0], 1).expect("search")[0].id, "a");
    drop(db);

    // A damaged artifact is rejected by wasmtime's header check and rebuilt.
    std::fs::write(&files[0], b"not machine code").expect("damage");
    let sandbox = Sandbox::new(SandboxConfig::new()).expect("load after damage");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("open");
    assert!(db.contains("a").expect("contains"));
    assert!(
        std::fs::metadata(&files[0]).expect("rewritten").len() > 1000,
        "artifact rebuilt"
    );
    std::env::remove_var("SRVDB_CACHE_DIR");
}
