//! The compiled-component cache: the first load compiles and writes an artifact into an
//! owner-only directory, the second loads it, and a damaged artifact is replaced, not trusted.

use srvdb::OpenOptions;
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::Sandbox;
use std::time::Instant;

#[test]
fn second_load_uses_the_cache_and_damage_is_recompiled() {
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
}
