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
pub mod index;
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
/// ef of the grid below reaching recall@10 0.99 on the shared MiniLM set (ef 64 does not
/// reliably: 0.9885 to 0.9905 over four builds; before the bottom layer kept its pruned
/// links a finer sweep crossed 0.99 at ef 80, so 128 keeps a margin for harder data).
///
/// `HNSW_PROBE_REPEATS=3 cargo run --release --example hnsw_probe` (20k x 384 cosine, m 16,
/// ef_construction 200, built on 2 threads in 22.0 s wall; 200 queries, k 10, 1 thread,
/// QPS per CPU-second of the search thread, best of 3; the 2-core VM was shared with four
/// other builds). The hnswlib 0.8.0 columns are from an earlier run made the same way from
/// Python (best of 5, built in 26.9 s), before the bottom layer kept its pruned links:
///
/// | ef | f32 recall@10 | f32 QPS | int8 recall@10 | int8 QPS | hnswlib recall@10 | hnswlib QPS |
/// | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
/// | 16 | 0.8820 | 9,588 | 0.9540 | 7,517 | 0.8725 | 9,048 |
/// | 32 | 0.9580 | 5,373 | 0.9580 | 5,661 | 0.9545 | 6,426 |
/// | 64 | 0.9890 | 2,790 | 0.9890 | 3,293 | 0.9820 | 3,663 |
/// | 128 | 0.9980 | 1,933 | 0.9980 | 2,140 | 0.9965 | 1,994 |
/// | 256 | 1.0000 | 1,206 | 0.9995 | 1,250 | 0.9995 | 1,347 |
///
/// (The exact scan: 530 QPS. int8 keeps `max(ef, 3k)` candidates, hence its recall at ef
/// 16.) Between runs on this loaded machine the QPS moved by up to 25% (ef 128, f32: 1,381
/// to 1,933 over four builds).
///
/// Re-run on the quiet machine after a new node's list began keeping the links concurrent
/// insertions gave it (`HNSW_PROBE_REPEATS=3 HNSW_PROBE_EFS=64,128`): build 13.2 s on 2
/// threads; ef 64 recall@10 0.9870 (f32 3,753 QPS, int8 3,232); ef 128 0.9965 (f32 1,894,
/// int8 1,891); the exact scan 567 QPS. (That probe built inside a rayon pool, where
/// `Graph::insert` runs on the calling thread: those builds were sequential.)
///
/// After the reachability repair, beside hnswlib 0.8.0 in the same window (2 December 2026,
/// 06:53-06:55 UTC, load average 6.5-8.4; `HNSW_PROBE_REPEATS=1 HNSW_PROBE_EFS=64,128`
/// alternated twice with a Python script timing hnswlib the same way, thread CPU time,
/// build on 2 threads): ef 64 recall@10 0.9900 (hnswlib 0.9820), ef 128 0.9970 / 0.9975
/// (hnswlib 0.9965); ef 128 QPS f32 1,481 / 1,606 against hnswlib's 1,853 / 1,797 (0.80x,
/// 0.89x), int8 1,650 / 1,884 (0.89x, 1.05x).
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
