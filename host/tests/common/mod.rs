//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use srvdb_host::sandbox::SandboxConfig;

/// The default sandbox configuration, with a clear failure when the component is not built.
pub fn component_config() -> SandboxConfig {
    let c = SandboxConfig::new();
    assert!(
        c.component.exists(),
        "component {} missing: run `make component` first (make test does)",
        c.component.display()
    );
    c
}
