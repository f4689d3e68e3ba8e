//! The engines a Python handle can drive.
//!
//! `Engine` is what the Python classes need from a database. The native engine
//! (`srvdb::Database`, in this process) implements it directly. The sandboxed engine (the
//! WASI component run by the `srvdb-host` library in wasmtime) is planned as a second
//! `Backend` variant implementing the same trait, with its WIT errors mapped back to
//! `srvdb::Error` so that Python sees the same exceptions from both; until that library
//! exists, `backend="wasm"` raises `BackendUnavailableError`.

use srvdb::{Metadata, Metric, OpenOptions, Record, Result, SearchHit};
use std::path::Path;

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
    fn metric(&self) -> Metric;
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<SearchHit>>;
    fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>>;
    fn persist(&self) -> Result<()>;
    fn compact(&self) -> Result<()>;
}

impl Engine for srvdb::Database {
    fn add(&self, ids: &[String], vectors: &[f32], metadatas: &[Option<Metadata>]) -> Result<()> {
        srvdb::Database::add(self, ids, vectors, metadatas)
    }

    fn upsert(
        &self,
        ids: &[String],
        vectors: &[f32],
        metadatas: &[Option<Metadata>],
    ) -> Result<()> {
        srvdb::Database::upsert(self, ids, vectors, metadatas)
    }

    fn delete(&self, ids: &[String]) -> Result<usize> {
        srvdb::Database::delete(self, ids)
    }

    fn get(&self, id: &str) -> Result<Option<Record>> {
        srvdb::Database::get(self, id)
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

    fn metric(&self) -> Metric {
        srvdb::Database::metric(self)
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<SearchHit>> {
        srvdb::Database::search(self, query, k)
    }

    fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>> {
        srvdb::Database::search_batch(self, queries, k)
    }

    fn persist(&self) -> Result<()> {
        srvdb::Database::persist(self)
    }

    fn compact(&self) -> Result<()> {
        srvdb::Database::compact(self)
    }
}

/// Which engine to open, as named by `srvdb.open(..., backend=...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackendKind {
    /// The engine linked into this extension.
    Native,
    /// The WASI component in a wasmtime sandbox (not available yet).
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
    Engine(srvdb::Error),
    Unavailable(String),
}

/// An open engine. A new engine is a new variant here plus its `Engine` impl.
pub(crate) enum Backend {
    Native(srvdb::Database),
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
                .map_err(OpenError::Engine),
            BackendKind::Wasm => Err(OpenError::Unavailable(
                "backend=\"wasm\" is not available yet: the sandboxed backend (the engine as a \
                 WASI component in wasmtime) arrives with the srvdb-host library; use \
                 backend=\"native\" for now"
                    .to_owned(),
            )),
        }
    }

    pub(crate) fn engine(&self) -> &dyn Engine {
        match self {
            Backend::Native(db) => db,
        }
    }

    /// Commits and releases the database, reporting any error.
    pub(crate) fn close(self) -> Result<()> {
        match self {
            Backend::Native(db) => db.close(),
        }
    }
}
