//! The engines a Python handle can drive.
//!
//! `Engine` is what the Python classes need from a database. The native engine
//! (`srvdb::Database`, in this process) implements it directly. With the `wasm` cargo feature,
//! the sandboxed engine (the WASI component run by the `srvdb-host` library in wasmtime)
//! implements it too: its engine errors are the same `srvdb::Error`s, so Python sees the same
//! exceptions from both, and its own failures (a limit, a trap, a setup error) are
//! `EngineError::Sandbox`, raised as `srvdb.SandboxError`.

use srvdb::{EmbedderSpec, Metadata, Metric, OpenOptions, Record, SearchHit};
use std::path::Path;

/// What an engine call can fail with.
#[derive(Debug)]
pub(crate) enum EngineError {
    /// The engine's own typed error (the same from both engines).
    Engine(srvdb::Error),
    /// The sandbox failed (limit, trap, setup): only the wasm engine reports these.
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    Sandbox(String),
}

impl From<srvdb::Error> for EngineError {
    fn from(e: srvdb::Error) -> Self {
        EngineError::Engine(e)
    }
}

/// Result of an engine call.
pub(crate) type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The operations the Python API needs. Every method can fail, because a sandboxed engine
/// answers through a runtime that can.
pub(crate) trait Engine: Send + Sync {
    fn add(&self, ids: &[String], vectors: &[f32], metadatas: &[Option<Metadata>]) -> Result<()>;
    fn upsert(&self, ids: &[String], vectors: &[f32], metadatas: &[Option<Metadata>])
        -> Result<()>;
    fn delete(&self, ids: &[String]) -> Result<usize>;
    fn get(&self, id: &str) -> Result<Option<Record>>;
    fn contains(&self, id: &str) -> Result<bool>;
    fn count(&self) -> Result<u64>;
    fn ids(&self) -> Result<Vec<String>>;
    fn dimension(&self) -> Result<Option<u32>>;
    fn metric(&self) -> Result<Metric>;
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<SearchHit>>;
    fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>>;
    fn persist(&self) -> Result<()>;
    fn compact(&self) -> Result<()>;
    fn add_with_documents(
        &self,
        ids: &[String],
        vectors: &[f32],
        metadatas: &[Option<Metadata>],
        documents: &[Option<String>],
        upsert: bool,
    ) -> Result<()>;
    fn documents(&self, ids: &[String]) -> Result<Vec<Option<String>>>;
    fn embedder(&self) -> Result<Option<EmbedderSpec>>;
    /// `(searches, scans)` of the engine's search coalescing, if it coalesces.
    fn coalesce_stats(&self) -> Option<(u64, u64)> {
        None
    }
}

impl Engine for srvdb::Database {
    fn add(&self, ids: &[String], vectors: &[f32], metadatas: &[Option<Metadata>]) -> Result<()> {
        Ok(srvdb::Store::add(self, ids, vectors, metadatas)?)
    }

    fn upsert(
        &self,
        ids: &[String],
        vectors: &[f32],
        metadatas: &[Option<Metadata>],
    ) -> Result<()> {
        Ok(srvdb::Store::upsert(self, ids, vectors, metadatas)?)
    }

    fn delete(&self, ids: &[String]) -> Result<usize> {
        Ok(srvdb::Store::delete(self, ids)?)
    }

    fn get(&self, id: &str) -> Result<Option<Record>> {
        Ok(srvdb::Store::get(self, id)?)
    }

    fn contains(&self, id: &str) -> Result<bool> {
        Ok(srvdb::Database::contains(self, id))
    }

    fn count(&self) -> Result<u64> {
        Ok(srvdb::Database::count(self))
    }

    fn ids(&self) -> Result<Vec<String>> {
        Ok(srvdb::Database::ids(self))
    }

    fn dimension(&self) -> Result<Option<u32>> {
        Ok(srvdb::Database::dimension(self))
    }

    fn metric(&self) -> Result<Metric> {
        Ok(srvdb::Database::metric(self))
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<SearchHit>> {
        Ok(srvdb::Store::search(self, query, k)?)
    }

    fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>> {
        Ok(srvdb::Store::search_batch(self, queries, k)?)
    }

    fn persist(&self) -> Result<()> {
        Ok(srvdb::Store::persist(self)?)
    }

    fn compact(&self) -> Result<()> {
        Ok(srvdb::Store::compact(self)?)
    }

    fn add_with_documents(
        &self,
        ids: &[String],
        vectors: &[f32],
        metadatas: &[Option<Metadata>],
        documents: &[Option<String>],
        upsert: bool,
    ) -> Result<()> {
        let ids = srvdb::store::str_refs(ids);
        let documents: Vec<Option<&str>> = documents.iter().map(Option::as_deref).collect();
        let mode = if upsert {
            srvdb::WriteMode::Upsert
        } else {
            srvdb::WriteMode::Add
        };
        let write = srvdb::Write::new(mode, &ids, vectors).metadatas(metadatas);
        Ok(srvdb::Store::write(self, &write.documents(&documents))?)
    }

    fn documents(&self, ids: &[String]) -> Result<Vec<Option<String>>> {
        Ok(srvdb::Store::documents(self, &srvdb::store::str_refs(ids))?)
    }

    fn embedder(&self) -> Result<Option<EmbedderSpec>> {
        Ok(srvdb::Database::embedder(self).cloned())
    }

    fn coalesce_stats(&self) -> Option<(u64, u64)> {
        let stats = srvdb::Database::coalesce_stats(self);
        Some((stats.queries, stats.scans))
    }
}

/// Which engine to open, as named by `srvdb.open(..., backend=...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BackendKind {
    /// The engine linked into this extension.
    Native,
    /// The WASI component in a wasmtime sandbox (with the `wasm` cargo feature).
    Wasm,
}

impl BackendKind {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "native" => Some(BackendKind::Native),
            "wasm" | "sandboxed" | "wasi" => Some(BackendKind::Wasm),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            BackendKind::Native => "native",
            BackendKind::Wasm => "wasm",
        }
    }
}

/// Why `Backend::open` failed.
pub(crate) enum OpenError {
    Engine(EngineError),
    Unavailable(String),
}

/// An open engine. A new engine is a new variant here plus its `Engine` impl.
pub(crate) enum Backend {
    Native(srvdb::Database),
    #[cfg(feature = "wasm")]
    Wasm(srvdb_host::SandboxedDatabase),
}

impl Backend {
    pub(crate) fn open(
        kind: BackendKind,
        path: &Path,
        options: OpenOptions,
    ) -> std::result::Result<Self, OpenError> {
        match kind {
            BackendKind::Native => srvdb::Database::open(path, options)
                .map(Backend::Native)
                .map_err(|e| OpenError::Engine(e.into())),
            #[cfg(feature = "wasm")]
            BackendKind::Wasm => {
                let sandbox = wasm::sandbox()?;
                sandbox
                    .open(path, options)
                    .map(Backend::Wasm)
                    .map_err(|e| OpenError::Engine(e.into()))
            }
            #[cfg(not(feature = "wasm"))]
            BackendKind::Wasm => Err(OpenError::Unavailable(
                "backend=\"wasm\" is not in this build: the sandboxed backend (the engine as a \
                 WASI component in wasmtime) needs the extension built with the `wasm` cargo \
                 feature (`maturin develop --release --features wasm`, as `make python-dev` \
                 does); use backend=\"native\" otherwise"
                    .to_owned(),
            )),
        }
    }

    pub(crate) fn engine(&self) -> &dyn Engine {
        match self {
            Backend::Native(db) => db,
            #[cfg(feature = "wasm")]
            Backend::Wasm(db) => db,
        }
    }

    /// Commits and releases the database, reporting any error.
    pub(crate) fn close(self) -> Result<()> {
        match self {
            Backend::Native(db) => Ok(db.close()?),
            #[cfg(feature = "wasm")]
            Backend::Wasm(db) => Ok(db.close()?),
        }
    }
}

#[cfg(feature = "wasm")]
pub(crate) mod wasm {
    //! The sandboxed engine: `srvdb_host::SandboxedDatabase` behind `Engine`. Its calls are
    //! serialised inside the host (the guest is single-threaded).

    use super::{Engine, EngineError, OpenError, Result};
    use srvdb::{EmbedderSpec, Metadata, Metric, Record, SearchHit};
    use srvdb_host::sandbox::SandboxConfig;
    use srvdb_host::{HostError, Sandbox, SandboxedDatabase};
    use std::sync::{Mutex, OnceLock};

    impl From<HostError> for EngineError {
        fn from(e: HostError) -> Self {
            match e {
                HostError::Engine(e) => EngineError::Engine(e),
                other => EngineError::Sandbox(other.to_string()),
            }
        }
    }

    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    static LOADING: Mutex<()> = Mutex::new(());

    /// The process's sandbox: the component is loaded and compiled once, on the first
    /// `backend="wasm"` open, and shared by every later one. A failed load is not cached, so
    /// building the component afterwards and opening again works.
    pub(crate) fn sandbox() -> std::result::Result<&'static Sandbox, OpenError> {
        if let Some(sandbox) = SANDBOX.get() {
            return Ok(sandbox);
        }
        let _loading = LOADING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sandbox) = SANDBOX.get() {
            return Ok(sandbox);
        }
        // SRVDB_COMPONENT, else the workspace's `make component` output.
        let config = SandboxConfig::new();
        if !config.component.is_file() {
            return Err(OpenError::Unavailable(format!(
                "backend=\"wasm\" needs the SrvDB WASI component, which is not at {}: run \
                 `make component` in the SrvDB repository, or set SRVDB_COMPONENT to the path \
                 of srvdb.wasm",
                config.component.display()
            )));
        }
        let sandbox = Sandbox::new(config).map_err(|e| OpenError::Engine(e.into()))?;
        Ok(SANDBOX.get_or_init(|| sandbox))
    }

    impl Engine for SandboxedDatabase {
        fn add(
            &self,
            ids: &[String],
            vectors: &[f32],
            metadatas: &[Option<Metadata>],
        ) -> Result<()> {
            Ok(SandboxedDatabase::add(self, ids, vectors, metadatas)?)
        }

        fn upsert(
            &self,
            ids: &[String],
            vectors: &[f32],
            metadatas: &[Option<Metadata>],
        ) -> Result<()> {
            Ok(SandboxedDatabase::upsert(self, ids, vectors, metadatas)?)
        }

        fn delete(&self, ids: &[String]) -> Result<usize> {
            Ok(SandboxedDatabase::delete(self, ids)?)
        }

        fn get(&self, id: &str) -> Result<Option<Record>> {
            Ok(SandboxedDatabase::get(self, id)?)
        }

        fn contains(&self, id: &str) -> Result<bool> {
            Ok(SandboxedDatabase::contains(self, id)?)
        }

        fn count(&self) -> Result<u64> {
            Ok(SandboxedDatabase::count(self)?)
        }

        fn ids(&self) -> Result<Vec<String>> {
            Ok(SandboxedDatabase::ids(self)?)
        }

        fn dimension(&self) -> Result<Option<u32>> {
            Ok(SandboxedDatabase::dimension(self)?)
        }

        fn metric(&self) -> Result<Metric> {
            Ok(SandboxedDatabase::metric(self)?)
        }

        fn search(&self, query: &[f32], k: usize) -> Result<Vec<SearchHit>> {
            Ok(SandboxedDatabase::search(self, query, k)?)
        }

        fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>> {
            Ok(SandboxedDatabase::search_batch(self, queries, k)?)
        }

        fn persist(&self) -> Result<()> {
            Ok(SandboxedDatabase::persist(self)?)
        }

        fn compact(&self) -> Result<()> {
            Ok(SandboxedDatabase::compact(self)?)
        }

        fn add_with_documents(
            &self,
            ids: &[String],
            vectors: &[f32],
            metadatas: &[Option<Metadata>],
            documents: &[Option<String>],
            upsert: bool,
        ) -> Result<()> {
            if upsert {
                SandboxedDatabase::upsert_with_documents(self, ids, vectors, metadatas, documents)?;
            } else {
                SandboxedDatabase::add_with_documents(self, ids, vectors, metadatas, documents)?;
            }
            Ok(())
        }

        fn documents(&self, ids: &[String]) -> Result<Vec<Option<String>>> {
            Ok(SandboxedDatabase::documents(self, ids)?)
        }

        fn embedder(&self) -> Result<Option<EmbedderSpec>> {
            Ok(SandboxedDatabase::embedder(self)?)
        }
    }
}
