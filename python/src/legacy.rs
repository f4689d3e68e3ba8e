//! `srvdb.SvDBPython`: the original SrvDB Python API, kept call-for-call so existing programs
//! run unchanged. New code should prefer `srvdb.open`.

use crate::convert::{Ef, K};
use crate::database::options;
use crate::handle::{hit_tuples, Handle, Scan, WriteArgs};
use pyo3::prelude::*;
use srvdb::{Metadata, WriteMode};
use std::path::PathBuf;

/// A search's options from the original API's one keyword, `ef`.
fn scan(ef: Option<Ef>) -> Scan {
    Scan {
        ef: ef.map(|e| e.0),
        ..Scan::default()
    }
}

/// The original SrvDB API: ``SvDBPython(path)`` opens (or creates) the database in directory
/// ``path``; its dimension is fixed by the first ``add``, its metric is cosine.
///
/// Metadata is a string per record, JSON or not, and ``get`` returns exactly that string.
#[pyclass(frozen, module = "srvdb", name = "SvDBPython")]
pub(crate) struct SvDBPython {
    handle: Handle,
}

#[pymethods]
impl SvDBPython {
    #[new]
    #[pyo3(signature = (path, *, backend = "native"))]
    fn new(py: Python<'_>, path: PathBuf, backend: &str) -> PyResult<Self> {
        let options = options(py, None, None)?;
        Ok(SvDBPython {
            handle: Handle::open(py, path, false, options, backend, None, false)?,
        })
    }

    /// Adds records: ``ids`` (str), ``embeddings`` (lists or a NumPy array, one vector per
    /// id), ``metadatas`` (one string per id, JSON or plain text; or None). Atomic: a
    /// duplicate id, a wrong dimension or a NaN rejects the whole batch.
    #[pyo3(signature = (ids, embeddings, metadatas = None))]
    fn add(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        embeddings: &Bound<'_, PyAny>,
        metadatas: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let args = WriteArgs {
            ids,
            embeddings: Some(embeddings),
            metadatas,
            documents: None,
        };
        self.handle.write(py, WriteMode::Add, args, Some(false))
    }

    /// The ``k`` nearest records to ``query`` as ``[(id, score), ...]``, best first
    /// (cosine similarity). ``ef``: with an HNSW index (made through ``srvdb.open``), the
    /// candidates kept during the graph traversal (1 to 10000; None: the default).
    #[pyo3(
        signature = (query, k = K(10), *, ef = None),
        text_signature = "(self, query, k=10, *, ef=None)"
    )]
    fn search(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: K,
        ef: Option<Ef>,
    ) -> PyResult<Vec<(String, f64)>> {
        Ok(hit_tuples(self.handle.search(
            py,
            query,
            k.0,
            None,
            scan(ef),
        )?))
    }

    /// ``search`` for many queries at once: a list of result lists, one per query.
    #[pyo3(
        signature = (queries, k = K(10), *, ef = None),
        text_signature = "(self, queries, k=10, *, ef=None)"
    )]
    fn search_batch(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: K,
        ef: Option<Ef>,
    ) -> PyResult<Vec<Vec<(String, f64)>>> {
        let found = self.handle.search_batch(py, queries, k.0, None, scan(ef))?;
        Ok(found.into_iter().map(hit_tuples).collect())
    }

    /// The metadata string stored with ``id``, exactly as given, or None (unknown id, or no
    /// metadata).
    fn get(&self, py: Python<'_>, id: &str) -> PyResult<Option<String>> {
        Ok(self
            .handle
            .get(py, id)?
            .and_then(|r| r.metadata)
            .map(|m| match m {
                Metadata::Json(s) | Metadata::Text(s) => s,
            }))
    }

    /// Number of records.
    fn count(&self, py: Python<'_>) -> PyResult<u64> {
        self.handle.count(py)
    }

    /// Deletes the records with these ids (one str or a list) and persists. Ids that do not
    /// exist are skipped; returns how many records were deleted.
    fn delete(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.handle.delete_existing_durably(py, ids)
    }

    /// Every id, in insertion order.
    fn get_all_ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.handle.ids(py)
    }

    /// Makes every change so far durable.
    fn persist(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.persist(py)
    }

    /// Commits and closes the database (also done when the object is garbage-collected).
    /// Raises ``PoisonedError`` if an earlier write failed midway: the writes since the last
    /// commit are lost.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.close(py)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.handle.count(py)? as usize)
    }

    fn __contains__(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.handle.contains(py, id)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the database. An exception raised in the ``with`` block propagates (a failure
    /// to close is added to it as a note); otherwise a failure to close is raised.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc_value: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let _ = (exc_type, traceback);
        self.handle.exit(py, exc_value)
    }

    fn __repr__(&self) -> String {
        format!(
            "srvdb.SvDBPython({:?})",
            self.handle.path().display().to_string()
        )
    }
}
