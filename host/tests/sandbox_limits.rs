//! The sandbox's grants, limits and duties:
//! - the guest opens nothing outside its preopened directory;
//! - a call over the fuel budget or the memory cap is a typed error, and the host goes on with
//!   the database reopened at its last commit;
//! - a guest call cannot hold a host thread forever: past the per-call deadline it is stopped
//!   with a typed error, and its handle is closed (there was no deadline at all before);
//! - the host fsyncs the database directory after calls that may create, rename or remove
//!   files in it, since the guest's own directory sync may be impossible on a WASI runtime
//!   (and was silently skipped on any error).

mod common;
use common::component_config;
use srvdb::{Error, OpenOptions, SandboxFailure, Store};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::{Sandbox, SandboxedDatabase};
use std::time::{Duration, Instant};

/// `n` seeded values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    srvdb::testing::Rng::new(seed).vectors(n, 1)
}

#[test]
fn a_call_past_the_deadline_is_stopped_and_closes_the_handle() {
    // Long enough that setting up 20,000 rows (each call well under a second on a quiet
    // machine) does not hit it on a loaded one; the search below takes tens of seconds.
    let deadline = Duration::from_secs(4);
    let sandbox = Sandbox::new(SandboxConfig {
        deadline_per_call: Some(deadline),
        ..component_config()
    })
    .expect("load");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("open");
    let (dim, rows) = (128, 20_000);
    let data = values(rows * dim, 7);
    for (chunk, start) in data.chunks(2_000 * dim).zip((0..).step_by(2_000)) {
        let ids: Vec<String> = (start..start + chunk.len() / dim)
            .map(|i| format!("v{i}"))
            .collect();
        db.add(&ids, chunk, &[]).expect("add");
    }
    db.persist().expect("persist");

    // 20,000 queries against 20,000 rows of 128 dimensions: about 50 GFLOP, tens of seconds
    // inside the sandbox, far past the deadline.
    let queries = values(20_000 * dim, 11);
    let started = Instant::now();
    let outcome = db.search_batch(&queries, 1);
    let took = started.elapsed();
    match outcome {
        Err(Error::Sandbox {
            failure: SandboxFailure::Deadline,
            detail,
        }) => assert_eq!(detail, format!("{deadline:?}")),
        other => panic!(
            "expected a deadline failure after {deadline:?}, got {:?} after {took:?}",
            other.map(|hits| hits.len())
        ),
    }
    // Stopped, not run to completion (tens of seconds): a wide bound, because on a shared
    // 2-core machine under load the epoch ticker and the trap are themselves late (7.4 s was
    // seen at a load average of 14).
    assert!(
        took < deadline * 3,
        "stopped {took:?} after it started, for a deadline of {deadline:?}"
    );
    eprintln!("search_batch stopped after {took:?} (deadline {deadline:?})");

    // The handle is closed: every later call says why, close included.
    for err in [
        db.count().map(drop).expect_err("count after the deadline"),
        db.add(&["late"], &values(dim, 3), &[])
            .expect_err("add after the deadline"),
    ] {
        match err {
            Error::Poisoned { reason } => {
                assert!(reason.contains("deadline"), "{reason}")
            }
            other => panic!("expected a poisoned handle, got {other}"),
        }
    }
    assert!(db.close().is_err(), "close reports the stopped call");

    // The database itself is intact at its last commit.
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("reopen");
    assert_eq!(db.count().expect("count"), rows as u64);
    let got = db.get("v123").expect("get").expect("v123 is stored");
    assert_eq!(got.vector, data[123 * dim..124 * dim]);
}

#[test]
fn no_deadline_when_switched_off() {
    let sandbox = Sandbox::new(SandboxConfig {
        deadline_per_call: None,
        ..component_config()
    })
    .expect("load");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("open");
    db.add(&["a", "b"], &[1.0, 0.0, 0.0, 1.0], &[])
        .expect("add");
    assert_eq!(db.search(&[0.0, 1.0], 1).expect("search")[0].id, "b");
    db.close().expect("close");
}

#[test]
fn the_host_syncs_the_directory_after_calls_that_touch_files() {
    let sandbox = Sandbox::new(component_config()).expect("load");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("open");
    let mut last = db.directory_syncs();
    assert!(last >= 1, "open creates metadata.db: synced after it");
    let mut expect_sync = |what: &str, synced: bool, now: u64| {
        assert_eq!(now > last, synced, "{what}: syncs went {last} -> {now}");
        last = now;
    };
    db.add(&["a", "b", "c"], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[])
        .expect("add creates vectors.bin");
    expect_sync("add", true, db.directory_syncs());
    db.search(&[1.0, 0.0], 2).expect("search");
    db.get("a").expect("get");
    db.count().expect("count");
    expect_sync("reads", false, db.directory_syncs());
    db.delete(&["b"]).expect("delete");
    expect_sync("delete", true, db.directory_syncs());
    db.persist().expect("persist");
    expect_sync("persist", true, db.directory_syncs());
    // Compaction writes vectors.bin.new and renames it over vectors.bin: the rename is what
    // must not be lost, or the committed row numbering points at the old file's rows.
    db.compact().expect("compact");
    expect_sync("compact", true, db.directory_syncs());
    // A rejected call is synced too: a failing call may have touched files before failing.
    db.add(&["a"], &[1.0, 0.0], &[]).expect_err("duplicate id");
    expect_sync("failed add", true, db.directory_syncs());
    db.close().expect("close");
}

fn expect_refused(r: Result<SandboxedDatabase, Error>, what: &str) {
    match r {
        Ok(_) => panic!("{what}: the guest opened a path outside its directory"),
        Err(Error::Io { .. } | Error::InvalidInput { .. }) => {}
        Err(other) => panic!("{what}: expected a clean I/O refusal, got {other}"),
    }
}

#[test]
fn paths_outside_the_preopened_directory_are_refused() {
    let sandbox = Sandbox::new(component_config()).expect("load");
    let root = tempfile::tempdir().expect("tmp");
    let inside = root.path().join("db");
    std::fs::create_dir_all(&inside).expect("mkdir");
    expect_refused(
        sandbox.open_guest_path(&inside, "/db/../escape"),
        "../ escape",
    );
    expect_refused(
        sandbox.open_guest_path(&inside, "/tmp/escape"),
        "absolute path",
    );
    expect_refused(sandbox.open_guest_path(&inside, "/"), "root");
    assert!(
        !root.path().join("escape").exists(),
        "nothing was created outside"
    );
    // The host still serves a legitimate open afterwards.
    let db = sandbox
        .open(&inside, OpenOptions::default())
        .expect("open after refusals");
    db.add(&["a"], &[1.0, 2.0], &[]).expect("add");
}

#[test]
fn fuel_budget_breach_is_an_error_and_the_host_goes_on() {
    let mut config = component_config();
    config.fuel_per_call = Some(30_000_000);
    let sandbox = Sandbox::new(config).expect("load");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox
        .open(dir.path(), OpenOptions::default())
        .expect("open");
    let dim = 64;
    db.add(
        &(0..200).map(|i| i.to_string()).collect::<Vec<_>>(),
        &values(200 * dim, 1),
        &[],
    )
    .expect("small add fits");
    db.persist().expect("persist");
    // A batch search over many queries needs far more fuel than one call is given.
    let queries = values(2000 * dim, 2);
    match db.search_batch(&queries, 10) {
        Err(Error::Sandbox {
            failure: SandboxFailure::Limit,
            detail,
        }) => assert!(detail.contains("fuel"), "{detail}"),
        other => panic!("expected a fuel limit, got {other:?}"),
    }
    // The instance was replaced and the database reopened at its last commit.
    assert_eq!(db.count().expect("count after trap"), 200);
    assert_eq!(
        db.search(&queries[..dim], 3)
            .expect("search after trap")
            .len(),
        3
    );
}

// A memory-cap breach (a `Limit`, and the handle goes on serving) is tested in error_shape.rs.
