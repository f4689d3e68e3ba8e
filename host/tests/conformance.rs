//! The conformance scenario (`tests/conformance/scenario.json`) through the component in
//! wasmtime (`SandboxedDatabase`, a `srvdb::Store`): the same answers, error kinds and
//! messages as the native backends (tests/conformance.rs), Python and Node. Then the files it
//! wrote open natively, with the same ids: one file format for both engines.
//!
//! The sandbox's own duties (paths outside the directory, fuel, memory cap, deadline) are
//! tested in sandbox_limits.rs.

mod common;
#[path = "../../tests/conformance/runner.rs"]
mod runner;

use common::component_config;
use runner::Target;
use srvdb::{Database, OpenOptions, Store};
use srvdb_host::{Sandbox, SandboxedDatabase};
use std::collections::BTreeMap;

/// A directory per scenario, opened through one sandbox.
struct Sandboxed {
    sandbox: Sandbox,
    root: tempfile::TempDir,
    /// The scenario whose database is open.
    current: String,
    /// The ids each scenario's database held when it was last closed.
    ids_at_close: BTreeMap<String, Vec<String>>,
}

impl Target for Sandboxed {
    type Db = SandboxedDatabase;
    fn name(&self) -> String {
        "host".into()
    }
    fn family(&self) -> &'static str {
        "host"
    }
    fn open(&mut self, scenario: &str, options: OpenOptions) -> srvdb::Result<SandboxedDatabase> {
        self.current = scenario.to_owned();
        self.sandbox.open(self.root.path().join(scenario), options)
    }
    fn close(&mut self, db: SandboxedDatabase) -> srvdb::Result<()> {
        let ids = db.ids()?;
        db.close()?;
        self.ids_at_close.insert(self.current.clone(), ids);
        Ok(())
    }
    fn dir_text(&self, scenario: &str) -> String {
        self.root.path().join(scenario).display().to_string()
    }
}

#[test]
fn sandboxed_engine_follows_the_scenario_and_writes_native_files() {
    let mut target = Sandboxed {
        sandbox: Sandbox::new(component_config()).expect("load the component"),
        root: tempfile::tempdir().expect("temporary directory"),
        current: String::new(),
        ids_at_close: BTreeMap::new(),
    };
    runner::run(&mut target);
    assert!(
        !target.ids_at_close.is_empty(),
        "the scenario closed no database"
    );
    for (scenario, ids) in &target.ids_at_close {
        let native = Database::open(target.root.path().join(scenario), OpenOptions::default())
            .unwrap_or_else(|e| {
                panic!("{scenario}: the native engine cannot open the sandbox's files: {e}")
            });
        assert_eq!(
            &Store::ids(&native).expect("ids"),
            ids,
            "{scenario}: ids read natively"
        );
    }
}
