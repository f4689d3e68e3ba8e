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
//!
//! One protocol per module: `open` (recovery), `write` (writing and commit), `update` (changes
//! in place), `compact`, `search` (coalesced and batch); `tombstones`, `pending` and
//! `field_index` own the state those share, and `validate` the checks of user input. The fallible operations are [`Store`]'s, implemented
//! at the end of this file.

mod compact;
mod field_index;
mod open;
mod partition;
pub use self::partition::ScanState;
mod pending;
mod search;
mod select;
mod tombstones;
mod update;
mod validate;
mod vector_index;
mod write;

use self::field_index::FieldIndexes;
use self::pending::Pending;
use self::tombstones::Tombstones;
use crate::coalesce::{CoalesceStats, Coalescer};
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::filter::columns::ColumnCache;
use crate::filter::Filter;
use crate::hnsw::graph::{Graph, GraphView};
use crate::ids::{IdTable, RowIds};
use crate::meta::MetaStore;
use crate::quant::codes::CodeTable;
use crate::quant::codes_file::CodesFile;
use crate::quant::index::ScanOptions;
use crate::quant::{IndexInfo, IndexSpec};
use crate::storage::deferred_sync::DeferredSyncLocation;
use crate::storage::fs::{DirLock, FsLocation};
use crate::storage::memory::MemoryLocation;
use crate::storage::{Location, RowStore, RowView};
use crate::store::{self, Delete, Query, Select, Store, Update, Write};
use crate::types::{EmbedderSpec, Metadata, Metric, OpenOptions, Record, SearchHit, MAX_ID_BYTES};
use arc_swap::ArcSwap;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What one search sees: immutable, shared by `Arc`.
struct Snapshot {
    rows: Option<Arc<dyn RowView>>,
    row_ids: RowIds,
    tombstones: Tombstones,
    live: u64,
    dim: Option<u32>,
    /// Bumped whenever the metadata or document of an existing row changes (update) or rows
    /// are renumbered (compaction): caches built from rows' metadata are valid only for the
    /// version they were built at (appended rows do not change it).
    meta_version: u64,
    /// The field indexes as of this snapshot.
    field_indexes: Arc<FieldIndexes>,
    /// The quantized index's codes as of this snapshot (rows `0..codes.rows()`), if one exists.
    codes: Option<CodeTable>,
    /// An index asked for before the database had a dimension, built at the first commit of
    /// rows (see [`Writer::index_pending`]).
    index_pending: Option<IndexSpec>,
    /// The HNSW graph as of this snapshot (nodes `0..graph.nodes`), if the index has one.
    graph: Option<GraphView>,
}

/// State `get` needs besides the snapshot; changed together with it under one lock.
struct IdState {
    /// Id -> row of the live rows, over the writer's row ids as of the last publish.
    ids: IdTable,
    /// Writes not yet committed to redb.
    pending: Pending,
}

/// The single writer's state.
struct Writer {
    rows: Option<Box<dyn RowStore>>,
    dim: Option<u32>,
    committed_rows: u64,
    config_committed: bool,
    row_ids: RowIds,
    tombstones: Tombstones,
    live: u64,
    poisoned: Option<String>,
    /// Opened with `OpenOptions::read_only`: every write is refused.
    read_only: bool,
    /// An embedder given at open that the next commit must record.
    embedder_unrecorded: Option<EmbedderSpec>,
    /// A metric given at open, with no dimension yet, that the next commit must record.
    metric_unrecorded: bool,
    /// See [`Snapshot::meta_version`].
    meta_version: u64,
    /// See [`Snapshot::field_indexes`].
    field_indexes: Arc<FieldIndexes>,
    /// See [`Snapshot::codes`]: the codes of every row appended so far.
    codes: Option<CodeTable>,
    /// `index.codes` while an index exists: codes are written and synced at commit.
    codes_file: Option<CodesFile>,
    /// An index asked for before the database had a dimension: recorded in `metadata.db` as
    /// pending, and built (trained on the rows) right after the first commit of rows.
    index_pending: Option<IndexSpec>,
    /// The HNSW graph while the index has one: every appended row is inserted at once
    /// (`write::append_rows`), and the next commit writes the links it changed.
    graph: Option<Arc<Graph>>,
    /// Nodes whose links changed since the last commit (see [`Writer::graph`]).
    graph_dirty: BTreeSet<u32>,
    /// Live rows the codebook was trained on, as far as this handle knows (at open: the
    /// live rows then). A graph's codes are retrained when the rows outgrow it (see
    /// `vector_index::Database::retrain_outgrown_codes`).
    codes_trained_on: u64,
}

impl Writer {
    /// Whether this handle may write now: not read-only, not poisoned.
    fn check(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                reason: crate::error::WRITE_ON_READER.to_owned(),
            });
        }
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// True when a commit has something to record: `pending` writes or configuration.
    fn has_pending(&self, pending: &Pending) -> bool {
        pending.ops() > 0
            || !self.config_committed
            || self.embedder_unrecorded.is_some()
            || self.metric_unrecorded
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
    /// Whether the quantized index's codes are kept in `index.codes` (not for an in-memory
    /// database, where a second copy of the codes would only double their memory).
    codes_on_disk: bool,
    /// Gathers concurrent single searches into batch scans.
    coalescer: Coalescer<search::Single>,
    /// Whether `search` coalesces (from `OpenOptions::coalesce_searches`; settable).
    coalesce: AtomicBool,
    writer: Mutex<Writer>,
    ids: RwLock<IdState>,
    /// Filters' column caches (see `crate::filter::columns`). Lock order: this, then `ids`.
    filter_cache: Mutex<ColumnCache>,
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
    /// Opens the database in directory `path`, creating it if needed, under the directory's
    /// writer lock; with [`OpenOptions::read_only`], opens an existing one under a shared
    /// lock and changes nothing on disk.
    pub fn open(path: impl AsRef<Path>, options: OpenOptions) -> Result<Self> {
        let dir = path.as_ref();
        let options = options.validated()?;
        if options.read_only {
            let location = FsLocation::read_only(dir, options.storage)?;
            // Held only while the reader opens: it then serves the commit it found from
            // memory (ids, and its copy of `metadata.db`) and from rows no writer rewrites
            // (`vectors.bin` is append-only below its committed rows; a compaction writes a
            // new file), so a writer may open, commit and close while it serves.
            let _opening = DirLock::acquire_shared(dir)?;
            return Self::open_in(Arc::new(location), options, None);
        }
        let location = FsLocation::new(dir, options.storage)?;
        let lock = DirLock::acquire(dir)?;
        Self::open_in(Arc::new(location), options, Some(lock))
    }

    /// Opens the existing database in directory `path` read-only, as
    /// [`OpenOptions::read_only`] does, but without the shared lock and even when
    /// `metadata.db` is marked as needing recovery (its writer holds it open, or crashed): the
    /// handle recovers its own in-memory copy of it, and nothing on disk changes. Only for a
    /// process that holds that writer itself, idle, with its last commit complete:
    /// `srvdb-host`'s partition readers (see `Database::query_rows`).
    #[doc(hidden)]
    pub fn open_partition_reader(path: impl AsRef<Path>, mut options: OpenOptions) -> Result<Self> {
        options.read_only = true;
        let location = FsLocation::read_only(path.as_ref(), options.storage)?;
        Self::open_in_with(Arc::new(location), options, None, true)
    }

    /// Opens (creating if needed) the database in directory `path` for writing, as
    /// [`Database::open`] does, but with its syncs deferred: no commit, create, rename or close
    /// fsyncs anything (the mmap rows' background early flush aside, see
    /// [`crate::storage::deferred_sync`]). For a bulk load into a fresh
    /// directory that the caller makes durable as a whole: close the database, then run
    /// [`crate::storage::fs::sync_directory`] on `path` before anything depends on it. A power
    /// loss (or an OS crash) before that sync pass may leave the database missing commits,
    /// unreadable, or missing; nothing else changes (reads, checks and what a killed process
    /// leaves behind are as with [`Database::open`]). [`Error::InvalidInput`] for read-only
    /// options, which have nothing to defer.
    pub fn open_deferring_syncs(path: impl AsRef<Path>, options: OpenOptions) -> Result<Self> {
        let dir = path.as_ref();
        if options.read_only {
            return Err(Error::invalid(
                "a read-only open syncs nothing: open it without deferred syncs",
            ));
        }
        let options = options.validated()?;
        crate::storage::fs::check_dir_path(dir)?;
        // Created here, so that FsLocation::new does not sync the parent: the sync pass does.
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(crate::error::Error::io_ctx(format!(
                "creating directory {}",
                dir.display()
            )))?;
        }
        let location = FsLocation::new(dir, options.storage)?;
        let lock = DirLock::acquire(dir)?;
        let deferred = DeferredSyncLocation::new(Arc::new(location));
        Self::open_in(Arc::new(deferred), options, Some(lock))
    }

    /// Whether this handle was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.options.read_only
    }

    /// A read-only handle on the database at `path` as it is now: opens it again with this
    /// handle's options, so it holds the newest commit (this handle keeps serving its own).
    /// Replace this handle with the result to follow the writer.
    ///
    /// A writer that is open now is [`Error::Locked`] (`holder` writer), as for any read-only
    /// open: its commits are read once it has closed. Only for read-only handles: a writer
    /// has nothing newer to read, and is [`Error::InvalidInput`].
    pub fn reopened(&self) -> Result<Self> {
        if !self.options.read_only {
            return Err(Error::invalid(
                "refresh is for read-only handles: a writer already sees every commit",
            ));
        }
        // `path_of("")` ends in a separator; the components drop it.
        let dir: std::path::PathBuf = self.location.path_of("").components().collect();
        Self::open(dir, self.options.clone())
    }

    /// An ephemeral database in memory: same engine, nothing written to disk.
    pub fn in_memory(options: OpenOptions) -> Result<Self> {
        if options.read_only {
            return Err(Error::invalid(
                "an in-memory database cannot be opened read-only: it exists only in the handle \
                 that created it",
            ));
        }
        let mut db = Self::open_in(Arc::new(MemoryLocation::new()), options, None)?;
        db.codes_on_disk = false;
        Ok(db)
    }

    /// Opens a database in any [`Location`]: the simulated, fault-injecting one of the crash
    /// tests (feature `testing`; applications open a directory or memory).
    #[cfg(feature = "testing")]
    pub fn open_at(location: Arc<dyn Location>, options: OpenOptions) -> Result<Self> {
        Self::open_in(location, options, None)
    }

    fn snapshot_of(w: &Writer) -> Snapshot {
        Snapshot {
            rows: w.rows.as_ref().map(|r| r.view()),
            row_ids: w.row_ids.clone(),
            tombstones: w.tombstones.clone(),
            live: w.live,
            dim: w.dim,
            meta_version: w.meta_version,
            field_indexes: w.field_indexes.clone(),
            codes: w.codes.clone(),
            index_pending: w.index_pending,
            graph: w.graph.as_ref().map(Graph::view),
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
        self.ids_read().ids.contains(id)
    }

    /// Live ids, in insertion (row) order.
    pub fn ids(&self) -> Vec<String> {
        let snap = self.published.load_full();
        let set_rows = snap.row_ids.len() as u64;
        (0..set_rows)
            .filter(|&row| !snap.tombstones.contains(row))
            .filter_map(|row| snap.row_ids.get(row as usize).map(str::to_owned))
            .collect()
    }

    /// Commits and closes, reporting any error (dropping commits too, but silently). A handle
    /// poisoned by an earlier failed write returns [`Error::Poisoned`]: the writes it
    /// acknowledged since its last commit are lost, and the caller must hear it.
    pub fn close(self) -> Result<()> {
        if self.options.read_only {
            return Ok(());
        }
        self.persist_all()
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
}

impl Database {
    /// The metadata of live row `row` now: pending (uncommitted insert or update) or
    /// committed. Call with the id lock held, so `row` is not renumbered meanwhile.
    fn row_metadata(&self, pending: &Pending, row: u64) -> Result<Option<Metadata>> {
        match pending.metadata(row) {
            Some(metadata) => Ok(metadata.cloned()),
            // A row not yet committed has nothing in redb, so this reads `None` for it.
            None => self.meta.metadata(row),
        }
    }

    /// The document of live row `row` now, as [`Database::row_metadata`].
    fn row_document(&self, pending: &Pending, row: u64) -> Result<Option<String>> {
        match pending.document(row) {
            Some(document) => Ok(document.map(str::to_owned)),
            None => Ok(self.meta.documents(&[row])?.pop().flatten()),
        }
    }
}

/// A field index's name must be a metadata path: not empty, not an operator, not huge.
fn check_field_name(field: &str) -> Result<()> {
    if field.is_empty() {
        return Err(Error::invalid(
            "empty field name: name a metadata field, e.g. \"year\" or \"author.name\"",
        ));
    }
    if field.starts_with('$') {
        return Err(Error::invalid(format!(
            "field name {field:?} starts with '$', which marks filter operators: name a metadata field"
        )));
    }
    if field.len() > MAX_ID_BYTES {
        return Err(Error::invalid(format!(
            "field name is {} bytes; the limit is {MAX_ID_BYTES}",
            field.len()
        )));
    }
    Ok(())
}

impl Drop for Database {
    fn drop(&mut self) {
        let mut w = lock_poison_free(&self.writer);
        if w.poisoned.is_none() && !w.read_only {
            // Best effort: `close` reports errors; a drop cannot.
            let _ = self.commit_locked(&mut w);
        }
    }
}

impl Store for Database {
    /// Inserts or replaces a batch. The batch is atomic: any invalid entry (duplicate or
    /// existing id, wrong dimension, NaN/inf, bad id, oversized metadata or document) rejects
    /// the whole batch and writes nothing. Documents live in `metadata.db` and follow their row
    /// through delete, upsert and compaction.
    fn write(&self, request: &Write<'_>) -> Result<()> {
        self.write_batch(request)
    }

    /// Deletes `ids`; with [`crate::Missing::Skip`], unknown ids are skipped under the same
    /// writer lock that deletes the others, so a concurrent delete cannot fail the call.
    fn remove(&self, request: &Delete<'_>) -> Result<usize> {
        self.delete_rows(request)
    }

    /// Changes existing records (see [`Update`]): metadata and documents in place (the row
    /// and its vector stay), a new vector as a new row replacing the old one. Atomic.
    fn update(&self, request: &Update<'_>) -> Result<()> {
        self.update_rows(request)
    }

    /// Live records matching the filter, in insertion (row) order.
    fn records(&self, request: &Select<'_>) -> Result<Vec<Record>> {
        self.select_records(request)
    }

    fn count_matching(&self, filter: &Filter) -> Result<u64> {
        self.count_where(filter)
    }

    /// Indexes metadata field `field` (a dotted path): pending writes are committed first, then
    /// the index is built from every live row in one durable transaction. Indexing a field
    /// already indexed does nothing.
    fn create_field_index(&self, field: &str) -> Result<()> {
        check_field_name(field)?;
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        if w.field_indexes.contains(field) {
            return Ok(());
        }
        self.commit_locked(&mut w)?;
        if let Some(built) = self.meta.create_field_index(field)? {
            let _state = self.ids_write();
            Arc::make_mut(&mut w.field_indexes).add_field(field.to_owned(), built);
            self.published.store(Arc::new(Self::snapshot_of(&w)));
        }
        Ok(())
    }

    /// Drops the index of `field`, durably; false if there was none.
    fn drop_field_index(&self, field: &str) -> Result<bool> {
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        if !w.field_indexes.contains(field) {
            return Ok(false);
        }
        self.meta.drop_field_index(field)?;
        let _state = self.ids_write();
        Arc::make_mut(&mut w.field_indexes).remove_field(field);
        self.published.store(Arc::new(Self::snapshot_of(&w)));
        Ok(true)
    }

    fn field_indexes(&self) -> Result<Vec<String>> {
        Ok(self.published.load().field_indexes.fields())
    }

    fn create_index(&self, spec: &IndexSpec) -> Result<IndexInfo> {
        self.create_vector_index(spec)
    }

    fn drop_index(&self) -> Result<bool> {
        self.drop_vector_index()
    }

    fn index_info(&self) -> Result<IndexInfo> {
        Ok(self.vector_index_info())
    }

    /// Every search path takes its scan from here: `exact` and `oversample` reach the
    /// coalesced, batch and filtered scans alike.
    fn query(&self, request: &Query<'_>) -> Result<Vec<Vec<SearchHit>>> {
        let options = ScanOptions {
            oversample: request.oversample,
            exact: request.exact,
            ef: request.ef,
        };
        search::check_options(options)?;
        if let Some(filter) = request.filter.filter(|f| !f.is_empty()) {
            return match request.queries {
                store::Queries::One(query) => {
                    self.search_where(query, 1, request.k, filter, options)
                }
                store::Queries::Batch(queries) => {
                    let Some(dim) = self.dimension() else {
                        return Ok(Vec::new());
                    };
                    let n = validate::batch_len(dim, queries)?;
                    self.search_where(queries, n, request.k, filter, options)
                }
            };
        }
        match request.queries {
            store::Queries::One(query) => Ok(vec![self.search_one(query, request.k, options)?]),
            store::Queries::Batch(queries) => self.search_many(queries, request.k, options),
        }
    }

    /// The `k` best matches for `query`, best first. `k` larger than the count returns them all;
    /// an empty database returns nothing.
    ///
    /// Concurrent calls on one handle are coalesced: a call that arrives while a scan is running
    /// waits for it and is answered, with the others that arrived meanwhile, by one batch scan
    /// (see `OpenOptions::coalesce_searches`). A lone call starts its scan at once.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<SearchHit>> {
        self.search_one(query, k, ScanOptions::default())
    }

    /// The `k` best matches for each of the queries in `queries` (back to back, each of the
    /// database's dimension). Much cheaper per query than separate searches: rows are read once
    /// per group of queries.
    fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>> {
        self.search_many(queries, k, ScanOptions::default())
    }

    /// The record stored under `id`, or `None`.
    fn get(&self, id: &str) -> Result<Option<Record>> {
        let ids = self.ids_read();
        let Some(row) = ids.ids.row(id) else {
            return Ok(None);
        };
        let snap = self.published.load_full();
        let (Some(rows), Some(dim)) = (&snap.rows, snap.dim) else {
            return Ok(None);
        };
        rows.check_backed()?;
        let Some(data) = rows.read_row(row)? else {
            return Ok(None);
        };
        let vector = data[..dim as usize].to_vec();
        let metadata = self.row_metadata(&ids.pending, row)?;
        let document = self.row_document(&ids.pending, row)?;
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
            let Some(row) = state.ids.row(id) else {
                continue;
            };
            match state.pending.document(row) {
                Some(doc) => out[i] = doc.map(str::to_owned),
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
        // A reader has nothing to make durable.
        if w.read_only {
            return Ok(());
        }
        w.check()?;
        self.commit_locked(&mut w)
    }

    /// Rewrites the database without deleted rows. Crash-safe: a crash at any point leaves the
    /// old or the new database (the redb commit that records the new rows is the switch).
    /// Row numbers change; ids do not.
    fn compact(&self) -> Result<()> {
        self.compact_all()
    }

    fn coalesce_stats(&self) -> Option<CoalesceStats> {
        Some(Database::coalesce_stats(self))
    }
}
