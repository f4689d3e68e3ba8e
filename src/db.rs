//! [`Database`]: the handle users hold. It wires the metadata store (the commit point), the row
//! storage and the index together, and enforces the commit protocol:
//!
//! 1. rows are appended to `vectors.bin` (in slabs of the write buffer), visible to searches of
//!    this handle at once;
//! 2. on commit, `vectors.bin` is fsynced, then
//! 3. one redb transaction records the ids, metadata, tombstones and the new committed row count.
//!
//! On open, rows past the committed count are a torn tail and are cut. Readers load an immutable
//! [`Snapshot`] with one atomic pointer read and never wait for the writer.

use crate::chunked::ChunkedVec;
use crate::coalesce::{CoalesceStats, Coalescer, Request};
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::format::{Header, RowLayout};
use crate::index::flat::FlatIndex;
use crate::index::{row_bit_set, Index, Queries, ScanSet};
use crate::meta::{CommitBatch, CompactedRow, MetaStore};
use crate::storage::fs::{DirLock, FsLocation};
use crate::storage::memory::MemoryLocation;
use crate::storage::{names, Location, RowStore, RowView};
use crate::store::{self, Delete, Missing, Query, Store, Write, WriteMode};
use crate::types::{
    EmbedderSpec, Metadata, Metric, OpenOptions, Record, SearchHit, MAX_DIMENSION,
    MAX_DOCUMENT_BYTES, MAX_ID_BYTES, MAX_METADATA_BYTES,
};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Below this many bytes of rows, `search` does not coalesce (see `search`).
const COALESCE_MIN_BYTES: u64 = 4 << 20;

/// Ids per chunk of the row -> id table.
const ID_CHUNK: usize = 4096;

/// What one search sees: immutable, shared by `Arc`.
struct Snapshot {
    rows: Option<Arc<dyn RowView>>,
    row_ids: ChunkedVec<Arc<str>>,
    tombstones: Arc<Vec<u64>>,
    live: u64,
    dim: Option<u32>,
}

/// State `get` needs besides the snapshot; changed together with it under one lock.
struct IdState {
    rows_by_id: HashMap<Arc<str>, u64>,
    /// Metadata of rows not yet committed to redb.
    pending_meta: HashMap<u64, Metadata>,
    /// Documents of rows not yet committed to redb.
    pending_docs: HashMap<u64, String>,
}

/// The single writer's state.
struct Writer {
    rows: Option<Box<dyn RowStore>>,
    dim: Option<u32>,
    committed_rows: u64,
    config_committed: bool,
    pending_inserts: Vec<(u64, Arc<str>)>,
    pending_deletes: Vec<(u64, Arc<str>)>,
    row_ids: ChunkedVec<Arc<str>>,
    tombstones: Arc<Vec<u64>>,
    live: u64,
    poisoned: Option<String>,
    /// An embedder given at open that the next commit must record.
    embedder_unrecorded: Option<EmbedderSpec>,
}

impl Writer {
    fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn has_pending(&self) -> bool {
        !self.pending_inserts.is_empty()
            || !self.pending_deletes.is_empty()
            || !self.config_committed
            || self.embedder_unrecorded.is_some()
    }

    fn uncommitted_ops(&self) -> usize {
        self.pending_inserts.len() + self.pending_deletes.len()
    }

    fn set_tombstone(&mut self, row: u64) {
        let words = Arc::make_mut(&mut self.tombstones);
        let w = (row >> 6) as usize;
        if words.len() <= w {
            words.resize(w + 1, 0);
        }
        words[w] |= 1 << (row & 63);
    }
}

/// An open SrvDB database. `Send + Sync`: share it with `Arc`; many threads may search while
/// one writes.
pub struct Database {
    location: Arc<dyn Location>,
    meta: MetaStore,
    metric: Metric,
    embedder: Option<EmbedderSpec>,
    kernels: Kernels,
    options: OpenOptions,
    // Declared before `writer` so snapshots (and their mappings) are dropped first, letting
    // the row store trim its preallocated tail when it closes.
    published: ArcSwap<Snapshot>,
    /// Gathers concurrent single searches into batch scans.
    coalescer: Coalescer,
    /// Whether `search` coalesces (from `OpenOptions::coalesce_searches`; settable).
    coalesce: AtomicBool,
    writer: Mutex<Writer>,
    ids: RwLock<IdState>,
    _lock: Option<DirLock>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.location.path_of(""))
            .field("metric", &self.metric)
            .field("dimension", &self.dimension())
            .field("count", &self.count())
            .finish()
    }
}

fn lock_poison_free<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Database {
    /// Opens the database in directory `path`, creating it if needed.
    pub fn open(path: impl AsRef<Path>, options: OpenOptions) -> Result<Self> {
        let dir = path.as_ref();
        let location = FsLocation::new(dir, options.storage)?;
        let lock = DirLock::acquire(dir)?;
        Self::open_in(Arc::new(location), options, Some(lock))
    }

    /// An ephemeral database in memory: same engine, nothing written to disk.
    pub fn in_memory(options: OpenOptions) -> Result<Self> {
        Self::open_in(Arc::new(MemoryLocation::new()), options, None)
    }

    /// Opens a database in any [`Location`]: the simulated, fault-injecting one of the crash
    /// tests (feature `testing`; applications open a directory or memory).
    #[cfg(feature = "testing")]
    pub fn open_at(location: Arc<dyn Location>, options: OpenOptions) -> Result<Self> {
        Self::open_in(location, options, None)
    }

    fn open_in(
        location: Arc<dyn Location>,
        mut options: OpenOptions,
        lock: Option<DirLock>,
    ) -> Result<Self> {
        if let Some(embedder) = &options.embedder {
            match options.dimension {
                None => options.dimension = Some(embedder.dimension),
                Some(d) if d != embedder.dimension => {
                    return Err(Error::invalid(format!(
                        "dimension {d} given with embedder {embedder}: give no dimension, or the embedder's"
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(dim) = options.dimension {
            check_dimension(dim as usize)?;
        }
        let meta_existed = location.exists(names::METADATA)?;
        let vectors_existed = location.exists(names::VECTORS)?;
        if !meta_existed && vectors_existed {
            return Err(Error::corrupt(
                location.path_of(names::METADATA),
                "missing, but vectors.bin exists: the ids and the commit record are gone",
            ));
        }
        let meta = MetaStore::new(location.open_metadata()?, location.path_of(names::METADATA));
        let mut loaded = meta.load()?;

        // Finish or discard a compaction that a crash interrupted.
        if loaded.compaction_pending {
            if location.exists(names::VECTORS_COMPACT)? {
                location.rename(names::VECTORS_COMPACT, names::VECTORS)?;
            } else {
                // Renamed already, but perhaps only in the page cache of a process that died
                // before syncing the directory: make the rename durable before the mark that
                // says it happened is cleared, or a power cut would bring the old rows back
                // under the compacted numbering.
                location.sync_dir()?;
            }
            meta.finish_compaction()?;
            loaded.compaction_pending = false;
        } else if location.exists(names::VECTORS_COMPACT)? {
            location.remove(names::VECTORS_COMPACT)?;
        }

        // A database records the embedder it was created for; vectors of two models must
        // never share one, since their scores would be meaningless.
        let (embedder, embedder_unrecorded) = match (loaded.embedder.take(), &options.embedder) {
            (Some(stored), Some(asked)) if stored != *asked => {
                return Err(Error::EmbedderMismatch {
                    stored: stored.to_string(),
                    asked: asked.to_string(),
                })
            }
            (Some(stored), _) => (Some(stored), None),
            (None, Some(asked)) if loaded.committed_rows > 0 => {
                return Err(Error::EmbedderMismatch {
                    stored: "vectors added without a recorded embedder".into(),
                    asked: asked.to_string(),
                })
            }
            (None, Some(asked)) => (Some(asked.clone()), Some(asked.clone())),
            (None, None) => (None, None),
        };

        let metric = match (loaded.metric, options.metric) {
            (Some(stored), Some(asked)) if stored != asked => {
                return Err(Error::invalid(format!(
                    "the database was created with metric {stored}, not {asked}: open it without a metric or with {stored}"
                )))
            }
            (Some(stored), _) => stored,
            (None, asked) => asked.unwrap_or_default(),
        };
        if let (Some(stored), Some(asked)) = (loaded.dimension, options.dimension) {
            if stored != asked {
                return Err(Error::DimensionMismatch {
                    expected: stored,
                    got: asked as usize,
                    index: None,
                });
            }
        }

        let mut rows: Option<Box<dyn RowStore>> = None;
        if let Some(dim) = loaded.dimension {
            match location.open_rows(names::VECTORS, loaded.committed_rows)? {
                Some((header, store)) => {
                    if header.layout.dim != dim || header.metric != metric {
                        return Err(Error::corrupt(
                            location.path_of(names::VECTORS),
                            format!(
                                "header says dim {} / {}, metadata.db says dim {dim} / {metric}",
                                header.layout.dim, header.metric
                            ),
                        ));
                    }
                    rows = Some(store);
                }
                None if loaded.committed_rows == 0 => {}
                None => {
                    return Err(Error::corrupt(
                        location.path_of(names::VECTORS),
                        format!(
                            "missing, but metadata.db committed {} rows",
                            loaded.committed_rows
                        ),
                    ))
                }
            }
        } else if vectors_existed {
            // Created by a first batch that never committed: nothing in it exists.
            location.remove(names::VECTORS)?;
        }

        // Rebuild the in-memory tables from the committed state.
        let mut row_ids = ChunkedVec::new(ID_CHUNK);
        let mut rows_by_id = HashMap::with_capacity(loaded.row_ids.len());
        let mut tombstones = vec![0u64; loaded.row_ids.len().div_ceil(64)];
        for &row in &loaded.tombstones {
            if row >= loaded.committed_rows {
                return Err(Error::corrupt(
                    location.path_of(names::METADATA),
                    format!(
                        "tombstone for row {row} beyond the {} committed rows",
                        loaded.committed_rows
                    ),
                ));
            }
            tombstones[(row >> 6) as usize] |= 1 << (row & 63);
        }
        let mut live = 0u64;
        for (row, id) in loaded.row_ids.into_iter().enumerate() {
            let Some(id) = id else {
                return Err(Error::corrupt(
                    location.path_of(names::METADATA),
                    format!("row {row} has no id"),
                ));
            };
            let id: Arc<str> = Arc::from(id);
            if !row_bit_set(&tombstones, row as u64) {
                if rows_by_id.insert(id.clone(), row as u64).is_some() {
                    return Err(Error::corrupt(
                        location.path_of(names::METADATA),
                        format!("id {id:?} is live in two rows"),
                    ));
                }
                live += 1;
            }
            row_ids.push(id);
        }

        let writer = Writer {
            dim: loaded.dimension,
            rows,
            committed_rows: loaded.committed_rows,
            // Nothing is pending at open: a stored configuration is committed, and without one
            // there is nothing to record until the first rows arrive.
            config_committed: true,
            pending_inserts: Vec::new(),
            pending_deletes: Vec::new(),
            row_ids,
            tombstones: Arc::new(tombstones),
            live,
            poisoned: None,
            embedder_unrecorded,
        };
        let coalesce = options.coalesce_searches;
        let db = Database {
            location,
            meta,
            metric,
            embedder,
            kernels: Kernels::best(),
            options,
            published: ArcSwap::from_pointee(Snapshot {
                rows: None,
                row_ids: ChunkedVec::new(ID_CHUNK),
                tombstones: Arc::new(Vec::new()),
                live: 0,
                dim: None,
            }),
            coalescer: Coalescer::default(),
            coalesce: AtomicBool::new(coalesce),
            ids: RwLock::new(IdState {
                rows_by_id,
                pending_meta: HashMap::new(),
                pending_docs: HashMap::new(),
            }),
            writer: Mutex::new(writer),
            _lock: lock,
        };
        {
            let mut w = lock_poison_free(&db.writer);
            if w.dim.is_none() {
                if let Some(dim) = db.options.dimension {
                    // A dimension given up front is fixed now, durably.
                    db.create_rows(&mut w, dim)?;
                    db.commit_locked(&mut w)?;
                }
            }
            if w.embedder_unrecorded.is_some() {
                db.commit_locked(&mut w)?;
            }
            let snapshot = Self::snapshot_of(&w);
            db.published.store(Arc::new(snapshot));
        }
        Ok(db)
    }

    fn snapshot_of(w: &Writer) -> Snapshot {
        Snapshot {
            rows: w.rows.as_ref().map(|r| r.view()),
            row_ids: w.row_ids.clone(),
            tombstones: w.tombstones.clone(),
            live: w.live,
            dim: w.dim,
        }
    }

    fn ids_read(&self) -> RwLockReadGuard<'_, IdState> {
        self.ids.read().unwrap_or_else(|p| p.into_inner())
    }

    fn ids_write(&self) -> RwLockWriteGuard<'_, IdState> {
        self.ids.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The metric, fixed at creation.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The text embedder this database was created for, if one was recorded.
    pub fn embedder(&self) -> Option<&EmbedderSpec> {
        self.embedder.as_ref()
    }

    /// The dimension, once fixed.
    pub fn dimension(&self) -> Option<u32> {
        self.published.load().dim
    }

    /// Number of live (not deleted) records, committed or not.
    pub fn count(&self) -> u64 {
        self.published.load().live
    }

    /// Which kernels this handle uses (for reports).
    pub fn kernel_description(&self) -> String {
        self.kernels.describe()
    }

    /// True when `id` is live.
    pub fn contains(&self, id: &str) -> bool {
        self.ids_read().rows_by_id.contains_key(id)
    }

    /// Live ids, in insertion (row) order.
    pub fn ids(&self) -> Vec<String> {
        let snap = self.published.load_full();
        let set_rows = snap.row_ids.len() as u64;
        (0..set_rows)
            .filter(|&row| !row_bit_set(&snap.tombstones, row))
            .filter_map(|row| snap.row_ids.get(row as usize).map(|id| id.to_string()))
            .collect()
    }

    fn create_rows(&self, w: &mut Writer, dim: u32) -> Result<()> {
        let header = Header {
            layout: RowLayout::new(dim),
            metric: self.metric,
        };
        let store = self.location.create_rows(names::VECTORS, &header)?;
        w.rows = Some(store);
        w.dim = Some(dim);
        w.config_committed = false;
        Ok(())
    }

    /// Encodes rows (vector, norm, padding) into slabs of the write buffer and appends them.
    /// Runs under the writer lock, so it starts no rayon work (see the loop).
    fn append_rows(&self, w: &mut Writer, vectors: &[f32], dim: usize) -> Result<()> {
        let Some(store) = w.rows.as_mut() else {
            return Err(Error::invalid("no row storage (dimension unknown)"));
        };
        let layout = store.layout();
        let stride = layout.stride_f32;
        let rows_per_slab = (self.options.buffer_bytes / layout.stride_bytes()).max(1);
        let n = vectors.len() / dim;
        let mut slab = vec![0.0f32; rows_per_slab.min(n) * stride];
        let kernels = self.kernels;
        let mut done = 0;
        while done < n {
            let take = rows_per_slab.min(n - done);
            let source = &vectors[done * dim..(done + take) * dim];
            let encode = |(out, v): (&mut [f32], &[f32])| {
                layout.encode_row(v, kernels.dot(v, v).sqrt(), out);
            };
            let target = &mut slab[..take * stride];
            // On this thread, never on rayon's pool: the writer lock is held here, and a thread
            // waiting for pool work may run another caller's `add` (if it is a pool worker
            // itself) or wait on workers that are all blocked on this lock. Encoding is a norm
            // and a copy per row, far faster than the disk it feeds.
            target
                .chunks_mut(stride)
                .zip(source.chunks(dim))
                .for_each(encode);
            store.append(target)?;
            done += take;
        }
        Ok(())
    }

    fn commit_locked(&self, w: &mut Writer) -> Result<()> {
        if !w.has_pending() {
            return Ok(());
        }
        let result = (|| -> Result<u64> {
            let committed_rows = w.rows.as_ref().map_or(0, |store| store.rows());
            let state = self.ids_read();
            let batch = CommitBatch {
                inserts: w
                    .pending_inserts
                    .iter()
                    .map(|(row, id)| {
                        (
                            *row,
                            &**id,
                            state.pending_meta.get(row),
                            state.pending_docs.get(row).map(String::as_str),
                        )
                    })
                    .collect(),
                deletes: w
                    .pending_deletes
                    .iter()
                    .map(|(row, id)| (*row, &**id))
                    .collect(),
                committed_rows,
                config: w.dim.map(|d| (d, self.metric)),
                embedder: w.embedder_unrecorded.as_ref(),
            };
            // The rows are made durable before redb commits the batch that names them.
            let rows = &mut w.rows;
            let rows_durable = move || rows.as_mut().map_or(Ok(()), |store| store.sync());
            self.meta
                .commit(&batch, rows_durable, self.location.syncs_in_parallel())?;
            Ok(committed_rows)
        })();
        match result {
            Ok(committed_rows) => {
                let mut state = self.ids_write();
                for (row, _) in &w.pending_inserts {
                    state.pending_meta.remove(row);
                    state.pending_docs.remove(row);
                }
                drop(state);
                w.embedder_unrecorded = None;
                w.pending_inserts.clear();
                w.pending_deletes.clear();
                w.committed_rows = committed_rows;
                w.config_committed = true;
                Ok(())
            }
            Err(e) => {
                w.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn compact_locked(&self, w: &mut Writer) -> Result<()> {
        let (Some(dim), Some(store)) = (w.dim, w.rows.as_ref()) else {
            return Ok(());
        };
        let view = store.view();
        let layout = view.layout();
        let header = Header {
            layout,
            metric: self.metric,
        };
        let total = w.committed_rows;
        let is_dead = |row: u64| row_bit_set(&w.tombstones, row);
        let survivors_count = usize::try_from(w.live).unwrap_or(usize::MAX);

        // 1. The surviving rows into a new file, durably.
        let mut new_store = self.location.create_rows(names::VECTORS_COMPACT, &header)?;
        // Bounded by the rows there are, whatever the write buffer's size.
        let rows_per_slab =
            (self.options.buffer_bytes / layout.stride_bytes()).clamp(1, survivors_count.max(1));
        let mut slab: Vec<f32> = Vec::new();
        slab.try_reserve_exact(rows_per_slab.saturating_mul(layout.stride_f32))
            .map_err(|_| {
                Error::invalid(format!(
                    "the write buffer ({} bytes) cannot be allocated: open with a smaller buffer_bytes",
                    self.options.buffer_bytes
                ))
            })?;
        let mut keep: Vec<u64> = Vec::with_capacity(survivors_count);
        for row in 0..total {
            if is_dead(row) {
                continue;
            }
            let Some(data) = view.row(row) else {
                return Err(Error::corrupt(
                    self.location.path_of(names::VECTORS),
                    format!("row {row} unreadable"),
                ));
            };
            slab.extend_from_slice(data);
            keep.push(row);
            if slab.len() >= rows_per_slab * layout.stride_f32 {
                new_store.append(&slab)?;
                slab.clear();
            }
        }
        if !slab.is_empty() {
            new_store.append(&slab)?;
        }
        new_store.sync()?;
        drop(view);
        // Closing the writer trims its preallocated tail (the file shrinks on disk); the store
        // the handle switches to is the file reopened at exactly its rows.
        drop(new_store);
        let n = keep.len() as u64;
        let Some((_, new_store)) = self.location.open_rows(names::VECTORS_COMPACT, n)? else {
            return Err(Error::corrupt(
                self.location.path_of(names::VECTORS_COMPACT),
                "vanished during compaction",
            ));
        };

        // 2. The new numbering, built before the switch so the switch is short.
        let mut all_meta = self.meta.all_metadata()?;
        let mut all_docs = self.meta.all_documents()?;
        let survivors: Vec<CompactedRow> = keep
            .iter()
            .map(|&row| CompactedRow {
                id: w
                    .row_ids
                    .get(row as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                metadata: all_meta.remove(&row),
                document: all_docs.remove(&row),
            })
            .collect();
        let mut row_ids = ChunkedVec::new(ID_CHUNK);
        let mut rows_by_id = HashMap::with_capacity(keep.len());
        for (new_row, survivor) in survivors.iter().enumerate() {
            let id: Arc<str> = Arc::from(survivor.id.as_str());
            rows_by_id.insert(id.clone(), new_row as u64);
            row_ids.push(id);
        }

        // 3. The commit point: redb now describes the compacted rows. Readers pair a row number
        //    from `rows_by_id` with redb's metadata and documents while holding the id lock, so
        //    the new numbering goes live in memory under the same write lock as in redb: no
        //    reader sees one numbering in memory and the other in redb. The rewrite is staged
        //    first, so readers wait only for the commit itself. From here the handle reads the
        //    new file (still named vectors.bin.compact; the rename does not touch the open file).
        let staged = self.meta.stage_compacted(&survivors, dim, self.metric)?;
        {
            let mut state = self.ids_write();
            staged.commit()?;
            w.rows = Some(new_store);
            w.row_ids = row_ids;
            w.tombstones = Arc::new(Vec::new());
            w.committed_rows = n;
            w.live = n;
            state.rows_by_id = rows_by_id;
            state.pending_meta.clear();
            state.pending_docs.clear();
            self.published.store(Arc::new(Self::snapshot_of(w)));
        }

        // 4. Swap the files and clear the mark (open finishes this after a crash).
        self.location
            .rename(names::VECTORS_COMPACT, names::VECTORS)?;
        self.meta.finish_compaction()?;
        Ok(())
    }

    /// Commits and closes, reporting any error (dropping commits too, but silently). A handle
    /// poisoned by an earlier failed write returns [`Error::Poisoned`]: the writes it
    /// acknowledged since its last commit are lost, and the caller must hear it.
    pub fn close(self) -> Result<()> {
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        self.commit_locked(&mut w)
    }

    fn check_query(&self, dim: Option<u32>, queries: &[f32], n: usize) -> Result<Option<Queries>> {
        let Some(dim) = dim else { return Ok(None) };
        check_queries(dim, queries, n)?;
        let d = dim as usize;
        let norms = queries
            .chunks_exact(d)
            .map(|q| self.kernels.dot(q, q).sqrt())
            .collect();
        Ok(Some(Queries {
            data: queries.to_vec(),
            norms,
            dim: d,
        }))
    }

    /// One scan for a group of coalesced single searches, over the newest snapshot (which every
    /// caller in the group published, or saw published, before it queued). Queries share a
    /// scan only with queries of a compatible `k` (see [`k_class`]): one caller asking for a
    /// million hits must not make every query it is grouped with carry a million-entry top-k.
    fn search_group(&self, group: &[Arc<Request>]) -> Vec<Result<Vec<SearchHit>>> {
        let snap = self.published.load_full();
        let mut answers: Vec<Option<Result<Vec<SearchHit>>>> = group.iter().map(|_| None).collect();
        let mut order: Vec<usize> = (0..group.len()).collect();
        order.sort_by_key(|&i| k_class(group[i].k));
        for class in order.chunk_by(|&a, &b| k_class(group[a].k) == k_class(group[b].k)) {
            let members: Vec<&Request> = class.iter().map(|&i| &*group[i]).collect();
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

    /// One batch scan for `members` with their largest `k`, each answer cut to its own `k`.
    fn scan_together(&self, snap: &Snapshot, members: &[&Request]) -> Vec<Result<Vec<SearchHit>>> {
        let single = |r: &Request| {
            self.search_snapshot(snap, &r.query, 1, r.k)
                .map(|mut out| out.pop().unwrap_or_default())
        };
        if members.len() == 1 {
            return vec![single(members[0])];
        }
        let k = members.iter().map(|r| r.k).max().unwrap_or(0);
        let mut queries = Vec::with_capacity(members.iter().map(|r| r.query.len()).sum());
        for r in members {
            queries.extend_from_slice(&r.query);
        }
        match self.search_snapshot(snap, &queries, members.len(), k) {
            // The top k of a larger k is its first k: ranks are a total order (ties by row).
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

    /// Turns query coalescing on or off for later `search` calls (benches compare the two).
    pub fn set_coalesce_searches(&self, on: bool) {
        self.coalesce.store(on, Ordering::Relaxed);
    }

    /// Single searches answered so far on this handle, and the scans that answered them
    /// (fewer scans than queries means concurrent searches were coalesced).
    pub fn coalesce_stats(&self) -> CoalesceStats {
        self.coalescer.stats()
    }

    fn search_snapshot(
        &self,
        snap: &Snapshot,
        queries: &[f32],
        n: usize,
        k: usize,
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
            tombstones: &snap.tombstones,
        };
        let k = k.min(usize::try_from(snap.live).unwrap_or(usize::MAX));
        let index = FlatIndex::new(self.metric, self.kernels);
        let found = index.search(&set, &qs, k);
        let higher = self.metric.higher_is_better();
        Ok(found
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|c| SearchHit {
                        id: snap
                            .row_ids
                            .get(c.row as usize)
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                        score: if higher { c.key } else { -c.key },
                    })
                    .collect()
            })
            .collect())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let mut w = lock_poison_free(&self.writer);
        if w.poisoned.is_none() {
            // Best effort: `close` reports errors; a drop cannot.
            let _ = self.commit_locked(&mut w);
        }
    }
}

/// The error for `values` that are not `n` vectors of `expected` components: `got` is the
/// per-vector length when the values split evenly, else the total.
fn dimension_mismatch(expected: u32, values: &[f32], n: usize) -> Error {
    let got = if n > 0 && values.len().is_multiple_of(n) {
        values.len() / n
    } else {
        values.len()
    };
    Error::DimensionMismatch {
        expected,
        got,
        index: None,
    }
}

/// Position of the first NaN or infinity in `values`; large inputs are checked on every core.
fn first_non_finite(values: &[f32]) -> Option<usize> {
    #[cfg(not(target_arch = "wasm32"))]
    if values.len() > 1 << 16 {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        let chunk = values
            .par_chunks(CHUNK)
            .position_first(|c| c.iter().any(|x| !x.is_finite()))?;
        let offset = chunk * CHUNK;
        return values[offset..]
            .iter()
            .position(|x| !x.is_finite())
            .map(|p| offset + p);
    }
    values.iter().position(|x| !x.is_finite())
}

/// `queries` must be `n` finite vectors of `dim` components.
fn check_queries(dim: u32, queries: &[f32], n: usize) -> Result<()> {
    let d = dim as usize;
    if queries.len() != n * d {
        return Err(dimension_mismatch(dim, queries, n));
    }
    if let Some(pos) = queries.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidInput {
            reason: format!("query component {} is {}", pos % d, queries[pos]),
            index: Some(pos / d),
        });
    }
    Ok(())
}

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

fn check_dimension(dim: usize) -> Result<()> {
    if dim == 0 || dim > MAX_DIMENSION as usize {
        return Err(Error::invalid(format!(
            "dimension {dim} is out of range 1..={MAX_DIMENSION}"
        )));
    }
    Ok(())
}

/// Rejects metadata and documents larger than the store takes, before anything is written: a
/// value redb refused at commit would poison the handle and drop every pending batch with it.
fn check_documents_and_metadata<D: AsRef<str>>(
    metadatas: &[Option<Metadata>],
    documents: &[Option<D>],
) -> Result<()> {
    let metadata = metadatas
        .iter()
        .map(|m| m.as_ref().map(|m| m.as_str().len()));
    check_sizes(
        metadata,
        "metadata",
        MAX_METADATA_BYTES,
        "keep large content in the document, or outside the database",
    )?;
    let document = documents
        .iter()
        .map(|d| d.as_ref().map(|d| d.as_ref().len()));
    check_sizes(
        document,
        "document",
        MAX_DOCUMENT_BYTES,
        "split it into chunks, one record each",
    )
}

/// The first of `sizes` (one per record, `None` for no value) over `limit` bytes, as an error
/// naming `what`, the limit and `advice`.
fn check_sizes(
    sizes: impl Iterator<Item = Option<usize>>,
    what: &str,
    limit: usize,
    advice: &str,
) -> Result<()> {
    for (i, len) in sizes.enumerate() {
        if let Some(len) = len.filter(|&len| len > limit) {
            return Err(Error::InvalidInput {
                reason: format!("{what} is {len} bytes; the limit is {limit} ({advice})"),
                index: Some(i),
            });
        }
    }
    Ok(())
}

fn check_id(id: &str, index: usize) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidInput {
            reason: "empty id".into(),
            index: Some(index),
        });
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::InvalidInput {
            reason: format!("id is {} bytes; the limit is {MAX_ID_BYTES}", id.len()),
            index: Some(index),
        });
    }
    Ok(())
}

impl Store for Database {
    /// Inserts or replaces a batch. The batch is atomic: any invalid entry (duplicate or
    /// existing id, wrong dimension, NaN/inf, bad id, oversized metadata or document) rejects
    /// the whole batch and writes nothing. Documents live in `metadata.db` and follow their row
    /// through delete, upsert and compaction.
    fn write(&self, request: &Write<'_>) -> Result<()> {
        let Write {
            mode,
            ids,
            vectors,
            metadatas,
            documents,
        } = *request;
        let n = ids.len();
        if n == 0 {
            if vectors.is_empty() && metadatas.is_empty() && documents.is_empty() {
                return Ok(());
            }
            return Err(Error::invalid(
                "vectors, metadatas or documents given without ids",
            ));
        }
        if !metadatas.is_empty() && metadatas.len() != n {
            return Err(Error::invalid(format!(
                "{} metadatas for {n} ids: pass one per id, or none",
                metadatas.len()
            )));
        }
        if !documents.is_empty() && documents.len() != n {
            return Err(Error::invalid(format!(
                "{} documents for {n} ids: pass one per id, or none",
                documents.len()
            )));
        }
        check_documents_and_metadata(metadatas, documents)?;
        // NaN/inf anywhere rejects the batch. Checked (on every core for large batches) before
        // the writer lock is taken: no rayon work may run under it (see `append_rows`).
        let non_finite = first_non_finite(vectors);
        let mut w = lock_poison_free(&self.writer);
        w.check()?;

        // Validate everything before writing anything.
        let dim = match w.dim {
            Some(d) => {
                if vectors.len() != n * d as usize {
                    return Err(dimension_mismatch(d, vectors, n));
                }
                d as usize
            }
            None => {
                if !vectors.len().is_multiple_of(n) || vectors.is_empty() {
                    return Err(Error::invalid(format!(
                        "{} values for {n} ids: vectors must all have the same length",
                        vectors.len()
                    )));
                }
                let d = vectors.len() / n;
                check_dimension(d)?;
                d
            }
        };
        if let Some(pos) = non_finite {
            return Err(Error::InvalidInput {
                reason: format!(
                    "component {} is {} (NaN and infinity cannot be searched)",
                    pos % dim,
                    vectors[pos]
                ),
                index: Some(pos / dim),
            });
        }
        let mut replaced = Vec::new();
        {
            let state = self.ids_read();
            let mut seen = HashSet::with_capacity(n);
            for (i, id) in ids.iter().enumerate() {
                let id = *id;
                check_id(id, i)?;
                if !seen.insert(id) {
                    return Err(Error::DuplicateId {
                        id: id.to_owned(),
                        index: Some(i),
                    });
                }
                if let Some(&row) = state.rows_by_id.get(id) {
                    match mode {
                        WriteMode::Add => {
                            return Err(Error::DuplicateId {
                                id: id.to_owned(),
                                index: Some(i),
                            })
                        }
                        WriteMode::Upsert => replaced.push((row, Arc::<str>::from(id))),
                    }
                }
            }
        }

        // Write the rows through the write buffer.
        if w.rows.is_none() {
            self.create_rows(&mut w, dim as u32)?;
        }
        let first_row = w.rows.as_ref().map_or(0, |r| r.rows());
        if let Err(e) = self.append_rows(&mut w, vectors, dim) {
            w.poisoned = Some(e.to_string());
            return Err(e);
        }

        // Record the batch, then publish it.
        let new_ids: Vec<Arc<str>> = ids.iter().map(|s| Arc::<str>::from(*s)).collect();
        for (i, id) in new_ids.iter().enumerate() {
            let row = first_row + i as u64;
            w.row_ids.push(id.clone());
            w.pending_inserts.push((row, id.clone()));
        }
        for (row, id) in &replaced {
            w.set_tombstone(*row);
            w.pending_deletes.push((*row, id.clone()));
        }
        w.live += (n - replaced.len()) as u64;
        {
            let mut state = self.ids_write();
            for (i, id) in new_ids.into_iter().enumerate() {
                let row = first_row + i as u64;
                state.rows_by_id.insert(id, row);
                if let Some(Some(m)) = metadatas.get(i) {
                    state.pending_meta.insert(row, m.clone());
                }
                if let Some(Some(d)) = documents.get(i) {
                    state.pending_docs.insert(row, (*d).to_owned());
                }
            }
            for (row, _) in &replaced {
                state.pending_meta.remove(row);
                state.pending_docs.remove(row);
            }
            self.published.store(Arc::new(Self::snapshot_of(&w)));
        }

        if self.options.auto_commit_rows > 0 && w.uncommitted_ops() >= self.options.auto_commit_rows
        {
            self.commit_locked(&mut w)?;
        }
        Ok(())
    }

    /// Deletes `ids`; with [`Missing::Skip`], unknown ids are skipped under the same writer
    /// lock that deletes the others, so a concurrent delete cannot fail the call.
    fn remove(&self, request: &Delete<'_>) -> Result<usize> {
        let Delete { ids, missing } = *request;
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        let mut rows = Vec::with_capacity(ids.len());
        {
            let state = self.ids_read();
            let mut seen = HashSet::new();
            for id in ids {
                let id = *id;
                if !seen.insert(id) {
                    continue;
                }
                match state.rows_by_id.get_key_value(id) {
                    Some((key, &row)) => rows.push((row, key.clone())),
                    None if missing == Missing::Skip => {}
                    None => return Err(Error::NotFound { id: id.to_owned() }),
                }
            }
        }
        for (row, id) in &rows {
            w.set_tombstone(*row);
            w.pending_deletes.push((*row, id.clone()));
        }
        w.live -= rows.len() as u64;
        {
            let mut state = self.ids_write();
            for (row, id) in &rows {
                state.rows_by_id.remove(id);
                state.pending_meta.remove(row);
                state.pending_docs.remove(row);
            }
            self.published.store(Arc::new(Self::snapshot_of(&w)));
        }
        if self.options.auto_commit_rows > 0 && w.uncommitted_ops() >= self.options.auto_commit_rows
        {
            self.commit_locked(&mut w)?;
        }
        Ok(rows.len())
    }

    fn query(&self, request: &Query<'_>) -> Result<Vec<Vec<SearchHit>>> {
        match request.queries {
            store::Queries::One(query) => Ok(vec![self.search(query, request.k)?]),
            store::Queries::Batch(queries) => self.search_batch(queries, request.k),
        }
    }

    /// The `k` best matches for `query`, best first. `k` larger than the count returns them all;
    /// an empty database returns nothing.
    ///
    /// Concurrent calls on one handle are coalesced: a call that arrives while a scan is running
    /// waits for it and is answered, with the others that arrived meanwhile, by one batch scan
    /// (see `OpenOptions::coalesce_searches`). A lone call starts its scan at once.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<SearchHit>> {
        let snap = self.published.load_full();
        let Some(dim) = snap.dim else {
            return Ok(Vec::new());
        };
        // A bad query fails alone, before it can join a group.
        check_queries(dim, query, 1)?;
        let rows = snap.rows.as_ref().map_or(0, |r| r.rows());
        let bytes = snap
            .rows
            .as_ref()
            .map_or(0, |r| rows.saturating_mul(r.layout().stride_bytes() as u64));
        // Rows that fit in cache are scanned in microseconds without touching DRAM: callers
        // scanning side by side do not compete, and a queue would only add hand-offs.
        // A rayon worker never waits in the coalescer: while it waited it could be the thread
        // the running leader's scan needs (a scan started from inside the pool runs part of its
        // work on the caller's thread, and rayon lets a waiting worker pick up other tasks, such
        // as another `search` that would then queue behind it).
        if !self.coalesce.load(Ordering::Relaxed) || bytes < COALESCE_MIN_BYTES || on_rayon_worker()
        {
            let mut out = self.search_snapshot(&snap, query, 1, k)?;
            return Ok(out.pop().unwrap_or_default());
        }
        // One scan that already uses every core gains nothing from a second beside it.
        let max_scans = if FlatIndex::scan_uses_all_cores(rows) {
            1
        } else {
            parallelism()
        };
        drop(snap);
        self.coalescer
            .search(query, k, max_scans, |group| self.search_group(group))
    }

    /// The `k` best matches for each of the queries in `queries` (back to back, each of the
    /// database's dimension). Much cheaper per query than separate searches: rows are read once
    /// per group of queries.
    fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>> {
        let snap = self.published.load_full();
        let Some(dim) = snap.dim else {
            return Ok(Vec::new());
        };
        if !queries.len().is_multiple_of(dim as usize) {
            return Err(Error::DimensionMismatch {
                expected: dim,
                got: queries.len(),
                index: None,
            });
        }
        let n = queries.len() / dim as usize;
        self.search_snapshot(&snap, queries, n, k)
    }

    /// The record stored under `id`, or `None`.
    fn get(&self, id: &str) -> Result<Option<Record>> {
        let ids = self.ids_read();
        let Some(&row) = ids.rows_by_id.get(id) else {
            return Ok(None);
        };
        let snap = self.published.load_full();
        let (Some(rows), Some(dim)) = (&snap.rows, snap.dim) else {
            return Ok(None);
        };
        rows.check_backed()?;
        let Some(data) = rows.row(row) else {
            return Ok(None);
        };
        let vector = data[..dim as usize].to_vec();
        let metadata = match ids.pending_meta.get(&row) {
            Some(m) => Some(m.clone()),
            None => self.meta.metadata(row)?,
        };
        let document = match ids.pending_docs.get(&row) {
            Some(d) => Some(d.clone()),
            // A row not yet committed has nothing in redb, so this reads `None` for it.
            None => self.meta.documents(&[row])?.pop().flatten(),
        };
        Ok(Some(Record {
            id: id.to_owned(),
            vector,
            metadata,
            document,
        }))
    }

    /// The stored documents of `ids`, in order: `None` for an unknown id or a record stored
    /// without one. One read transaction for all of them (a query's hits).
    fn documents(&self, ids: &[&str]) -> Result<Vec<Option<String>>> {
        let state = self.ids_read();
        let mut out = vec![None; ids.len()];
        let mut committed = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let Some(&row) = state.rows_by_id.get(*id) else {
                continue;
            };
            match state.pending_docs.get(&row) {
                Some(doc) => out[i] = Some(doc.clone()),
                None => committed.push((i, row)),
            }
        }
        let rows: Vec<u64> = committed.iter().map(|&(_, row)| row).collect();
        for ((i, _), doc) in committed.into_iter().zip(self.meta.documents(&rows)?) {
            out[i] = doc;
        }
        Ok(out)
    }

    fn contains(&self, id: &str) -> Result<bool> {
        Ok(Database::contains(self, id))
    }

    fn count(&self) -> Result<u64> {
        Ok(Database::count(self))
    }

    fn ids(&self) -> Result<Vec<String>> {
        Ok(Database::ids(self))
    }

    fn dimension(&self) -> Result<Option<u32>> {
        Ok(Database::dimension(self))
    }

    fn metric(&self) -> Result<Metric> {
        Ok(Database::metric(self))
    }

    fn embedder(&self) -> Result<Option<EmbedderSpec>> {
        Ok(Database::embedder(self).cloned())
    }

    fn kernel(&self) -> Result<String> {
        Ok(self.kernel_description())
    }

    /// Makes every change so far durable: fsync `vectors.bin`, then commit redb.
    fn persist(&self) -> Result<()> {
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        self.commit_locked(&mut w)
    }

    /// Rewrites the database without deleted rows. Crash-safe: a crash at any point leaves the
    /// old or the new database (the redb commit that records the new rows is the switch).
    /// Row numbers change; ids do not.
    fn compact(&self) -> Result<()> {
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        self.commit_locked(&mut w)?;
        let dead = w
            .tombstones
            .iter()
            .map(|x| x.count_ones() as u64)
            .sum::<u64>();
        if dead == 0 {
            return Ok(());
        }
        let result = self.compact_locked(&mut w);
        if let Err(e) = &result {
            w.poisoned = Some(e.to_string());
        }
        result
    }

    fn coalesce_stats(&self) -> Option<CoalesceStats> {
        Some(Database::coalesce_stats(self))
    }
}
