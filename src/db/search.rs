//! Search: single queries coalesced into shared scans, batches scanned at once, both over one
//! immutable [`Snapshot`] so a search never waits for the writer.
//!
//! A snapshot with a quantized index's codes is searched over them ([`QuantizedIndex`]: the
//! code scan keeps `k * oversample` candidates, rescored exactly) unless the query asks for
//! the exact scan; a filter that leaves few rows is answered by a gather-scan of just those
//! rows, over their int8 codes (rescored the same way) when the snapshot has them, else exact.
//! A snapshot with an HNSW graph is searched by traversing it ([`HnswIndex`], on its codes if
//! it has them), single searches uncoalesced; a filter that leaves more rows traverses with the
//! filter's skip bitmap and the count of matching rows (the traversal falls back to the exact
//! scan when it visits more nodes than match).

use super::validate::{batch_len, check_queries};
use super::{Database, Snapshot};
use crate::coalesce::Request;
use crate::error::{Error, Result};
use crate::filter::bitmap::RowBits;
use crate::filter::Filter;
use crate::hnsw::index::HnswIndex;
use crate::hnsw::DEFAULT_EF;
use crate::index::flat::FlatIndex;
use crate::index::topk::Candidate;
use crate::index::{Index, Queries, ScanSet};
use crate::quant::codes::CodeTable;
use crate::quant::index::{QuantizedIndex, ScanOptions};
use crate::quant::MAX_OVERSAMPLE;
use crate::types::SearchHit;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One coalesced single search: the query, its `k` and how the scan may answer it (codes or
/// exact, oversample): only requests with equal options share a scan.
pub(crate) struct Single {
    query: Vec<f32>,
    k: usize,
    options: ScanOptions,
}

/// Below this many bytes of rows, `search` does not coalesce (see `search`).
const COALESCE_MIN_BYTES: u64 = 4 << 20;

impl Database {
    /// The `k` best matches for one query (see [`crate::Store::search`]). Concurrent calls on
    /// one handle are coalesced: a call that arrives while a scan is running waits for it and
    /// is answered, with the others that arrived meanwhile, by one batch scan (see
    /// `OpenOptions::coalesce_searches`). A lone call starts its scan at once. `options`:
    /// codes or the exact scan, oversample.
    pub(super) fn search_one(
        &self,
        query: &[f32],
        k: usize,
        options: ScanOptions,
    ) -> Result<Vec<SearchHit>> {
        let snap = self.published.load_full();
        let Some(dim) = snap.dim else {
            return Ok(Vec::new());
        };
        // A bad query fails alone, before it can join a group.
        check_queries(dim, query, 1)?;
        let rows = snap.rows.as_ref().map_or(0, |r| r.rows());
        // A graph search touches a few thousand rows: sharing it with other queries saves
        // nothing, so it is answered at once.
        let over_graph = snap.graph.is_some() && !options.exact;
        // What the scan reads: the codes, or the rows.
        let codes = snap.codes.as_ref().filter(|_| !options.exact);
        let bytes = match codes {
            Some(codes) => codes.bytes(),
            None => snap
                .rows
                .as_ref()
                .map_or(0, |r| rows.saturating_mul(r.layout().stride_bytes() as u64)),
        };
        // Rows that fit in cache are scanned in microseconds without touching DRAM: callers
        // scanning side by side do not compete, and a queue would only add hand-offs.
        // A rayon worker never waits in the coalescer: while it waited it could be the thread
        // the running leader's scan needs (a scan started from inside the pool runs part of its
        // work on the caller's thread, and rayon lets a waiting worker pick up other tasks, such
        // as another `search` that would then queue behind it).
        if over_graph
            || !self.coalesce.load(Ordering::Relaxed)
            || bytes < COALESCE_MIN_BYTES
            || on_rayon_worker()
        {
            let mut out = self.search_snapshot(&snap, query, 1, k, options)?;
            return Ok(out.pop().unwrap_or_default());
        }
        // One scan that already uses every core gains nothing from a second beside it.
        let all_cores = match codes {
            Some(codes) => {
                QuantizedIndex::scan_uses_all_cores(codes.codebook().quantization(), rows)
            }
            None => FlatIndex::scan_uses_all_cores(rows),
        };
        let max_scans = if all_cores { 1 } else { parallelism() };
        drop(snap);
        let single = Single {
            query: query.to_vec(),
            k,
            options,
        };
        self.coalescer
            .search(single, max_scans, |group| self.search_group(group))
    }

    /// The `k` best matches for each query of `queries`, back to back: rows are read once per
    /// group of queries. `options`: codes or the exact scan, oversample.
    pub(super) fn search_many(
        &self,
        queries: &[f32],
        k: usize,
        options: ScanOptions,
    ) -> Result<Vec<Vec<SearchHit>>> {
        let snap = self.published.load_full();
        let Some(dim) = snap.dim else {
            return Ok(Vec::new());
        };
        let n = batch_len(dim, queries)?;
        self.search_snapshot(&snap, queries, n, k, options)
    }

    /// One scan for a group of coalesced single searches, over the newest snapshot (which every
    /// caller in the group published, or saw published, before it queued). Queries share a
    /// scan only with queries of a compatible `k` (see [`k_class`]): one caller asking for a
    /// million hits must not make every query it is grouped with carry a million-entry top-k.
    /// They also share it only with queries of the same [`ScanOptions`]: one asking for the
    /// exact scan or more candidates must get them, and the others must not pay for them.
    /// Over codes, only queries of the same `k` share a scan: a larger `k` keeps more
    /// candidates, and a query's answer must not depend on what it was grouped with.
    fn search_group(&self, group: &[Arc<Request<Single>>]) -> Vec<Result<Vec<SearchHit>>> {
        let snap = self.published.load_full();
        let mut answers: Vec<Option<Result<Vec<SearchHit>>>> = group.iter().map(|_| None).collect();
        let mut order: Vec<usize> = (0..group.len()).collect();
        let class_of = |i: usize| {
            let r = &group[i].query;
            // Over codes or a graph, the candidates kept depend on `k`.
            let over_codes = (snap.codes.is_some() || snap.graph.is_some()) && !r.options.exact;
            let k = if over_codes { r.k } else { k_class(r.k) };
            (k, r.options.exact, r.options.oversample)
        };
        order.sort_by_key(|&i| class_of(i));
        for class in order.chunk_by(|&a, &b| class_of(a) == class_of(b)) {
            let members: Vec<&Single> = class.iter().map(|&i| &group[i].query).collect();
            for (&i, answer) in class.iter().zip(self.scan_together(&snap, &members)) {
                answers[i] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(Error::Poisoned {
                        reason: "a coalesced scan lost a query's answer".into(),
                    })
                })
            })
            .collect()
    }

    /// One batch scan for `members` (of one [`ScanOptions`]) with their largest `k`, each
    /// answer cut to its own `k`.
    fn scan_together(&self, snap: &Snapshot, members: &[&Single]) -> Vec<Result<Vec<SearchHit>>> {
        let single = |r: &Single| {
            self.search_snapshot(snap, &r.query, 1, r.k, r.options)
                .map(|mut out| out.pop().unwrap_or_default())
        };
        if members.len() == 1 {
            return vec![single(members[0])];
        }
        let options = members[0].options;
        let k = members.iter().map(|r| r.k).max().unwrap_or(0);
        let mut queries = Vec::with_capacity(members.iter().map(|r| r.query.len()).sum());
        for r in members {
            queries.extend_from_slice(&r.query);
        }
        match self.search_snapshot(snap, &queries, members.len(), k, options) {
            // The top k of a larger k is its first k: ranks are a total order (ties by row).
            // (Over codes every member has the same k: see `search_group`.)
            Ok(lists) if lists.len() == members.len() => lists
                .into_iter()
                .zip(members)
                .map(|(mut hits, r)| {
                    hits.truncate(r.k);
                    Ok(hits)
                })
                .collect(),
            // Every query was checked against this dimension before it queued, so this is
            // unexpected; answering each alone gives each its own error.
            _ => members.iter().map(|r| single(r)).collect(),
        }
    }

    /// The `k` best rows matching `filter` for each of the `n` queries of `queries`. Not
    /// coalesced: queries share a scan only with queries of the same filter, which is a batch.
    /// With codes, the blocked scan runs over them (skipping the rows outside the filter as
    /// it skips deleted ones), and so does the gather-scan of few matching rows when they
    /// are int8 codes (a graph's included); the query's `exact` scans the f32 rows.
    pub(super) fn search_where(
        &self,
        queries: &[f32],
        n: usize,
        k: usize,
        filter: &Filter,
        options: ScanOptions,
    ) -> Result<Vec<Vec<SearchHit>>> {
        let (snap, matching) = self.select_rows(Some(filter))?;
        let Some(qs) = self.check_query(snap.dim, queries, n)? else {
            return Ok(vec![Vec::new(); n]);
        };
        let Some(rows) = &snap.rows else {
            return Ok(vec![Vec::new(); n]);
        };
        rows.check_backed()?;
        let count = matching.count();
        let k = k.min(usize::try_from(count).unwrap_or(usize::MAX));
        let total = rows.rows();
        // A graph answers each query of a batch by its own traversal, so a batch gains nothing
        // over single queries from the blocked scan's shared reads: it switches where they do
        // (and a query gets the same answer alone or in a batch).
        let over_graph = snap.graph.is_some() && !options.exact;
        let one_in = if n == 1 || over_graph {
            GATHER_BELOW_ONE_IN
        } else {
            GATHER_BELOW_ONE_IN_BATCH
        };
        let found = if count.saturating_mul(one_in) < total {
            let list: Vec<u64> = matching.iter().collect();
            let exact = FlatIndex::new(self.metric, self.kernels);
            match &snap.codes {
                // A graph's int8 codes serve the gather as a flat index's do.
                Some(codes) if !options.exact => QuantizedIndex {
                    codes,
                    exact,
                    oversample: oversample(codes, options),
                }
                .search_rows(rows.as_ref(), &list, &qs, k),
                _ => exact.search_rows(rows.as_ref(), &list, &qs, k),
            }
        } else {
            // Every row the scan sees and the filter does not allow, deleted ones included.
            let mut skip = RowBits::all(usize::try_from(total).unwrap_or(usize::MAX));
            skip.and_not_words(matching.words());
            let set = ScanSet {
                rows: rows.as_ref(),
                tombstones: skip.words(),
            };
            self.index_for(&snap, options, k, Some(count))
                .search(&set, &qs, k)
        };
        if !rows.resident() {
            rows.check_backed()?; // a read on demand that failed during the scan
        }
        Ok(hits_of(&snap, self.metric.higher_is_better(), found))
    }

    fn check_query(&self, dim: Option<u32>, queries: &[f32], n: usize) -> Result<Option<Queries>> {
        let Some(dim) = dim else { return Ok(None) };
        self.checked_queries(dim, queries, n).map(Some)
    }

    /// `n` queries of `dim` back to back, checked (dimension, NaN), with their norms.
    pub(super) fn checked_queries(&self, dim: u32, queries: &[f32], n: usize) -> Result<Queries> {
        check_queries(dim, queries, n)?;
        let d = dim as usize;
        let norms = queries
            .chunks_exact(d)
            .map(|q| self.kernels.dot(q, q).sqrt())
            .collect();
        Ok(Queries {
            data: queries.to_vec(),
            norms,
            dim: d,
        })
    }

    /// The index a search of `snap` with `options` runs: the graph when the snapshot has one
    /// (traversing its codes, if any), else the code scan when it has codes, else the exact
    /// scan; the exact scan whenever the query asks for it. `matching`: the rows a filter lets
    /// through (a traversal that visits more gives up and scans them exactly).
    fn index_for<'a>(
        &self,
        snap: &'a Snapshot,
        options: ScanOptions,
        k: usize,
        matching: Option<u64>,
    ) -> Box<dyn Index + 'a> {
        let exact = FlatIndex::new(self.metric, self.kernels);
        if options.exact {
            return Box::new(exact);
        }
        match (&snap.graph, &snap.codes) {
            (Some(graph), codes) => Box::new(HnswIndex {
                graph,
                codes: codes.as_ref(),
                exact,
                ef: options.ef.unwrap_or(DEFAULT_EF).max(k),
                oversample: codes.as_ref().map_or(1, |c| oversample(c, options)),
                matching,
            }),
            (None, Some(codes)) => Box::new(QuantizedIndex {
                codes,
                exact,
                oversample: oversample(codes, options),
            }),
            (None, None) => Box::new(exact),
        }
    }

    fn search_snapshot(
        &self,
        snap: &Snapshot,
        queries: &[f32],
        n: usize,
        k: usize,
        options: ScanOptions,
    ) -> Result<Vec<Vec<SearchHit>>> {
        let Some(qs) = self.check_query(snap.dim, queries, n)? else {
            return Ok(vec![Vec::new(); n]);
        };
        let Some(rows) = &snap.rows else {
            return Ok(vec![Vec::new(); n]);
        };
        rows.check_backed()?;
        let set = ScanSet {
            rows: rows.as_ref(),
            tombstones: snap.tombstones.words(),
        };
        let k = k.min(usize::try_from(snap.live).unwrap_or(usize::MAX));
        let found = self.index_for(snap, options, k, None).search(&set, &qs, k);
        if !rows.resident() {
            rows.check_backed()?; // a read on demand that failed during the scan
        }
        Ok(hits_of(snap, self.metric.higher_is_better(), found))
    }
}

/// An `oversample` outside `1..=MAX_OVERSAMPLE` or an `ef` outside `1..=MAX_EF` is an error, with an index or without (so a
/// query that runs today still runs once an index is created). Checked once, by `query`, the
/// one entry that takes options.
pub(super) fn check_options(options: ScanOptions) -> Result<()> {
    match options.oversample {
        Some(o) if o == 0 || o > MAX_OVERSAMPLE => Err(Error::invalid(format!(
            "oversample {o} is out of range 1..={MAX_OVERSAMPLE} (candidates kept per hit \
             before exact rescoring; leave it unset for the index's default)"
        ))),
        _ => match options.ef {
            Some(ef) if ef == 0 || ef > crate::hnsw::MAX_EF => Err(Error::invalid(format!(
                "ef {ef} is out of range 1..={} (candidates kept during an HNSW traversal; \
                 leave it unset for the default)",
                crate::hnsw::MAX_EF
            ))),
            _ => Ok(()),
        },
    }
}

/// Search hits from the index's candidates: row numbers to ids, keys to scores.
fn hits_of(snap: &Snapshot, higher: bool, found: Vec<Vec<Candidate>>) -> Vec<Vec<SearchHit>> {
    hits_of_range(snap, higher, 0, found)
}

/// [`hits_of`] for candidates numbered from row `first` (a scan of rows `first..`).
pub(super) fn hits_of_range(
    snap: &Snapshot,
    higher: bool,
    first: u64,
    found: Vec<Vec<Candidate>>,
) -> Vec<Vec<SearchHit>> {
    found
        .into_iter()
        .map(|hits| {
            hits.into_iter()
                .map(|c| SearchHit {
                    id: snap
                        .row_ids
                        .get((first + c.row) as usize)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    score: if higher { c.key } else { -c.key },
                })
                .collect()
        })
        .collect()
}

/// Candidates kept per hit over `codes`: the query's oversample, else the quantization's.
fn oversample(codes: &CodeTable, options: ScanOptions) -> usize {
    options
        .oversample
        .unwrap_or_else(|| codes.codebook().quantization().default_oversample())
}

/// A filtered single query scores only the matching rows (a gather-scan) when fewer than one
/// row in this many matches; otherwise it runs the blocked scan, skipping the rows outside the
/// filter as it skips deleted ones. Measured in `benches/filter.rs` (100 000 x 384, k = 10):
/// at 10% the gather-scan took 0.12x of the unfiltered scan, at 25% 0.8x, while the blocked
/// scan costs ~1x at any selectivity; 1/8 keeps a margin for the gather's random reads. (The
/// same split serves int8 codes, not measured apart: a code gather and a code scan read 4x
/// less than their f32 forms alike.)
const GATHER_BELOW_ONE_IN: u64 = 8;
/// The same for a batch: the blocked scan scores a block against many queries at once (the
/// multi-query kernel, or a GEMM) while the f32 gather-scan scores row by query pair by pair,
/// so the gather pays off only at lower selectivity (not yet measured per batch size).
const GATHER_BELOW_ONE_IN_BATCH: u64 = 32;

/// Up to this `k`, coalesced queries share one scan whatever their `k`: a top-k this small
/// costs the scan little beside reading the rows.
const SHARED_SCAN_MAX_K: usize = 128;

/// Which coalesced queries may share a scan: all those with `k <= SHARED_SCAN_MAX_K`, and
/// otherwise only those with the same `k`.
fn k_class(k: usize) -> usize {
    if k <= SHARED_SCAN_MAX_K {
        0
    } else {
        k
    }
}

/// True on a thread of a rayon pool (a caller inside `par_iter`, or our own scan's workers).
fn on_rayon_worker() -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        rayon::current_thread_index().is_some()
    }
    #[cfg(target_arch = "wasm32")]
    {
        false
    }
}

/// Threads a search may use at once.
fn parallelism() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    {
        rayon::current_num_threads()
    }
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
}
