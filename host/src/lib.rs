//! `srvdb-host`: SrvDB's engine as a sandboxed plugin. The WASI component built from this
//! repository's `src/` runs inside wasmtime with one preopened directory, a memory cap and an
//! optional fuel budget; [`SandboxedDatabase`] implements [`srvdb::Store`], so Rust callers get
//! the native engine's operations, types and errors over it.
//!
//! A trap inside the guest (a limit breach, or a bug) never takes the host down: the call
//! returns [`srvdb::Error::Sandbox`], the dead instance is replaced and the database reopened
//! (recovering its last commit), and the handle goes on serving. A call that outlives the
//! sandbox's deadline ([`sandbox::SandboxConfig::deadline_per_call`], 60 s by default) is
//! stopped and returns [`SandboxFailure::Deadline`]; that handle is then closed (open the
//! database again).
//!
//! Parallel search (see `search.rs`): the guest is single-threaded, so concurrent single
//! searches on one handle are coalesced into one guest batch call, and a batch (or such a
//! group) over the exact scan can be split by row range across
//! [`sandbox::SandboxConfig::partitions`] instances (off by default), one host thread each: the writer's, and
//! read-only instances on the same directory that hold no f32 rows (they read their range from
//! the file). A batch is split only while the writer has no uncommitted change; readers are
//! reopened after each commit; with a quantized index or a graph only `exact` batches are
//! split; a reader that fails is dropped and the writer answers alone. Writes stay on the one
//! writer instance.
//!
//! Durability across the boundary: after every guest call that may create, rename or remove
//! files in the database directory, the host fsyncs that directory itself, so what the call
//! made durable inside the guest stays durable after a power loss even on a WASI runtime that
//! cannot sync a directory for the guest.

pub mod sandbox;
mod search;

use sandbox::{HostState, Runtime, SandboxConfig, GUEST_DB_DIR, GUEST_MODEL_DIR};
use srvdb::quant::{HnswParams, IndexInfo, IndexKind, IndexSpec, Quantization};
use srvdb::storage::fs::DirLock;
use srvdb::store::{Delete, Missing, Query, Select, Update, Write, WriteMode};
use srvdb::Store as _;
use srvdb::{
    EmbedderSpec, Error, Metadata, Metric, OpenOptions, Record, SandboxFailure, SearchHit,
    StorageKind,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceAny;
use wasmtime::Store;

// Borrowing: requests pass the caller's vectors and ids into the guest without copying them
// into owned records first.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "srvdb",
    ownership: Borrowing { duplicate_if_necessary: true },
});

use exports::srvdb::engine::store as wit;

/// Result alias for the host: the engine's one error type.
pub type Result<T> = srvdb::Result<T>;

/// A sandbox failure with what the runtime reported.
fn sandbox_error(failure: SandboxFailure, detail: impl Into<String>) -> Error {
    Error::Sandbox {
        failure,
        detail: detail.into(),
    }
}

/// A component that cannot be loaded or instantiated.
fn setup_error(e: wasmtime::Error) -> Error {
    sandbox_error(SandboxFailure::Setup, format!("{e:#}"))
}

/// A loaded component, shared by every database it opens.
#[derive(Clone)]
pub struct Sandbox {
    runtime: Arc<Runtime>,
}

impl Sandbox {
    /// Loads and compiles the component.
    pub fn new(config: SandboxConfig) -> Result<Self> {
        let runtime = Runtime::load(config).map_err(setup_error)?;
        Ok(Sandbox {
            runtime: Arc::new(runtime),
        })
    }

    /// Opens (or creates) the database in `dir` inside a new sandbox. The host takes the
    /// directory's lock first: WASI has no file locks. With [`OpenOptions::read_only`] the
    /// lock is the readers' shared one, held only while the guest opens (as natively), the
    /// directory is neither created nor writable by the guest (preopened read-only), and the
    /// guest opens the database read-only.
    pub fn open(&self, dir: impl AsRef<Path>, options: OpenOptions) -> Result<SandboxedDatabase> {
        let dir = dir.as_ref();
        // Refused as natively, before the directory or its lock is made.
        srvdb::storage::fs::check_dir_path(dir)?;
        let options = options.validated()?;
        if options.read_only {
            return self.start(dir, GUEST_DB_DIR, options);
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        self.start(dir, GUEST_DB_DIR, options)
    }

    /// Locks `dir`, preopens it and opens `guest_path` in a new instance.
    fn start(
        &self,
        dir: &Path,
        guest_path: &str,
        options: OpenOptions,
    ) -> Result<SandboxedDatabase> {
        let (live, lock) = if options.read_only {
            // The same refusals as natively, before a sandbox starts: no directory, no LOCK.
            srvdb::storage::fs::FsLocation::read_only(dir, options.storage)?;
            (
                Self::start_reader(&self.runtime, dir, guest_path, &options)?,
                None,
            )
        } else {
            let lock = DirLock::acquire(dir)?;
            let live = Live::start(&self.runtime, dir, guest_path, &options)?;
            (live, Some(lock))
        };
        let partitions = search::Partitions::new(&self.runtime.config, &options);
        Ok(SandboxedDatabase {
            runtime: self.runtime.clone(),
            dir: dir.to_path_buf(),
            options,
            slot: Mutex::new(Slot::Running(Box::new(live))),
            // `Live::start` synced the directory after the guest opened the database.
            directory_syncs: AtomicU64::new(1),
            coalescer: Default::default(),
            generation: AtomicU64::new(0),
            partitions,
            _lock: lock,
        })
    }

    /// Opens a read-only guest under the readers' shared lock, released once the guest has
    /// opened: as natively, the reader then serves its own copy of the commit it found, and
    /// a writer may open beside it.
    fn start_reader(
        runtime: &Runtime,
        dir: &Path,
        guest_path: &str,
        options: &OpenOptions,
    ) -> Result<Live> {
        let _opening = DirLock::acquire_shared(dir)?;
        Live::start(runtime, dir, guest_path, options)
    }

    /// Loads the sentence-transformers model in `model_dir` inside a sandbox of its own, which
    /// sees that folder read-only as `/model` and nothing else. Needs a component built with
    /// the `text` feature (as `make component` builds it); others return the engine's model error.
    pub fn load_embedder(
        &self,
        model_dir: impl AsRef<Path>,
        name: &str,
    ) -> Result<SandboxedEmbedder> {
        let model_dir = model_dir.as_ref();
        // The same check, and error, as the native embedder: before anything is preopened.
        srvdb::embed::locate::check_folder(model_dir)?;
        let mut store = self
            .runtime
            .store_for_model(model_dir)
            .map_err(setup_error)?;
        let bindings =
            Srvdb::instantiate(&mut store, &self.runtime.component, &self.runtime.linker)
                .map_err(|e| classify_instantiation(e, &self.runtime, &mut store))?;
        self.runtime.arm(&mut store);
        let loaded = bindings
            .srvdb_engine_store()
            .embedder()
            .call_load(&mut store, GUEST_MODEL_DIR, name)
            .map_err(|e| classify_trap(e, &self.runtime, &mut store))?;
        let paths = PathMap::new(GUEST_MODEL_DIR, model_dir);
        let handle = loaded.map_err(|e| engine_error(e, &paths))?;
        self.runtime.arm(&mut store);
        let spec = bindings
            .srvdb_engine_store()
            .embedder()
            .call_spec(&mut store, handle)
            .map_err(|e| classify_trap(e, &self.runtime, &mut store))?;
        Ok(SandboxedEmbedder {
            runtime: self.runtime.clone(),
            paths,
            spec: spec_from_wit(spec),
            live: Mutex::new(Some(LiveEmbedder {
                store,
                bindings,
                handle,
            })),
        })
    }

    /// Opens `guest_path` as the guest sees it, with `dir` preopened: for tests that check a
    /// path outside the preopened directory is refused.
    pub fn open_guest_path(
        &self,
        dir: impl AsRef<Path>,
        guest_path: &str,
    ) -> Result<SandboxedDatabase> {
        self.start(dir.as_ref(), guest_path, OpenOptions::default())
    }
}

struct LiveEmbedder {
    store: Store<HostState>,
    bindings: Srvdb,
    handle: ResourceAny,
}

/// A text embedder running inside the sandbox, single-threaded. `Send + Sync`; calls are
/// serialised. After a trap the instance is gone and later calls return `Setup` errors: load
/// the embedder again. Used through [`srvdb::embed::Embed`] (`spec`, `embed`), like the native
/// embedder.
pub struct SandboxedEmbedder {
    runtime: Arc<Runtime>,
    paths: PathMap,
    spec: EmbedderSpec,
    live: Mutex<Option<LiveEmbedder>>,
}

/// The text layer's embedder (`srvdb::text::TextDatabase` over a sandboxed database): the
/// same vectors as [`srvdb::embed::Embedder`] gives natively.
impl srvdb::embed::Embed for SandboxedEmbedder {
    fn spec(&self) -> EmbedderSpec {
        self.spec.clone()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let mut guard = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let Some(live) = guard.as_mut() else {
            return Err(sandbox_error(
                SandboxFailure::Setup,
                "the embedder's instance trapped earlier: load it again",
            ));
        };
        self.runtime.arm(&mut live.store);
        let outcome = live.bindings.srvdb_engine_store().embedder().call_embed(
            &mut live.store,
            live.handle,
            texts,
        );
        match outcome {
            Ok(result) => result.map_err(|e| engine_error(e, &self.paths)),
            Err(trap) => {
                let err = classify_trap(trap, &self.runtime, &mut live.store);
                *guard = None;
                Err(err)
            }
        }
    }
}

impl Drop for SandboxedEmbedder {
    fn drop(&mut self) {
        let mut guard = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut live) = guard.take() {
            self.runtime.arm(&mut live.store);
            let _ = live.handle.resource_drop(&mut live.store);
        }
    }
}

/// A running instance and its open database handle.
struct Live {
    store: Store<HostState>,
    bindings: Srvdb,
    handle: ResourceAny,
}

impl Live {
    fn start(
        runtime: &Runtime,
        dir: &Path,
        guest_path: &str,
        options: &OpenOptions,
    ) -> Result<Self> {
        Self::start_as(runtime, dir, guest_path, options, false)
    }

    /// [`Live::start`]; a `partition_reader` opens with the guest's `open-partition-reader`
    /// (read-only, beside this host's own writer instance: see `search.rs`).
    fn start_as(
        runtime: &Runtime,
        dir: &Path,
        guest_path: &str,
        options: &OpenOptions,
        partition_reader: bool,
    ) -> Result<Self> {
        let mut store = runtime
            .store_for(dir, options.read_only)
            .map_err(setup_error)?;
        let bindings = Srvdb::instantiate(&mut store, &runtime.component, &runtime.linker)
            .map_err(|e| classify_instantiation(e, runtime, &mut store))?;
        runtime.arm(&mut store);
        let wit_options = wit::OpenOptions {
            dimension: options.dimension,
            metric: options.metric.map(metric_to_wit),
            auto_commit_rows: Some(u32::try_from(options.auto_commit_rows).unwrap_or(u32::MAX)),
            buffer_bytes: Some(u32::try_from(options.buffer_bytes).unwrap_or(u32::MAX)),
            embedder: options.embedder.as_ref().map(spec_to_wit),
            // Mmap has no meaning in the guest (WASI cannot map files): it keeps the guest's
            // default, rows in memory, as File does; only OnDemand changes where rows live.
            rows_in_memory: Some(options.storage != StorageKind::OnDemand),
            read_only: Some(options.read_only),
        };
        let database = bindings.srvdb_engine_store().database();
        let opened = if partition_reader {
            database.call_open_partition_reader(&mut store, guest_path, wit_options)
        } else {
            database.call_open(&mut store, guest_path, wit_options)
        }
        .map_err(|e| classify_trap(e, runtime, &mut store))?;
        // Opening may have created the database's files.
        sync_directory(dir)?;
        let handle = opened.map_err(|e| engine_error(e, &PathMap::new(GUEST_DB_DIR, dir)))?;
        Ok(Live {
            store,
            bindings,
            handle,
        })
    }
}

/// Fsyncs the database directory on the host side, so the creations, renames and removals a
/// guest call made in it survive a power loss (see `srvdb::storage::fs::sync_dir` for why the
/// guest's own sync is not enough on every WASI runtime).
fn sync_directory(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            context: format!(
                "syncing the database directory {} after a sandboxed call (its last file \
                 creations or renames may not survive a power loss: check the disk, then call \
                 persist again)",
                dir.display()
            ),
            source,
        })
}

/// An instantiation failure: a trap while the guest starts (its deadline, fuel, memory), or a
/// setup problem (a component that does not match the WIT world, a store limit).
fn classify_instantiation(
    e: wasmtime::Error,
    runtime: &Runtime,
    store: &mut Store<HostState>,
) -> Error {
    if e.downcast_ref::<wasmtime::Trap>().is_some() {
        return classify_trap(e, runtime, store);
    }
    setup_error(e)
}

/// What stopped a guest call: a limit (fuel, or a growth the store's limiter refused just
/// before), the deadline, or a trap of the guest's own (a bug).
fn classify_trap(e: wasmtime::Error, runtime: &Runtime, store: &mut Store<HostState>) -> Error {
    let denied = store.data_mut().take_denied();
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::OutOfFuel {
            return sandbox_error(SandboxFailure::Limit, "fuel budget exhausted");
        }
        if *trap == wasmtime::Trap::Interrupt {
            if let Some(deadline) = runtime.config.deadline_per_call {
                return sandbox_error(SandboxFailure::Deadline, format!("{deadline:?}"));
            }
        }
    }
    let text = format!("{e:#}");
    match denied {
        Some(denied) => sandbox_error(SandboxFailure::Limit, format!("{denied} ({text})")),
        None => sandbox_error(SandboxFailure::Trap, text),
    }
}

fn metric_to_wit(m: Metric) -> wit::Metric {
    match m {
        Metric::Cosine => wit::Metric::Cosine,
        Metric::Dot => wit::Metric::Dot,
        Metric::L2 => wit::Metric::L2,
    }
}

fn quantization_to_wit(q: Quantization) -> wit::Quantization {
    match q {
        Quantization::Int8 => wit::Quantization::Int8,
        Quantization::Binary => wit::Quantization::Binary,
    }
}

fn quantization_from_wit(q: wit::Quantization) -> Quantization {
    match q {
        wit::Quantization::Int8 => Quantization::Int8,
        wit::Quantization::Binary => Quantization::Binary,
    }
}

fn index_kind_to_wit(k: IndexKind) -> wit::IndexKind {
    match k {
        IndexKind::Flat => wit::IndexKind::Flat,
        IndexKind::Hnsw => wit::IndexKind::Hnsw,
    }
}

fn index_info_from_wit(info: wit::IndexInfo) -> IndexInfo {
    IndexInfo {
        kind: match info.kind {
            wit::IndexKind::Flat => IndexKind::Flat,
            wit::IndexKind::Hnsw => IndexKind::Hnsw,
        },
        quantization: info.quantization.map(quantization_from_wit),
        rows: info.rows,
        bytes: info.bytes,
        hnsw: match (info.m, info.ef_construction) {
            (Some(m), Some(ef_construction)) => Some(HnswParams {
                m: m as usize,
                ef_construction: ef_construction as usize,
            }),
            _ => None,
        },
    }
}

/// A `usize` for the WIT, saturating: anything past `u32::MAX` is past the engine's limits
/// anyway, so the guest rejects it with the engine's own message.
fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn metric_from_wit(m: wit::Metric) -> Metric {
    match m {
        wit::Metric::Cosine => Metric::Cosine,
        wit::Metric::Dot => Metric::Dot,
        wit::Metric::L2 => Metric::L2,
    }
}

/// Where the guest's directory is on the host, to give paths in errors back their host form.
struct PathMap {
    guest: &'static str,
    host: PathBuf,
}

impl PathMap {
    fn new(guest: &'static str, host: &Path) -> Self {
        PathMap {
            guest,
            host: host.to_path_buf(),
        }
    }

    /// The host path of `guest_path` (unchanged if it is outside the guest's directory).
    fn path(&self, guest_path: &str) -> PathBuf {
        match guest_path.strip_prefix(self.guest) {
            Some("") => self.host.clone(),
            Some(rest) if rest.starts_with('/') => self.host.join(rest.trim_start_matches('/')),
            _ => PathBuf::from(guest_path),
        }
    }

    /// `text` with every path under the guest's directory replaced by its host path. A path
    /// starts the text or follows a space, quote or bracket, and its prefix is a whole name
    /// (`/db` in `/db/vectors.bin`, not in `/dbx`).
    fn text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(self.guest) {
            let (before, from) = rest.split_at(at);
            out.push_str(before);
            let starts_path = out
                .chars()
                .next_back()
                .is_none_or(|c| c.is_whitespace() || "\"'`([{<".contains(c));
            let end = from[self.guest.len()..]
                .find(|c: char| c.is_whitespace() || "\"'`)]}>,;".contains(c))
                .map_or(from.len(), |n| n + self.guest.len());
            let (path, after) = from.split_at(end);
            let whole_name =
                path[self.guest.len()..].is_empty() || path[self.guest.len()..].starts_with('/');
            if starts_path && whole_name {
                out.push_str(&self.path(path).display().to_string());
            } else {
                out.push_str(path);
            }
            rest = after;
        }
        out.push_str(rest);
        out
    }
}

/// Rebuilds the engine's typed error from the WIT error: the same case and fields the native
/// engine gives, with the guest's paths mapped back by `paths`.
fn engine_error(e: wit::Error, paths: &PathMap) -> Error {
    let idx = |i: Option<u32>| i.map(|x| x as usize);
    match e {
        wit::Error::DimensionMismatch(d) => Error::DimensionMismatch {
            expected: d.expected,
            got: d.got as usize,
            index: idx(d.index),
        },
        wit::Error::DuplicateId(d) => Error::DuplicateId {
            id: d.id,
            index: idx(d.index),
        },
        wit::Error::NotFound(id) => Error::NotFound { id },
        wit::Error::InvalidInput(d) => Error::InvalidInput {
            reason: d.reason,
            index: idx(d.index),
        },
        wit::Error::Corrupt(d) => Error::Corrupt {
            file: paths.path(&d.file),
            reason: paths.text(&d.reason),
        },
        // Only a writer's lock is ever reported from inside: the guest takes no locks (the
        // host takes them, and reports who holds them itself).
        wit::Error::Locked(path) => Error::Locked {
            path: paths.path(&path),
            holder: srvdb::LockHolder::Writer,
        },
        wit::Error::ReadOnly(reason) => Error::ReadOnly {
            reason: paths.text(&reason),
        },
        wit::Error::Io(d) => Error::Io {
            context: paths.text(&d.context),
            source: std::io::Error::new(
                srvdb::error::io_kind_from_name(&d.kind),
                paths.text(&d.message),
            ),
        },
        wit::Error::Metadata(d) => Error::Metadata {
            context: paths.text(&d.context),
            message: paths.text(&d.message),
        },
        wit::Error::Poisoned(reason) => Error::Poisoned {
            reason: paths.text(&reason),
        },
        wit::Error::EmbedderMismatch(d) => Error::EmbedderMismatch {
            stored: d.stored,
            asked: d.asked,
        },
        wit::Error::Model(d) => Error::Model {
            path: paths.path(&d.path),
            reason: paths.text(&d.reason),
        },
        wit::Error::InvalidFilter(d) => Error::InvalidFilter {
            part: d.part,
            reason: d.reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::PathMap;
    use std::path::{Path, PathBuf};

    #[test]
    fn guest_paths_map_to_the_host_directory() {
        let map = PathMap::new("/db", Path::new("/data/my db"));
        assert_eq!(map.path("/db"), PathBuf::from("/data/my db"));
        assert_eq!(
            map.path("/db/vectors.bin"),
            PathBuf::from("/data/my db/vectors.bin")
        );
        assert_eq!(map.path("/dbx/a"), PathBuf::from("/dbx/a"));
        assert_eq!(map.path("/other"), PathBuf::from("/other"));
        assert_eq!(
            map.text("opening /db/vectors.bin: (/db) \"/db/m.db\""),
            "opening /data/my db/vectors.bin: (/data/my db) \"/data/my db/m.db\""
        );
        assert_eq!(map.text("a/db/b /dbx x/db"), "a/db/b /dbx x/db");
        assert_eq!(map.text("/db"), "/data/my db");
        assert_eq!(map.text(""), "");
    }
}

fn spec_to_wit(s: &EmbedderSpec) -> wit::EmbedderSpecParam<'_> {
    wit::EmbedderSpecParam {
        name: &s.name,
        dimension: s.dimension,
    }
}

fn spec_from_wit(s: wit::EmbedderSpecResult) -> EmbedderSpec {
    EmbedderSpec {
        name: s.name,
        dimension: s.dimension,
    }
}

fn hits(found: Vec<wit::Hit>) -> Vec<SearchHit> {
    found
        .into_iter()
        .map(|h| SearchHit {
            id: h.id,
            score: h.score,
        })
        .collect()
}

fn metas(m: &[Option<Metadata>]) -> Vec<Option<&str>> {
    m.iter().map(|m| m.as_ref().map(Metadata::as_str)).collect()
}

/// What a [`SandboxedDatabase`] holds between calls.
enum Slot {
    /// A live instance with the database open (boxed: a store is large).
    Running(Box<Live>),
    /// The instance trapped and could not be restarted yet: the next call tries again.
    Dead,
    /// A call ran past its deadline: the handle serves no more calls (the reason says why).
    Closed(String),
}

/// Whether a guest call may create, rename or remove files in the database directory (then the
/// host syncs the directory after it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Touches {
    Files,
    Nothing,
}

/// A database opened inside the sandbox: the native engine's operations, the same results.
/// `Send + Sync`; calls into the writer's instance are serialised (the guest is
/// single-threaded), concurrent single searches are answered together, and exact batches are
/// split across the partition readers (see the module docs).
pub struct SandboxedDatabase {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    options: OpenOptions,
    slot: Mutex<Slot>,
    directory_syncs: AtomicU64,
    /// Concurrent single searches answered together (see `search.rs`).
    coalescer: srvdb::coalesce::Coalescer<search::Single>,
    /// Bumped after every call that may change the database and after a restart: partition
    /// readers opened at another generation are reopened before they serve.
    generation: AtomicU64,
    /// The read-only instances a batch's exact scan is split across (see `search.rs`).
    partitions: search::Partitions,
    /// The writer's lock, held while the handle lives; a reader holds none once open.
    _lock: Option<DirLock>,
}

impl SandboxedDatabase {
    /// Runs one guest call. On a trap the instance is dropped and a fresh one reopens the
    /// database, so the next call is served; past the deadline, the handle is closed instead.
    /// After a call that `touches` files, the host fsyncs the database directory.
    fn call<T>(
        &self,
        touches: Touches,
        f: impl FnOnce(
            &wit::GuestDatabase,
            &mut Store<HostState>,
            ResourceAny,
        ) -> wasmtime::Result<std::result::Result<T, wit::Error>>,
    ) -> Result<T> {
        let mut guard = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        self.call_locked(&mut guard, touches, f)
    }

    /// [`SandboxedDatabase::call`] with the instance's lock already held.
    fn call_locked<T>(
        &self,
        guard: &mut std::sync::MutexGuard<'_, Slot>,
        touches: Touches,
        f: impl FnOnce(
            &wit::GuestDatabase,
            &mut Store<HostState>,
            ResourceAny,
        ) -> wasmtime::Result<std::result::Result<T, wit::Error>>,
    ) -> Result<T> {
        if let Slot::Closed(reason) = &**guard {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        if matches!(**guard, Slot::Dead) {
            **guard = self.restart()?;
        }
        let Slot::Running(live) = &mut **guard else {
            return Err(sandbox_error(SandboxFailure::Setup, "no instance"));
        };
        self.runtime.arm(&mut live.store);
        let outcome = f(
            &live.bindings.srvdb_engine_store().database(),
            &mut live.store,
            live.handle,
        );
        match outcome {
            Ok(result) => {
                // Even a call that failed may have created or renamed files before failing.
                if touches == Touches::Files {
                    self.generation.fetch_add(1, Ordering::Relaxed);
                    sync_directory(&self.dir)?;
                    self.directory_syncs.fetch_add(1, Ordering::Relaxed);
                }
                result.map_err(|e| engine_error(e, &PathMap::new(GUEST_DB_DIR, &self.dir)))
            }
            Err(trap) => {
                let err = classify_trap(trap, &self.runtime, &mut live.store);
                if let Error::Sandbox {
                    failure: SandboxFailure::Deadline,
                    ..
                } = err
                {
                    **guard = Slot::Closed(format!(
                        "an earlier call was stopped at the sandbox's deadline ({err}); \
                         writes since the last commit were lost"
                    ));
                    return Err(err);
                }
                // The instance is dead after a trap: replace it now, so the handle keeps serving.
                **guard = self.restart().unwrap_or(Slot::Dead);
                Err(err)
            }
        }
    }

    /// A fresh instance with the database reopened at its last commit (`Live::start` syncs the
    /// directory after opening).
    fn restart(&self) -> Result<Slot> {
        let live = if self.options.read_only {
            // At the newest commit, under the shared lock (refused while a writer is open).
            Sandbox::start_reader(&self.runtime, &self.dir, GUEST_DB_DIR, &self.options)?
        } else {
            Live::start(&self.runtime, &self.dir, GUEST_DB_DIR, &self.options)?
        };
        self.directory_syncs.fetch_add(1, Ordering::Relaxed);
        // Uncommitted writes were lost: readers must not trust an earlier scan state.
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(Slot::Running(Box::new(live)))
    }

    /// How many times the host has fsynced the database directory for this handle: after
    /// opening, and after each call that may create, rename or remove files. For tests.
    #[doc(hidden)]
    pub fn directory_syncs(&self) -> u64 {
        self.directory_syncs.load(Ordering::Relaxed)
    }

    /// Counts the records matching filter text sent to the guest as given, without the
    /// host-side parse a [`srvdb::Filter`] has had: for tests that check the guest applies the
    /// same parser and limits and that `invalid-filter` keeps its part and reason.
    #[doc(hidden)]
    pub fn count_matching_unparsed(
        &self,
        where_json: Option<&str>,
        document_json: Option<&str>,
    ) -> Result<u64> {
        let filter = wit::Filter {
            where_: where_json,
            where_document: document_json,
        };
        self.call(Touches::Nothing, |g, s, h| {
            g.call_count_matching(s, h, filter)
        })
    }

    /// Commits, drops the guest's handle and the instance, and reports any error (a handle
    /// closed by a deadline reports why).
    pub fn close(self) -> Result<()> {
        let result = self.persist();
        let mut guard = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Slot::Running(mut live) = std::mem::replace(&mut *guard, Slot::Dead) {
            self.runtime.arm(&mut live.store);
            // Dropping the resource runs the guest's destructor (its final commit).
            live.handle
                .resource_drop(&mut live.store)
                .map_err(|e| classify_trap(e, &self.runtime, &mut live.store))?;
            sync_directory(&self.dir)?;
            self.directory_syncs.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl std::fmt::Debug for SandboxedDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxedDatabase")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A filter as it crosses into the guest: its JSON text, which the guest parses again with the
/// same parser and limits.
fn filter_to_wit(filter: &srvdb::Filter) -> wit::Filter<'_> {
    wit::Filter {
        where_: filter.where_json(),
        where_document: filter.document_json(),
    }
}

fn record_from_wit(r: wit::Stored) -> Record {
    Record {
        id: r.id,
        vector: r.vector,
        metadata: r.metadata.map(Metadata::from_text),
        document: r.document,
    }
}

impl srvdb::Store for SandboxedDatabase {
    fn write(&self, request: &Write<'_>) -> Result<()> {
        let request = wit::WriteRequest {
            mode: match request.mode {
                WriteMode::Add => wit::WriteMode::Add,
                WriteMode::Upsert => wit::WriteMode::Upsert,
            },
            ids: request.ids,
            vectors: request.vectors,
            metadatas: &metas(request.metadatas),
            documents: request.documents,
        };
        self.call(Touches::Files, |g, s, h| g.call_write(s, h, request))
    }

    fn remove(&self, request: &Delete<'_>) -> Result<usize> {
        let request = wit::DeleteRequest {
            ids: request.ids,
            filter: request.filter.map(filter_to_wit),
            skip_missing: request.missing == Missing::Skip,
        };
        self.call(Touches::Files, |g, s, h| g.call_remove(s, h, request))
            .map(|n| n as usize)
    }

    fn update(&self, request: &Update<'_>) -> Result<()> {
        let metadatas = request.metadatas.map(metas);
        let request = wit::UpdateRequest {
            ids: request.ids,
            vectors: request.vectors,
            metadatas: metadatas.as_deref(),
            documents: request.documents,
        };
        self.call(Touches::Files, |g, s, h| g.call_update(s, h, request))
    }

    fn records(&self, request: &Select<'_>) -> Result<Vec<Record>> {
        let request = wit::SelectRequest {
            filter: request.filter.map(filter_to_wit),
            limit: request.limit.map(|n| n as u64),
            offset: request.offset as u64,
        };
        let found = self.call(Touches::Nothing, |g, s, h| g.call_records(s, h, request))?;
        Ok(found.into_iter().map(record_from_wit).collect())
    }

    fn count_matching(&self, filter: &srvdb::Filter) -> Result<u64> {
        let filter = filter_to_wit(filter);
        self.call(Touches::Nothing, |g, s, h| {
            g.call_count_matching(s, h, filter)
        })
    }

    fn create_field_index(&self, field: &str) -> Result<()> {
        self.call(Touches::Files, |g, s, h| {
            g.call_create_field_index(s, h, field)
        })
    }

    fn drop_field_index(&self, field: &str) -> Result<bool> {
        self.call(Touches::Files, |g, s, h| {
            g.call_drop_field_index(s, h, field)
        })
    }

    fn field_indexes(&self) -> Result<Vec<String>> {
        self.call(Touches::Nothing, |g, s, h| g.call_field_indexes(s, h))
    }

    fn create_index(&self, spec: &IndexSpec) -> Result<IndexInfo> {
        let spec = wit::IndexSpec {
            kind: index_kind_to_wit(spec.kind),
            quantization: spec.quantization.map(quantization_to_wit),
            m: spec.hnsw.map(|p| saturating_u32(p.m)),
            ef_construction: spec.hnsw.map(|p| saturating_u32(p.ef_construction)),
        };
        self.call(Touches::Files, |g, s, h| g.call_create_index(s, h, spec))
            .map(index_info_from_wit)
    }

    fn drop_index(&self) -> Result<bool> {
        self.call(Touches::Files, |g, s, h| g.call_drop_index(s, h))
    }

    fn index_info(&self) -> Result<IndexInfo> {
        self.call(Touches::Nothing, |g, s, h| g.call_index_info(s, h))
            .map(index_info_from_wit)
    }

    fn query(&self, request: &Query<'_>) -> Result<Vec<Vec<SearchHit>>> {
        self.search(request)
    }

    fn coalesce_stats(&self) -> Option<srvdb::CoalesceStats> {
        Some(self.coalescer.stats())
    }

    fn get(&self, id: &str) -> Result<Option<Record>> {
        let found = self.call(Touches::Nothing, |g, s, h| g.call_get(s, h, id))?;
        Ok(found.map(record_from_wit))
    }

    fn documents(&self, ids: &[&str]) -> Result<Vec<Option<String>>> {
        self.call(Touches::Nothing, |g, s, h| g.call_documents(s, h, ids))
    }

    fn contains(&self, id: &str) -> Result<bool> {
        self.call(Touches::Nothing, |g, s, h| g.call_contains(s, h, id))
    }

    fn count(&self) -> Result<u64> {
        self.call(Touches::Nothing, |g, s, h| g.call_count(s, h))
    }

    fn ids(&self) -> Result<Vec<String>> {
        self.call(Touches::Nothing, |g, s, h| g.call_ids(s, h))
    }

    fn dimension(&self) -> Result<Option<u32>> {
        self.call(Touches::Nothing, |g, s, h| g.call_dimension(s, h))
    }

    fn metric(&self) -> Result<Metric> {
        self.call(Touches::Nothing, |g, s, h| g.call_metric(s, h))
            .map(metric_from_wit)
    }

    fn embedder(&self) -> Result<Option<EmbedderSpec>> {
        self.call(Touches::Nothing, |g, s, h| g.call_embedder(s, h))
            .map(|e| e.map(spec_from_wit))
    }

    fn kernel(&self) -> Result<String> {
        self.call(Touches::Nothing, |g, s, h| g.call_kernel(s, h))
    }

    fn persist(&self) -> Result<()> {
        self.call(Touches::Files, |g, s, h| g.call_persist(s, h))
    }

    fn compact(&self) -> Result<()> {
        self.call(Touches::Files, |g, s, h| g.call_compact(s, h))
    }
}

impl Drop for SandboxedDatabase {
    fn drop(&mut self) {
        let mut guard = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Slot::Running(mut live) = std::mem::replace(&mut *guard, Slot::Dead) {
            self.runtime.arm(&mut live.store);
            // Best effort, as the native engine's drop: the guest commits in its destructor.
            if live.handle.resource_drop(&mut live.store).is_ok() {
                let _ = sync_directory(&self.dir);
            }
        }
    }
}
