//! Every grant the guest gets, in one place: one preopened directory (the database's, as `/db`),
//! no environment, no arguments, no network, no stdin; a memory cap and an optional fuel budget
//! per call. A store per open database, so one guest's trap or limit breach touches no other.

use std::path::{Path, PathBuf};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// The path the database directory has inside the sandbox.
pub const GUEST_DB_DIR: &str = "/db";

/// Limits and the component to run.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The component file (`srvdb.wasm`).
    pub component: PathBuf,
    /// Largest linear memory the guest may grow to, in bytes. The guest caches the rows in
    /// memory, so this bounds the database size a sandbox can hold.
    pub memory_limit_bytes: usize,
    /// Fuel (roughly, wasm instructions) each call may burn; `None` for no limit.
    pub fuel_per_call: Option<u64>,
}

impl SandboxConfig {
    /// Defaults: the component from `SRVDB_COMPONENT` or the workspace's `make component`
    /// output, a 4 GiB memory cap (all a wasm32 guest can address), no fuel limit.
    pub fn new() -> Self {
        let component = std::env::var_os("SRVDB_COMPONENT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/wasm32-wasip2/component/srvdb.wasm")
            });
        SandboxConfig {
            component,
            memory_limit_bytes: 4 << 30,
            fuel_per_call: None,
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The host state of one store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The compiled component and everything shared by the stores that run it.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) component: Component,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: SandboxConfig,
}

impl Runtime {
    /// Compiles the component (about half a second) and links WASI.
    pub fn load(config: SandboxConfig) -> wasmtime::Result<Self> {
        let mut wcfg = Config::new();
        wcfg.consume_fuel(config.fuel_per_call.is_some());
        wcfg.wasm_component_model(true);
        let engine = Engine::new(&wcfg)?;
        let component = Component::from_file(&engine, &config.component).map_err(|e| {
            e.context(format!(
                "loading the SrvDB component {} (build it with `make component`, or set SRVDB_COMPONENT)",
                config.component.display()
            ))
        })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Ok(Runtime {
            engine,
            component,
            linker,
            config,
        })
    }

    /// A fresh store whose guest sees `host_dir` as `/db` and nothing else.
    pub(crate) fn store_for(&self, host_dir: &Path) -> wasmtime::Result<Store<HostState>> {
        let mut wasi = WasiCtx::builder();
        // No inherit_* calls: no environment, arguments, stdio or network reach the guest.
        wasi.preopened_dir(host_dir, GUEST_DB_DIR, FsPerms::ReadWrite)?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.config.memory_limit_bytes)
            .instances(4)
            .build();
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        Ok(store)
    }
}
