//! Searches through the sandbox: concurrent single queries on one handle are coalesced into
//! one guest batch call (the guest is single-threaded, so without this sixteen callers cost
//! sixteen full scans, one after the other).
//!
//! The coalescer is the native engine's ([`srvdb::coalesce::Coalescer`]), with one scan at a
//! time: a call that arrives while the guest is busy queues, and the queue is answered by the
//! next guest call. A lone call runs at once, as before. Queries share a guest call only with
//! queries of the same `k`, filter and options (then the call is the batch those queries make;
//! a batch answers each query as a single query does).
//!
//! Partitions: a batch (a `search_batch`, or a coalesced group) over the exact scan is split by
//! row range across [`SandboxConfig::partitions`] guest instances, one host thread each: the
//! writer's instance scans the first range, and read-only instances opened on the same
//! directory with rows read on demand (`rows-in-memory = false`: they hold ids, tombstones and
//! their metadata copy, not the f32 rows, which they read from the file, in practice from the
//! OS page cache) scan the others. The host merges the per-range top-k lists: lists of
//! consecutive ranges, each best first with ties to the lower row, merge by a stable sort on
//! the score into exactly the whole scan's order. Each instance's share of the rows follows its
//! measured speed (a reader, reading its rows through WASI file reads, settled at 0.31 to 0.45
//! of the rows against the writer's 0.69 to 0.55 on 50,000 x 1536, in runs on a loaded
//! machine). A query the coalescer answers alone is not
//! split: measured on a loaded 2-core machine, splitting it made its latency 1.3-1.4x the
//! writer's alone. Rules:
//! - readers serve the last commit, so a batch is split only while the writer has no
//!   uncommitted change (asked of the writer: `scan-state`); after a commit (any call that may
//!   change the database) each reader is reopened before it next serves. The host holds the
//!   directory's exclusive lock, so a reader opens without the shared one;
//! - only the exact scan is split: with a quantized index or a graph, a batch that is not
//!   `exact` runs on the writer alone, as does a batch over fewer than
//!   [`SandboxConfig::partition_min_bytes`] of rows;
//! - a reader that traps, passes its deadline or fails is dropped (reopened at its next use)
//!   and the batch is answered by the writer alone: never a partial answer.

use super::sandbox::{SandboxConfig, GUEST_DB_DIR};
use super::{hits, saturating_u32, wit, Live, SandboxedDatabase, Slot, Touches};
use srvdb::coalesce::Request;
use srvdb::store::{Queries, Query};
use srvdb::{OpenOptions, Result, SearchHit, StorageKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A read-only instance serving one range of a split scan, and the generation of the writer's
/// database it opened at.
struct Reader {
    live: Live,
    generation: u64,
}

/// The read-only instances of one handle (none when partitions are off or the handle is
/// itself read-only), and what the writer last said about its scan.
pub(crate) struct Partitions {
    readers: Vec<Mutex<Option<Box<Reader>>>>,
    /// Test hook: the next reader call is stopped at its first instruction (see
    /// `SandboxedDatabase::stop_next_reader_call`).
    stop_next: AtomicBool,
    min_bytes: u64,
    /// Each instance's measured scan speed (rows per second; the writer's first), which sizes
    /// its range (see `Partitions::bounds`).
    speeds: Mutex<Vec<f64>>,
    /// The writer's scan state and metric's direction, at a generation.
    state: Mutex<Option<(u64, wit::ScanState, bool)>>,
}

impl Partitions {
    pub(crate) fn new(config: &SandboxConfig, options: &OpenOptions) -> Self {
        let readers = if options.read_only {
            0
        } else {
            config.partitions.saturating_sub(1)
        };
        Partitions {
            readers: (0..readers).map(|_| Mutex::new(None)).collect(),
            stop_next: AtomicBool::new(false),
            speeds: Mutex::new(vec![1.0; readers + 1]),
            min_bytes: config.partition_min_bytes,
            state: Mutex::new(None),
        }
    }
}

impl Partitions {
    /// Range bounds over `rows` (`instances + 1` of them): each instance's share of the rows
    /// in proportion to its measured speed (equal until measured), so they finish together.
    /// The writer scans rows in memory while a reader reads its range from the file, so a
    /// reader is slower per row.
    fn bounds(&self, rows: u64) -> Vec<u64> {
        let n = self.readers.len() + 1;
        let speeds = lock(&self.speeds).clone();
        let total: f64 = speeds.iter().sum();
        let mut bounds = vec![0u64; n + 1];
        let mut acc = 0.0;
        for i in 0..n {
            acc += speeds[i];
            bounds[i + 1] = ((rows as f64 * acc / total).round() as u64).min(rows);
        }
        bounds[n] = rows;
        // Every instance scans at least one row when there are enough (so each is measured).
        for i in 1..n {
            let lowest = bounds[i - 1] + 1;
            let highest = rows - (n - i) as u64;
            bounds[i] = bounds[i].max(lowest).min(highest);
        }
        bounds
    }

    /// Updates each instance's speed (rows per second, a moving average over splits, relative
    /// weights bounded to 1:8) from how long each took over its range.
    fn learn(&self, bounds: &[u64], took: &[Duration]) {
        let mut speeds = lock(&self.speeds);
        for (i, t) in took.iter().enumerate() {
            let rows = bounds[i + 1] - bounds[i];
            let secs = t.as_secs_f64();
            if rows == 0 || secs <= 0.0 {
                continue;
            }
            let measured = rows as f64 / secs;
            speeds[i] = 0.5 * speeds[i] + 0.5 * measured;
        }
        let top = speeds.iter().cloned().fold(f64::MIN_POSITIVE, f64::max);
        for s in speeds.iter_mut() {
            *s = s.clamp(top / 8.0, top);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Merges the lists of consecutive row ranges (each best first, ties to the lower row) into
/// the `k` best, in the whole scan's order: a stable sort on the ranking key keeps, among equal
/// scores, the earlier range's (lower) rows first.
fn merge(parts: Vec<Vec<SearchHit>>, k: usize, higher: bool) -> Vec<SearchHit> {
    let mut all: Vec<SearchHit> = parts.into_iter().flatten().collect();
    let key = |h: &SearchHit| if higher { h.score } else { -h.score };
    all.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    all.truncate(k);
    all
}

/// What a query asks besides its vector: queries share a guest call only when these are equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    k: usize,
    where_json: Option<String>,
    document_json: Option<String>,
    oversample: Option<usize>,
    exact: bool,
    ef: Option<usize>,
}

impl Shape {
    fn of(request: &Query<'_>) -> Self {
        Shape {
            k: request.k,
            where_json: request
                .filter
                .and_then(|f| f.where_json().map(str::to_owned)),
            document_json: request
                .filter
                .and_then(|f| f.document_json().map(str::to_owned)),
            oversample: request.oversample,
            exact: request.exact,
            ef: request.ef,
        }
    }

    /// Whether the query carries a filter.
    pub(crate) fn filtered(&self) -> bool {
        self.where_json.is_some() || self.document_json.is_some()
    }

    /// The request as it crosses into the guest.
    pub(crate) fn request<'a>(&'a self, queries: &'a [f32], batch: bool) -> wit::QueryRequest<'a> {
        wit::QueryRequest {
            queries,
            batch,
            k: saturating_u32(self.k),
            filter: self.filtered().then_some(wit::Filter {
                where_: self.where_json.as_deref(),
                where_document: self.document_json.as_deref(),
            }),
            oversample: self.oversample.map(saturating_u32),
            exact: self.exact,
            ef: self.ef.map(saturating_u32),
        }
    }
}

/// One queued single query.
pub(crate) struct Single {
    vector: Vec<f32>,
    shape: Shape,
}

impl SandboxedDatabase {
    /// `Store::query` through the sandbox: a single query coalesced with the others arriving
    /// meanwhile (unless [`srvdb::OpenOptions::coalesce_searches`] is off), a batch as one call.
    pub(crate) fn search(&self, request: &Query<'_>) -> Result<Vec<Vec<SearchHit>>> {
        let shape = Shape::of(request);
        match request.queries {
            Queries::Batch(queries) => self.query_batch(&shape, queries),
            Queries::One(query) if !self.options.coalesce_searches => {
                self.query_single(&shape, query).map(|hits| vec![hits])
            }
            Queries::One(query) => {
                let single = Single {
                    vector: query.to_vec(),
                    shape,
                };
                // One guest call at a time: the guest is single-threaded.
                let hits = self
                    .coalescer
                    .search(single, 1, |group| self.answer_group(group))?;
                Ok(vec![hits])
            }
        }
    }

    /// One single query, as its own guest call.
    fn query_single(&self, shape: &Shape, query: &[f32]) -> Result<Vec<SearchHit>> {
        let request = shape.request(query, false);
        let found = self.call(Touches::Nothing, |g, s, h| g.call_query(s, h, request))?;
        Ok(found.into_iter().next().map(hits).unwrap_or_default())
    }

    /// A batch of queries of one shape: split across the partitions when it may be (see the
    /// module's rules), else one guest call.
    pub(crate) fn query_batch(
        &self,
        shape: &Shape,
        queries: &[f32],
    ) -> Result<Vec<Vec<SearchHit>>> {
        if !self.partitions.readers.is_empty() {
            let mut guard = lock(&self.slot);
            if let Some(answer) = self.query_split(&mut guard, shape, queries) {
                return answer;
            }
        }
        let request = shape.request(queries, true);
        let found = self.call(Touches::Nothing, |g, s, h| g.call_query(s, h, request))?;
        Ok(found.into_iter().map(hits).collect())
    }

    /// The batch split by row range, or `None` when it must not be split (or a reader could
    /// not answer): then the caller asks the writer alone.
    fn query_split(
        &self,
        guard: &mut MutexGuard<'_, Slot>,
        shape: &Shape,
        queries: &[f32],
    ) -> Option<Result<Vec<Vec<SearchHit>>>> {
        let generation = self.generation.load(Ordering::Relaxed);
        let (state, higher) = self.scan_state(guard, generation)?;
        if state.uncommitted || (state.indexed && !shape.exact) || state.rows == 0 {
            return None;
        }
        let n = u64::try_from(self.partitions.readers.len() + 1).ok()?;
        if state.bytes < self.partitions.min_bytes || state.rows < n {
            return None;
        }
        let bounds = self.partitions.bounds(state.rows);
        let (writer_part, reader_parts) = std::thread::scope(|s| {
            let readers: Vec<_> = (1..n as usize)
                .map(|i| {
                    let (first, end) = (bounds[i], bounds[i + 1]);
                    s.spawn(move || self.reader_scan(i - 1, generation, shape, queries, first, end))
                })
                .collect();
            let request = shape.request(queries, true);
            let (first, end) = (bounds[0], bounds[1]);
            let started = Instant::now();
            let mine = self.call_locked(guard, Touches::Nothing, |g, st, h| {
                g.call_query_rows(st, h, request, first, end)
            });
            let mine = mine.map(|found| (found, started.elapsed()));
            let theirs: Vec<_> = readers
                .into_iter()
                .map(|t| t.join().ok().flatten())
                .collect();
            (mine, theirs)
        });
        // The writer's own error (a bad filter, a query of the wrong dimension) is the answer
        // the whole scan would give.
        let (mine, mine_took) = match writer_part {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        let mut parts: Vec<Vec<Vec<SearchHit>>> = vec![mine.into_iter().map(hits).collect()];
        let mut took = vec![mine_took];
        for part in reader_parts {
            let (part, t) = part?;
            parts.push(part);
            took.push(t);
        }
        self.partitions.learn(&bounds, &took);
        let count = parts[0].len();
        if parts.iter().any(|p| p.len() != count) {
            return None;
        }
        let mut lists: Vec<Vec<Vec<SearchHit>>> = (0..count).map(|_| Vec::new()).collect();
        for part in parts {
            for (q, list) in part.into_iter().enumerate() {
                lists[q].push(list);
            }
        }
        Some(Ok(lists
            .into_iter()
            .map(|l| merge(l, shape.k, higher))
            .collect()))
    }

    /// The writer's scan state (and whether higher scores are better) at `generation`: asked
    /// of the writer once per generation. `None` when it cannot be asked.
    fn scan_state(
        &self,
        guard: &mut MutexGuard<'_, Slot>,
        generation: u64,
    ) -> Option<(wit::ScanState, bool)> {
        let mut cached = lock(&self.partitions.state);
        if let Some((at, state, higher)) = *cached {
            if at == generation {
                return Some((state, higher));
            }
        }
        let state = self
            .call_locked(guard, Touches::Nothing, |g, s, h| g.call_scan_state(s, h))
            .ok()?;
        let metric = self
            .call_locked(guard, Touches::Nothing, |g, s, h| g.call_metric(s, h))
            .ok()?;
        // A trap while asking restarted the writer: the generation moved on.
        if self.generation.load(Ordering::Relaxed) != generation {
            return None;
        }
        let higher = !matches!(metric, wit::Metric::L2);
        *cached = Some((generation, state, higher));
        Some((state, higher))
    }

    /// Reader `i`'s lists for rows `first..end`, reopening it first if it serves another
    /// generation; `None` (and the reader dropped, after a trap) if it cannot answer.
    fn reader_scan(
        &self,
        i: usize,
        generation: u64,
        shape: &Shape,
        queries: &[f32],
        first: u64,
        end: u64,
    ) -> Option<(Vec<Vec<SearchHit>>, Duration)> {
        let mut slot = lock(self.partitions.readers.get(i)?);
        if slot.as_ref().is_none_or(|r| r.generation != generation) {
            // Frees the old instance's memory before the new one grows.
            *slot = None;
            let options = OpenOptions {
                read_only: true,
                storage: StorageKind::OnDemand,
                ..self.options.clone()
            };
            // No shared lock: this host holds the directory's exclusive one, and the writer
            // cannot commit while this batch holds its instance. The writer holds metadata.db
            // open (so redb marks it as needing recovery), idle, its last commit complete:
            // the guest's partition-reader open recovers its own in-memory copy.
            let live =
                Live::start_as(&self.runtime, &self.dir, GUEST_DB_DIR, &options, true).ok()?;
            *slot = Some(Box::new(Reader { live, generation }));
        }
        let reader = slot.as_mut()?;
        let live = &mut reader.live;
        self.runtime.arm(&mut live.store);
        if self.partitions.stop_next.swap(false, Ordering::Relaxed) {
            // The deadline already passed: the call traps at its first epoch check.
            live.store.set_epoch_deadline(0);
        }
        let request = shape.request(queries, true);
        let started = Instant::now();
        let outcome = live
            .bindings
            .srvdb_engine_store()
            .database()
            .call_query_rows(&mut live.store, live.handle, request, first, end);
        match outcome {
            Ok(Ok(found)) => Some((found.into_iter().map(hits).collect(), started.elapsed())),
            Ok(Err(_)) => None,
            Err(_trap) => {
                *slot = None;
                None
            }
        }
    }

    /// Makes the next partition reader call trap at once (its deadline set to now; needs
    /// the sandbox's deadline on, as by default): for tests of the fallback to the writer.
    #[doc(hidden)]
    pub fn stop_next_reader_call(&self) {
        self.partitions.stop_next.store(true, Ordering::Relaxed);
    }

    /// Each instance's share of a split scan's rows now (the writer's first). For reports.
    #[doc(hidden)]
    pub fn partition_shares(&self) -> Vec<f64> {
        let speeds = lock(&self.partitions.speeds);
        let total: f64 = speeds.iter().sum();
        speeds.iter().map(|s| s / total).collect()
    }

    /// Each instance's linear memory in bytes: the writer's, then each reader's (0 for a
    /// reader not started). For reports.
    #[doc(hidden)]
    pub fn instance_memory(&self) -> Vec<usize> {
        let mut out = Vec::new();
        if let Slot::Running(live) = &*lock(&self.slot) {
            out.push(live.store.data().memory_bytes());
        }
        for r in &self.partitions.readers {
            out.push(
                lock(r)
                    .as_ref()
                    .map_or(0, |r| r.live.store.data().memory_bytes()),
            );
        }
        out
    }

    /// The answers of a coalesced group, one per request in order: a guest batch call per
    /// shape. If a batch fails (a query of the wrong dimension, say), each of its queries is
    /// asked alone, so each gets its own answer or error.
    fn answer_group(&self, group: &[Arc<Request<Single>>]) -> Vec<Result<Vec<SearchHit>>> {
        let mut answers: Vec<Option<Result<Vec<SearchHit>>>> = group.iter().map(|_| None).collect();
        let mut done = vec![false; group.len()];
        for first in 0..group.len() {
            if done[first] {
                continue;
            }
            let shape = &group[first].query.shape;
            let members: Vec<usize> = (first..group.len())
                .filter(|&i| !done[i] && group[i].query.shape == *shape)
                .collect();
            for &i in &members {
                done[i] = true;
            }
            if members.len() > 1 {
                let mut queries =
                    Vec::with_capacity(members.len() * group[first].query.vector.len());
                for &i in &members {
                    queries.extend_from_slice(&group[i].query.vector);
                }
                if let Ok(lists) = self.query_batch(shape, &queries) {
                    if lists.len() == members.len() {
                        for (&i, hits) in members.iter().zip(lists) {
                            answers[i] = Some(Ok(hits));
                        }
                        continue;
                    }
                }
            }
            for &i in &members {
                let r = &group[i].query;
                answers[i] = Some(self.query_single(&r.shape, &r.vector));
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(srvdb::Error::Poisoned {
                        reason: "a coalesced sandboxed search lost a query's answer".into(),
                    })
                })
            })
            .collect()
    }
}
