//! Built-in sentence embeddings (cargo feature `text`): text in, unit vectors out, with no
//! server, no network and no PyTorch.
//!
//! [`Embedder`] runs a BERT-family sentence-transformers model (all-MiniLM-L6-v2 by default)
//! on the CPU, the way sentence-transformers does: WordPiece token ids
//! ([`model::ModelFiles`]), the transformer (a forward pass of our own, `bert.rs`, on weights
//! read with candle), mean pooling over each sentence's tokens and L2 normalisation
//! ([`pooling`]). The same code runs natively (the matrix products, GELU, softmax and layer
//! norm use every core) and inside the WASI component (one thread). Where the model folder comes from is
//! [`locate`]'s business; it needs no feature, so the wasmtime host can find and check a model
//! folder for the component without compiling candle. [`Embed`] is what every embedder
//! offers, wherever it runs (natively, or the component in the wasmtime host), so the
//! text layer ([`crate::text::TextDatabase`]) is written once for all of them.

use crate::error::Result;
use crate::types::EmbedderSpec;

/// A text embedder: texts in, unit vectors out. `Send + Sync`, shared with `Arc`.
pub trait Embed: Send + Sync {
    /// The name and dimension a database records for the vectors it gives.
    fn spec(&self) -> EmbedderSpec;
    /// `texts.len()` vectors of `spec().dimension` components, back to back.
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>>;
}

#[cfg(feature = "text")]
mod bert;
#[cfg(feature = "text")]
mod embedder;
pub mod locate;
#[cfg(all(feature = "text", target_arch = "x86_64"))]
mod matmul_avx2;
#[cfg(all(feature = "text", target_arch = "x86_64"))]
mod matmul_avx512;
#[cfg(feature = "text")]
pub mod model;
#[cfg(all(feature = "text", target_arch = "x86_64"))]
mod panels;
#[cfg(feature = "text")]
pub mod pooling;
#[cfg(all(test, feature = "text", target_arch = "x86_64"))]
mod product_check;

#[cfg(feature = "text")]
pub use embedder::{Embedder, BATCH_SIZE};
