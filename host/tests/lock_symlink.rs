//! A `LOCK` symlink planted in the database directory, pointing outside it, is refused by
//! the host and by the native engine; the file it points to is neither created nor
//! touched. (Before: the host opened it with `create(true)` through the link and locked
//! the outside file.)

#![cfg(unix)]

mod common;
use common::component_config;

use srvdb::OpenOptions;
use srvdb_host::Sandbox;
use std::path::Path;

fn assert_refused(err: srvdb::Error, lock: &Path) {
    match err {
        srvdb::Error::Corrupt { file, reason } => {
            assert_eq!(file, lock);
            assert!(reason.contains("symbolic link"), "{reason}");
        }
        other => panic!("expected Corrupt naming {}, got {other}", lock.display()),
    }
}

/// Plants `db/LOCK -> outside/target` and runs `open`, for a target that exists and one
/// that does not.
fn check(open: impl Fn(&Path) -> Result<(), srvdb::Error>) {
    for target_exists in [true, false] {
        let db = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        let target = outside.path().join("victim");
        if target_exists {
            std::fs::write(&target, b"precious").expect("write");
        }
        let lock = db.path().join("LOCK");
        std::os::unix::fs::symlink(&target, &lock).expect("symlink");
        let err = open(db.path()).expect_err("a LOCK symlink must be refused");
        assert_refused(err, &lock);
        if target_exists {
            assert_eq!(std::fs::read(&target).expect("read"), b"precious");
        } else {
            assert!(!target.exists(), "the link's target was created");
        }
    }
}

#[test]
fn native_open_refuses_a_lock_symlink() {
    check(|dir| srvdb::Database::open(dir, OpenOptions::default()).map(drop));
}

#[test]
fn host_open_refuses_a_lock_symlink() {
    let sandbox = Sandbox::new(component_config()).expect("load");
    check(|dir| match sandbox.open(dir, OpenOptions::default()) {
        Ok(_) => Ok(()),
        Err(srvdb::Error::Sandbox { failure, detail }) => {
            panic!("expected the engine's error, got a sandbox {failure:?}: {detail}")
        }
        Err(e) => Err(e),
    });
}
