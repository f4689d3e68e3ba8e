//! The graph's links: who each node links to on each of its layers.
//!
//! Contract with `crate::db` (which owns persistence and calls these under the writer lock):
//! - node `r` is row `r`; nodes `0..len()` are inserted (one call's rows in a spread order,
//!   [`Spread`]);
//! - a node's layer is a pure function of the graph's seed and its row ([`Graph::level_of`]),
//!   so inserting the same rows gives the same layers after a reload;
//! - [`Graph::insert`] reports every node whose links it changed, and [`Graph::links_bytes`]
//!   encodes one node's links for redb; [`Graph::from_links`] rebuilds the graph from those
//!   values exactly as they were written.

//!
//! Layout: the bottom layer in chunks of [`CHUNK_NODES`] nodes (growing adds a chunk and never
//! moves a node), one `AtomicU32` count and `2m` link slots per node; the upper layers' slots
//! (about one node in `m` has any) of a chunk's nodes are allocated with the chunk, as its
//! nodes' levels are known then. Searches read the
//! slots lock-free: a list being rewritten may be seen half old, half new, which is harmless
//! since every slot always holds a node that is inserted or being inserted (searches ignore
//! nodes past their view). Writers linking concurrently take a striped per-node lock.

use super::guide::{Guide, GuideScorer};
use super::kernel::Fast;
use super::layer::{greedy, search_layer, LayerSearch, Scorer};
use super::rows::ResidentRows;
use super::score::RowScorer;
use super::visited::{with_scratch, Scored, Scratch};
use super::Entry;
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::quant::HnswParams;
use crate::storage::{names, RowView};
use crate::types::Metric;
use arc_swap::ArcSwap;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Nodes per chunk of the bottom layer.
const CHUNK_NODES: usize = 4096;
/// Highest layer a node can have.
const MAX_LEVEL: u8 = 16;
/// Locks writers take to change a node's lists (node `n` takes `n % LOCK_STRIPES`).
pub(super) const LOCK_STRIPES: usize = 1024;
/// Version of [`Graph::links_bytes`]'s encoding.
const LINKS_FORMAT: u8 = 1;
/// Below this many new rows an insertion stays on the calling thread.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_MIN_ROWS: u64 = 256;
/// From this many new rows an insertion may walk on guide codes ([`super::guide`]).
const GUIDE_MIN_ROWS: u64 = 4096;
/// ... and when they are at least one in this many of the graph's rows after it: the guide
/// encodes every row, about 1 us each against the several hundred an insertion's walk costs.
const GUIDE_MIN_SHARE: u64 = 64;

/// The pool a large insertion runs on, or `None` where it must stay on the calling thread.
///
/// Insertions run under the database's writer lock. On rayon's global pool that could
/// deadlock: the caller's own `par_iter` of `add` calls may hold every worker blocked on
/// that lock while the insertion waits for a worker, and a caller that is itself a pool
/// worker may, while it waits, pick up another task that takes the lock it holds. A private
/// pool runs nothing but insertions, and a caller on any rayon worker inserts sequentially.
#[cfg(not(target_arch = "wasm32"))]
fn build_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    if rayon::current_thread_index().is_some() {
        return None;
    }
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads < 2 {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("srvdb-hnsw-build-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// How two rows compare: the database's metric and kernels (higher is better, as in
/// [`crate::index::topk::Candidate`]). Traversals and insertions score with the exact scan's
/// formula on their own kernels (`kernel::Fast`); a search rescores what it returns with
/// `kernels`.
#[derive(Debug, Clone, Copy)]
pub struct Space {
    /// The metric.
    pub metric: Metric,
    /// The kernels.
    pub kernels: Kernels,
}

/// The nodes of one chunk: bottom-layer slots, and the upper layers' slots of the nodes that
/// have any (known when the chunk is made: a node's level is a function of its row).
pub(crate) struct Chunk {
    /// Per node: a count, then `2m` links.
    bottom: Box<[AtomicU32]>,
    /// Per node with a level above 0: per upper layer a count, then `m` links.
    upper: Box<[AtomicU32]>,
    /// Node `i`'s upper slots are `upper[upper_at[i]..upper_at[i + 1]]`. One offset a node,
    /// where a separately allocated list per node cost a 24-byte cell a node plus the
    /// allocator's overhead per list.
    upper_at: Box<[u32]>,
    /// Per node: how many bottom-layer lists link to it (kept by [`Links::set`]), so an
    /// insertion finds the nodes it left without an in-link without walking the graph.
    indegree: Box<[AtomicU32]>,
}

impl Chunk {
    /// Chunk `index` of a graph with this seed and `m` (`m0` bottom links).
    fn new(index: usize, seed: u64, m: usize, m0: usize) -> Self {
        let first = (index * CHUNK_NODES) as u64;
        let mut upper_at = Vec::with_capacity(CHUNK_NODES + 1);
        let mut slots = 0usize;
        upper_at.push(0u32);
        for node in first..first + CHUNK_NODES as u64 {
            slots += usize::from(Graph::level_of(seed, m, node)) * (1 + m);
            // At most CHUNK_NODES * MAX_LEVEL * (1 + m) slots, m clamped: far below u32::MAX.
            upper_at.push(slots as u32);
        }
        Chunk {
            bottom: (0..CHUNK_NODES * (1 + m0))
                .map(|_| AtomicU32::new(0))
                .collect(),
            upper: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            upper_at: upper_at.into_boxed_slice(),
            indegree: (0..CHUNK_NODES).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// Consecutive rows an insertion takes together ([`Spread`]).
const SPREAD_BLOCK: u64 = 4;

/// The order one insertion takes its rows `start..end` in: blocks of [`SPREAD_BLOCK`]
/// consecutive rows, block `i` being block `i * stride mod blocks` with `stride` coprime to
/// `blocks` near `blocks / phi`, then the rows after the last whole block in row order. Every
/// row comes once, and blocks taken one after another lie far apart.
///
/// Rows often arrive in runs of similar vectors (a document's chunks, one topic's records, a
/// cluster). In row order, a run's members are inserted one after another and link mostly to
/// each other; the links that join the run to similar rows inserted much later come only from
/// pruning full lists. Spread out, the graph grows evenly over all the rows, as with a random
/// order. On the 1M x 384 perturbed MiniLM set (runs of 50 variants of one sentence) that
/// raised the f32 graph's recall per ef, and with it QPS at recall 0.99 from about 1.0x to
/// 1.14-1.39x hnswlib's, but it cost the cache locality a row-order build has on such runs
/// (each insertion finding its predecessor's rows cached): 1.42-1.51x hnswlib's build time,
/// against 0.88-0.91x in row order. Blocks of 4 keep most of both: a block's later rows find
/// in cache most of what its first row's walk loaded. There (with the walk on guide codes,
/// [`super::guide`]) the build took 226 s against 325 s one row at a time, with recall@10
/// 0.9910 against 0.9920 at ef 384 (docs/performance.md, "Insertion order").
#[derive(Debug, Clone, Copy)]
pub(super) struct Spread {
    start: u64,
    blocks: u64,
    stride: u64,
}

impl Spread {
    pub(super) fn new(start: u64, end: u64) -> Self {
        let blocks = end.saturating_sub(start) / SPREAD_BLOCK;
        let mut stride = ((blocks as f64 * 0.618_033_988_749_895) as u64).max(1);
        while gcd(stride, blocks) > 1 {
            stride += 1;
        }
        Spread {
            start,
            blocks,
            stride,
        }
    }

    /// The node inserted at position `i` (`i < end - start`).
    pub(super) fn at(&self, i: u64) -> u32 {
        let block = i / SPREAD_BLOCK;
        // Rows are u32 (checked before an insertion): every product here is below 2^64.
        let row = if block < self.blocks {
            (block * self.stride % self.blocks) * SPREAD_BLOCK + i % SPREAD_BLOCK
        } else {
            i
        };
        (self.start + row) as u32
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Read access to the lists of the chunks loaded at one moment.
pub(crate) struct Links<'a> {
    chunks: &'a [Arc<Chunk>],
    m: usize,
    m0: usize,
}

impl<'a> Links<'a> {
    /// Node `node`'s list on `layer` (count slot first), if the node has that layer.
    #[inline]
    fn list(&self, node: u32, layer: u8) -> Option<&'a [AtomicU32]> {
        let chunk = self.chunks.get(node as usize / CHUNK_NODES)?;
        let i = node as usize % CHUNK_NODES;
        if layer == 0 {
            let w = 1 + self.m0;
            return chunk.bottom.get(i * w..(i + 1) * w);
        }
        let w = 1 + self.m;
        let start = *chunk.upper_at.get(i)? as usize + (layer as usize - 1) * w;
        let end = *chunk.upper_at.get(i + 1)? as usize;
        if start + w > end {
            return None;
        }
        chunk.upper.get(start..start + w)
    }

    /// Calls `f` on each of `node`'s links on `layer`.
    #[inline]
    pub(crate) fn for_each(&self, node: u32, layer: u8, mut f: impl FnMut(u32)) {
        if let Some(list) = self.list(node, layer) {
            let n = (list[0].load(Ordering::Acquire) as usize).min(list.len() - 1);
            for slot in &list[1..1 + n] {
                f(slot.load(Ordering::Relaxed));
            }
        }
    }

    /// Asks the CPU for `node`'s list on `layer`.
    #[inline]
    pub(crate) fn prefetch(&self, node: u32, layer: u8) {
        if let Some(list) = self.list(node, layer) {
            super::rows::prefetch(list, 1);
        }
    }

    /// `node`'s links on `layer`, copied.
    pub(super) fn get(&self, node: u32, layer: u8, out: &mut Vec<u32>) {
        out.clear();
        self.for_each(node, layer, |n| out.push(n));
    }

    /// Replaces `node`'s links on `layer` (the caller holds its lock), keeping the bottom
    /// layer's in-degree counts.
    pub(super) fn set(&self, node: u32, layer: u8, links: &[u32]) {
        if let Some(list) = self.list(node, layer) {
            let n = links.len().min(list.len() - 1);
            if layer == 0 {
                let old = (list[0].load(Ordering::Acquire) as usize).min(list.len() - 1);
                // Slots that keep their link (an append keeps them all) change no count.
                for (i, &l) in links[..n].iter().enumerate() {
                    if i >= old || list[1 + i].load(Ordering::Relaxed) != l {
                        self.count_in(l, true);
                    }
                }
                for (i, slot) in list[1..1 + old].iter().enumerate() {
                    let l = slot.load(Ordering::Relaxed);
                    if i >= n || links[i] != l {
                        self.count_in(l, false);
                    }
                }
            }
            for (slot, &l) in list[1..].iter().zip(&links[..n]) {
                slot.store(l, Ordering::Relaxed);
            }
            list[0].store(n as u32, Ordering::Release);
        }
    }

    /// Counts a bottom-layer link to `node` gained (`true`) or lost.
    #[inline]
    fn count_in(&self, node: u32, gained: bool) {
        if let Some(chunk) = self.chunks.get(node as usize / CHUNK_NODES) {
            let count = &chunk.indegree[node as usize % CHUNK_NODES];
            if gained {
                count.fetch_add(1, Ordering::Relaxed);
            } else {
                // Never below 0 (a lost link was counted when gained); saturate regardless.
                let _ =
                    count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
            }
        }
    }

    /// How many bottom-layer lists link to `node`.
    pub(super) fn in_degree(&self, node: u32) -> u32 {
        self.chunks.get(node as usize / CHUNK_NODES).map_or(0, |c| {
            c.indegree[node as usize % CHUNK_NODES].load(Ordering::Relaxed)
        })
    }

    /// The highest layer `node` has links storage for.
    fn level(&self, node: u32) -> u8 {
        let Some(chunk) = self.chunks.get(node as usize / CHUNK_NODES) else {
            return 0;
        };
        let i = node as usize % CHUNK_NODES;
        match (chunk.upper_at.get(i), chunk.upper_at.get(i + 1)) {
            (Some(&start), Some(&end)) => ((end - start) as usize / (1 + self.m)) as u8,
            _ => 0,
        }
    }

    /// Capacity of a list on `layer`.
    pub(super) fn capacity(&self, layer: u8) -> usize {
        if layer == 0 {
            self.m0
        } else {
            self.m
        }
    }
}

/// The links of every inserted node. `Send + Sync`: one writer inserts through `&self`
/// while searches read.
pub struct Graph {
    params: HnswParams,
    seed: u64,
    /// Links per node on upper layers (`params.m`, clamped to a workable range).
    m: usize,
    /// Links per node on the bottom layer.
    m0: usize,
    chunks: ArcSwap<Vec<Arc<Chunk>>>,
    /// Nodes a search may follow, and where it enters: published when an insertion ends.
    published: Mutex<(u64, Option<Entry>)>,
    /// The entry while an insertion runs.
    pub(super) entry: Mutex<Option<Entry>>,
    /// Held by an insertion that raises the top layer, for its whole insertion.
    top: Mutex<()>,
    pub(super) locks: Box<[Mutex<()>]>,
    /// Bytes of the upper layers' lists.
    upper_bytes: AtomicU64,
    /// Up to this many nodes an insertion's repair walks the whole bottom layer.
    pub(super) repair_walk_nodes: u32,
    /// Fewest new rows an insertion walks on guide codes for ([`GUIDE_MIN_ROWS`]).
    guide_min_rows: u64,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("params", &self.params)
            .field("nodes", &self.len())
            .finish_non_exhaustive()
    }
}

/// A lock that a panicking holder left poisoned still guards plain data: take it.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The error for a damaged stored graph.
fn corrupt(reason: String) -> Error {
    Error::corrupt(
        names::METADATA,
        format!("{reason} (the HNSW index's links; drop and re-create the index to rebuild it)"),
    )
}

impl Graph {
    /// An empty graph.
    pub fn new(params: HnswParams, seed: u64) -> Self {
        let m = params.m.clamp(2, super::MAX_M);
        Graph {
            params,
            seed,
            m,
            m0: 2 * m,
            chunks: ArcSwap::from_pointee(Vec::new()),
            published: Mutex::new((0, None)),
            entry: Mutex::new(None),
            top: Mutex::new(()),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            upper_bytes: AtomicU64::new(0),
            repair_walk_nodes: super::repair::WALK_ALWAYS_NODES,
            guide_min_rows: GUIDE_MIN_ROWS,
        }
    }

    /// This graph with the repair's whole-layer walk limited to graphs of `nodes` nodes (so
    /// a test reaches the in-degree check with a small graph).
    #[cfg(test)]
    pub(crate) fn with_repair_walk_nodes(mut self, nodes: u32) -> Self {
        self.repair_walk_nodes = nodes;
        self
    }

    /// This graph with insertions of at least `rows` new rows walking on guide codes (and no
    /// others), so a test compares both ways of building at one size.
    #[cfg(test)]
    pub(crate) fn with_guide_min_rows(mut self, rows: u64) -> Self {
        self.guide_min_rows = rows;
        self
    }

    /// The build parameters.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// The seed the layers are drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Nodes inserted: rows `0..len()`.
    pub fn len(&self) -> u64 {
        lock(&self.published).0
    }

    /// True before the first insertion.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where a traversal of the whole graph enters (`None` while empty).
    pub fn entry(&self) -> Option<Entry> {
        lock(&self.published).1
    }

    /// Bytes the links take in memory.
    pub fn bytes(&self) -> u64 {
        // Per node: count, links, in-degree and upper offset; one more offset per chunk.
        let chunk = CHUNK_NODES * (3 + self.m0) * 4 + 4;
        (self.chunks.load().len() * chunk) as u64 + self.upper_bytes.load(Ordering::Relaxed)
    }

    /// The top layer of row `row` in a graph with this seed and `m`: `floor(-ln(u) / ln(m))`
    /// for `u` uniform in `(0, 1]` drawn from a hash of the seed and the row, so about one
    /// node in `m` reaches each next layer (capped at 16).
    pub fn level_of(seed: u64, m: usize, row: u64) -> u8 {
        let h = mix(seed ^ mix(row));
        let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let m = m.max(2) as f64;
        let level = (-u.ln() / m.ln()).floor();
        if level >= f64::from(MAX_LEVEL) {
            MAX_LEVEL
        } else {
            level as u8
        }
    }

    fn links<'a>(&self, chunks: &'a [Arc<Chunk>]) -> Links<'a> {
        Links {
            chunks,
            m: self.m,
            m0: self.m0,
        }
    }

    /// The lists of the nodes inserted so far (for a search).
    pub(crate) fn chunks(&self) -> Arc<Vec<Arc<Chunk>>> {
        self.chunks.load_full()
    }

    /// Read access to `chunks` (from [`Graph::chunks`]).
    pub(crate) fn reader<'a>(&self, chunks: &'a [Arc<Chunk>]) -> Links<'a> {
        self.links(chunks)
    }

    /// Makes room for nodes `0..to`: the chunks holding them, upper layers included.
    fn grow(&self, to: u64) {
        let have = self.chunks.load().len();
        let need = (to as usize).div_ceil(CHUNK_NODES);
        if need > have {
            let mut chunks: Vec<Arc<Chunk>> = self.chunks.load().as_ref().clone();
            let mut added = 0u64;
            for index in have..need {
                let chunk = Chunk::new(index, self.seed, self.m, self.m0);
                added += (chunk.upper.len() * 4) as u64;
                chunks.push(Arc::new(chunk));
            }
            self.chunks.store(Arc::new(chunks));
            self.upper_bytes.fetch_add(added, Ordering::Relaxed);
        }
    }

    /// Inserts rows `len()..to` of `rows` (on all cores natively when there are many), adding
    /// to `dirty` every node whose links changed (the new ones included). The caller is the
    /// only writer; searches may run meanwhile. Deleted rows are inserted too (row numbers
    /// are the nodes; searches skip them).
    pub fn insert(
        &self,
        rows: &dyn RowView,
        space: Space,
        to: u64,
        dirty: &mut BTreeSet<u32>,
    ) -> Result<()> {
        let from = self.len();
        if to <= from {
            return Ok(());
        }
        if to > rows.rows() {
            return Err(Error::invalid(format!(
                "cannot index rows {from}..{to}: the view has {} rows",
                rows.rows()
            )));
        }
        if to > u64::from(u32::MAX) {
            return Err(Error::invalid(format!(
                "an HNSW index holds at most {} rows; this database has {to}",
                u32::MAX
            )));
        }
        self.grow(to);
        let chunks = self.chunks.load_full();
        let links = self.links(&chunks);
        let resident = ResidentRows::new(rows);
        let new = to - from;
        let guide = if new >= self.guide_min_rows && new.saturating_mul(GUIDE_MIN_SHARE) >= to {
            Guide::build(rows, space.metric, to)?
        } else {
            None
        };
        let builder = Builder {
            guide: guide.as_ref(),
            graph: self,
            links: &links,
            view: rows,
            resident: resident.as_ref(),
            space,
            fast: Fast::new(space.kernels),
            dim: rows.layout().dim as usize,
            nodes: to as u32,
        };
        let mut next = from;
        // The first node enters alone: it becomes the entry the others descend from.
        if lock(&self.entry).is_none() {
            let mut changed = Vec::new();
            with_scratch(|s| builder.insert(next as u32, s, &mut changed))?;
            dirty.extend(changed);
            next += 1;
        }
        #[cfg(not(target_arch = "wasm32"))]
        if to - next >= PARALLEL_MIN_ROWS {
            if let Some(pool) = build_pool() {
                use rayon::prelude::*;
                let order = Spread::new(next, to);
                let changed = pool.install(|| {
                    (0..to - next)
                        .into_par_iter()
                        .try_fold(Vec::new, |mut changed, i| {
                            with_scratch(|s| builder.insert(order.at(i), s, &mut changed))?;
                            Ok::<_, Error>(changed)
                        })
                        .try_reduce(Vec::new, |mut a, b| {
                            a.extend(b);
                            Ok(a)
                        })
                })?;
                dirty.extend(changed);
                next = to;
            }
        }
        let mut changed = Vec::new();
        let order = Spread::new(next, to);
        for i in 0..to - next {
            with_scratch(|s| builder.insert(order.at(i), s, &mut changed))?;
        }
        with_scratch(|s| builder.repair(from, s, &mut changed))?;
        dirty.extend(changed);
        let entry = *lock(&self.entry);
        *lock(&self.published) = (to, entry);
        Ok(())
    }

    /// Node `node`'s links on every layer, encoded for storage: a format byte, the node's
    /// level, then per layer from the bottom a `u16` count and that many `u32` links (all
    /// little-endian).
    pub fn links_bytes(&self, node: u32) -> Vec<u8> {
        let chunks = self.chunks.load();
        let links = self.links(&chunks);
        let level = links.level(node);
        let mut out = vec![LINKS_FORMAT, level];
        let mut list = Vec::new();
        for layer in 0..=level {
            links.get(node, layer, &mut list);
            out.extend_from_slice(&(list.len() as u16).to_le_bytes());
            for l in &list {
                out.extend_from_slice(&l.to_le_bytes());
            }
        }
        out
    }

    /// The graph of nodes `0..len` from every node's [`Graph::links_bytes`], as stored: an
    /// error naming the node when a value is damaged or links past `len`.
    pub fn from_links(
        params: HnswParams,
        seed: u64,
        len: u64,
        entry: Option<Entry>,
        links: impl Iterator<Item = Result<(u32, Vec<u8>)>>,
    ) -> Result<Self> {
        let graph = Graph::new(params, seed);
        if len > u64::from(u32::MAX) {
            return Err(corrupt(format!("the graph claims {len} nodes")));
        }
        match entry {
            None if len > 0 => {
                return Err(corrupt(format!("the graph has {len} nodes but no entry")));
            }
            Some(e) if u64::from(e.node) >= len => {
                return Err(corrupt(format!(
                    "the entry node {} is past the graph's {len} nodes",
                    e.node
                )));
            }
            Some(e) if e.level != Self::level_of(seed, graph.m, u64::from(e.node)) => {
                return Err(corrupt(format!(
                    "the entry node {} is recorded on layer {}, not its own",
                    e.node, e.level
                )));
            }
            _ => {}
        }
        graph.grow(len);
        let chunks = graph.chunks.load_full();
        let reader = graph.links(&chunks);
        let mut seen = vec![false; len as usize];
        let mut list = Vec::new();
        for item in links {
            let (node, bytes) = item?;
            let bad = |what: &str| corrupt(format!("node {node}: {what}"));
            if u64::from(node) >= len {
                return Err(bad(&format!("stored past the graph's {len} nodes")));
            }
            if std::mem::replace(&mut seen[node as usize], true) {
                return Err(bad("stored twice"));
            }
            let level = Self::level_of(seed, graph.m, u64::from(node));
            match bytes.as_slice() {
                [LINKS_FORMAT, l, ..] if *l == level => {}
                [LINKS_FORMAT, l, ..] => {
                    return Err(bad(&format!("level {l} where its layer is {level}")));
                }
                [f, ..] => return Err(bad(&format!("unknown links format {f}"))),
                [] => return Err(bad("empty links")),
            }
            let mut at = 2;
            for layer in 0..=level {
                let count = bytes
                    .get(at..at + 2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                    .ok_or_else(|| bad(&format!("truncated at layer {layer}")))?;
                at += 2;
                if count > reader.capacity(layer) {
                    return Err(bad(&format!(
                        "{count} links on layer {layer}, more than its {}",
                        reader.capacity(layer)
                    )));
                }
                let raw = bytes
                    .get(at..at + 4 * count)
                    .ok_or_else(|| bad(&format!("truncated at layer {layer}")))?;
                at += 4 * count;
                list.clear();
                for b in raw.chunks_exact(4) {
                    let l = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if u64::from(l) >= len {
                        return Err(bad(&format!("links to node {l}, past the graph's {len}")));
                    }
                    if layer > 0 && Self::level_of(seed, graph.m, u64::from(l)) < layer {
                        return Err(bad(&format!(
                            "links on layer {layer} to node {l}, which is not on it"
                        )));
                    }
                    list.push(l);
                }
                reader.set(node, layer, &list);
            }
            if at != bytes.len() {
                return Err(bad("trailing bytes"));
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(corrupt(format!("node {missing}: no links stored")));
        }
        *lock(&graph.entry) = entry;
        *lock(&graph.published) = (len, entry);
        Ok(graph)
    }

    /// What a search of the nodes inserted so far sees.
    pub fn view(self: &Arc<Self>) -> GraphView {
        let (nodes, entry) = *lock(&self.published);
        GraphView {
            nodes,
            entry,
            graph: Arc::clone(self),
        }
    }
}

/// The graph as of one snapshot: nodes past `nodes` (inserted later) are not followed.
#[derive(Debug, Clone)]
pub struct GraphView {
    /// The links.
    pub graph: Arc<Graph>,
    /// Nodes this view covers (rows `0..nodes`).
    pub nodes: u64,
    /// The entry as of this view.
    pub entry: Option<Entry>,
}

/// One insertion's fixed inputs.
pub(super) struct Builder<'a> {
    pub(super) graph: &'a Graph,
    pub(super) links: &'a Links<'a>,
    pub(super) view: &'a dyn RowView,
    pub(super) resident: Option<&'a ResidentRows<'a>>,
    /// int8 codes of rows `0..nodes` the walk runs on (candidates rescored on the rows).
    pub(super) guide: Option<&'a Guide>,
    pub(super) space: Space,
    /// The kernels links are chosen with (the traversal's).
    pub(super) fast: Fast,
    pub(super) dim: usize,
    /// Nodes that exist (inserted or being inserted): `0..nodes`.
    pub(super) nodes: u32,
}

impl Builder<'_> {
    /// Row `node`'s data.
    pub(super) fn row(&self, node: u32) -> Result<Cow<'_, [f32]>> {
        if let Some(r) = self.resident.and_then(|rows| rows.row(u64::from(node))) {
            return Ok(Cow::Borrowed(r));
        }
        self.view
            .read_row(u64::from(node))?
            .ok_or_else(|| Error::invalid(format!("row {node} is not in the view being indexed")))
    }

    /// The key of two rows (on the traversal's kernels, as [`RowScorer`] scores them).
    pub(super) fn pair(&self, a: &[f32], b: &[f32]) -> f32 {
        self.fast
            .key(self.space.metric, &a[..self.dim], a[self.dim], b, self.dim)
    }

    /// The greedy descent from `entry` to layer `down_to`: the entry scored, and the node
    /// the search of layer `down_to` starts from.
    pub(super) fn descend(
        &self,
        entry: Entry,
        down_to: u8,
        scorer: &mut impl Scorer,
        batch: &mut Vec<u32>,
    ) -> (Scored, Scored) {
        let from_entry = Scored::new(scorer.score(entry.node), entry.node);
        let mut at = from_entry;
        for layer in (down_to + 1..=entry.level).rev() {
            at = greedy(self.links, layer, at, self.nodes, scorer, batch);
        }
        (from_entry, at)
    }

    /// Inserts `node`, adding to `changed` every node whose links changed.
    fn insert(&self, node: u32, scratch: &mut Scratch, changed: &mut Vec<u32>) -> Result<()> {
        let g = self.graph;
        let level = Graph::level_of(g.seed, g.m, u64::from(node));
        changed.push(node);
        let mut entry = *lock(&g.entry);
        let Some(first) = entry else {
            *lock(&g.entry) = Some(Entry { node, level });
            return Ok(());
        };
        let _top = if level > first.level {
            let guard = lock(&g.top);
            entry = *lock(&g.entry);
            Some(guard)
        } else {
            None
        };
        let ep = entry.unwrap_or(first);
        let q = self.row(node)?;
        match self.guide {
            Some(codes) => {
                let mut scorer = GuideScorer::new(codes, &q[..self.dim], q[self.dim]);
                self.link_new(node, level, ep, &q, &mut scorer, true, scratch, changed)?;
            }
            None => {
                let mut scorer =
                    RowScorer::new(self.view, self.resident, self.space, &q, q[self.dim]);
                self.link_new(node, level, ep, &q, &mut scorer, false, scratch, changed)?;
                if let Some(e) = scorer.failed {
                    return Err(e);
                }
            }
        }
        if level > ep.level {
            *lock(&g.entry) = Some(Entry { node, level });
        }
        Ok(())
    }

    /// Finds `node`'s neighbours from `ep` down (scored by `scorer`; with `rescore`, its keys
    /// are approximate and the candidates are rescored on the rows before links are chosen)
    /// and links it in on each of its layers.
    #[allow(clippy::too_many_arguments)]
    fn link_new(
        &self,
        node: u32,
        level: u8,
        ep: Entry,
        q: &[f32],
        scorer: &mut impl Scorer,
        rescore: bool,
        scratch: &mut Scratch,
        changed: &mut Vec<u32>,
    ) -> Result<()> {
        let g = self.graph;
        let (from_entry, at) = self.descend(ep, level, scorer, &mut scratch.batch);
        let mut entries = vec![at];
        let mut found: Vec<Scored> = Vec::new();
        let mut exact: Vec<Scored> = Vec::new();
        let mut chosen = Vec::new();
        for layer in (0..=level.min(ep.level)).rev() {
            let p = LayerSearch {
                layer,
                ef: g.params.ef_construction.max(1),
                nodes: self.nodes,
                skip: None,
                budget: None,
            };
            search_layer(self.links, &p, &entries, scorer, scratch);
            found.clear();
            found.extend(scratch.results.drain().map(|r| r.0));
            found.retain(|s| s.node != node);
            if found.len() < g.m && (found.len() as u32) + 2 < self.nodes {
                // The walk met a node whose list on this layer is not written yet (one
                // inserted concurrently): it leads nowhere, and the new node would get as
                // few links. Walk again from the entry as well.
                found.push(from_entry);
                search_layer(self.links, &p, &found, scorer, scratch);
                found.clear();
                found.extend(scratch.results.drain().map(|r| r.0));
                found.retain(|s| s.node != node);
            }
            let candidates = if rescore {
                // The best by their codes' keys, twice a bottom-layer list: at 300k rows of
                // the perturbed MiniLM set, rescoring 64 of the up to 200 found (m 16) built in
                // 73-76 s against 80-85 s rescoring all, with recall@10 at ef 256 0.992 against
                // 0.9915; rescoring 32 fell to 0.979.
                found.sort_unstable_by(|a, b| b.cmp(a));
                exact.clear();
                for s in found.iter().take(2 * g.m0) {
                    let row = self.row(s.node)?;
                    exact.push(Scored::new(self.pair(q, &row), s.node));
                }
                &mut exact
            } else {
                &mut found
            };
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            self.select(candidates, g.m, layer, &mut chosen)?;
            {
                let _l = lock(&g.locks[node as usize % LOCK_STRIPES]);
                self.set_own(node, layer, &chosen)?;
            }
            for &n in &chosen {
                self.link_back(n, node, layer)?;
                changed.push(n);
            }
            if !found.is_empty() {
                std::mem::swap(&mut entries, &mut found);
            }
        }
        Ok(())
    }

    /// The neighbour-selection heuristic (HNSW paper, algorithm 4): from `candidates` (best
    /// first, keyed against the node), keep a candidate only if it is closer to the node
    /// than to every one already kept, up to `keep`. On the bottom layer a list shorter than
    /// `m` is then filled up to `m` (at most `keep`) with the best candidates the heuristic
    /// pruned (the paper's keepPrunedConnections): pruning alone, reapplied each time a full
    /// list takes a new link, left some nodes with a single link or none in. Filling up to
    /// `keep` (2m) instead made every bottom-layer list full, so each later link to the node
    /// re-ran the heuristic on 2m + 1 rows: on MiniLM 20k, build CPU 9.60 and 7.28 s against
    /// 6.82 and 6.54 s filling to m (two runs), recall@10 at ef 128 0.9980 and 0.9985 against
    /// 0.9965 and 0.9980 (docs/performance.md, "HNSW index").
    fn select(
        &self,
        candidates: &[Scored],
        keep: usize,
        layer: u8,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        out.clear();
        if candidates.len() <= keep {
            out.extend(candidates.iter().map(|s| s.node));
            return Ok(());
        }
        let mut kept: Vec<Cow<'_, [f32]>> = Vec::with_capacity(keep);
        let mut pruned = Vec::new();
        for c in candidates {
            if out.len() >= keep {
                break;
            }
            let row = self.row(c.node)?;
            let diverse = kept.iter().all(|k| {
                let key = self.pair(&row, k);
                key.is_nan() || key <= c.key
            });
            if diverse {
                out.push(c.node);
                kept.push(row);
            } else if layer == 0 {
                pruned.push(c.node);
            }
        }
        let room = keep.min(self.graph.m).saturating_sub(out.len());
        out.extend(pruned.into_iter().take(room));
        Ok(())
    }

    /// Sets a new node's list on `layer` to `chosen` (the caller holds its lock), keeping the
    /// links that insertions running meanwhile already added to it: overwriting them would
    /// take away those nodes' in-links, and with them their reachability.
    fn set_own(&self, node: u32, layer: u8, chosen: &[u32]) -> Result<()> {
        let mut list = Vec::new();
        self.links.get(node, layer, &mut list);
        if list.is_empty() {
            self.links.set(node, layer, chosen);
            return Ok(());
        }
        for &c in chosen {
            if !list.contains(&c) {
                list.push(c);
            }
        }
        let cap = self.links.capacity(layer);
        if list.len() > cap {
            let base = self.row(node)?;
            let mut scored = Vec::with_capacity(list.len());
            for &n in &list {
                let row = self.row(n)?;
                scored.push(Scored::new(self.pair(&base, &row), n));
            }
            scored.sort_unstable_by(|a, b| b.cmp(a));
            self.select(&scored, cap, layer, &mut list)?;
        }
        self.links.set(node, layer, &list);
        Ok(())
    }

    /// Adds `node` to `to`'s list on `layer`, pruning the list by the heuristic when full.
    fn link_back(&self, to: u32, node: u32, layer: u8) -> Result<()> {
        let cap = self.links.capacity(layer);
        let _l = lock(&self.graph.locks[to as usize % LOCK_STRIPES]);
        let mut list = Vec::with_capacity(cap + 1);
        self.links.get(to, layer, &mut list);
        if list.contains(&node) {
            return Ok(());
        }
        if list.len() < cap {
            list.push(node);
            self.links.set(to, layer, &list);
            return Ok(());
        }
        list.push(node);
        let base = self.row(to)?;
        let mut scored = Vec::with_capacity(list.len());
        for &n in &list {
            let row = self.row(n)?;
            scored.push(Scored::new(self.pair(&base, &row), n));
        }
        scored.sort_unstable_by(|a, b| b.cmp(a));
        let mut chosen = Vec::with_capacity(cap);
        self.select(&scored, cap, layer, &mut chosen)?;
        self.links.set(to, layer, &chosen);
        Ok(())
    }
}
