//! The text embedder behind `srvdb.open(..., embedder=...)`: the native one (candle, in this
//! process, on every core) or, for `backend="wasm"`, the same code inside the WASI component
//! (a component built with the `text` feature). Loaded models are cached per process, since a
//! test suite or a notebook opens many databases with one model.

use crate::backend::{BackendKind, OpenError};
use srvdb::EmbedderSpec;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a handle needs from an embedder.
pub(crate) trait TextEncoder: Send + Sync {
    fn spec(&self) -> EmbedderSpec;

    /// `texts.len()` unit vectors back to back, calling `progress(done)` now and then with
    /// the number of texts embedded so far (for a progress bar).
    fn embed_with_progress(
        &self,
        texts: &[String],
        progress: &mut dyn FnMut(usize),
    ) -> srvdb::Result<Vec<f32>>;

    fn embed(&self, texts: &[String]) -> srvdb::Result<Vec<f32>> {
        self.embed_with_progress(texts, &mut |_| {})
    }
}

impl TextEncoder for srvdb::embed::Embedder {
    fn spec(&self) -> EmbedderSpec {
        srvdb::embed::Embedder::spec(self)
    }

    fn embed_with_progress(
        &self,
        texts: &[String],
        progress: &mut dyn FnMut(usize),
    ) -> srvdb::Result<Vec<f32>> {
        srvdb::embed::Embedder::embed_with_progress(self, texts, progress)
    }
}

/// Texts per sandboxed call when progress is shown: each call crosses into the guest, so
/// not too few; the guest batches by `srvdb::embed::BATCH_SIZE` inside.
#[cfg(feature = "wasm")]
const SANDBOX_CHUNK: usize = 8 * srvdb::embed::BATCH_SIZE;

#[cfg(feature = "wasm")]
impl TextEncoder for srvdb_host::SandboxedEmbedder {
    fn spec(&self) -> EmbedderSpec {
        srvdb_host::SandboxedEmbedder::spec(self).clone()
    }

    fn embed_with_progress(
        &self,
        texts: &[String],
        progress: &mut dyn FnMut(usize),
    ) -> srvdb::Result<Vec<f32>> {
        // Equal texts embed equally whatever the batch around them, so chunking changes no
        // vector.
        let mut out = Vec::new();
        let mut done = 0;
        for chunk in texts.chunks(SANDBOX_CHUNK) {
            out.extend(srvdb_host::SandboxedEmbedder::embed(self, chunk)?);
            done += chunk.len();
            progress(done);
        }
        Ok(out)
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
