//! Which engine a Python handle drives. Both implement `srvdb::Store`, so the handle holds a
//! `dyn Store` and the backend name only decides which one is constructed: the native engine
//! (`srvdb::Database`, in this process) or, with the `wasm` cargo feature, the sandboxed one
//! (the WASI component run by `srvdb-host` in wasmtime). Both report `srvdb::Error`, so Python
//! sees the same exceptions from either; sandbox failures are `Error::Sandbox`.

use srvdb::{OpenOptions, Store};
use std::path::Path;

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

/// Why an engine (or embedder) could not be opened.
pub(crate) enum OpenError {
    /// The engine's error (including `Error::Sandbox` for a sandbox that did not start).
    Engine(srvdb::Error),
    /// This build or this machine lacks the backend; the text says what to do.
    Unavailable(String),
}

impl From<srvdb::Error> for OpenError {
    fn from(e: srvdb::Error) -> Self {
        OpenError::Engine(e)
    }
}

/// Where a database lives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Place<'a> {
    /// A directory, created if needed.
    Directory(&'a Path),
    /// Memory only (`srvdb.open(":memory:")`): gone when the handle closes. Native only.
    Memory,
    /// A directory written with its syncs deferred (`srvdb::Database::open_deferring_syncs`),
    /// made durable by `_sync_directory` once closed: `srvdb.distributed.ingest`'s shards.
    /// Native only.
    DirectoryDeferringSyncs(&'a Path),
}

/// The path that names an in-memory database, as in SQLite and Chroma.
pub(crate) const MEMORY_PATH: &str = ":memory:";

/// The error for `backend="wasm"` with `":memory:"`.
pub(crate) fn wasm_in_memory() -> srvdb::Error {
    srvdb::Error::InvalidInput {
        reason: "backend=\"wasm\" has no in-memory databases (the sandboxed engine keeps its \
                 files in a directory): open \":memory:\" with backend=\"native\", or give \
                 the wasm backend a directory"
            .to_owned(),
        index: None,
    }
}

/// Opens the database at `place` with the engine `kind` names.
pub(crate) fn open(
    kind: BackendKind,
    place: Place<'_>,
    options: OpenOptions,
) -> Result<Box<dyn Store>, OpenError> {
    let path = match place {
        Place::Directory(path) => path,
        Place::DirectoryDeferringSyncs(path) => {
            return match kind {
                BackendKind::Native => Ok(Box::new(srvdb::Database::open_deferring_syncs(
                    path, options,
                )?)),
                BackendKind::Wasm => Err(OpenError::Engine(srvdb::Error::InvalidInput {
                    reason: "deferred syncs are for the native backend only".to_owned(),
                    index: None,
                })),
            };
        }
        Place::Memory => {
            return match kind {
                BackendKind::Native => Ok(Box::new(srvdb::Database::in_memory(options)?)),
                BackendKind::Wasm => Err(OpenError::Engine(wasm_in_memory())),
            };
        }
    };
    match kind {
        BackendKind::Native => Ok(Box::new(srvdb::Database::open(path, options)?)),
        #[cfg(feature = "wasm")]
        BackendKind::Wasm => Ok(Box::new(wasm::sandbox()?.open(path, options)?)),
        #[cfg(not(feature = "wasm"))]
        BackendKind::Wasm => Err(wasm_not_built()),
    }
}

/// The error for `backend="wasm"` in a build without the `wasm` feature.
#[cfg(not(feature = "wasm"))]
pub(crate) fn wasm_not_built() -> OpenError {
    OpenError::Unavailable(
        "backend=\"wasm\" is not in this build: the sandboxed backend (the engine as a WASI \
         component in wasmtime) needs the extension built with the `wasm` cargo feature \
         (`maturin develop --release --features wasm`, as `make python-dev` does); use \
         backend=\"native\" otherwise"
            .to_owned(),
    )
}

#[cfg(feature = "wasm")]
pub(crate) mod wasm {
    //! The process's sandbox, shared by every `backend="wasm"` database and embedder.

    use super::OpenError;
    use pyo3::prelude::*;
    use srvdb_host::sandbox::SandboxConfig;
    use srvdb_host::Sandbox;
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock};

    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    static LOADING: Mutex<()> = Mutex::new(());
    /// `srvdb.wasm` beside the extension module, where a wheel built by `make wheel` has it;
    /// `None` when it is not there (an in-tree build).
    static PACKAGED: OnceLock<Option<PathBuf>> = OnceLock::new();

    /// Notes the packaged component for [`sandbox`], which runs without the GIL. Called with
    /// the GIL before every `backend="wasm"` open; only the first call looks.
    pub(crate) fn find_packaged(py: Python<'_>) {
        if PACKAGED.get().is_some() {
            return;
        }
        // Computed before `set`, not inside `get_or_init`: the import may release the GIL, and
        // another thread blocked in `get_or_init` while holding it would deadlock with us.
        let found = py
            .import("srvdb._srvdb")
            .ok()
            .and_then(|module| module.getattr("__file__").ok())
            .and_then(|file| file.extract::<PathBuf>().ok())
            .and_then(|file| file.parent().map(|dir| dir.join("srvdb.wasm")))
            .filter(|path| path.is_file());
        let _ = PACKAGED.set(found);
    }

    /// The component is loaded and compiled once, on the first `backend="wasm"` open, and
    /// shared by every later one. A failed load is not cached, so building the component
    /// afterwards and opening again works.
    pub(crate) fn sandbox() -> Result<&'static Sandbox, OpenError> {
        if let Some(sandbox) = SANDBOX.get() {
            return Ok(sandbox);
        }
        let _loading = LOADING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sandbox) = SANDBOX.get() {
            return Ok(sandbox);
        }
        // SRVDB_COMPONENT, else the one inside the installed package, else the workspace's
        // `make component` output.
        let mut config = SandboxConfig::new();
        if std::env::var_os("SRVDB_COMPONENT").is_none() {
            if let Some(Some(packaged)) = PACKAGED.get() {
                config.component = packaged.clone();
            }
        }
        if !config.component.is_file() {
            return Err(OpenError::Unavailable(format!(
                "backend=\"wasm\" needs the SrvDB WASI component, which is not at {}: install \
                 a wheel built by `make wheel` (it has the component inside), run `make \
                 component` in the SrvDB repository, or set SRVDB_COMPONENT to the path of \
                 srvdb.wasm",
                config.component.display()
            )));
        }
        let sandbox = Sandbox::new(config)?;
        Ok(SANDBOX.get_or_init(|| sandbox))
    }
}
