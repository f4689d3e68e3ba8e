//! What both Python classes hold: an open engine behind a close-able slot, and the
//! operations they share. Every call that scans, writes or syncs runs with the GIL released
//! (`Python::detach`), so Python threads search in parallel and keep running during writes.

use crate::backend::{self, BackendKind, OpenError, Place};
use crate::convert;
use crate::errors::{self, EngineResultExt};
use crate::progress::Bar;
use pyo3::prelude::*;
use srvdb::quant::{IndexInfo, IndexSpec};
use srvdb::store::{str_refs, Delete, Query, Select, Update, Write, WriteMode};
use srvdb::text::{TextDatabase, TextHit};
use srvdb::{Filter, OpenOptions, SearchHit, Store};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// An open engine: bare, or inside the text layer when the database was opened with an
/// embedder. Text writes and queries go through `srvdb::text::TextDatabase`, the same code as
/// the Rust API and the CLI; everything else goes to the engine (`Deref` to `dyn Store`).
#[derive(Clone)]
pub(crate) enum Engine {
    Vectors(Arc<dyn Store>),
    Text(Arc<TextDatabase<dyn Store>>),
}

impl std::ops::Deref for Engine {
    type Target = dyn Store;

    fn deref(&self) -> &(dyn Store + 'static) {
        match self {
            Engine::Vectors(store) => &**store,
            Engine::Text(text) => text.database(),
        }
    }
}

pub(crate) struct Handle {
    /// `None` once closed. Each call clones the engine (an `Arc`) under a short read lock and
    /// works on its clone, so `close` never waits for a running search.
    slot: RwLock<Option<Engine>>,
    path: PathBuf,
    kind: BackendKind,
    /// What it was opened with: `refresh` opens the database again with the same.
    options: OpenOptions,
}

/// The Python arguments of a write (`add`, `upsert`), as given.
pub(crate) struct WriteArgs<'a, 'py> {
    pub(crate) ids: &'a Bound<'py, PyAny>,
    pub(crate) embeddings: Option<&'a Bound<'py, PyAny>>,
    pub(crate) metadatas: Option<&'a Bound<'py, PyAny>>,
    pub(crate) documents: Option<&'a Bound<'py, PyAny>>,
}

/// How a search uses the vector index: `oversample` candidates per hit before exact
/// rescoring, `ef` candidates during a graph traversal (`None`: the engine's defaults), or
/// `exact` to force the f32 scan.
pub(crate) type Scan = srvdb::quant::index::ScanOptions;

/// A model to open a database with: its recorded name and its folder.
pub(crate) struct ModelChoice {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
}

fn open_error(py: Python<'_>, e: OpenError) -> PyErr {
    match e {
        OpenError::Engine(e) => errors::engine(py, e),
        OpenError::Unavailable(message) => {
            errors::raise(py, errors::Kind::BackendUnavailable, message, &[])
        }
    }
}

impl Handle {
    /// Opens the database in directory `path`, or in memory when `in_memory` (then `path` is
    /// only its name in messages); with `defer_syncs`, a directory opened with its syncs
    /// deferred (native, for writing; see `Place::DirectoryDeferringSyncs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        py: Python<'_>,
        path: PathBuf,
        in_memory: bool,
        mut options: OpenOptions,
        backend: &str,
        model: Option<ModelChoice>,
        defer_syncs: bool,
    ) -> PyResult<Self> {
        let Some(kind) = BackendKind::parse(backend) else {
            return Err(errors::invalid(
                py,
                format!("unknown backend {backend:?}: use \"native\" or \"wasm\""),
                None,
            ));
        };
        if defer_syncs && (in_memory || options.read_only || kind != BackendKind::Native) {
            return Err(errors::invalid(
                py,
                "_defer_syncs is for a directory opened for writing with the native backend"
                    .to_owned(),
                None,
            ));
        }
        if in_memory && kind == BackendKind::Wasm {
            // Before the model is loaded, which takes a while.
            return Err(errors::engine(py, backend::wasm_in_memory()));
        }
        #[cfg(feature = "wasm")]
        if kind == BackendKind::Wasm {
            backend::wasm::find_packaged(py);
        }
        let encoder = match model {
            Some(m) => Some(
                py.detach(|| crate::text::load(kind, &m.dir, &m.name))
                    .map_err(|e| open_error(py, e))?,
            ),
            None => None,
        };
        if let Some(encoder) = &encoder {
            let spec = encoder.spec();
            if options.dimension.is_some_and(|d| d != spec.dimension) {
                return Err(errors::invalid(
                    py,
                    format!("dim given with embedder {spec}: give no dim, or the embedder's"),
                    None,
                ));
            }
            options = options.with_embedder(spec);
        }
        let opened = py.detach(|| {
            let place = if in_memory {
                Place::Memory
            } else if defer_syncs {
                Place::DirectoryDeferringSyncs(&path)
            } else {
                Place::Directory(&path)
            };
            let store = backend::open(kind, place, options.clone())?;
            Ok(match encoder {
                Some(encoder) => Engine::Text(Arc::new(TextDatabase::new(store, encoder)?)),
                None => Engine::Vectors(Arc::from(store)),
            })
        });
        match opened {
            Ok(engine) => Ok(Handle {
                slot: RwLock::new(Some(engine)),
                path,
                kind,
                options,
            }),
            Err(e) => Err(open_error(py, e)),
        }
    }

    /// The text layer, or `InvalidInputError` saying how to open the database with an
    /// embedder (`what` names the operation that needs one).
    fn text(&self, py: Python<'_>, what: &str) -> PyResult<Arc<TextDatabase<dyn Store>>> {
        match self.store(py)? {
            Engine::Text(text) => Ok(text),
            Engine::Vectors(_) => Err(errors::invalid(
                py,
                format!(
                    "{what} needs a text embedder: open the database with srvdb.open(path, embedder=\"all-MiniLM-L6-v2\")"
                ),
                None,
            )),
        }
    }

    /// The name of the embedder the database recorded, if any.
    pub(crate) fn recorded_embedder(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let spec = self.store(py)?.embedder().or_raise(py)?;
        Ok(spec.map(|s| s.name))
    }

    /// Embeds `texts` without the GIL, with a progress bar as `progress` asks.
    pub(crate) fn embed(
        &self,
        py: Python<'_>,
        texts: &[String],
        progress: Option<bool>,
    ) -> PyResult<Vec<f32>> {
        let text = self.text(py, "embedding text")?;
        let mut bar = Bar::new(py, texts.len(), progress, "embedding");
        let embedded = py.detach(|| text.embed_with_progress(texts, &mut |done| bar.advance(done)));
        bar.close(py);
        embedded.or_raise(py)
    }

    /// Embeds `texts` and returns the `k` best hits of each with their documents, among the
    /// records `filter` matches.
    pub(crate) fn query(
        &self,
        py: Python<'_>,
        texts: &[String],
        k: usize,
        filter: Option<&Filter>,
        scan: Scan,
    ) -> PyResult<Vec<Vec<TextHit>>> {
        let text = self.text(py, "query")?;
        py.detach(|| text.query_with(texts, k, filter, scan))
            .or_raise(py)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn kind(&self) -> BackendKind {
        self.kind
    }

    pub(crate) fn is_read_only(&self) -> bool {
        self.options.read_only
    }

    /// A read-only handle's `refresh`: opens the database at its path again (at its newest
    /// commit; refused while a writer is open) and swaps it in; calls
    /// already running finish on the old engine. Text databases keep their loaded model.
    pub(crate) fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        if !self.options.read_only {
            return Err(errors::invalid(
                py,
                "refresh() is for handles opened with read_only=True: a writer already sees \
                 every commit"
                    .to_owned(),
                None,
            ));
        }
        let old = self.store(py)?;
        let (kind, path, options) = (self.kind, self.path.clone(), self.options.clone());
        let fresh = py
            .detach(|| -> Result<Engine, OpenError> {
                let store = backend::open(kind, Place::Directory(&path), options)?;
                Ok(match &old {
                    Engine::Text(text) => {
                        Engine::Text(Arc::new(TextDatabase::new(store, text.embedder().clone())?))
                    }
                    Engine::Vectors(_) => Engine::Vectors(Arc::from(store)),
                })
            })
            .map_err(|e| open_error(py, e))?;
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            // Closed meanwhile: the fresh engine is dropped, releasing its lock.
            return Err(errors::closed(py, &self.path));
        }
        *slot = Some(fresh);
        Ok(())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// The open engine, or `srvdb.Error` if the handle was closed.
    pub(crate) fn store(&self, py: Python<'_>) -> PyResult<Engine> {
        self.slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| errors::closed(py, &self.path))
    }

    /// Commits and releases the database (its directory lock too). Closing twice is a no-op.
    /// If other threads are still inside a call, their calls finish on the engine, which is
    /// committed now and released when the last of them returns. A poisoned engine (an
    /// earlier write failed midway) gives its `Poisoned` error, and the handle is closed
    /// all the same.
    pub(crate) fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.slot.write().unwrap_or_else(|p| p.into_inner()).take();
        let Some(store) = taken else {
            return Ok(());
        };
        // Errors surface from the commit; dropping the last reference then releases the
        // engine (and its lock) without a further commit to fail.
        py.detach(move || {
            let committed = store.persist();
            drop(store);
            committed
        })
        .or_raise(py)
    }

    /// `__exit__` of both classes: closes the handle. With no exception leaving the `with`
    /// block (`exc_value` is None), a failure to close is raised. Otherwise that exception must
    /// propagate unchanged, so a failure to close is only added to it as a note (Python 3.11+)
    /// rather than raised in its place.
    pub(crate) fn exit(&self, py: Python<'_>, exc_value: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Err(close_error) = self.close(py) else {
            return Ok(false);
        };
        if exc_value.is_none() {
            return Err(close_error);
        }
        if exc_value.hasattr(pyo3::intern!(py, "add_note"))? {
            let class = close_error
                .get_type(py)
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "srvdb.Error".to_owned());
            let note = format!(
                "closing the database also failed ({class}): {}",
                close_error.value(py)
            );
            exc_value.call_method1(pyo3::intern!(py, "add_note"), (note,))?;
        }
        Ok(false)
    }

    pub(crate) fn dimension(&self, py: Python<'_>) -> PyResult<Option<u32>> {
        self.store(py)?.dimension().or_raise(py)
    }

    pub(crate) fn count(&self, py: Python<'_>) -> PyResult<u64> {
        self.store(py)?.count().or_raise(py)
    }

    /// Live records matching `filter` (all of them without one).
    pub(crate) fn count_matching(&self, py: Python<'_>, filter: Option<&Filter>) -> PyResult<u64> {
        let store = self.store(py)?;
        match filter {
            Some(filter) => py.detach(|| store.count_matching(filter)).or_raise(py),
            None => store.count().or_raise(py),
        }
    }

    /// Records matching `filter` in insertion order, `offset` of them skipped, at most `limit`.
    pub(crate) fn records(
        &self,
        py: Python<'_>,
        filter: Option<&Filter>,
        limit: Option<usize>,
        offset: usize,
    ) -> PyResult<Vec<srvdb::Record>> {
        let store = self.store(py)?;
        let mut select = Select::all().offset(offset);
        if let Some(filter) = filter {
            select = select.filter(filter);
        }
        if let Some(limit) = limit {
            select = select.limit(limit);
        }
        py.detach(|| store.records(&select)).or_raise(py)
    }

    pub(crate) fn create_field_index(&self, py: Python<'_>, field: &str) -> PyResult<()> {
        let store = self.store(py)?;
        py.detach(|| store.create_field_index(field)).or_raise(py)
    }

    pub(crate) fn drop_field_index(&self, py: Python<'_>, field: &str) -> PyResult<bool> {
        let store = self.store(py)?;
        py.detach(|| store.drop_field_index(field)).or_raise(py)
    }

    pub(crate) fn field_indexes(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let store = self.store(py)?;
        py.detach(|| store.field_indexes()).or_raise(py)
    }

    pub(crate) fn create_index(&self, py: Python<'_>, spec: &IndexSpec) -> PyResult<IndexInfo> {
        let store = self.store(py)?;
        py.detach(|| store.create_index(spec)).or_raise(py)
    }

    pub(crate) fn drop_index(&self, py: Python<'_>) -> PyResult<bool> {
        let store = self.store(py)?;
        py.detach(|| store.drop_index()).or_raise(py)
    }

    pub(crate) fn index_info(&self, py: Python<'_>) -> PyResult<IndexInfo> {
        let store = self.store(py)?;
        py.detach(|| store.index_info()).or_raise(py)
    }

    pub(crate) fn contains(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(id) = id.extract::<String>() else {
            return Ok(false);
        };
        self.store(py)?.contains(&id).or_raise(py)
    }

    pub(crate) fn ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let store = self.store(py)?;
        py.detach(|| store.ids()).or_raise(py)
    }

    /// Converts and copies a batch with the GIL held, then writes the copy without it (documents
    /// without embeddings: see `write_documents`). Lengths, NaN, ids and the dimension are checked
    /// by the engine, so both backends reject a bad batch with the same message.
    pub(crate) fn write(
        &self,
        py: Python<'_>,
        mode: WriteMode,
        args: WriteArgs<'_, '_>,
        progress: Option<bool>,
    ) -> PyResult<()> {
        let store = self.store(py)?;
        let ids = convert::ids(args.ids)?;
        let embeddings = args.embeddings.filter(|e| !e.is_none());
        let documents = match args.documents.filter(|d| !d.is_none()) {
            Some(d) => convert::texts(d, "documents")?,
            None => Vec::new(),
        };
        let metas = convert::metadatas(args.metadatas)?;
        let matrix = match embeddings {
            Some(e) => Some(embeddings_for(py, &*store, e, ids.len())?),
            None if !documents.is_empty() => {
                return self.write_documents(py, mode, &ids, &documents, &metas, progress)
            }
            None if ids.is_empty() => None,
            None => {
                return Err(errors::invalid(
                    py,
                    "pass embeddings, or documents with a database opened with an embedder".into(),
                    None,
                ))
            }
        };
        let vectors = matrix.as_ref().map_or(&[][..], |m| m.as_slice());
        let id_refs = str_refs(&ids);
        let doc_refs: Vec<Option<&str>> = documents.iter().map(|d| Some(d.as_str())).collect();
        let request = Write::new(mode, &id_refs, vectors)
            .metadatas(&metas)
            .documents(&doc_refs);
        py.detach(|| store.write(&request)).or_raise(py)
    }

    /// Embeds `documents` and writes them, through the text layer
    /// (`TextDatabase::write_with_progress`, as the Rust API and the CLI do), without the GIL
    /// and with a progress bar as `progress` asks.
    fn write_documents(
        &self,
        py: Python<'_>,
        mode: WriteMode,
        ids: &[String],
        documents: &[String],
        metas: &[Option<srvdb::Metadata>],
        progress: Option<bool>,
    ) -> PyResult<()> {
        let text = self.text(py, "embedding text")?;
        let mut bar = Bar::new(py, documents.len(), progress, "embedding");
        let written = py.detach(|| {
            text.write_with_progress(mode, ids, documents, metas, &mut |done| bar.advance(done))
        });
        bar.close(py);
        written.or_raise(py)
    }

    /// Deletes `ids` (all of them matching `filter`, if given), or without ids every record
    /// `filter` matches. Strict: an unknown id rejects the whole call (`NotFoundError`).
    /// Neither ids nor a filter is an `InvalidInputError`, never "delete everything".
    pub(crate) fn delete(
        &self,
        py: Python<'_>,
        ids: Option<&Bound<'_, PyAny>>,
        filter: Option<&Filter>,
    ) -> PyResult<usize> {
        let store = self.store(py)?;
        let ids = match ids.filter(|i| !i.is_none()) {
            Some(ids) => Some(convert::ids_or_one(ids)?),
            None => None,
        };
        let id_refs = ids.as_deref().map(str_refs);
        let request = match (&id_refs, filter) {
            (Some(ids), None) => Delete::ids(ids),
            (Some(ids), Some(filter)) => Delete::ids(ids).filter(filter),
            (None, Some(filter)) => Delete::matching(filter),
            (None, None) => {
                return Err(errors::invalid(
                    py,
                    "delete needs ids, where or where_document; to delete every record pass \
                     where={}"
                        .to_owned(),
                    None,
                ))
            }
        };
        py.detach(|| store.remove(&request)).or_raise(py)
    }

    /// Changes what is given of existing records (see `srvdb::store::Update`). On a text
    /// database, documents given without embeddings are embedded, so vector and document stay
    /// in step.
    pub(crate) fn update(&self, py: Python<'_>, args: WriteArgs<'_, '_>) -> PyResult<()> {
        let engine = self.store(py)?;
        let ids = convert::ids_or_one(args.ids)?;
        let metas = match args.metadatas.filter(|m| !m.is_none()) {
            Some(m) => Some(convert::metadatas(Some(m))?),
            None => None,
        };
        let documents = match args.documents.filter(|d| !d.is_none()) {
            Some(d) => Some(convert::texts(d, "documents")?),
            None => None,
        };
        let mut vectors = match args.embeddings.filter(|e| !e.is_none()) {
            Some(e) => Some(
                embeddings_for(py, &*engine, e, ids.len())?
                    .as_slice()
                    .to_vec(),
            ),
            None => None,
        };
        if let (None, Some(documents), Engine::Text(text)) = (&vectors, &documents, &engine) {
            if documents.len() != ids.len() {
                let err = srvdb::Error::InvalidInput {
                    reason: format!(
                        "{} documents for {} ids: pass one per id",
                        documents.len(),
                        ids.len()
                    ),
                    index: None,
                };
                return Err(errors::engine(py, err));
            }
            let text = text.clone();
            vectors = Some(
                py.detach(|| text.embed_with_progress(documents, &mut |_| {}))
                    .or_raise(py)?,
            );
        }
        let id_refs = str_refs(&ids);
        let doc_refs: Option<Vec<Option<&str>>> = documents
            .as_ref()
            .map(|d| d.iter().map(|d| Some(d.as_str())).collect());
        let mut request = Update::ids(&id_refs);
        if let Some(vectors) = &vectors {
            request = request.vectors(vectors);
        }
        if let Some(metas) = &metas {
            request = request.metadatas(metas);
        }
        if let Some(docs) = &doc_refs {
            request = request.documents(docs);
        }
        py.detach(|| engine.update(&request)).or_raise(py)
    }

    /// Deletes those of `ids` that exist, then persists. Returns how many were deleted.
    pub(crate) fn delete_existing_durably(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let store = self.store(py)?;
        let ids = convert::ids_or_one(ids)?;
        py.detach(|| {
            let deleted = store.remove(&Delete::ids(&str_refs(&ids)).skip_missing())?;
            store.persist()?;
            Ok(deleted)
        })
        .or_raise(py)
    }

    pub(crate) fn get(&self, py: Python<'_>, id: &str) -> PyResult<Option<srvdb::Record>> {
        let store = self.store(py)?;
        py.detach(|| store.get(id)).or_raise(py)
    }

    pub(crate) fn search(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: usize,
        filter: Option<&Filter>,
        scan: Scan,
    ) -> PyResult<Vec<SearchHit>> {
        let store = self.store(py)?;
        let query = convert::vector(query, "query")?;
        let mut request = Query::one(query.as_slice(), k).options(scan);
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        // k = 0 still goes to the engine, which validates the query and answers `[]`.
        let found = py.detach(|| store.query(&request)).or_raise(py)?;
        Ok(found.into_iter().next().unwrap_or_default())
    }

    pub(crate) fn search_batch(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: usize,
        filter: Option<&Filter>,
        scan: Scan,
    ) -> PyResult<Vec<Vec<SearchHit>>> {
        let store = self.store(py)?;
        let expected = store.dimension().or_raise(py)?.map(|d| d as usize);
        let queries = convert::matrix(queries, "queries", expected)?;
        let n = queries.rows;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut request = Query::batch(queries.as_slice(), k).options(scan);
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        let mut found = py.detach(|| store.query(&request)).or_raise(py)?;
        // An empty database of unknown dimension answers no lists at all: one empty per query.
        found.resize_with(n, Vec::new);
        Ok(found)
    }

    /// Times `iterations` searches inside Rust, with no Python in the loop (for the binding
    /// overhead benchmark). Returns seconds per search.
    pub(crate) fn search_timings(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: usize,
        iterations: usize,
    ) -> PyResult<Vec<f64>> {
        let store = self.store(py)?;
        let query = convert::vector(query, "query")?;
        let request = Query::one(query.as_slice(), k);
        py.detach(|| {
            let mut out = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let start = std::time::Instant::now();
                let hits = store.query(&request)?;
                out.push(start.elapsed().as_secs_f64());
                std::hint::black_box(hits);
            }
            Ok(out)
        })
        .or_raise(py)
    }

    pub(crate) fn persist(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store(py)?;
        py.detach(|| store.persist()).or_raise(py)
    }

    pub(crate) fn coalesce_stats(&self, py: Python<'_>) -> PyResult<Option<(u64, u64)>> {
        let stats = self.store(py)?.coalesce_stats();
        Ok(stats.map(|s| (s.queries, s.scans)))
    }

    pub(crate) fn compact(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store(py)?;
        py.detach(|| store.compact()).or_raise(py)
    }
}

/// Search hits as `(id, score)` tuples.
pub(crate) fn hit_tuples(hits: Vec<SearchHit>) -> Vec<(String, f64)> {
    hits.into_iter()
        .map(|h| (h.id, f64::from(h.score)))
        .collect()
}

/// `embeddings` as one vector per id of a batch of `ids` ids, checked against `store`'s
/// dimension. Only the array knows its rows (the engine sees the values back to back), so a
/// count that is not one per id is reported here, with the engine's own error.
fn embeddings_for<'py>(
    py: Python<'py>,
    store: &dyn Store,
    embeddings: &Bound<'py, PyAny>,
    ids: usize,
) -> PyResult<convert::Matrix<'py>> {
    let expected = store.dimension().or_raise(py)?.map(|d| d as usize);
    let matrix = convert::matrix(embeddings, "embeddings", expected)?;
    if matrix.rows != ids {
        let err = srvdb::Error::InvalidInput {
            reason: format!(
                "{} vectors for {ids} ids: pass one vector per id",
                matrix.rows
            ),
            index: None,
        };
        return Err(errors::engine(py, err));
    }
    Ok(matrix)
}
