//! The text embedder behind `srvdb.open(..., embedder=...)`: the native one (candle, in this
//! process, on every core) or, for `backend="wasm"`, the same code inside the WASI component
//! (a component built with the `text` feature). Loaded models are cached per process, since a
//! test suite or a notebook opens many databases with one model.

use crate::backend::{BackendKind, EngineError, OpenError};
use srvdb::EmbedderSpec;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a handle needs from an embedder.
pub(crate) trait TextEncoder: Send + Sync {
    fn spec(&self) -> EmbedderSpec;
    fn embed(&self, texts: &[String]) -> Result<Vec<f32>, EngineError>;
}

impl TextEncoder for srvdb::embed::Embedder {
    fn spec(&self) -> EmbedderSpec {
        srvdb::embed::Embedder::spec(self)
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<f32>, EngineError> {
        Ok(srvdb::embed::Embedder::embed(self, texts)?)
    }
}

#[cfg(feature = "wasm")]
impl TextEncoder for srvdb_host::SandboxedEmbedder {
    fn spec(&self) -> EmbedderSpec {
        srvdb_host::SandboxedEmbedder::spec(self).clone()
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<f32>, EngineError> {
        Ok(srvdb_host::SandboxedEmbedder::embed(self, texts)?)
    }
}

type Key = (BackendKind, PathBuf, String);
static LOADED: Mutex<Option<HashMap<Key, Arc<dyn TextEncoder>>>> = Mutex::new(None);

/// The embedder for model folder `dir` under `name`, loaded once per backend and folder.
pub(crate) fn load(
    kind: BackendKind,
    dir: &Path,
    name: &str,
) -> Result<Arc<dyn TextEncoder>, OpenError> {
    let key = (kind, dir.to_path_buf(), name.to_owned());
    let mut cache = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = cache.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(found.clone());
    }
    let loaded: Arc<dyn TextEncoder> = match kind {
        BackendKind::Native => Arc::new(
            srvdb::embed::Embedder::from_dir_named(dir, name)
                .map_err(|e| OpenError::Engine(e.into()))?,
        ),
        #[cfg(feature = "wasm")]
        BackendKind::Wasm => Arc::new(
            crate::backend::wasm::sandbox()?
                .load_embedder(dir, name)
                .map_err(|e| OpenError::Engine(e.into()))?,
        ),
        #[cfg(not(feature = "wasm"))]
        BackendKind::Wasm => {
            return Err(OpenError::Unavailable(
                "backend=\"wasm\" is not in this build (see srvdb.BackendUnavailableError)".into(),
            ))
        }
    };
    cache
        .get_or_insert_with(HashMap::new)
        .insert(key, loaded.clone());
    Ok(loaded)
}
