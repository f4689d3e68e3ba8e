//! HNSW: a layered navigable small-world graph over the rows, so a search scores a few
//! thousand rows instead of all of them.
//!
//! - [`graph::Graph`]: the links. Shared by `Arc` between the writer and every snapshot:
//!   the one writer inserts nodes (on all cores natively) while searches read the links
//!   lock-free; a search sees only the nodes of its snapshot ([`graph::GraphView`]).
//! - [`index::HnswIndex`]: the [`crate::index::Index`] that traverses the graph (on the f32
//!   rows, or on int8 codes), skips the rows the set's bitmap skips (deleted, or outside a
//!   filter), falls back to the exact scan when a filter leaves fewer rows than the
//!   traversal would visit, and rescores its candidates exactly.
//!
//! Persistence (in `crate::db` and `crate::meta`): every node's links are one value in
//! redb, written in the same transaction as the rows whose insertion changed them, so a
//! commit covers the graph atomically (no torn graph after a crash or power loss), and open
//! loads the links as they were committed instead of rebuilding.

pub mod graph;
mod guide;
pub mod index;
mod kernel;
mod layer;
mod repair;
mod rows;
mod score;
#[cfg(test)]
mod tests;
mod visited;

/// Links per node on the upper layers by default (twice this on the bottom layer).
pub const DEFAULT_M: usize = 16;
/// Candidates kept while a node's links are chosen, by default.
pub const DEFAULT_EF_CONSTRUCTION: usize = 200;
/// Candidates kept during a search's traversal by default (raised to `k`): the smallest
/// ef of the probe's grid reaching recall@10 0.99 on the shared MiniLM set over repeated
/// builds (ef 64 lands on either side of it: 0.9855 to 0.990), with a margin for harder
/// data. The runs are in docs/performance.md ("HNSW index"; `cargo run --release --example
/// hnsw_probe`).
pub const DEFAULT_EF: usize = 128;
/// Largest `m` accepted.
pub const MAX_M: usize = 128;
/// Largest `ef` / `ef_construction` accepted.
pub const MAX_EF: usize = 10_000;

/// Where a traversal enters the graph: the node on the top layer, and that layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The entry node (a row number).
    pub node: u32,
    /// Its top layer.
    pub level: u8,
}
