//! The text embedder behind `srvdb.open(..., embedder=...)`: the native one (in this
//! process, on every core) or, for `backend="wasm"`, the same code inside the WASI component
//! (a component built with the `text` feature). Both are `srvdb::embed::Embed`, which the
//! handle's `srvdb::text::TextDatabase` embeds with. Loaded models are cached per process,
//! since a test suite or a notebook opens many databases with one model.

use crate::backend::{BackendKind, OpenError};
use srvdb::embed::Embed;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

type Key = (BackendKind, PathBuf, String);
static LOADED: Mutex<Option<HashMap<Key, Arc<dyn Embed>>>> = Mutex::new(None);

/// The embedder for model folder `dir` under `name`, loaded once per backend and folder.
pub(crate) fn load(kind: BackendKind, dir: &Path, name: &str) -> Result<Arc<dyn Embed>, OpenError> {
    let key = (kind, dir.to_path_buf(), name.to_owned());
    let mut cache = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = cache.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(found.clone());
    }
    let loaded: Arc<dyn Embed> = match kind {
        BackendKind::Native => Arc::new(srvdb::embed::Embedder::from_dir_named(dir, name)?),
        #[cfg(feature = "wasm")]
        BackendKind::Wasm => Arc::new(crate::backend::wasm::sandbox()?.load_embedder(dir, name)?),
        #[cfg(not(feature = "wasm"))]
        BackendKind::Wasm => return Err(crate::backend::wasm_not_built()),
    };
    cache
        .get_or_insert_with(HashMap::new)
        .insert(key, loaded.clone());
    Ok(loaded)
}
