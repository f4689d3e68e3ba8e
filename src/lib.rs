//! SrvDB: an embedded vector database. Vectors live in an append-only `vectors.bin`; ids,
//! metadata, tombstones and the committed row count live in redb, whose commit is the commit
//! point. Search is exact, SIMD, and runs at memory speed; a quantized index (`quant`) scans int8
//! or 1-bit codes instead and rescores its candidates exactly.
//!
//! ```
//! use srvdb::{Database, Metadata, OpenOptions, Store};
//! let dir = tempfile::tempdir().unwrap();
//! let db = Database::open(dir.path(), OpenOptions::default()).unwrap();
//! db.add(&["a", "b"], &[1.0, 0.0, 0.0, 1.0], &[Some(Metadata::from_text("{\"n\": 1}")), None]).unwrap();
//! db.persist().unwrap();
//! let hits = db.search(&[0.9, 0.1], 1).unwrap();
//! assert_eq!(hits[0].id, "a");
//! ```
//!
//! With the cargo feature `text`, `embed::Embedder` turns text into vectors with a
//! sentence-transformers model (all-MiniLM-L6-v2) on the CPU; [`text::TextDatabase`] adds and
//! queries documents as text over any [`Store`] and any [`embed::Embed`].
//!
//! The same engine runs natively (mmap storage, rayon, SimSIMD) and as a WASI component
//! (`std::fs` storage, one thread, SIMD128 kernels).

#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::undocumented_unsafe_blocks)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(target_endian = "big")]
compile_error!("vectors.bin stores little-endian f32 and is read in place: big-endian targets are not supported");

mod chunked;
pub mod coalesce;
#[cfg(target_arch = "wasm32")]
mod component;
pub mod db;
pub mod distance;
pub mod embed;
pub mod error;
pub mod filter;
pub mod format;
pub mod hnsw;
mod hugepage;
pub mod ids;
pub mod index;
pub mod meta;
pub mod npy;
pub mod quant;
pub mod storage;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod types;

pub use coalesce::CoalesceStats;
pub use db::Database;
pub use error::{Error, LockHolder, Result, SandboxFailure};
pub use filter::Filter;
pub use store::{Delete, Missing, Queries, Query, Select, Store, Update, Write, WriteMode};
pub use types::{EmbedderSpec, Metadata, Metric, OpenOptions, Record, SearchHit, StorageKind};
