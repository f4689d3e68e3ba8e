//! The quantized flat index: every row the scan may see is scored on its code, the best
//! `k * oversample` are kept, and those are rescored exactly from the f32 rows with the
//! pairwise kernel of the exact gather-scan, so the hits and their scores are exact for the
//! candidates found.
//!
//! The code scan reads codes in blocks that stay in cache while a group of queries scores
//! them ([`Codebook::score_block_many`]); natively, blocks run on rayon above a row count, on
//! wasm32 in order. Each worker keeps its own candidates per query and they are merged at the
//! end, as the exact scan does.
//!
//! A filter that leaves few rows is answered by a gather over the matching rows' codes
//! ([`QuantizedIndex::search_rows`]), rescored the same way.

use super::codes::{CodeBlock, CodeTable};
use super::{Codebook, Kernel, PreparedGroup, PreparedQuery, Quantization};
use crate::index::flat::FlatIndex;
use crate::index::topk::Candidate;
use crate::index::{Index, Queries, ScanSet};
use crate::storage::RowView;
use std::cmp::Ordering;

/// Target bytes of codes per block: with the group's scores beside them they stay in L2.
/// Public so benches cut the codes as the scan does.
pub const CODE_BLOCK_BYTES: usize = 256 << 10;
/// Queries scored together against one block of codes.
const QUERY_GROUP: usize = 30;
/// Below this many rows an int8 code scan stays on the calling thread: codes are 4x smaller
/// than rows, so a scan this short (about 0.1 ms) costs about what handing it to the pool
/// does.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_MIN_ROWS_INT8: u64 = 16 * 1024;
/// The same for binary codes, which are 8x smaller again: on MiniLM 20k the scan on the
/// calling thread answered in 0.19-0.20 ms where the pool's took 0.25-0.27 ms (p50 of 1000
/// queries interleaved with the exact scan, load average 9-11 on 2 cores; not re-measured on
/// a quiet machine, where the pool's share of the work may pay for its hand-off).
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_MIN_ROWS_BINARY: u64 = 32 * 1024;
/// Rows whose codes a filtered gather copies side by side and scores as one block: about
/// 50 KB of 384-d int8 codes, which stay in L1/L2 while the block kernel reads them.
const GATHER_BLOCK_ROWS: usize = 128;
/// Runs of blocks per thread in a parallel code scan: enough to even out a slow thread.
#[cfg(not(target_arch = "wasm32"))]
const TASKS_PER_THREAD: usize = 4;

/// What a query asks of a quantized index (`Query::oversample`, `Query::exact`). Coalesced
/// searches share a scan only when these are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScanOptions {
    /// Candidates kept per hit before rescoring; `None` is the quantization's default.
    pub oversample: Option<usize>,
    /// Scan the exact f32 rows even when codes or a graph exist.
    pub exact: bool,
    /// With an HNSW index: candidates kept during the graph traversal (`None`:
    /// [`crate::hnsw::DEFAULT_EF`], raised to `k`).
    pub ef: Option<usize>,
}

/// A search over one snapshot's codes.
pub struct QuantizedIndex<'a> {
    /// The codes of the snapshot's rows (the rows past its end, if any, are scored exactly).
    pub codes: &'a CodeTable,
    /// Rescores the candidates (and scores rows the codes do not cover).
    pub exact: FlatIndex,
    /// Candidates kept per hit.
    pub oversample: usize,
}

/// The best `keep` rows by code score, kept loosely: a row above the running threshold is
/// appended, and when `2 * keep` are held a selection keeps the best `keep` and raises the
/// threshold to the worst of them. Amortised O(1) per row that passes, where a heap pays a
/// sift per row; a code scan passes many (codes are cheap to score, and `keep` is
/// `k * oversample`). Ranks as [`crate::index::topk::TopK`] does: key, then the lower row.
#[derive(Clone)]
struct Shortlist {
    keep: usize,
    held: Vec<Candidate>,
    /// `-inf` until `keep` rows were selected; then the key of the worst kept row.
    threshold: f32,
}

/// Best first: higher key, then lower row.
fn rank(a: &Candidate, b: &Candidate) -> Ordering {
    b.key.total_cmp(&a.key).then(a.row.cmp(&b.row))
}

impl Shortlist {
    fn new(keep: usize) -> Self {
        Shortlist {
            keep,
            held: Vec::new(),
            threshold: f32::NEG_INFINITY,
        }
    }

    /// Offers a row. NaN keys rank below everything.
    #[inline]
    fn push(&mut self, key: f32, row: u64) {
        let key = if key.is_nan() { f32::NEG_INFINITY } else { key };
        self.held.push(Candidate { key, row });
        if self.held.len() >= 2 * self.keep.max(1) {
            self.select();
        }
    }

    /// Keeps the best `keep` held rows (in no order) and raises the threshold.
    fn select(&mut self) {
        if self.held.len() <= self.keep {
            return;
        }
        if self.keep == 0 {
            self.held.clear();
            return;
        }
        self.held.select_nth_unstable_by(self.keep - 1, rank);
        self.held.truncate(self.keep);
        self.threshold = self.held[self.keep - 1].key;
    }

    /// Adds the rows of a worker's shortlist (parallel scans only).
    #[cfg(not(target_arch = "wasm32"))]
    fn merge(&mut self, other: Shortlist) {
        self.held.extend(other.held);
        self.select();
    }

    /// The kept rows, ascending.
    fn into_rows(mut self) -> Vec<u64> {
        self.select();
        let mut rows: Vec<u64> = self.held.iter().map(|c| c.row).collect();
        rows.sort_unstable();
        rows
    }
}

/// True when a row scanned after every row of a shortlist, with `key`, cannot enter it (its
/// threshold is `threshold`): below it, or equal to a finite one (the shortlist is full and
/// ties go to the lower row).
#[inline]
fn loses_to(key: f32, threshold: f32) -> bool {
    key < threshold || (key == threshold && key != f32::NEG_INFINITY)
}

/// Keys compared with a shortlist's threshold at once (one bit each in [`pass_masks`]'s
/// masks). Rows found passing are offered one by one, each checked again against the
/// threshold, which may have risen since the masks were taken.
const PASS_RUN: usize = 256;

/// Bit `i % 32` of `masks[i / 32]` set when `keys[i]` (at most [`PASS_RUN`] keys) does not
/// lose to `threshold` ([`loses_to`]; NaN keys pass, the shortlist ranks them last), by the
/// vector compares of `kernel`: most keys of a scan lose.
#[inline]
fn pass_masks(kernel: Kernel, keys: &[f32], threshold: f32, masks: &mut [u32; PASS_RUN / 32]) {
    debug_assert!(keys.len() <= PASS_RUN);
    if threshold == f32::NEG_INFINITY {
        // Nothing loses to an empty shortlist, not even -inf.
        for (i, m) in masks.iter_mut().enumerate() {
            let n = keys.len().saturating_sub(32 * i).min(32) as u32;
            *m = u32::MAX.checked_shr(32 - n).unwrap_or(0);
        }
        return;
    }
    // Above a finite threshold or NaN is exactly not losing (a threshold is a kept key,
    // never NaN; +inf loses nothing to it either way).
    kernel.above_masks(keys, threshold, masks);
}

impl QuantizedIndex<'_> {
    /// True when a code scan of `rows` rows of `quantization` codes runs on every core (so a
    /// second scan beside it would only compete for them). A batch counts its rows once per
    /// query.
    pub fn scan_uses_all_cores(quantization: Quantization, rows: u64) -> bool {
        #[cfg(not(target_arch = "wasm32"))]
        {
            rows >= match quantization {
                Quantization::Int8 => PARALLEL_MIN_ROWS_INT8,
                Quantization::Binary => PARALLEL_MIN_ROWS_BINARY,
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = (quantization, rows);
            true
        }
    }

    /// The codes of rows `0..coded` in blocks of about [`CODE_BLOCK_BYTES`].
    fn blocks(&self, coded: u64) -> Vec<CodeBlock<'_>> {
        self.codes
            .blocks(coded, CODE_BLOCK_BYTES / self.codes.code_len().max(1))
    }

    /// Scores one block against a group of prepared queries (`tops[j]` is query `j`'s),
    /// offering every row the scan may see.
    fn scan_block(
        &self,
        set: &ScanSet<'_>,
        block: CodeBlock<'_>,
        group: &PreparedGroup<'_>,
        tops: &mut [Shortlist],
        scores: &mut Vec<f32>,
    ) {
        let codebook: &Codebook = self.codes.codebook();
        let nr = block.rows;
        scores.resize(group.queries().len() * nr, 0.0);
        if let [one] = group.queries() {
            codebook.score_block(one, block.codes, &mut scores[..nr]);
        } else {
            codebook.score_block_many(group, block.codes, scores);
        }
        // Query-major against a running threshold: most rows lose one comparison and never
        // reach the shortlist or the tombstone bitmap. A worker's blocks ascend, so every row
        // comes after those its shortlist holds ([`loses_to`]); binary keys are small
        // integers (times a step), so ties with the threshold are common.
        // The comparison runs over runs of `PASS_RUN` keys with vector compares, and only
        // the rows of a run that pass are looked at one by one.
        let kernel = Kernel::best();
        let mut masks = [0u32; PASS_RUN / 32];
        for (top, keys) in tops.iter_mut().zip(scores.chunks_exact(nr)) {
            let mut threshold = top.threshold;
            for (run, chunk) in keys.chunks(PASS_RUN).enumerate() {
                pass_masks(kernel, chunk, threshold, &mut masks);
                for (word, &mask) in masks.iter().enumerate() {
                    let mut passing = mask;
                    while passing != 0 {
                        let i = 32 * word + passing.trailing_zeros() as usize;
                        passing &= passing - 1;
                        let key = chunk[i];
                        // The threshold may have risen since the masks were taken.
                        if loses_to(key, threshold) {
                            continue;
                        }
                        let row = block.first_row + (run * PASS_RUN + i) as u64;
                        if set.is_deleted(row) {
                            continue;
                        }
                        top.push(key, row);
                        threshold = top.threshold;
                    }
                }
            }
        }
    }

    /// The best `keep` rows by code score for each query of `group`: one pass over `blocks`,
    /// on rayon when `parallel` (natively; wasm32 scans in order either way).
    fn candidates(
        &self,
        set: &ScanSet<'_>,
        blocks: &[CodeBlock<'_>],
        group: &PreparedGroup<'_>,
        keep: usize,
        parallel: bool,
    ) -> Vec<Shortlist> {
        let nq = group.queries().len();
        shortlists(blocks, 1, nq, keep, parallel, |run, tops, scores| {
            for b in run {
                self.scan_block(set, *b, group, tops, scores);
            }
        })
    }

    /// The exact top `k` of each query's candidate rows (ascending, live), scored by the
    /// exact gather-scan's pairwise kernel.
    fn rescore(
        &self,
        set: &ScanSet<'_>,
        queries: &Queries,
        candidates: Vec<Vec<u64>>,
        k: usize,
    ) -> Vec<Vec<Candidate>> {
        let one = |(j, rows): (usize, Vec<u64>)| {
            let query = Queries {
                data: queries.get(j).to_vec(),
                norms: vec![queries.norms[j]],
                dim: queries.dim,
            };
            self.exact
                .search_rows(set.rows, &rows, &query, k)
                .pop()
                .unwrap_or_default()
        };
        #[cfg(not(target_arch = "wasm32"))]
        if candidates.len() > 1 {
            use rayon::prelude::*;
            return candidates.into_par_iter().enumerate().map(one).collect();
        }
        candidates.into_iter().enumerate().map(one).collect()
    }
}

impl QuantizedIndex<'_> {
    /// The best `k` of the listed rows (ascending, all live) for each query, for a filter
    /// that leaves few rows: their int8 codes are gathered into blocks and scored, and the
    /// best `k * oversample` of each query are rescored exactly, as the code scan's are. A
    /// code is a quarter of a row's bytes, so this reads less than the exact gather-scan of
    /// the same rows. Binary codes lie in groups of 32 rows and are not gathered: their
    /// listed rows, like every list no longer than the candidates kept, are scored exactly.
    pub fn search_rows(
        &self,
        view: &dyn RowView,
        rows: &[u64],
        queries: &Queries,
        k: usize,
    ) -> Vec<Vec<Candidate>> {
        let n = queries.count();
        let keep = k.saturating_mul(self.oversample.max(1));
        let codebook = self.codes.codebook();
        if k == 0 || rows.len() <= keep || codebook.quantization() != Quantization::Int8 {
            return self.exact.search_rows(view, rows, queries, k);
        }
        // Rows past the codes (none unless the codes lag the rows) are every query's
        // candidates; they follow the coded ones, so each list stays ascending.
        let (coded, uncoded) = rows.split_at(rows.partition_point(|&r| r < self.codes.rows()));
        let prepared: Vec<PreparedQuery> = (0..n)
            .map(|j| codebook.prepare(queries.get(j), queries.norms[j]))
            .collect();
        let work = (coded.len() as u64).saturating_mul(n as u64);
        let parallel = Self::scan_uses_all_cores(Quantization::Int8, work);
        let mut candidates: Vec<Vec<u64>> = Vec::with_capacity(n);
        for group in prepared.chunks(QUERY_GROUP) {
            let group = codebook.prepare_group(group);
            let tops = self.gathered_candidates(coded, &group, keep, parallel);
            candidates.extend(tops.into_iter().map(Shortlist::into_rows));
        }
        for list in &mut candidates {
            list.extend_from_slice(uncoded);
        }
        let set = ScanSet {
            rows: view,
            tombstones: &[],
        };
        self.rescore(&set, queries, candidates, k)
    }

    /// The best `keep` of `rows` (ascending, all coded) by code score for each query of
    /// `group`, on rayon when `parallel`.
    fn gathered_candidates(
        &self,
        rows: &[u64],
        group: &PreparedGroup<'_>,
        keep: usize,
        parallel: bool,
    ) -> Vec<Shortlist> {
        let nq = group.queries().len();
        shortlists(
            rows,
            GATHER_BLOCK_ROWS,
            nq,
            keep,
            parallel,
            |run, tops, buf| {
                for block in run.chunks(GATHER_BLOCK_ROWS) {
                    self.gather_block(block, group, tops, buf);
                }
            },
        )
    }

    /// Copies the codes of `rows` (ascending) side by side, scores them against `group` and
    /// offers every row to each query's shortlist.
    fn gather_block(
        &self,
        rows: &[u64],
        group: &PreparedGroup<'_>,
        tops: &mut [Shortlist],
        buf: &mut Gathered,
    ) {
        buf.codes.clear();
        buf.missing.clear();
        let len = self.codes.code_len();
        for (i, &row) in rows.iter().enumerate() {
            match self.codes.code(row) {
                Some(code) => buf.codes.extend_from_slice(code),
                // Never for rows below `rows()` of int8 codes; if it were, the row is kept as
                // a candidate (scored +inf) rather than lost.
                None => {
                    buf.codes.resize(buf.codes.len() + len, 0);
                    buf.missing.push(i);
                }
            }
        }
        let nr = rows.len();
        buf.scores.resize(group.queries().len() * nr, 0.0);
        let codebook: &Codebook = self.codes.codebook();
        if let [one] = group.queries() {
            codebook.score_block(one, &buf.codes, &mut buf.scores[..nr]);
        } else {
            codebook.score_block_many(group, &buf.codes, &mut buf.scores);
        }
        for (top, keys) in tops.iter_mut().zip(buf.scores.chunks_exact_mut(nr.max(1))) {
            for &i in &buf.missing {
                keys[i] = f32::INFINITY;
            }
            for (&key, &row) in keys.iter().zip(rows) {
                // Rows ascend within and across a worker's blocks ([`loses_to`]).
                if !loses_to(key, top.threshold) {
                    top.push(key, row);
                }
            }
        }
    }
}

/// The best `keep` rows for each of `nq` queries, found by `scan` over runs of `items` in
/// order, each run with its own shortlists and buffer. On rayon when `parallel` (natively;
/// wasm32 scans in order either way): a few long runs of at least `min_run` items per thread,
/// not one task per item, because each task fills its own `keep` candidates per query and they
/// are merged at the end, and with codes this cheap to score that heap work would rival the
/// scan.
fn shortlists<I: Sync, B: Default + Send>(
    items: &[I],
    min_run: usize,
    nq: usize,
    keep: usize,
    parallel: bool,
    scan: impl Fn(&[I], &mut [Shortlist], &mut B) + Sync,
) -> Vec<Shortlist> {
    let fresh = || (vec![Shortlist::new(keep); nq], B::default());
    #[cfg(target_arch = "wasm32")]
    let _ = (parallel, min_run);
    #[cfg(not(target_arch = "wasm32"))]
    if parallel {
        use rayon::prelude::*;
        let tasks = rayon::current_num_threads() * TASKS_PER_THREAD;
        let run = items.len().div_ceil(tasks).max(min_run).max(1);
        return items
            .par_chunks(run)
            .fold(fresh, |(mut tops, mut buf), run| {
                scan(run, &mut tops, &mut buf);
                (tops, buf)
            })
            .map(|(tops, _)| tops)
            .reduce(
                || vec![Shortlist::new(keep); nq],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        x.merge(y);
                    }
                    a
                },
            );
    }
    let (mut tops, mut buf) = fresh();
    scan(items, &mut tops, &mut buf);
    tops
}

/// A gather worker's buffers: the block's codes side by side, the scores, and the places of
/// rows that had no code.
#[derive(Default)]
struct Gathered {
    codes: Vec<u8>,
    scores: Vec<f32>,
    missing: Vec<usize>,
}

impl Index for QuantizedIndex<'_> {
    fn name(&self) -> &'static str {
        "flat-quantized"
    }

    fn search(&self, set: &ScanSet<'_>, queries: &Queries, k: usize) -> Vec<Vec<Candidate>> {
        let n = queries.count();
        let total = set.rows.rows();
        if k == 0 || total == 0 {
            return vec![Vec::new(); n];
        }
        let coded = self.codes.rows().min(total);
        let keep = k.saturating_mul(self.oversample.max(1));
        // Rows without a code (none, unless the codes lag the rows) are candidates of every
        // query; so is every row when the candidates would cover the codes anyway.
        let all_rows = usize::try_from(coded).is_ok_and(|c| keep >= c);
        let uncoded_from = if all_rows { 0 } else { coded };
        let uncoded: Vec<u64> = (uncoded_from..total)
            .filter(|&row| !set.is_deleted(row))
            .collect();
        if all_rows {
            // The same candidates for every query: one gather-scan answers them all.
            return self.exact.search_rows(set.rows, &uncoded, queries, k);
        }
        let codebook = self.codes.codebook();
        let prepared: Vec<PreparedQuery> = (0..n)
            .map(|j| codebook.prepare(queries.get(j), queries.norms[j]))
            .collect();
        let blocks = self.blocks(coded);
        // A batch scores every code once per query: its work is rows times queries.
        let work = coded.saturating_mul(n as u64);
        let parallel = Self::scan_uses_all_cores(codebook.quantization(), work);
        let mut candidates: Vec<Vec<u64>> = Vec::with_capacity(n);
        for group in prepared.chunks(QUERY_GROUP) {
            let group = codebook.prepare_group(group);
            let tops = self.candidates(set, &blocks, &group, keep, parallel);
            candidates.extend(tops.into_iter().map(Shortlist::into_rows));
        }
        for rows in &mut candidates {
            // Uncoded rows all follow the coded ones, so the list stays ascending.
            rows.extend_from_slice(&uncoded);
        }
        self.rescore(set, queries, candidates, k)
    }
}

#[cfg(test)]
mod tests {
    //! The scan against a brute force written here; recall on real embeddings and the
    //! database paths are in `tests/quantized_search.rs`.
    use super::*;
    use crate::distance::Kernels;
    use crate::format::RowLayout;
    use crate::quant::Quantization;
    use crate::storage::cached::CachedRows;
    use crate::storage::RowStore;
    use crate::testing::Rng;
    use crate::types::Metric;
    use std::sync::Arc;

    struct Fixture {
        rows: Box<dyn RowStore>,
        layout: RowLayout,
        vectors: Vec<Vec<f32>>,
    }

    fn fixture(n: usize, dim: usize, seed: u64) -> Fixture {
        let layout = RowLayout::new(dim as u32);
        let mut rng = Rng::new(seed);
        let vectors: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..dim).map(|_| rng.f32()).collect())
            .collect();
        let mut rows = CachedRows::open(None, Default::default(), layout, 0).unwrap();
        let mut buf = vec![0f32; layout.stride_f32];
        for v in &vectors {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            layout.encode_row(v, norm, &mut buf);
            rows.append(&buf).unwrap();
        }
        Fixture {
            rows: Box::new(rows),
            layout,
            vectors,
        }
    }

    fn codes_of(f: &Fixture, q: Quantization, metric: Metric, upto: usize) -> CodeTable {
        let view = f.rows.view();
        let dim = f.layout.dim as usize;
        let train = (0..view.rows())
            .filter_map(|r| view.row(r))
            .map(|r| (&r[..dim], r[dim]));
        let codebook = Codebook::train(q, metric, dim, train);
        let mut codes = CodeTable::new(Arc::new(codebook));
        for r in 0..upto as u64 {
            codes.push_rows(f.layout, view.row(r).unwrap());
        }
        codes
    }

    /// The rows not skipped, best first by f64 score (ties to the lower row).
    fn brute(metric: Metric, f: &Fixture, q: &[f32], skip: &[u64], k: usize) -> Vec<u64> {
        let mut scored: Vec<(f64, u64)> = f
            .vectors
            .iter()
            .enumerate()
            .filter(|(r, _)| !crate::index::row_bit_set(skip, *r as u64))
            .map(|(r, v)| (crate::testing::reference_key(metric, q, v), r as u64))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|(_, r)| r).collect()
    }

    /// The reference candidates: the best `keep` of `rows` by the scalar `Codebook::score`
    /// (NaN last, ties to the lower row), ascending.
    fn best_by_code(codes: &CodeTable, p: &PreparedQuery, rows: &[u64], keep: usize) -> Vec<u64> {
        let mut scored: Vec<(f32, u64)> = rows
            .iter()
            .map(|&r| {
                let mut code = vec![0u8; codes.code_len()];
                assert!(codes.copy_code(r, &mut code));
                let key = codes.codebook().score(p, &code);
                (if key.is_nan() { f32::NEG_INFINITY } else { key }, r)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut best: Vec<u64> = scored.into_iter().take(keep).map(|(_, r)| r).collect();
        best.sort_unstable();
        best
    }

    fn queries_of(rng: &mut Rng, n: usize, dim: usize) -> Queries {
        let data: Vec<f32> = (0..n * dim).map(|_| rng.f32()).collect();
        let norms = data
            .chunks(dim)
            .map(|q| q.iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect();
        Queries { data, norms, dim }
    }

    #[test]
    fn shortlist_keeps_the_best_with_ties_to_lower_rows_across_merges() {
        let mut rng = Rng::new(21);
        // Keys of few values: most rows tie with the threshold.
        let keys: Vec<f32> = (0..1000).map(|_| rng.below(12) as f32).collect();
        for keep in [0, 1, 7, 64, 999, 2000] {
            let mut want: Vec<(f32, u64)> = keys.iter().zip(0u64..).map(|(&k, r)| (k, r)).collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut want: Vec<u64> = want.into_iter().take(keep).map(|(_, r)| r).collect();
            want.sort_unstable();
            // Three workers over ascending runs, as the parallel scan splits the rows.
            let mut parts = Vec::new();
            for run in [0..300u64, 300..310, 310..1000] {
                let mut s = Shortlist::new(keep);
                for row in run {
                    let key = keys[row as usize];
                    if loses_to(key, s.threshold) {
                        continue;
                    }
                    s.push(key, row);
                }
                parts.push(s);
            }
            let mut all = Shortlist::new(keep);
            for p in parts.into_iter().rev() {
                all.merge(p);
            }
            assert_eq!(all.into_rows(), want, "keep {keep}");
        }
    }

    #[test]
    fn run_masks_agree_with_the_row_by_row_comparison() {
        let mut rng = Rng::new(34);
        let special = [f32::NAN, f32::NEG_INFINITY, f32::INFINITY, 0.0, -0.0];
        for kernel in Kernel::available() {
            for len in [0, 1, 5, 31, 32, 33, 47, 200, PASS_RUN - 1, PASS_RUN] {
                for _ in 0..100 {
                    let mut pick = || match rng.below(8) {
                        0 => special[rng.below(special.len() as u64) as usize],
                        _ => rng.below(6) as f32,
                    };
                    let keys: Vec<f32> = (0..len).map(|_| pick()).collect();
                    let threshold = pick();
                    if threshold.is_nan() {
                        continue; // a shortlist's threshold is a kept key: never NaN
                    }
                    let mut masks = [u32::MAX; PASS_RUN / 32];
                    pass_masks(kernel, &keys, threshold, &mut masks);
                    for i in 0..PASS_RUN {
                        let passes = masks[i / 32] >> (i % 32) & 1 == 1;
                        let want = keys.get(i).is_some_and(|&key| !loses_to(key, threshold));
                        assert_eq!(passes, want, "{kernel:?} key {i} of {len} vs {threshold}");
                    }
                }
            }
        }
    }

    /// The serial and the parallel code scan each keep exactly the best `keep` live rows by
    /// code score (scored here one row at a time by the scalar [`Codebook::score`], ties to
    /// the lower row), at row counts either side of the thresholds that choose between them.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn serial_and_parallel_scans_keep_the_brute_force_candidates() {
        let dim = 70;
        let sizes = [
            PARALLEL_MIN_ROWS_INT8 - 1,
            PARALLEL_MIN_ROWS_INT8 + 1,
            PARALLEL_MIN_ROWS_BINARY - 1,
            PARALLEL_MIN_ROWS_BINARY + 1,
        ];
        let mut rng = Rng::new(77);
        for (i, &n) in sizes.iter().enumerate() {
            let n = n as usize;
            let f = fixture(n, dim, 90 + i as u64);
            let mut skip = vec![0u64; n.div_ceil(64)];
            for r in (0..n).filter(|r| r % 7 == 3) {
                skip[r / 64] |= 1 << (r % 64);
            }
            let view = f.rows.view();
            let set = ScanSet {
                rows: view.as_ref(),
                tombstones: &skip,
            };
            for metric in [Metric::Cosine, Metric::L2] {
                for q in [Quantization::Int8, Quantization::Binary] {
                    let codes = codes_of(&f, q, metric, n);
                    let codebook = codes.codebook().clone();
                    let index = QuantizedIndex {
                        codes: &codes,
                        exact: FlatIndex::new(metric, Kernels::best()),
                        oversample: 1,
                    };
                    let qs = queries_of(&mut rng, 3, dim);
                    let prepared: Vec<PreparedQuery> = (0..qs.count())
                        .map(|j| codebook.prepare(qs.get(j), qs.norms[j]))
                        .collect();
                    let blocks = index.blocks(n as u64);
                    for keep in [1, 100, 1000] {
                        let live: Vec<u64> =
                            (0..n as u64).filter(|&r| !set.is_deleted(r)).collect();
                        let want: Vec<Vec<u64>> = prepared
                            .iter()
                            .map(|p| best_by_code(&codes, p, &live, keep))
                            .collect();
                        for parallel in [false, true] {
                            let got: Vec<Vec<u64>> = index
                                .candidates(
                                    &set,
                                    &blocks,
                                    &codebook.prepare_group(&prepared),
                                    keep,
                                    parallel,
                                )
                                .into_iter()
                                .map(Shortlist::into_rows)
                                .collect();
                            assert_eq!(
                                got, want,
                                "{n} rows {metric:?} {q:?} keep {keep} parallel {parallel}"
                            );
                            // One query alone takes the single-query kernel path.
                            let alone = index
                                .candidates(
                                    &set,
                                    &blocks,
                                    &codebook.prepare_group(&prepared[..1]),
                                    keep,
                                    parallel,
                                )
                                .remove(0)
                                .into_rows();
                            assert_eq!(alone, want[0], "{n} rows {q:?} alone, parallel {parallel}");
                        }
                    }
                }
            }
        }
    }

    /// The filtered gather: for each query, the candidates are the listed coded rows' best
    /// `keep` by the scalar `Codebook::score` (the reference), serial or parallel, one query
    /// or a packed group; the hits are the f64 brute-force top k of those candidates and the
    /// listed rows past the codes. Binary codes leave the list to the exact gather-scan.
    #[test]
    fn gather_keeps_the_listed_rows_brute_force_candidates_and_rescores_them() {
        let (n, dim, k, oversample) = (3000, 70, 5, 2);
        let keep = k * oversample;
        let f = fixture(n, dim, 41);
        // Codes of other vectors: their candidates are not the rows' best, so hits equal to
        // the exact top k of the list would show the codes were not used.
        let other = fixture(n, dim, 99);
        let mut rng = Rng::new(43);
        let coded = 2900;
        let list: Vec<u64> = (0..n as u64).filter(|r| r % 7 == 3 || *r >= 2990).collect();
        // Skips every row but those listed.
        let mut unlisted = vec![u64::MAX; n.div_ceil(64)];
        for &r in &list {
            unlisted[r as usize / 64] &= !(1 << (r % 64));
        }
        let view = f.rows.view();
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let codes = codes_of(&other, Quantization::Int8, metric, coded);
            let codebook = codes.codebook().clone();
            let index = QuantizedIndex {
                codes: &codes,
                exact: FlatIndex::new(metric, Kernels::best()),
                oversample,
            };
            let mut differs = false;
            for nq in [1, 3, 20] {
                let qs = queries_of(&mut rng, nq, dim);
                let prepared: Vec<PreparedQuery> = (0..nq)
                    .map(|j| codebook.prepare(qs.get(j), qs.norms[j]))
                    .collect();
                let listed_coded: Vec<u64> =
                    list.iter().copied().filter(|&r| r < coded as u64).collect();
                let want: Vec<Vec<u64>> = prepared
                    .iter()
                    .map(|p| best_by_code(&codes, p, &listed_coded, keep))
                    .collect();
                for parallel in [false, true] {
                    let got: Vec<Vec<u64>> = index
                        .gathered_candidates(
                            &listed_coded,
                            &codebook.prepare_group(&prepared),
                            keep,
                            parallel,
                        )
                        .into_iter()
                        .map(Shortlist::into_rows)
                        .collect();
                    assert_eq!(got, want, "{metric:?} {nq} queries, parallel {parallel}");
                }
                let found = index.search_rows(view.as_ref(), &list, &qs, k);
                for (j, hits) in found.iter().enumerate() {
                    // Skip every row that is neither a candidate nor past the codes.
                    let mut skip = vec![u64::MAX; n.div_ceil(64)];
                    for &r in want[j]
                        .iter()
                        .chain(list.iter().filter(|&&r| r >= coded as u64))
                    {
                        skip[r as usize / 64] &= !(1 << (r % 64));
                    }
                    let rows: Vec<u64> = hits.iter().map(|c| c.row).collect();
                    assert_eq!(
                        rows,
                        brute(metric, &f, qs.get(j), &skip, k),
                        "{metric:?} {nq} queries, query {j}"
                    );
                    differs |= rows != brute(metric, &f, qs.get(j), &unlisted, k);
                }
            }
            assert!(
                differs,
                "{metric:?}: the gather answered as the exact gather-scan"
            );
        }
        let codes = codes_of(&f, Quantization::Binary, Metric::Cosine, coded);
        let exact = FlatIndex::new(Metric::Cosine, Kernels::best());
        let index = QuantizedIndex {
            codes: &codes,
            exact,
            oversample,
        };
        let qs = queries_of(&mut rng, 2, dim);
        let found = index.search_rows(view.as_ref(), &list, &qs, k);
        for (j, hits) in found.iter().enumerate() {
            let rows: Vec<u64> = hits.iter().map(|c| c.row).collect();
            assert_eq!(
                rows,
                brute(Metric::Cosine, &f, qs.get(j), &unlisted, k),
                "binary"
            );
        }
    }

    #[test]
    fn full_oversample_and_uncoded_rows_give_the_brute_force_top_k() {
        let (n, dim, k) = (300, 19, 7);
        let f = fixture(n, dim, 7);
        let mut rng = Rng::new(11);
        let mut skip = vec![0u64; n.div_ceil(64)];
        for r in (0..n).step_by(3) {
            skip[r / 64] |= 1 << (r % 64);
        }
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for q in [Quantization::Int8, Quantization::Binary] {
                // Codes of the first 250 rows only: the last 50 must be scored exactly.
                let codes = codes_of(&f, q, metric, 250);
                let index = QuantizedIndex {
                    codes: &codes,
                    exact: FlatIndex::new(metric, Kernels::best()),
                    // 7 * 40 = 280 candidates >= 250 coded rows: every row is rescored.
                    oversample: 40,
                };
                let view = f.rows.view();
                let set = ScanSet {
                    rows: view.as_ref(),
                    tombstones: &skip,
                };
                let qs = queries_of(&mut rng, 5, dim);
                let found = index.search(&set, &qs, k);
                for (j, hits) in found.iter().enumerate() {
                    let rows: Vec<u64> = hits.iter().map(|c| c.row).collect();
                    assert_eq!(
                        rows,
                        brute(metric, &f, qs.get(j), &skip, k),
                        "{metric:?} {q:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn candidates_are_rescored_exactly_and_never_skipped_rows() {
        let (n, dim, k) = (20_000, 24, 10);
        let f = fixture(n, dim, 3);
        let mut rng = Rng::new(5);
        let mut skip = vec![0u64; n.div_ceil(64)];
        for r in 0..n {
            if r % 5 != 0 {
                skip[r / 64] |= 1 << (r % 64);
            }
        }
        let kernels = Kernels::best();
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for q in [Quantization::Int8, Quantization::Binary] {
                let codes = codes_of(&f, q, metric, n);
                let index = QuantizedIndex {
                    codes: &codes,
                    exact: FlatIndex::new(metric, kernels),
                    oversample: q.default_oversample(),
                };
                let view = f.rows.view();
                let set = ScanSet {
                    rows: view.as_ref(),
                    tombstones: &skip,
                };
                let qs = queries_of(&mut rng, 12, dim);
                let batch = index.search(&set, &qs, k);
                for (j, hits) in batch.iter().enumerate() {
                    assert_eq!(hits.len(), k);
                    let query = qs.get(j);
                    for c in hits {
                        assert_eq!(c.row % 5, 0, "a skipped row was returned");
                        let row = &view.row(c.row).unwrap()[..=dim];
                        let want = match metric {
                            Metric::Dot => kernels.dot(query, &row[..dim]),
                            Metric::L2 => -kernels.l2sq(query, &row[..dim]),
                            Metric::Cosine => {
                                kernels.dot(query, &row[..dim]) / (qs.norms[j] * row[dim])
                            }
                        };
                        assert_eq!(c.key.to_bits(), want.to_bits(), "{metric:?} {q:?}");
                    }
                    // A single query scans alone (no group) and must agree with the batch.
                    let single = Queries {
                        data: query.to_vec(),
                        norms: vec![qs.norms[j]],
                        dim,
                    };
                    assert_eq!(index.search(&set, &single, k)[0], *hits);
                }
            }
        }
    }
}
