//! Exact search: every live row is scored. Rows are taken in blocks that fit in L2; each worker
//! keeps its own top-k and the tops are merged at the end. Natively, blocks run on rayon; on
//! wasm32, in order. A batch of queries scores each block against every query of a group
//! while the block is in cache, so the rows are read from memory once per group, not per query.
//! A view that is not resident (rows read from the file on demand) is streamed through a
//! buffer a chunk at a time, on the calling thread.

use super::topk::{Candidate, TopK};
use super::{Index, Queries, ScanSet};
use crate::distance::{Kernels, PackedQueries};
use crate::storage::RowView;
use crate::types::Metric;

/// Target size of one block of rows for the pairwise and multi-query kernels.
const BLOCK_BYTES: usize = 256 << 10;
/// Queries scored together against a block by the multi-query kernel.
const QUERY_GROUP: usize = 64;
/// Rows per block when a group is one GEMM. The GEMM blocks for the caches itself; larger
/// blocks amortise its packing of the queries.
const GEMM_BLOCK_ROWS: usize = 1024;
/// Queries per GEMM group: a 256 × 1024 score tile is 1 MiB per worker.
const GEMM_QUERY_GROUP: usize = 256;
/// Below this many rows a scan stays on the calling thread.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_MIN_ROWS: u64 = 8192;

/// The exact, brute-force index.
#[derive(Debug, Clone, Copy)]
pub struct FlatIndex {
    metric: Metric,
    kernels: Kernels,
}

/// Per-worker buffers of a group scan, reused from block to block.
#[derive(Default)]
struct Scratch {
    /// `nq × rows` scores of the current block, query-major.
    scores: Vec<f32>,
    /// The current block's row norms.
    row_norms: Vec<f32>,
}

/// A block of rows: its first row number, row count and data.
#[derive(Clone, Copy)]
struct Block<'a> {
    first_row: u64,
    rows: usize,
    data: &'a [f32],
}

impl FlatIndex {
    /// An exact index for `metric` using `kernels`.
    pub fn new(metric: Metric, kernels: Kernels) -> Self {
        FlatIndex { metric, kernels }
    }

    /// The metric keys are computed for (an approximate index scores the same way).
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The kernels keys are computed with (an approximate index that scores with them gets
    /// the same bits as this scan).
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// True when a scan of `rows` rows runs on every core (so a second scan beside it would only
    /// compete for memory bandwidth).
    pub fn scan_uses_all_cores(rows: u64) -> bool {
        #[cfg(not(target_arch = "wasm32"))]
        {
            rows >= PARALLEL_MIN_ROWS
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = rows;
            true
        }
    }

    /// The rows in blocks of `per_block` rows (at least one).
    fn blocks<'a>(&self, set: &ScanSet<'a>, per_block: usize) -> Vec<Block<'a>> {
        let segments = (0..set.rows.segment_count()).map(|s| set.rows.segment(s));
        let stride = set.rows.layout().stride_f32;
        super::row_blocks(segments, stride, set.rows.rows(), per_block)
            .into_iter()
            .map(|(first_row, rows, data)| Block {
                first_row,
                rows,
                data,
            })
            .collect()
    }

    /// Ranking key of a row against a query: higher is better.
    #[inline]
    fn key(&self, query: &[f32], query_norm: f32, row: &[f32], dim: usize) -> f32 {
        match self.metric {
            Metric::Cosine => cosine(self.kernels.dot(query, &row[..dim]), query_norm, row[dim]),
            Metric::Dot => self.kernels.dot(query, &row[..dim]),
            Metric::L2 => -self.kernels.l2sq(query, &row[..dim]),
        }
    }

    fn scan_one(&self, set: &ScanSet<'_>, block: Block<'_>, q: &[f32], qn: f32, top: &mut TopK) {
        let layout = set.rows.layout();
        let (stride, dim) = (layout.stride_f32, layout.dim as usize);
        for i in 0..block.rows {
            let row = block.first_row + i as u64;
            if set.is_deleted(row) {
                continue;
            }
            let key = self.key(q, qn, &block.data[i * stride..(i + 1) * stride], dim);
            top.push(key, row);
        }
    }

    /// The group of `nq` queries from `first_q`, packed for the packed kernel when that is
    /// how this group is scored (dot products on a CPU that has it; see `Kernels`).
    fn packed(
        &self,
        queries: &Queries,
        first_q: usize,
        nq: usize,
        dim: usize,
    ) -> Option<PackedQueries> {
        if self.metric == Metric::L2 {
            return None;
        }
        let group = &queries.data[first_q * dim..(first_q + nq) * dim];
        self.kernels.pack_queries(group, nq, dim)
    }

    /// Scores one block against a group of queries (`tops[j]` belongs to query `first_q + j`;
    /// `packed`: the same queries from [`FlatIndex::packed`]).
    #[allow(clippy::too_many_arguments)] // one block, one group and where its results go
    fn scan_group(
        &self,
        set: &ScanSet<'_>,
        block: Block<'_>,
        queries: &Queries,
        first_q: usize,
        packed: Option<&PackedQueries>,
        tops: &mut [TopK],
        scratch: &mut Scratch,
    ) {
        let layout = set.rows.layout();
        let (stride, dim) = (layout.stride_f32, layout.dim as usize);
        let nq = tops.len();
        let nr = block.rows;
        scratch.scores.resize(nq * nr, 0.0);
        let group = &queries.data[first_q * dim..(first_q + nq) * dim];
        match self.metric {
            Metric::Cosine | Metric::Dot => match packed {
                Some(packed) => self.kernels.dot_many_packed(
                    packed,
                    block.data,
                    nr,
                    stride,
                    &mut scratch.scores,
                ),
                None => self.kernels.dot_many(
                    group,
                    nq,
                    block.data,
                    nr,
                    stride,
                    dim,
                    &mut scratch.scores,
                ),
            },
            Metric::L2 => {
                for j in 0..nq {
                    let q = &group[j * dim..(j + 1) * dim];
                    for i in 0..nr {
                        scratch.scores[j * nr + i] = -self
                            .kernels
                            .l2sq(q, &block.data[i * stride..i * stride + dim]);
                    }
                }
            }
        }
        // Row norms gathered once per block: reading them from the rows inside the query loop
        // would touch one cache line per row per query.
        scratch.row_norms.clear();
        scratch
            .row_norms
            .extend((0..nr).map(|i| block.data[i * stride + dim]));
        // Query-major, against a running threshold: most scores lose one comparison and never
        // reach the heap or the tombstone bitmap.
        for (j, top) in tops.iter_mut().enumerate() {
            let query_norm = queries.norms[first_q + j];
            let scores = &scratch.scores[j * nr..(j + 1) * nr];
            let mut threshold = top.threshold();
            for (i, (&raw, &row_norm)) in scores.iter().zip(&scratch.row_norms).enumerate() {
                let key = match self.metric {
                    Metric::Cosine => cosine(raw, query_norm, row_norm),
                    Metric::Dot | Metric::L2 => raw,
                };
                if key < threshold {
                    continue;
                }
                let row = block.first_row + i as u64;
                if set.is_deleted(row) {
                    continue;
                }
                top.push(key, row);
                threshold = top.threshold();
            }
        }
    }

    fn search_single(
        &self,
        set: &ScanSet<'_>,
        blocks: &[Block<'_>],
        q: &[f32],
        qn: f32,
        k: usize,
    ) -> TopK {
        #[cfg(not(target_arch = "wasm32"))]
        if set.rows.rows() >= PARALLEL_MIN_ROWS {
            use rayon::prelude::*;
            return blocks
                .par_iter()
                .fold(
                    || TopK::new(k),
                    |mut top, b| {
                        self.scan_one(set, *b, q, qn, &mut top);
                        top
                    },
                )
                .reduce(
                    || TopK::new(k),
                    |mut a, b| {
                        a.merge(&b);
                        a
                    },
                );
        }
        let mut top = TopK::new(k);
        for b in blocks {
            self.scan_one(set, *b, q, qn, &mut top);
        }
        top
    }

    fn search_group(
        &self,
        set: &ScanSet<'_>,
        blocks: &[Block<'_>],
        queries: &Queries,
        first_q: usize,
        nq: usize,
        k: usize,
    ) -> Vec<TopK> {
        let fresh = || (vec![TopK::new(k); nq], Scratch::default());
        let dim = set.rows.layout().dim as usize;
        let packed = self.packed(queries, first_q, nq, dim);
        let packed = packed.as_ref();
        #[cfg(not(target_arch = "wasm32"))]
        if set.rows.rows() >= PARALLEL_MIN_ROWS {
            use rayon::prelude::*;
            return blocks
                .par_iter()
                .fold(fresh, |(mut tops, mut scratch), b| {
                    self.scan_group(set, *b, queries, first_q, packed, &mut tops, &mut scratch);
                    (tops, scratch)
                })
                .map(|(tops, _)| tops)
                .reduce(
                    || vec![TopK::new(k); nq],
                    |mut a, b| {
                        for (x, y) in a.iter_mut().zip(&b) {
                            x.merge(y);
                        }
                        a
                    },
                );
        }
        let (mut tops, mut scratch) = fresh();
        for b in blocks {
            self.scan_group(set, *b, queries, first_q, packed, &mut tops, &mut scratch);
        }
        tops
    }
}

impl FlatIndex {
    /// The best `k` of the listed rows for each query: a gather-scan that scores only `rows`
    /// (ascending row numbers, all live), for a filter that leaves few rows. Reads each row
    /// once for all the queries.
    pub fn search_rows(
        &self,
        view: &dyn RowView,
        rows: &[u64],
        queries: &Queries,
        k: usize,
    ) -> Vec<Vec<Candidate>> {
        let n = queries.count();
        if k == 0 || rows.is_empty() {
            return vec![Vec::new(); n];
        }
        let dim = view.layout().dim as usize;
        let resident = view.resident();
        let scan = |tops: &mut Vec<TopK>, chunk: &[u64]| {
            if !resident {
                self.gather_read(view, chunk, queries, tops);
                return;
            }
            for (i, &row) in chunk.iter().enumerate() {
                // Rows are far apart: ask for a later row's cache lines while this one is
                // scored, so the scan waits on memory latency once, not once per row.
                if let Some(&ahead) = chunk.get(i + GATHER_PREFETCH_AHEAD) {
                    if let Some(later) = view.row(ahead) {
                        prefetch(later);
                    }
                }
                let Some(data) = view.row(row) else { continue };
                for (j, top) in tops.iter_mut().enumerate() {
                    let key = self.key(queries.get(j), queries.norms[j], data, dim);
                    top.push(key, row);
                }
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        if (rows.len() as u64).saturating_mul(n as u64) >= PARALLEL_MIN_ROWS {
            use rayon::prelude::*;
            let tops = rows
                .par_chunks(GATHER_CHUNK_ROWS)
                .fold(
                    || vec![TopK::new(k); n],
                    |mut tops, chunk| {
                        scan(&mut tops, chunk);
                        tops
                    },
                )
                .reduce(
                    || vec![TopK::new(k); n],
                    |mut a, b| {
                        for (x, y) in a.iter_mut().zip(&b) {
                            x.merge(y);
                        }
                        a
                    },
                );
            return tops.into_iter().map(TopK::into_sorted).collect();
        }
        let mut tops = vec![TopK::new(k); n];
        scan(&mut tops, rows);
        tops.into_iter().map(TopK::into_sorted).collect()
    }
}

impl FlatIndex {
    /// True when `n` queries are scored pair by pair (see [`Index::search`]).
    fn pairwise_single(&self, n: usize) -> bool {
        n == 1 && (self.metric == Metric::L2 || !self.kernels.has_multi_dot())
    }

    /// [`Index::search`] over a view that is not resident: the rows are read in chunks of
    /// [`STREAM_CHUNK_BYTES`] into one buffer, and each chunk is scanned in blocks as a
    /// resident view's segment would be (the same kernels, so the same keys), on the calling
    /// thread. A failed read ends the scan; the view remembers it and the caller's
    /// `check_backed` after the scan reports it.
    fn search_streamed(
        &self,
        set: &ScanSet<'_>,
        queries: &Queries,
        k: usize,
        group: usize,
        per_block: usize,
    ) -> Vec<Vec<Candidate>> {
        let n = queries.count();
        let stride = set.rows.layout().stride_f32;
        let total = set.rows.rows();
        let per_block = per_block.max(1);
        // Whole blocks per chunk, so a chunk splits into the blocks a resident scan would use.
        let chunk_rows = (STREAM_CHUNK_BYTES / (per_block * stride * 4)).max(1) * per_block;
        let pairwise = self.pairwise_single(n);
        let dim = set.rows.layout().dim as usize;
        // Each group's queries packed once for the whole scan (`None` where not packed).
        let packed: Vec<Option<PackedQueries>> = (0..n)
            .step_by(group.max(1))
            .map(|q| self.packed(queries, q, group.min(n - q), dim))
            .collect();
        let mut tops = vec![TopK::new(k); n];
        let mut scratch = Scratch::default();
        let mut buf =
            vec![0.0f32; chunk_rows.min(usize::try_from(total).unwrap_or(usize::MAX)) * stride];
        let mut first = 0u64;
        while first < total {
            let rows = (total - first).min(chunk_rows as u64) as usize;
            let data = &mut buf[..rows * stride];
            if set.rows.read_rows(first, data).is_err() {
                break;
            }
            let mut at = 0;
            while at < rows {
                let nr = per_block.min(rows - at);
                let block = Block {
                    first_row: first + at as u64,
                    rows: nr,
                    data: &data[at * stride..(at + nr) * stride],
                };
                if pairwise {
                    self.scan_one(set, block, queries.get(0), queries.norms[0], &mut tops[0]);
                } else {
                    for (g, packed) in packed.iter().enumerate() {
                        let q = g * group;
                        let nq = group.min(n - q);
                        let tops = &mut tops[q..q + nq];
                        self.scan_group(
                            set,
                            block,
                            queries,
                            q,
                            packed.as_ref(),
                            tops,
                            &mut scratch,
                        );
                    }
                }
                at += nr;
            }
            first += rows as u64;
        }
        tops.into_iter().map(TopK::into_sorted).collect()
    }

    /// The gather-scan of `rows` over a view that is not resident: each row is read into a
    /// buffer and scored against every query with the pairwise kernel (the rescoring of
    /// candidates reads a few dozen rows this way). Runs of consecutive rows are read at once.
    /// A failed read ends the scan (see [`FlatIndex::search_streamed`]).
    fn gather_read(&self, view: &dyn RowView, rows: &[u64], queries: &Queries, tops: &mut [TopK]) {
        let stride = view.layout().stride_f32;
        let dim = view.layout().dim as usize;
        let mut buf = Vec::new();
        let mut i = 0;
        let total = view.rows();
        while i < rows.len() {
            let first = rows[i];
            if first >= total {
                // Not in the view: skipped, as `row` skips it on a resident view.
                i += 1;
                continue;
            }
            let mut run = 1;
            while run < GATHER_RUN_ROWS
                && rows
                    .get(i + run)
                    .is_some_and(|&r| r == first + run as u64 && r < total)
            {
                run += 1;
            }
            buf.resize(run * stride, 0.0);
            if view.read_rows(first, &mut buf).is_err() {
                return;
            }
            for (j, data) in buf.chunks_exact(stride).enumerate() {
                let row = first + j as u64;
                for (q, top) in tops.iter_mut().enumerate() {
                    let key = self.key(queries.get(q), queries.norms[q], data, dim);
                    top.push(key, row);
                }
            }
            i += run;
        }
    }
}

/// Bytes of rows read at once by a scan of a view that is not resident: large enough that a
/// read costs little beside its copy, small enough to stay in the last-level cache.
const STREAM_CHUNK_BYTES: usize = 4 << 20;
/// Most consecutive rows one read of a gather-scan over a view that is not resident takes.
const GATHER_RUN_ROWS: usize = 64;

/// How many rows ahead a gather-scan prefetches.
const GATHER_PREFETCH_AHEAD: usize = 4;

/// Hints the CPU to load `data`'s cache lines (a no-op where there is no prefetch hint).
#[inline]
fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for line in data.chunks(16) {
            // SAFETY: a prefetch is a hint that never faults and reads nothing into the
            // program; the pointer comes from a live slice, and SSE is baseline on x86_64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast::<i8>()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Rows per task of a parallel gather-scan.
#[cfg(not(target_arch = "wasm32"))]
const GATHER_CHUNK_ROWS: usize = 1024;

/// Cosine similarity from a dot product and the two norms; 0 when either vector is zero.
#[inline]
fn cosine(dot: f32, query_norm: f32, row_norm: f32) -> f32 {
    let denom = query_norm * row_norm;
    if denom > 0.0 {
        dot / denom
    } else {
        0.0
    }
}

impl Index for FlatIndex {
    fn name(&self) -> &'static str {
        "flat"
    }

    fn search(&self, set: &ScanSet<'_>, queries: &Queries, k: usize) -> Vec<Vec<Candidate>> {
        let n = queries.count();
        if k == 0 || set.rows.rows() == 0 {
            return vec![Vec::new(); n];
        }
        let layout = set.rows.layout();
        // A group of queries large enough for the GEMM gets bigger row blocks and groups.
        let gemm = self.metric != Metric::L2
            && self
                .kernels
                .uses_gemm(n.min(GEMM_QUERY_GROUP), layout.dim as usize);
        let (group, per_block) = if gemm {
            (GEMM_QUERY_GROUP, GEMM_BLOCK_ROWS)
        } else {
            (QUERY_GROUP, BLOCK_BYTES / layout.stride_bytes())
        };
        if !set.rows.resident() {
            return self.search_streamed(set, queries, k, group, per_block);
        }
        let blocks = self.blocks(set, per_block);
        // A single query goes through the pairwise kernel only for L2 or where there is no
        // multi-query kernel; otherwise the multi-query path (with one query) is faster, since
        // its dot product keeps four FMA chains in flight where SimSIMD's AVX2 kernel keeps one.
        if self.pairwise_single(n) {
            let top = self.search_single(set, &blocks, queries.get(0), queries.norms[0], k);
            return vec![top.into_sorted()];
        }
        let mut out = Vec::with_capacity(n);
        let mut first = 0;
        while first < n {
            let nq = group.min(n - first);
            let tops = self.search_group(set, &blocks, queries, first, nq, k);
            out.extend(tops.into_iter().map(TopK::into_sorted));
            first += nq;
        }
        out
    }
}
