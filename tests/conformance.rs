//! The conformance scenario (`tests/conformance/scenario.json`) on the native engine's four
//! backends: memory, `std::fs` files, the memory-mapped file, and rows read on demand. The same file runs through
//! the component (host/tests/conformance.rs), Python (python/tests/test_conformance.py) and
//! Node (tests/node/conformance.mjs).

#[path = "conformance/runner.rs"]
mod runner;

use runner::Target;
use srvdb::storage::sim::{FaultPlan, SimLocation};
use srvdb::{Database, OpenOptions, StorageKind};
use std::collections::HashMap;
use std::sync::Arc;

/// In memory. `Database::in_memory` is ephemeral (its rows live only in the handle), so that
/// target stops each scenario at its first reopen; `reopenable` runs the whole scenario on an
/// in-memory directory that outlives the handle (`SimLocation` with durable files, as the
/// crash tests use), opened with `Database::open_at`.
struct Memory {
    reopenable: bool,
    locations: HashMap<String, Arc<SimLocation>>,
}

impl Memory {
    fn new(reopenable: bool) -> Self {
        Memory {
            reopenable,
            locations: HashMap::new(),
        }
    }
}

impl Target for Memory {
    type Db = Database;
    fn name(&self) -> String {
        if self.reopenable {
            "rust-memory-dir".into()
        } else {
            "rust-memory".into()
        }
    }
    fn family(&self) -> &'static str {
        "rust"
    }
    fn reopenable(&self) -> bool {
        self.reopenable
    }
    fn open(&mut self, scenario: &str, options: OpenOptions) -> srvdb::Result<Database> {
        if !self.reopenable {
            return Database::in_memory(options);
        }
        let location = self
            .locations
            .entry(scenario.to_owned())
            .or_insert_with(|| Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never()))));
        Database::open_at(location.clone(), options)
    }
    fn close(&mut self, db: Database) -> srvdb::Result<()> {
        db.close()
    }
    fn dir_text(&self, _scenario: &str) -> String {
        "<memory>".into()
    }
}

/// A directory on disk per scenario, opened with one storage backend.
struct Disk {
    storage: StorageKind,
    root: tempfile::TempDir,
}

impl Disk {
    fn new(storage: StorageKind) -> Self {
        Disk {
            storage,
            root: tempfile::tempdir().expect("temporary directory"),
        }
    }
}

impl Target for Disk {
    type Db = Database;
    fn name(&self) -> String {
        match self.storage {
            StorageKind::File => "rust-file".into(),
            StorageKind::Mmap => "rust-mmap".into(),
            StorageKind::OnDemand => "rust-on-demand".into(),
        }
    }
    fn family(&self) -> &'static str {
        "rust"
    }
    fn open(&mut self, scenario: &str, options: OpenOptions) -> srvdb::Result<Database> {
        let options = OpenOptions {
            storage: self.storage,
            ..options
        };
        Database::open(self.root.path().join(scenario), options)
    }
    fn close(&mut self, db: Database) -> srvdb::Result<()> {
        db.close()
    }
    fn dir_text(&self, scenario: &str) -> String {
        self.root.path().join(scenario).display().to_string()
    }
}

#[test]
fn memory_backend_follows_the_scenario() {
    runner::run(&mut Memory::new(false));
}

#[test]
fn memory_directory_follows_the_scenario_across_reopens() {
    runner::run(&mut Memory::new(true));
}

#[test]
fn file_backend_follows_the_scenario() {
    runner::run(&mut Disk::new(StorageKind::File));
}

#[test]
fn mmap_backend_follows_the_scenario() {
    runner::run(&mut Disk::new(StorageKind::Mmap));
}

#[test]
fn on_demand_backend_follows_the_scenario() {
    runner::run(&mut Disk::new(StorageKind::OnDemand));
}
