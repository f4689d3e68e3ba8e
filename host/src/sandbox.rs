//! Every grant the guest gets, in one place: one preopened directory (the database's, as `/db`;
//! for an embedder, its model folder read-only as `/model`),
//! no environment, no arguments, no network, no stdin; a memory cap, caps on instances, tables,
//! table elements and memories, a wall-clock deadline per call (on by default) and an optional
//! fuel budget per call. A store per open database, so one guest's trap or limit breach touches
//! no other.

use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};
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
    /// Wall-clock time each guest call may run before it is stopped (wasmtime epoch
    /// interruption, checked every [`EPOCH_TICK`]); `None` for no limit. A call that runs out
    /// returns [`srvdb::SandboxFailure::Deadline`] and leaves its handle closed. Time spent inside
    /// host calls the guest makes (file I/O, fsync) is counted but cannot be interrupted.
    pub deadline_per_call: Option<Duration>,
    /// Where compiled components are cached; `None` compiles on every load. A directory not
    /// owned by this user, or writable by its group or by others, is not used (a warning on
    /// stderr, once per process), since its files become machine code in this process.
    pub cache_dir: Option<PathBuf>,
    /// Guest instances a batch's exact scan is split across, by row range, one host thread
    /// each (the writer's instance is one; the others are read-only instances that keep no
    /// rows in memory and read their range from the file). 1 disables. Default: 1, or
    /// `SRVDB_SANDBOX_PARTITIONS` (at most [`MAX_PARTITIONS`]). Off by default because the
    /// split pays only while cores are free: on a quiet 2-core machine a batch of 16 ran
    /// 1.73-1.79x, but beside another build 16 concurrent callers ran 0.67-0.85x unsplit
    /// (docs/design.md, "Parallel sandboxed search").
    pub partitions: usize,
    /// A batch over fewer bytes of rows than this is not split (the split's thread hand-offs
    /// would cost more than they save). Default [`DEFAULT_PARTITION_MIN_BYTES`].
    pub partition_min_bytes: u64,
}

/// The most partitions [`SandboxConfig::new`] takes from `SRVDB_SANDBOX_PARTITIONS`.
pub const MAX_PARTITIONS: usize = 8;

/// The default [`SandboxConfig::partition_min_bytes`]: 4 MiB of rows (the native engine's
/// threshold for coalescing searches).
pub const DEFAULT_PARTITION_MIN_BYTES: u64 = 4 << 20;

/// The default [`SandboxConfig::deadline_per_call`]: generous, since a large ingest or a
/// compaction through the sandbox takes seconds; it exists so that a guest that never returns
/// (a bug, or a hostile component) cannot hold a host thread forever.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// How often the deadline ticker advances the engine's epoch: the precision of the deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most elements a guest table may grow to. The component's largest table (the engine's
/// indirect-call table) starts with 1,562 entries and never grows; this stops a guest from
/// making the host allocate gigabytes of table with `table.grow`.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl SandboxConfig {
    /// Defaults: the component from `SRVDB_COMPONENT` or the workspace's `make component`
    /// output, a 4 GiB memory cap (all a wasm32 guest can address), no fuel limit, a
    /// [`DEFAULT_DEADLINE`] per call, and the compile cache in `SRVDB_CACHE_DIR` (empty: no
    /// cache), else the user's cache directory (see [`default_cache_dir`]).
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
            deadline_per_call: Some(DEFAULT_DEADLINE),
            cache_dir: default_cache_dir(),
            partitions: std::env::var("SRVDB_SANDBOX_PARTITIONS")
                .ok()
                .and_then(|n| n.trim().parse::<usize>().ok())
                .map_or(1, |n| n.clamp(1, MAX_PARTITIONS)),
            partition_min_bytes: DEFAULT_PARTITION_MIN_BYTES,
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
    limits: Limits,
}

impl HostState {
    /// What the limiter refused since the last call was armed, if anything; clears it. A trap
    /// after a refused growth is the memory (or table) cap, whatever the trap's own text says
    /// (the guest's allocator aborts, which traps as `unreachable`).
    pub(crate) fn take_denied(&mut self) -> Option<String> {
        self.limits.denied.take()
    }

    /// The guest's linear memory now, in bytes (the last growth the limiter allowed).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.limits.memory
    }
}

/// The store's limits, recording the growth they refuse, so a trap that follows is classified
/// from the limiter's own record rather than from the trap's message.
struct Limits {
    limits: StoreLimits,
    denied: Option<String>,
    /// The size the linear memory last grew to (wasm memory never shrinks).
    memory: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if matches!(allowed, Ok(true)) {
            self.memory = self.memory.max(desired);
        } else {
            self.denied = Some(format!(
                "memory cap: the guest asked to grow its memory from {current} to {desired} bytes"
            ));
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.table_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.denied = Some(format!(
                "table cap: the guest asked to grow a table from {current} to {desired} elements"
            ));
        }
        allowed
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
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
    /// Compiles the component (or loads it from the cache) and links WASI. With a deadline
    /// configured, starts the thread that advances the engine's epoch every [`EPOCH_TICK`]; it
    /// ends by itself within a tick of the engine's last user (this runtime, its stores).
    pub fn load(config: SandboxConfig) -> wasmtime::Result<Self> {
        let mut wcfg = Config::new();
        wcfg.consume_fuel(config.fuel_per_call.is_some());
        wcfg.epoch_interruption(config.deadline_per_call.is_some());
        wcfg.wasm_component_model(true);
        let engine = Engine::new(&wcfg)?;
        if config.deadline_per_call.is_some() {
            start_epoch_ticker(&engine)?;
        }
        let component = load_component(&engine, &config.component, config.cache_dir.as_deref())
            .map_err(|e| {
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

    /// Gives `store` this runtime's budget for one call into the guest: its fuel, and its
    /// deadline counted from now. Every entry into the guest (instantiation, a method, a
    /// resource's destructor) must be preceded by this: with epochs on, a store whose deadline
    /// has passed traps at the guest's first instruction.
    pub(crate) fn arm(&self, store: &mut Store<HostState>) {
        // A refusal before this call says nothing about how this call ends.
        store.data_mut().limits.denied = None;
        if let Some(fuel) = self.config.fuel_per_call {
            // Fuel is only consumed when the engine was configured for it, which `load` does
            // exactly when `fuel_per_call` is set; this cannot fail then.
            let _ = store.set_fuel(fuel);
        }
        if let Some(ticks) = self.deadline_ticks() {
            store.set_epoch_deadline(ticks);
        }
    }

    /// The deadline in epoch ticks: rounded up, plus one for the tick already under way, so a
    /// call always gets at least its deadline.
    fn deadline_ticks(&self) -> Option<u64> {
        let deadline = self.config.deadline_per_call?;
        let tick = EPOCH_TICK.as_nanos().max(1);
        let ticks = deadline.as_nanos().div_ceil(tick);
        Some(u64::try_from(ticks).unwrap_or(u64::MAX - 1).max(1) + 1)
    }

    /// A fresh store whose guest sees `host_dir` as `/db` and nothing else: read-only for a
    /// read-only open, so the guest cannot change a byte of a database that readers share.
    pub(crate) fn store_for(
        &self,
        host_dir: &Path,
        read_only: bool,
    ) -> wasmtime::Result<Store<HostState>> {
        let perms = if read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        self.store_seeing(host_dir, GUEST_DB_DIR, perms)
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
        // The component instantiates 3 core modules (the engine's, and two small shims
        // wit-component adds) with 2 tables and 1 memory in all (counted in srvdb.wasm built
        // by `make component`): a little headroom, no more.
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.config.memory_limit_bytes)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(8)
            .tables(8)
            .memories(4)
            .build();
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: Limits {
                limits,
                denied: None,
                memory: 0,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        self.arm(&mut store);
        Ok(store)
    }
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] on a thread of its own, until the engine is
/// dropped. This is what makes the per-call deadline fire.
fn start_epoch_ticker(engine: &Engine) -> wasmtime::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("srvdb-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })?;
    Ok(())
}

/// Where compiled components are cached by default: `SRVDB_CACHE_DIR`, else `srvdb` in the
/// user's cache directory (`dirs::cache_dir`: `$XDG_CACHE_HOME` or `~/.cache` on Linux,
/// `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows). `None` (an empty
/// `SRVDB_CACHE_DIR`, or no home) disables the cache.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SRVDB_CACHE_DIR") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    Some(dirs::cache_dir()?.join("srvdb"))
}

/// Bytes of the tag that ends every cached artifact: SHA-256 of the cache key and the
/// artifact, so a file compiled from other bytes, or cut short, is never deserialized.
const TAG_BYTES: usize = 32;

/// Compiles the component, or loads the machine code this host cached for exactly these bytes
/// and this engine configuration (compiling takes seconds; loading the cache, milliseconds).
///
/// A cached artifact becomes native code in this process, so it is used only if all of these
/// hold: the cache directory and the file are this user's and writable by nobody else, the
/// file is a regular file (not a link), it is named by the SHA-256 key of the component's
/// bytes and the engine's compatibility hash, and its tag binds its bytes to that same key.
fn load_component(
    engine: &Engine,
    path: &Path,
    cache_dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let bytes = std::fs::read(path)?;
    let Some(dir) = cache_dir.filter(|dir| cache_dir_is_private(dir)) else {
        return Component::new(engine, &bytes);
    };
    let key = cache_key(engine, &bytes);
    let cached = dir.join(format!("srvdb-{}.cwasm", hex(&key)));
    if let Some(artifact) = read_artifact(&cached, &key) {
        // SAFETY: wasmtime runs deserialized machine code as is. This artifact comes from a
        // directory and a file only this user can write (checked above and in
        // `read_artifact` on the open descriptor), and its tag proves it was written by
        // `write_cache` for this key: these component bytes under this engine's
        // configuration. wasmtime also checks its header against this engine.
        match unsafe { Component::deserialize(engine, &artifact) } {
            Ok(c) => return Ok(c),
            Err(_) => {
                let _ = std::fs::remove_file(&cached);
            }
        }
    }
    let compiled = engine.precompile_component(&bytes)?;
    // Best effort: a cache that cannot be written only costs the next load its compile time.
    let _ = write_cache(dir, &cached, &key, &compiled);
    // SAFETY: `compiled` was produced a moment ago, in memory, by this engine from these
    // bytes; nothing else has had access to it.
    unsafe { Component::deserialize(engine, &compiled) }
}

/// SHA-256 over a format label, the engine's compatibility hash and the component's bytes.
fn cache_key(engine: &Engine, bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    use std::hash::Hash;

    /// Feeds a `Hash` value's bytes into SHA-256.
    struct Sha256Hasher(sha2::Sha256);
    impl std::hash::Hasher for Sha256Hasher {
        fn write(&mut self, data: &[u8]) {
            self.0.update(data);
        }
        fn finish(&self) -> u64 {
            0
        }
    }

    let mut h = Sha256Hasher(sha2::Sha256::new());
    h.0.update(b"srvdb component cache v2\0");
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.update((bytes.len() as u64).to_le_bytes());
    h.0.update(bytes);
    h.0.finalize().into()
}

/// The tag stored after an artifact: SHA-256 of the key, then the artifact.
fn artifact_tag(key: &[u8; 32], artifact: &[u8]) -> [u8; TAG_BYTES] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(key);
    h.update(artifact);
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `dir` may hold code this process will run: this user's and writable by nobody
/// else. Creates it (owner-only) if missing. Warns on stderr, once per process, when not.
fn cache_dir_is_private(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if !dir.exists() {
            // A failure here is reported below, by the metadata check.
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        let problem = match std::fs::metadata(dir) {
            Err(e) => Some(format!("cannot be inspected ({e})")),
            Ok(m) if !m.is_dir() => Some("not a directory".to_owned()),
            Ok(m) if m.uid() != effective_uid() => Some(format!(
                "owned by uid {}, not by this user (uid {})",
                m.uid(),
                effective_uid()
            )),
            Ok(m) if m.mode() & 0o022 != 0 => Some(format!(
                "writable by its group or by others (mode {:o})",
                m.mode() & 0o777
            )),
            Ok(_) => None,
        };
        match problem {
            None => true,
            Some(problem) => {
                warn_once(&format!(
                    "srvdb-host: not using the compile cache {}: it is {problem}, and code loaded \
                     from it would run in this process. Compiling instead (slower); fix it with \
                     `chmod 700` as its owner, or set SRVDB_CACHE_DIR to a private directory.",
                    dir.display()
                ));
                false
            }
        }
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).is_ok()
    }
}

fn warn_once(message: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| eprintln!("{message}"));
}

#[cfg(unix)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, reads no caller memory and cannot fail (POSIX);
    // it is safe to call from any thread.
    unsafe { libc::geteuid() }
}

/// The artifact cached under `path` for `key`, if the file is a regular file of this user's
/// that nobody else can write and its tag matches; `None` otherwise (a miss: compile).
fn read_artifact(path: &Path, key: &[u8; 32]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A link planted under the artifact's name is not followed.
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options.open(path).ok()?;
    // Checked on the open descriptor: the file read is the file checked.
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != effective_uid() || meta.mode() & 0o022 != 0 {
            return None;
        }
    }
    // Read into memory rather than mapped: a mapping would SIGBUS if the file were truncated.
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut data).ok()?;
    let body_len = data.len().checked_sub(TAG_BYTES)?;
    let (body, tag) = data.split_at(body_len);
    if artifact_tag(key, body) != tag {
        return None;
    }
    data.truncate(body_len);
    Some(data)
}

/// Writes `artifact` and its tag under `cached`, durably: a private temporary file, fsynced,
/// renamed into place, then the directory fsynced.
fn write_cache(dir: &Path, cached: &Path, key: &[u8; 32], artifact: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // Unique per process and call: two loads racing in one process never share a file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = cached.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let written = (|| {
        // Owner-only, as the cache is created: other users need not read this machine code.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut file = options.open(&tmp)?;
        file.write_all(artifact)?;
        file.write_all(&artifact_tag(key, artifact))?;
        file.sync_all()?;
        std::fs::rename(&tmp, cached)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
