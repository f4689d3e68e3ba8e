//! What both Python classes hold: an open engine behind a close-able slot, and the
//! operations they share. Every call that scans, writes or syncs runs with the GIL released
//! (`Python::detach`), so Python threads search in parallel and keep running during writes.

use crate::backend::{Backend, BackendKind, EngineError, OpenError};
use crate::convert;
use crate::errors::{self, EngineResultExt};
use crate::text::TextEncoder;
use pyo3::prelude::*;
use srvdb::{OpenOptions, SearchHit};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// One query's hits with their documents.
pub(crate) type TextHits = Vec<(SearchHit, Option<String>)>;

/// Which write a batch is.
#[derive(Clone, Copy)]
pub(crate) enum Write {
    Add,
    Upsert,
}

pub(crate) struct Handle {
    /// `None` once closed. Each call clones the `Arc` under a short read lock and works on
    /// its clone, so `close` never waits for a running search.
    slot: RwLock<Option<Arc<Backend>>>,
    path: PathBuf,
    kind: BackendKind,
    /// The text embedder given at open, if any.
    encoder: Option<Arc<dyn TextEncoder>>,
}

/// A model to open a database with: its recorded name and its folder.
pub(crate) struct ModelChoice {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
}

fn open_error(py: Python<'_>, e: OpenError) -> PyErr {
    match e {
        OpenError::Engine(e) => errors::engine_call(py, e),
        OpenError::Unavailable(message) => {
            errors::raise(py, errors::Kind::BackendUnavailable, message, &[])
        }
    }
}

impl Handle {
    pub(crate) fn open(
        py: Python<'_>,
        path: PathBuf,
        mut options: OpenOptions,
        backend: &str,
        model: Option<ModelChoice>,
    ) -> PyResult<Self> {
        let Some(kind) = BackendKind::parse(backend) else {
            return Err(errors::invalid(
                py,
                format!("unknown backend {backend:?}: use \"native\" or \"wasm\""),
                None,
            ));
        };
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
        let opened = py.detach(|| Backend::open(kind, &path, options));
        match opened {
            Ok(backend) => Ok(Handle {
                slot: RwLock::new(Some(Arc::new(backend))),
                path,
                kind,
                encoder,
            }),
            Err(e) => Err(open_error(py, e)),
        }
    }

    /// The embedder given at open, or `InvalidInputError` saying how to give one.
    pub(crate) fn encoder(&self, py: Python<'_>, what: &str) -> PyResult<Arc<dyn TextEncoder>> {
        self.encoder.clone().ok_or_else(|| {
            errors::invalid(
                py,
                format!(
                    "{what} needs a text embedder: open the database with srvdb.open(path, embedder=\"all-MiniLM-L6-v2\")"
                ),
                None,
            )
        })
    }

    /// The name of the embedder the database recorded, if any.
    pub(crate) fn recorded_embedder(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let backend = self.backend(py)?;
        let spec = backend.engine().embedder().or_raise(py)?;
        Ok(spec.map(|s| s.name))
    }

    /// Embeds `texts` without the GIL.
    pub(crate) fn embed(&self, py: Python<'_>, texts: &[String]) -> PyResult<Vec<f32>> {
        let encoder = self.encoder(py, "embedding text")?;
        py.detach(|| encoder.embed(texts)).or_raise(py)
    }

    /// Embeds `texts` and returns the `k` best hits of each with their documents.
    pub(crate) fn query(
        &self,
        py: Python<'_>,
        texts: &[String],
        k: usize,
    ) -> PyResult<Vec<TextHits>> {
        let encoder = self.encoder(py, "query")?;
        let backend = self.backend(py)?;
        py.detach(|| {
            let vectors = encoder.embed(texts)?;
            let engine = backend.engine();
            let found = engine.search_batch(&vectors, k)?;
            let mut out = Vec::with_capacity(texts.len());
            for hits in found {
                let ids: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
                let docs = engine.documents(&ids)?;
                out.push(hits.into_iter().zip(docs).collect());
            }
            out.resize_with(texts.len(), Vec::new);
            Ok::<_, EngineError>(out)
        })
        .or_raise(py)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn kind(&self) -> BackendKind {
        self.kind
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// The open engine, or `srvdb.Error` if the handle was closed.
    pub(crate) fn backend(&self, py: Python<'_>) -> PyResult<Arc<Backend>> {
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
        let Some(backend) = taken else {
            return Ok(());
        };
        py.detach(move || match Arc::try_unwrap(backend) {
            Ok(backend) => backend.close(),
            Err(shared) => shared.engine().persist(),
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
        self.backend(py)?.engine().dimension().or_raise(py)
    }

    pub(crate) fn count(&self, py: Python<'_>) -> PyResult<u64> {
        self.backend(py)?.engine().count().or_raise(py)
    }

    pub(crate) fn contains(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(id) = id.extract::<&str>() else {
            return Ok(false);
        };
        self.backend(py)?.engine().contains(id).or_raise(py)
    }

    pub(crate) fn ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let backend = self.backend(py)?;
        py.detach(|| backend.engine().ids()).or_raise(py)
    }

    /// Validates and copies a batch with the GIL held, then writes the copy without.
    pub(crate) fn write(
        &self,
        py: Python<'_>,
        mode: Write,
        ids: &Bound<'_, PyAny>,
        embeddings: Option<&Bound<'_, PyAny>>,
        metadatas: Option<&Bound<'_, PyAny>>,
        documents: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let backend = self.backend(py)?;
        let engine = backend.engine();
        let ids = convert::ids(ids)?;
        let expected = engine.dimension().or_raise(py)?.map(|d| d as usize);
        let embeddings = embeddings.filter(|e| !e.is_none());
        let documents = match documents.filter(|d| !d.is_none()) {
            Some(d) => Some(convert::texts(d, "documents")?),
            None => None,
        };
        if let Some(docs) = &documents {
            if docs.len() != ids.len() {
                return Err(errors::invalid(
                    py,
                    format!(
                        "{} ids but {} documents: pass one document per id",
                        ids.len(),
                        docs.len()
                    ),
                    None,
                ));
            }
        }
        // Vectors given, or embedded from the documents (without the GIL).
        let (given, embedded) = match (embeddings, &documents) {
            (Some(e), _) => (Some(convert::matrix(e, "embeddings", expected)?), None),
            (None, Some(docs)) => (None, Some(self.embed(py, docs)?)),
            (None, None) => {
                return Err(errors::invalid(
                    py,
                    "pass embeddings, or documents with a database opened with an embedder".into(),
                    None,
                ))
            }
        };
        let rows = match (&given, &embedded) {
            (Some(v), _) => v.rows,
            (None, Some(v)) => v.len() / expected.unwrap_or(1).max(1),
            (None, None) => 0,
        };
        if given.is_some() && rows != ids.len() {
            return Err(errors::invalid(
                py,
                format!(
                    "{} ids but {rows} embeddings: pass one embedding per id",
                    ids.len(),
                ),
                None,
            ));
        }
        let metas = convert::metadatas(metadatas)?;
        if !metas.is_empty() && metas.len() != ids.len() {
            return Err(errors::invalid(
                py,
                format!(
                    "{} ids but {} metadatas: pass one metadata per id (None for none), or no metadatas",
                    ids.len(),
                    metas.len()
                ),
                None,
            ));
        }
        if ids.is_empty() && metas.is_empty() {
            return Ok(());
        }
        let data: &[f32] = match (&given, &embedded) {
            (Some(v), _) => v.as_slice(),
            (None, Some(v)) => v,
            (None, None) => &[],
        };
        let docs: Vec<Option<String>> = documents
            .map(|d| d.into_iter().map(Some).collect())
            .unwrap_or_default();
        let upsert = matches!(mode, Write::Upsert);
        py.detach(|| {
            if docs.is_empty() {
                match mode {
                    Write::Add => engine.add(&ids, data, &metas),
                    Write::Upsert => engine.upsert(&ids, data, &metas),
                }
            } else {
                engine.add_with_documents(&ids, data, &metas, &docs, upsert)
            }
        })
        .or_raise(py)
    }

    /// Deletes `ids`. Strict: an unknown id rejects the whole call (`NotFoundError`).
    pub(crate) fn delete(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<usize> {
        let backend = self.backend(py)?;
        let ids = convert::ids_or_one(ids)?;
        py.detach(|| backend.engine().delete(&ids)).or_raise(py)
    }

    /// Deletes those of `ids` that exist, then persists. Returns how many were deleted.
    pub(crate) fn delete_existing_durably(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let backend = self.backend(py)?;
        let ids = convert::ids_or_one(ids)?;
        py.detach(|| {
            let engine = backend.engine();
            let mut attempts = 0;
            loop {
                let mut known = Vec::with_capacity(ids.len());
                for id in &ids {
                    if engine.contains(id)? {
                        known.push(id.clone());
                    }
                }
                match engine.delete(&known) {
                    Ok(n) => {
                        engine.persist()?;
                        return Ok(n);
                    }
                    // Another thread deleted one of them in between: look again.
                    Err(EngineError::Engine(srvdb::Error::NotFound { .. })) if attempts < 8 => {
                        attempts += 1
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .or_raise(py)
    }

    pub(crate) fn get(&self, py: Python<'_>, id: &str) -> PyResult<Option<srvdb::Record>> {
        let backend = self.backend(py)?;
        py.detach(|| backend.engine().get(id)).or_raise(py)
    }

    pub(crate) fn search(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: usize,
    ) -> PyResult<Vec<SearchHit>> {
        let backend = self.backend(py)?;
        let query = convert::vector(query, "query")?;
        let q = query.as_slice();
        // k = 0 still goes to the engine, which validates the query and answers `[]`.
        py.detach(|| backend.engine().search(q, k)).or_raise(py)
    }

    pub(crate) fn search_batch(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: usize,
    ) -> PyResult<Vec<Vec<SearchHit>>> {
        let backend = self.backend(py)?;
        let expected = backend
            .engine()
            .dimension()
            .or_raise(py)?
            .map(|d| d as usize);
        let queries = convert::matrix(queries, "queries", expected)?;
        let n = queries.rows;
        if n == 0 {
            return Ok(Vec::new());
        }
        let data = queries.as_slice();
        let mut found = py
            .detach(|| backend.engine().search_batch(data, k))
            .or_raise(py)?;
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
        let backend = self.backend(py)?;
        let query = convert::vector(query, "query")?;
        let q = query.as_slice();
        py.detach(|| {
            let mut out = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let start = std::time::Instant::now();
                let hits = backend.engine().search(q, k)?;
                out.push(start.elapsed().as_secs_f64());
                std::hint::black_box(hits);
            }
            Ok::<_, EngineError>(out)
        })
        .or_raise(py)
    }

    pub(crate) fn persist(&self, py: Python<'_>) -> PyResult<()> {
        let backend = self.backend(py)?;
        py.detach(|| backend.engine().persist()).or_raise(py)
    }

    pub(crate) fn coalesce_stats(&self, py: Python<'_>) -> PyResult<Option<(u64, u64)>> {
        Ok(self.backend(py)?.engine().coalesce_stats())
    }

    pub(crate) fn compact(&self, py: Python<'_>) -> PyResult<()> {
        let backend = self.backend(py)?;
        py.detach(|| backend.engine().compact()).or_raise(py)
    }
}

/// Search hits as `(id, score)` tuples.
pub(crate) fn hit_tuples(hits: Vec<SearchHit>) -> Vec<(String, f64)> {
    hits.into_iter()
        .map(|h| (h.id, f64::from(h.score)))
        .collect()
}
