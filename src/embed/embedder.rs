//! [`Embedder`]: a loaded model, from token ids to unit vectors.

use super::bert::Bert;
use super::{locate, model, pooling};
use crate::error::{Error, Result};
use crate::types::EmbedderSpec;
use std::path::{Path, PathBuf};

/// Sentences embedded in one forward pass. Sorting by length first keeps padding low; 32 is
/// where throughput stopped improving on a 2-core machine while memory stays near 200 MB.
pub const BATCH_SIZE: usize = 32;

/// A loaded sentence-transformers model. `Send + Sync`: share it with `Arc`; each call to
/// [`Embedder::embed`] is independent.
pub struct Embedder {
    name: String,
    path: PathBuf,
    tokenizer: tokenizers::Tokenizer,
    model: Bert,
    settings: model::Settings,
    dimension: u32,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("dimension", &self.dimension)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the model in folder `dir` (`config.json`, `tokenizer.json`, `model.safetensors`,
    /// and optionally sentence-transformers' `modules.json`, `sentence_bert_config.json` and
    /// `1_Pooling/config.json`). Its name, which a database records, is the folder's name.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Self::from_dir_named(dir, locate::folder_name(dir)?)
    }

    /// Loads the model in folder `dir` under an explicit `name`.
    pub fn from_dir_named(dir: impl AsRef<Path>, name: impl Into<String>) -> Result<Self> {
        let files = model::ModelFiles::find(dir.as_ref())?;
        let loaded = files.load()?;
        Ok(Embedder {
            name: name.into(),
            path: files.dir,
            tokenizer: loaded.tokenizer,
            model: loaded.model,
            dimension: loaded.dimension,
            settings: loaded.settings,
        })
    }

    /// Loads a model by name from the model cache (see [`locate::model_dir`]), or from a path
    /// if `name_or_path` is an existing directory.
    pub fn load(name_or_path: &str) -> Result<Self> {
        let (dir, name) = locate::resolve(name_or_path)?;
        Self::from_dir_named(dir, name)
    }

    /// The model's name, as recorded in a database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The folder the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dimension of its vectors (384 for all-MiniLM-L6-v2).
    pub fn dimension(&self) -> u32 {
        self.dimension
    }

    /// What a database records about this embedder.
    pub fn spec(&self) -> EmbedderSpec {
        EmbedderSpec {
            name: self.name.clone(),
            dimension: self.dimension,
        }
    }

    /// Embeds `texts`: `texts.len()` unit vectors back to back (empty input gives an empty
    /// output). Texts longer than the model's maximum (256 tokens for all-MiniLM-L6-v2) are
    /// truncated, as sentence-transformers does. Equal texts give equal vectors whatever the
    /// batch around them.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<f32>> {
        self.embed_with_progress(texts, |_| {})
    }

    /// [`Embedder::embed`], calling `progress(done)` after each batch with the number of texts
    /// embedded so far.
    pub fn embed_with_progress<S: AsRef<str>>(
        &self,
        texts: &[S],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<f32>> {
        let mut encoded = Vec::with_capacity(texts.len());
        for text in texts {
            let enc = self
                .tokenizer
                .encode(text.as_ref(), true)
                .map_err(|e| self.model_error(format!("tokenizing failed: {e}")))?;
            encoded.push(enc.get_ids().to_vec());
        }
        // Longest first, so each batch pads to about its own length.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].len()));

        let dim = self.dimension as usize;
        let mut out = vec![0.0f32; texts.len() * dim];
        let mut done = 0;
        for batch in order.chunks(BATCH_SIZE) {
            let ids: Vec<&[u32]> = batch.iter().map(|&i| encoded[i].as_slice()).collect();
            let vectors = self.embed_tokens(&ids)?;
            for (slot, &i) in batch.iter().enumerate() {
                out[i * dim..(i + 1) * dim].copy_from_slice(&vectors[slot * dim..(slot + 1) * dim]);
            }
            done += batch.len();
            progress(done);
        }
        Ok(out)
    }

    /// One forward pass over token id sequences (no padding: each sentence attends to its own
    /// tokens only), then pooling and normalisation.
    fn embed_tokens(&self, ids: &[&[u32]]) -> Result<Vec<f32>> {
        let hidden = self
            .model
            .forward(ids)
            .map_err(|e| self.model_error(format!("inference failed: {e}")))?;
        let dim = self.dimension as usize;
        let mut out = vec![0.0f32; ids.len() * dim];
        let mut start = 0;
        for (tokens, target) in ids.iter().zip(out.chunks_exact_mut(dim)) {
            let rows = &hidden[start * dim..(start + tokens.len()) * dim];
            start += tokens.len();
            match self.settings.pooling {
                pooling::Pooling::Mean => pooling::mean_pool(rows, &vec![1; tokens.len()], target),
                pooling::Pooling::Cls => {
                    if let Some(first) = rows.get(..dim) {
                        target.copy_from_slice(first);
                    }
                }
            }
            if self.settings.normalize {
                pooling::l2_normalize(target);
            }
        }
        Ok(out)
    }

    fn model_error(&self, reason: String) -> Error {
        Error::Model {
            path: self.path.clone(),
            reason,
        }
    }
}

impl super::Embed for Embedder {
    fn spec(&self) -> EmbedderSpec {
        Embedder::spec(self)
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        Embedder::embed(self, texts)
    }
}
