//! Every grant the guest gets, in one place: one preopened directory (the database's, as `/db`;
//! for an embedder, its model folder read-only as `/model`),
//! no environment, no arguments, no network, no stdin; a memory cap and an optional fuel budget
//! per call. A store per open database, so one guest's trap or limit breach touches no other.

use std::path::{Path, PathBuf};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// The path the database directory has inside the sandbox.
pub const GUEST_DB_DIR: &str = "/db";
/// The path a text model's folder has inside an embedder's sandbox (read-only).
pub const GUEST_MODEL_DIR: &str = "/model";

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
        let component = load_component(&engine, &config.component).map_err(|e| {
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
        self.store_seeing(host_dir, GUEST_DB_DIR, FsPerms::ReadWrite)
    }

    /// A fresh store for an embedder: the guest sees `model_dir` read-only as `/model` and
    /// nothing else (no database directory: the embedder only reads its model).
    pub(crate) fn store_for_model(&self, model_dir: &Path) -> wasmtime::Result<Store<HostState>> {
        self.store_seeing(model_dir, GUEST_MODEL_DIR, FsPerms::ReadOnly)
    }

    /// A fresh store, under this runtime's limits, whose guest sees `host_dir` as `guest_dir`
    /// with `perms`, and nothing else.
    fn store_seeing(
        &self,
        host_dir: &Path,
        guest_dir: &str,
        perms: FsPerms,
    ) -> wasmtime::Result<Store<HostState>> {
        let mut wasi = WasiCtx::builder();
        // No inherit_* calls: no environment, arguments, stdio or network reach the guest.
        wasi.preopened_dir(host_dir, guest_dir, perms)?;
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

/// Where compiled components are cached: `SRVDB_CACHE_DIR`, else `$XDG_CACHE_HOME/srvdb`, else
/// `~/.cache/srvdb`. `None` disables the cache.
fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SRVDB_CACHE_DIR") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("srvdb"))
}

/// Compiles the component, or loads the machine code this host cached for exactly these bytes
/// and this engine configuration (compiling takes ~0.4 s; loading the cache, about 1 ms).
fn load_component(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path)?;
    let Some(dir) = cache_dir() else {
        return Component::new(engine, &bytes);
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    let cached = dir.join(format!("srvdb-{:016x}-{}.cwasm", h.finish(), bytes.len()));
    // Read into memory rather than mapped: a mapping would SIGBUS if the file were truncated.
    if let Ok(artifact) = std::fs::read(&cached) {
        // SAFETY: wasmtime trusts deserialized machine code. Only this host writes into the
        // cache directory, which it creates owner-only (0700), naming each file by the hash of
        // the component's bytes and of the engine's compatibility hash, and writing it whole
        // with a rename; wasmtime also checks the artifact's header against this engine.
        match unsafe { Component::deserialize(engine, &artifact) } {
            Ok(c) => return Ok(c),
            Err(_) => {
                let _ = std::fs::remove_file(&cached);
            }
        }
    }
    let component = Component::new(engine, &bytes)?;
    // Best effort: a cache that cannot be written only costs the next load its compile time.
    let _ = write_cache(engine, &bytes, &dir, &cached);
    Ok(component)
}

fn write_cache(engine: &Engine, bytes: &[u8], dir: &Path, cached: &Path) -> wasmtime::Result<()> {
    let compiled = engine.precompile_component(bytes)?;
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, compiled)?;
    std::fs::rename(&tmp, cached)?;
    Ok(())
}
