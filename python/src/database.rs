//! `srvdb.open` and `srvdb.Database`: the Pythonic API.

use crate::backend::MEMORY_PATH;
use crate::convert::{self, Ef, Oversample, K};
use crate::errors::{self, EngineResultExt};
use crate::handle::{hit_tuples, Handle, ModelChoice, Scan, WriteArgs};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray, PyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use pyo3::IntoPyObjectExt;
use srvdb::quant::{HnswParams, IndexInfo, IndexKind, IndexSpec, Quantization};
use srvdb::{Metadata, Metric, OpenOptions, WriteMode};
use std::path::PathBuf;

/// A search's use of the vector index, from its Python keywords.
fn scan(oversample: Option<Oversample>, ef: Option<Ef>, exact: bool) -> Scan {
    Scan {
        oversample: oversample.map(|o| o.0),
        exact,
        ef: ef.map(|e| e.0),
    }
}

/// `create_index`'s `quantization` as given: left out, or None or a name. Left out, it is the
/// kind's default: int8 codes for `flat` (which is nothing without codes), the float32
/// vectors for `hnsw`.
enum QuantizationArg {
    KindDefault,
    Given(Option<String>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for QuantizationArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_none() {
            return Ok(QuantizationArg::Given(None));
        }
        Ok(QuantizationArg::Given(Some(obj.extract()?)))
    }
}

impl QuantizationArg {
    fn resolve(self, py: Python<'_>, kind: IndexKind) -> PyResult<Option<Quantization>> {
        match self {
            QuantizationArg::KindDefault => Ok(match kind {
                IndexKind::Flat => Some(Quantization::Int8),
                IndexKind::Hnsw => None,
            }),
            QuantizationArg::Given(name) => name
                .map(|n| n.parse::<Quantization>())
                .transpose()
                .map_err(|e| errors::engine(py, e)),
        }
    }
}

/// `index_info` as Python sees it: a dict with names, not enums.
fn index_info_dict(py: Python<'_>, info: &IndexInfo) -> PyResult<Py<PyAny>> {
    let dict = pyo3::types::PyDict::new(py);
    dict.set_item("kind", info.kind.name())?;
    dict.set_item("quantization", info.quantization.map(Quantization::name))?;
    dict.set_item("rows", info.rows)?;
    dict.set_item("bytes", info.bytes)?;
    dict.set_item("m", info.hnsw.map(|p| p.m))?;
    dict.set_item("ef_construction", info.hnsw.map(|p| p.ef_construction))?;
    dict.into_py_any(py)
}

/// Options for `open` from its Python arguments.
pub(crate) fn options(
    py: Python<'_>,
    dim: Option<&Bound<'_, PyAny>>,
    metric: Option<&str>,
) -> PyResult<OpenOptions> {
    let mut options = OpenOptions::default();
    if let Some(dim) = dim.filter(|d| !d.is_none()) {
        let bad = || {
            errors::invalid(
                py,
                format!(
                    "dim must be a positive int, got {}",
                    dim.repr().map(|r| r.to_string()).unwrap_or_default()
                ),
                None,
            )
        };
        if dim.is_instance_of::<pyo3::types::PyBool>() {
            return Err(bad());
        }
        let value: i64 = dim.extract().map_err(|_| bad())?;
        let value = u32::try_from(value).map_err(|_| bad())?;
        options = options.with_dimension(value);
    }
    if let Some(metric) = metric {
        let metric: Metric = metric.parse().map_err(|e| errors::engine(py, e))?;
        options = options.with_metric(metric);
    }
    Ok(options)
}

/// The model folder for `embedder` (a name such as ``"all-MiniLM-L6-v2"``, or a folder path):
/// `srvdb.text.model_dir` in Python finds it, unpacking the pip-installed model once.
/// A folder may be given as a ``pathlib.Path`` (any ``os.PathLike``) as well as a string.
fn model_choice(
    py: Python<'_>,
    embedder: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<ModelChoice>> {
    let Some(embedder) = embedder.filter(|e| !e.is_none()) else {
        return Ok(None);
    };
    // os.fspath: a str as it is, a PathLike's str; anything else a TypeError naming its type.
    let embedder: String = py
        .import("os")?
        .call_method1("fspath", (embedder,))?
        .extract()
        .map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(
                "embedder must be a model name or a folder (str or os.PathLike), not bytes",
            )
        })?;
    let text = py.import("srvdb.text")?;
    let dir: PathBuf = text
        .call_method1("model_dir", (embedder.as_str(),))?
        .extract()?;
    let name: String = text
        .call_method1("model_name", (embedder.as_str(),))?
        .extract()?;
    Ok(Some(ModelChoice { name, dir }))
}

/// A SrvDB database: a directory of vectors with metadata, searched exactly.
///
/// Open one with ``srvdb.open(path)``. A ``Database`` is a context manager (leaving the
/// ``with`` block commits and closes it), supports ``len(db)`` and ``id in db``, and can be
/// shared between threads: searches run in parallel with each other and with a write, without
/// the GIL.
#[pyclass(frozen, module = "srvdb", name = "Database")]
pub(crate) struct Database {
    handle: Handle,
}

#[pymethods]
impl Database {
    /// Opens (creating if needed) the database in directory ``path``. Same as ``srvdb.open``.
    #[new]
    #[allow(clippy::too_many_arguments)] // the Python signature: each keyword is an argument
    #[pyo3(signature = (path, dim = None, metric = None, backend = "native", embedder = None, *, read_only = false, auto_commit_rows = None, _defer_syncs = false))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        dim: Option<&Bound<'_, PyAny>>,
        metric: Option<&str>,
        backend: &str,
        embedder: Option<&Bound<'_, PyAny>>,
        read_only: bool,
        auto_commit_rows: Option<&Bound<'_, PyAny>>,
        _defer_syncs: bool,
    ) -> PyResult<Self> {
        let mut options = options(py, dim, metric)?;
        options.read_only = read_only;
        if let Some(rows) = auto_commit_rows.filter(|r| !r.is_none()) {
            options.auto_commit_rows = convert::non_negative(rows, "auto_commit_rows")?;
        }
        let model = model_choice(py, embedder)?;
        let in_memory = path.as_os_str() == MEMORY_PATH;
        Ok(Database {
            handle: Handle::open(py, path, in_memory, options, backend, model, _defer_syncs)?,
        })
    }

    /// Inserts a batch of records; the batch is atomic.
    ///
    /// ``ids``: a sequence of str. ``embeddings``: a 2-D NumPy float array (one row per id;
    /// copied before the GIL is released, so other threads may change it afterwards) or a
    /// sequence of vectors. ``metadatas``: ``None`` or one entry per id, each ``None``, a dict
    /// (or any JSON-serialisable value) or a str (stored exactly as given).
    ///
    /// ``documents``: ``None`` or one str per id, stored with the record (``Record.document``,
    /// and returned by ``query``). With a database opened with an ``embedder``, documents
    /// alone are enough: ``db.add(ids, documents=[...])`` embeds them.
    ///
    /// ``progress``: a progress bar while documents are embedded (drawn with tqdm, if it is
    /// installed). ``None`` shows one for 1,000 documents or more in a terminal or notebook,
    /// ``True`` always, ``False`` never.
    ///
    /// Raises ``DuplicateIdError`` if an id exists or repeats (use ``upsert``),
    /// ``DimensionMismatchError``, or ``InvalidInputError`` (NaN, lengths that disagree,
    /// neither embeddings nor documents, ...); then nothing is written.
    #[pyo3(signature = (ids, embeddings = None, metadatas = None, documents = None, *, progress = None))]
    fn add(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        embeddings: Option<&Bound<'_, PyAny>>,
        metadatas: Option<&Bound<'_, PyAny>>,
        documents: Option<&Bound<'_, PyAny>>,
        progress: Option<bool>,
    ) -> PyResult<()> {
        let args = WriteArgs {
            ids,
            embeddings,
            metadatas,
            documents,
        };
        self.handle.write(py, WriteMode::Add, args, progress)
    }

    /// Like ``add``, but an existing id is replaced (vector, metadata and document).
    #[pyo3(signature = (ids, embeddings = None, metadatas = None, documents = None, *, progress = None))]
    fn upsert(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        embeddings: Option<&Bound<'_, PyAny>>,
        metadatas: Option<&Bound<'_, PyAny>>,
        documents: Option<&Bound<'_, PyAny>>,
        progress: Option<bool>,
    ) -> PyResult<()> {
        let args = WriteArgs {
            ids,
            embeddings,
            metadatas,
            documents,
        };
        self.handle.write(py, WriteMode::Upsert, args, progress)
    }

    /// Text search: embeds ``texts`` with the database's embedder and returns the ``k`` best
    /// records of each as ``[(id, score, document), ...]``, best first (``document`` is None
    /// for records added without one). ``texts`` is one str (then one list is returned) or a
    /// sequence of str (a list of lists). Needs ``srvdb.open(..., embedder=...)``.
    ///
    /// ``where`` / ``where_document``: only records matching them are candidates (see
    /// ``search``); the hits are exactly the ``k`` best of those. ``oversample``, ``ef`` and
    /// ``exact``: as for ``search``.
    #[pyo3(
        signature = (texts, k = K(10), r#where = None, where_document = None, *, oversample = None, ef = None, exact = false),
        text_signature = "(self, texts, k=10, where=None, where_document=None, *, oversample=None, ef=None, exact=False)"
    )]
    #[allow(clippy::too_many_arguments)] // the Python signature: each keyword is an argument
    fn query(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        k: K,
        r#where: Option<&Bound<'_, PyAny>>,
        where_document: Option<&Bound<'_, PyAny>>,
        oversample: Option<Oversample>,
        ef: Option<Ef>,
        exact: bool,
    ) -> PyResult<Py<PyAny>> {
        let (texts, one) = convert::texts_or_one(texts, "texts")?;
        let filter = convert::filter(py, r#where, where_document)?;
        let scan = scan(oversample, ef, exact);
        let found = self.handle.query(py, &texts, k.0, filter.as_ref(), scan)?;
        let mut lists: Vec<Vec<(String, f64, Option<String>)>> = found
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|h| (h.id, f64::from(h.score), h.document))
                    .collect()
            })
            .collect();
        if one {
            return lists.pop().unwrap_or_default().into_py_any(py);
        }
        lists.into_py_any(py)
    }

    /// The database embedder's vectors for ``texts`` (a sequence of str), as a float32 array
    /// of shape ``(len(texts), dim)``, unit length: what ``add(documents=...)`` stores.
    /// ``progress`` as for ``add``.
    #[pyo3(signature = (texts, *, progress = None))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        progress: Option<bool>,
    ) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
        let texts = convert::texts(texts, "texts")?;
        let vectors = self.handle.embed(py, &texts, progress)?;
        let dim = if texts.is_empty() {
            self.handle.dimension(py)?.unwrap_or(0) as usize
        } else {
            vectors.len() / texts.len()
        };
        let array = Array2::from_shape_vec((texts.len(), dim), vectors)
            .map_err(|e| errors::invalid(py, e.to_string(), None))?;
        Ok(array.into_pyarray(py))
    }

    /// The name of the text embedder the database was created for (recorded in it), or None
    /// for a plain vector database. ``query`` and ``add(documents=...)`` without embeddings
    /// also need it given at open.
    #[getter]
    fn embedder(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.handle.recorded_embedder(py)
    }

    /// Deletes records and returns how many were deleted: ``ids`` (one str or a sequence),
    /// every record matching ``where`` / ``where_document``, or with both only those of the
    /// ids that match. An unknown id raises ``NotFoundError`` (a ``KeyError``) and deletes
    /// nothing. Neither ids nor a filter raises ``InvalidInputError`` rather than deleting
    /// everything; ``delete(where={})`` deletes every record.
    #[pyo3(
        signature = (ids = None, *, r#where = None, where_document = None),
        text_signature = "(self, ids=None, *, where=None, where_document=None)"
    )]
    fn delete(
        &self,
        py: Python<'_>,
        ids: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
        where_document: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let filter = convert::filter(py, r#where, where_document)?;
        self.handle.delete(py, ids, filter.as_ref())
    }

    /// Changes existing records in place; only what is given changes. ``ids``: one str or a
    /// sequence; ``metadatas``, ``documents`` (str) and ``embeddings``: one per id, as for
    /// ``add`` (a ``None`` metadata entry removes the metadata). A metadata-only update
    /// rewrites no vector. On a database opened with an ``embedder``, ``documents`` without
    /// ``embeddings`` are embedded, so each vector stays the embedding of its document.
    ///
    /// Atomic: an unknown id raises ``NotFoundError``, a bad entry ``InvalidInputError`` or
    /// ``DimensionMismatchError``; then nothing changes.
    #[pyo3(signature = (ids, metadatas = None, documents = None, embeddings = None))]
    fn update(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        metadatas: Option<&Bound<'_, PyAny>>,
        documents: Option<&Bound<'_, PyAny>>,
        embeddings: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let args = WriteArgs {
            ids,
            embeddings,
            metadatas,
            documents,
        };
        self.handle.update(py, args)
    }

    /// The records matching ``where`` / ``where_document`` (every record without them) as a
    /// list of ``Record``, in insertion order: ``offset`` of them skipped, then at most
    /// ``limit`` (all with None).
    #[pyo3(
        signature = (r#where = None, where_document = None, limit = None, offset = None),
        text_signature = "(self, where=None, where_document=None, limit=None, offset=0)"
    )]
    fn records(
        &self,
        py: Python<'_>,
        r#where: Option<&Bound<'_, PyAny>>,
        where_document: Option<&Bound<'_, PyAny>>,
        limit: Option<&Bound<'_, PyAny>>,
        offset: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Record>> {
        let filter = convert::filter(py, r#where, where_document)?;
        let limit = match limit.filter(|l| !l.is_none()) {
            Some(l) => Some(convert::non_negative(l, "limit")?),
            None => None,
        };
        let offset = match offset.filter(|o| !o.is_none()) {
            Some(o) => convert::non_negative(o, "offset")?,
            None => 0,
        };
        let found = self.handle.records(py, filter.as_ref(), limit, offset)?;
        found
            .into_iter()
            .map(|r| Record::from_engine(py, r))
            .collect()
    }

    /// How many records match ``where`` / ``where_document``; without them, ``len(db)``.
    #[pyo3(
        signature = (r#where = None, where_document = None),
        text_signature = "(self, where=None, where_document=None)"
    )]
    fn count(
        &self,
        py: Python<'_>,
        r#where: Option<&Bound<'_, PyAny>>,
        where_document: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let filter = convert::filter(py, r#where, where_document)?;
        self.handle.count_matching(py, filter.as_ref())
    }

    /// Keeps an index of metadata field ``field`` (a dotted path such as ``"author.name"``):
    /// its values and the records holding each, committed with the records, so filters on it
    /// touch only the matching records. Creating an existing index does nothing.
    fn create_field_index(&self, py: Python<'_>, field: &str) -> PyResult<()> {
        self.handle.create_field_index(py, field)
    }

    /// Drops the index of ``field``; returns False if there was none. Filters on the field
    /// still work, by scanning.
    fn drop_field_index(&self, py: Python<'_>, field: &str) -> PyResult<bool> {
        self.handle.drop_field_index(py, field)
    }

    /// The indexed metadata fields, sorted.
    fn field_indexes(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.handle.field_indexes(py)
    }

    /// Builds a vector index that searches use before rescoring their best candidates
    /// exactly, built from the records present, committed at once and kept in step with every
    /// later write, delete and ``compact``. The same index again does nothing; another
    /// replaces it. Returns ``index_info()``.
    ///
    /// ``kind="flat"``: a compressed copy of the vectors that every search scans:
    /// ``quantization="int8"`` (the default; one byte per component, 4x smaller) or
    /// ``"binary"`` (one bit, 32x smaller; coarser, so it needs more oversampling).
    ///
    /// ``kind="hnsw"``: a graph that a search traverses, visiting a few thousand records
    /// instead of all of them: on the float32 vectors (``quantization=None``, the default
    /// for ``"hnsw"``) or on int8 codes (``quantization="int8"``: 4x less memory read). ``m``: links per node (None: 16; more is more recall
    /// and memory), ``ef_construction``: candidates per insertion (None: 200; more is a better
    /// graph and slower inserts). The graph is committed with the records, so a crash leaves
    /// the last committed one, and reopening does not rebuild it.
    ///
    /// Raises ``InvalidInputError`` for an unknown kind or quantization, ``"binary"`` with
    /// ``"hnsw"``, ``m`` / ``ef_construction`` out of range or given with ``"flat"``.
    #[pyo3(
        signature = (kind = "flat", quantization = QuantizationArg::KindDefault, *, m = None, ef_construction = None),
        text_signature = "(self, kind='flat', quantization=..., *, m=None, ef_construction=None)"
    )]
    fn create_index(
        &self,
        py: Python<'_>,
        kind: &str,
        quantization: QuantizationArg,
        m: Option<&Bound<'_, PyAny>>,
        ef_construction: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let kind: IndexKind = kind.parse().map_err(|e| errors::engine(py, e))?;
        let quantization = quantization.resolve(py, kind)?;
        let info = self.handle.create_index(
            py,
            &IndexSpec {
                kind,
                quantization,
                hnsw: HnswParams::given(
                    m.map(|m| convert::non_negative(m, "m")).transpose()?,
                    ef_construction
                        .map(|e| convert::non_negative(e, "ef_construction"))
                        .transpose()?,
                ),
            },
        )?;
        index_info_dict(py, &info)
    }

    /// Drops the vector index (searches go back to the exact scan and its data is removed);
    /// returns False if there was none.
    fn drop_index(&self, py: Python<'_>) -> PyResult<bool> {
        self.handle.drop_index(py)
    }

    /// The vector index as a dict: ``kind`` (``"flat"`` or ``"hnsw"``), ``quantization``
    /// (``"int8"``, ``"binary"``, or None: without an index, or a graph over the float32
    /// vectors), ``rows`` (records covered, deleted ones included until ``compact``),
    /// ``bytes`` (held besides the f32 vectors: codes and graph links; 0 without an index),
    /// ``m`` and ``ef_construction`` (the graph's parameters; None unless ``"hnsw"``).
    fn index_info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let info = self.handle.index_info(py)?;
        index_info_dict(py, &info)
    }

    /// The ``Record`` stored under ``id``, or ``default`` (None) if there is none.
    #[pyo3(signature = (id, default = None))]
    fn get(&self, py: Python<'_>, id: &str, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match self.handle.get(py, id)? {
            Some(record) => Record::from_engine(py, record)?.into_py_any(py),
            None => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    fn __getitem__(&self, py: Python<'_>, id: &str) -> PyResult<Record> {
        match self.handle.get(py, id)? {
            Some(record) => Record::from_engine(py, record),
            None => Err(errors::engine(
                py,
                srvdb::Error::NotFound { id: id.to_owned() },
            )),
        }
    }

    fn __contains__(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.handle.contains(py, id)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.handle.count(py)? as usize)
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let ids = self.handle.ids(py)?;
        Ok(ids.into_pyobject(py)?.try_iter()?.into_any().unbind())
    }

    /// The live ids, in insertion order.
    fn ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.handle.ids(py)
    }

    /// The ``k`` best matches for ``query`` as ``[(id, score), ...]``, best first.
    ///
    /// Scores are cosine similarity or inner product (higher is better) or squared L2
    /// distance (lower is better). ``k`` larger than ``len(db)`` returns every record;
    /// ``k = 0`` returns ``[]``.
    ///
    /// ``where``: a filter on the metadata in Chroma's dialect, e.g. ``{"year": {"$gt":
    /// 2000}}``; ``where_document``: on the stored documents, e.g. ``{"$contains": "rust"}``.
    /// Filters are applied during the scan: the hits are exactly the ``k`` best of the
    /// matching records (fewer only when fewer match). A malformed filter raises
    /// ``InvalidFilterError``.
    ///
    /// With a quantized index (``create_index``), the scan reads the codes, keeps
    /// ``k * oversample`` candidates and rescores them exactly: the hits carry exact scores,
    /// and are the exact top ``k`` unless a true neighbour fell outside the candidates.
    /// ``oversample``: an int from 1 to 1000 (None: the quantization's default, 3 for int8 and
    /// 10 for binary).
    ///
    /// With an HNSW index (``create_index(kind="hnsw")``), the search traverses the graph
    /// keeping ``ef`` candidates (an int from 1 to 10000; None: 128, raised to ``k``; more is
    /// slower and finds more of the true neighbours) and rescores the best exactly. Deleted
    /// records are never returned; a filter that matches few records is scanned exactly.
    ///
    /// ``exact=True`` scans the f32 rows instead. ``oversample``, ``ef`` and ``exact`` are
    /// ignored without an index, but out of range they raise ``InvalidInputError`` either way.
    #[pyo3(
        signature = (query, k = K(10), r#where = None, where_document = None, *, oversample = None, ef = None, exact = false),
        text_signature = "(self, query, k=10, where=None, where_document=None, *, oversample=None, ef=None, exact=False)"
    )]
    #[allow(clippy::too_many_arguments)] // the Python signature: each keyword is an argument
    fn search(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: K,
        r#where: Option<&Bound<'_, PyAny>>,
        where_document: Option<&Bound<'_, PyAny>>,
        oversample: Option<Oversample>,
        ef: Option<Ef>,
        exact: bool,
    ) -> PyResult<Vec<(String, f64)>> {
        let filter = convert::filter(py, r#where, where_document)?;
        let scan = scan(oversample, ef, exact);
        Ok(hit_tuples(self.handle.search(
            py,
            query,
            k.0,
            filter.as_ref(),
            scan,
        )?))
    }

    /// The ``k`` best matches for each query (a 2-D array or a sequence of vectors); much
    /// cheaper per query than separate searches. ``where`` / ``where_document``: one filter
    /// for the whole batch; ``oversample`` / ``ef`` / ``exact``: as for ``search``.
    ///
    /// Returns a list of ``[(id, score), ...]`` lists, or with ``numpy=True`` a pair of
    /// arrays ``(ids, scores)`` of shape ``(len(queries), width)``: ``ids`` of dtype object
    /// (str), ``scores`` float32, where ``width`` is the longest hit list
    /// (``min(k, len(db))`` without a filter); shorter lists are padded with None and NaN.
    #[pyo3(
        signature = (queries, k = K(10), *, r#where = None, where_document = None, numpy = false, oversample = None, ef = None, exact = false),
        text_signature = "(self, queries, k=10, *, where=None, where_document=None, numpy=False, oversample=None, ef=None, exact=False)"
    )]
    #[allow(clippy::too_many_arguments)] // the Python signature: each keyword is an argument
    fn search_batch(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: K,
        r#where: Option<&Bound<'_, PyAny>>,
        where_document: Option<&Bound<'_, PyAny>>,
        numpy: bool,
        oversample: Option<Oversample>,
        ef: Option<Ef>,
        exact: bool,
    ) -> PyResult<Py<PyAny>> {
        let filter = convert::filter(py, r#where, where_document)?;
        let scan = scan(oversample, ef, exact);
        let found = self
            .handle
            .search_batch(py, queries, k.0, filter.as_ref(), scan)?;
        if !numpy {
            let lists: Vec<Vec<(String, f64)>> = found.into_iter().map(hit_tuples).collect();
            return lists.into_py_any(py);
        }
        let n = found.len();
        let width = found.iter().map(Vec::len).max().unwrap_or(0);
        let mut scores = vec![f32::NAN; n * width];
        let mut ids: Vec<Py<PyAny>> = Vec::with_capacity(n * width);
        for (qi, hits) in found.iter().enumerate() {
            for j in 0..width {
                match hits.get(j) {
                    Some(hit) => {
                        scores[qi * width + j] = hit.score;
                        ids.push(PyString::new(py, &hit.id).into_any().unbind());
                    }
                    None => ids.push(py.None()),
                }
            }
        }
        let shape_err = |e: numpy::ndarray::ShapeError| errors::invalid(py, e.to_string(), None);
        let ids = Array2::from_shape_vec((n, width), ids).map_err(shape_err)?;
        let scores = Array2::from_shape_vec((n, width), scores).map_err(shape_err)?;
        let ids = PyArray::from_owned_object_array(py, ids);
        let scores = scores.into_pyarray(py);
        PyTuple::new(py, [ids.into_any(), scores.into_any()])?.into_py_any(py)
    }

    /// Makes every change so far durable (fsync, then one commit).
    fn persist(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.persist(py)
    }

    /// Rewrites the database without deleted records, crash-safely. Ids are kept.
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.compact(py)
    }

    /// Commits and closes the database, releasing its directory lock. Further calls raise
    /// ``srvdb.Error``; closing again does nothing. Raises ``PoisonedError`` if an earlier
    /// write failed midway (the writes since the last commit are lost; opening the database
    /// again recovers that commit); the handle is closed all the same.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.close(py)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the database (see ``close``). If the ``with`` block raised, that exception
    /// propagates, and a failure to close is added to it as a note; otherwise a failure to
    /// close (``PoisonedError``: writes were lost) is raised.
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

    /// The dimension, or None until the first ``add`` fixes it.
    #[getter]
    fn dim(&self, py: Python<'_>) -> PyResult<Option<u32>> {
        self.handle.dimension(py)
    }

    /// ``"cosine"``, ``"dot"`` or ``"l2"``, fixed when the database was created.
    #[getter]
    fn metric(&self, py: Python<'_>) -> PyResult<&'static str> {
        let metric = self.handle.store(py)?.metric().or_raise(py)?;
        Ok(metric.name())
    }

    /// The database directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.handle.path().to_path_buf()
    }

    /// ``"native"`` or ``"wasm"`` (the engine in a wasmtime sandbox).
    #[getter]
    fn backend(&self) -> &'static str {
        self.handle.kind().name()
    }

    /// True after ``close()``.
    #[getter]
    fn closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// True when opened with ``read_only=True``.
    #[getter]
    fn read_only(&self) -> bool {
        self.handle.is_read_only()
    }

    /// Read-only handles only: opens the database at ``path`` again and continues on it, so
    /// the handle sees the newest commit there (calls already running finish on the commit
    /// they started on). Raises ``LockedError`` while a writer has the database open: a
    /// writer's commits are read once it has closed. A writer's handle raises
    /// ``InvalidInputError``.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.refresh(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let path = self.handle.path().display().to_string();
        match self.handle.store(py) {
            Ok(e) => {
                let dim = match e.dimension() {
                    Ok(Some(d)) => d.to_string(),
                    _ => "None".to_owned(),
                };
                format!(
                    "srvdb.Database({path:?}, dim={dim}, metric={:?}, count={}, backend={:?})",
                    e.metric().map(|m| m.name()).unwrap_or("?"),
                    e.count().unwrap_or(0),
                    self.handle.kind().name()
                )
            }
            Err(_) => format!("srvdb.Database({path:?}, closed)"),
        }
    }

    /// Seconds per search for ``iterations`` searches timed inside Rust, with no Python in the
    /// loop: the engine's own time, for measuring the binding's overhead.
    #[pyo3(
        signature = (query, k = K(10), iterations = 100),
        text_signature = "(self, query, k=10, iterations=100)"
    )]
    fn _search_timings(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: K,
        iterations: usize,
    ) -> PyResult<Vec<f64>> {
        self.handle.search_timings(py, query, k.0, iterations)
    }

    /// ``(searches, scans)``: single searches answered so far and the scans that answered
    /// them (fewer scans than searches means concurrent searches were coalesced into one
    /// scan); None for an engine that does not coalesce (``backend="wasm"``). For tests.
    fn _coalesce_stats(&self, py: Python<'_>) -> PyResult<Option<(u64, u64)>> {
        self.handle.coalesce_stats(py)
    }

    /// Seconds spent copying ``embeddings`` into the binding's own buffer, as ``add`` does
    /// before it releases the GIL (nothing is written). For the binding benchmark.
    #[staticmethod]
    fn _copy_seconds(embeddings: &Bound<'_, PyAny>) -> PyResult<f64> {
        let start = std::time::Instant::now();
        let matrix = convert::matrix(embeddings, "embeddings", None)?;
        let seconds = start.elapsed().as_secs_f64();
        std::hint::black_box(matrix.as_slice());
        Ok(seconds)
    }
}

/// A stored record, as ``Database.get`` returns it.
#[pyclass(frozen, module = "srvdb", name = "Record", get_all)]
pub(crate) struct Record {
    /// The id.
    id: String,
    /// The vector as stored, a float32 NumPy array.
    vector: Py<PyArray1<f32>>,
    /// The metadata: parsed JSON (a dict, list, ...) if it was stored as JSON, else the text;
    /// None if there is none.
    metadata: Py<PyAny>,
    /// The metadata exactly as stored (JSON text or plain text), or None.
    metadata_text: Option<String>,
    /// The document (the text the vector was embedded from), or None.
    document: Option<String>,
}

impl Record {
    pub(crate) fn from_engine(py: Python<'_>, record: srvdb::Record) -> PyResult<Self> {
        let (metadata, metadata_text) = match record.metadata {
            None => (py.None(), None),
            Some(Metadata::Json(text)) => {
                let value = convert::json_module(py)?.call_method1("loads", (text.as_str(),))?;
                (value.unbind(), Some(text))
            }
            Some(Metadata::Text(text)) => (text.as_str().into_py_any(py)?, Some(text)),
        };
        Ok(Record {
            id: record.id,
            vector: PyArray1::from_vec(py, record.vector).unbind(),
            metadata,
            metadata_text,
            document: record.document,
        })
    }
}

#[pymethods]
impl Record {
    fn __repr__(&self, py: Python<'_>) -> String {
        let metadata = self
            .metadata
            .bind(py)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_default();
        format!(
            "srvdb.Record(id={:?}, dim={}, metadata={metadata})",
            self.id,
            PyUntypedArrayMethods::len(self.vector.bind(py))
        )
    }
}

/// Opens (creating if needed) the SrvDB database in directory ``path``.
///
/// ``dim``: the dimension, for a new database; otherwise the first ``add`` fixes it. An
/// existing database must have this dimension if one is given.
/// ``metric``: ``"cosine"`` (the default for a new database), ``"dot"`` or ``"l2"``; an
/// existing database keeps the metric it was created with, and a different one given here is
/// an error.
/// ``embedder``: a text embedder, ``"all-MiniLM-L6-v2"`` or the path of a sentence-transformers
/// folder; then ``add(ids, documents=[...])`` and ``query(texts)`` take text. The model comes
/// from the ``srvdb-minilm`` package (``pip install --no-index --find-links target/wheels srvdb-minilm``
/// after ``make wheel``), read in place (see ``srvdb.text.model_dir``); ``ModelError`` says how
/// to install it if it is missing. A new database records the embedder; reopening with another
/// raises ``EmbedderMismatchError``.
/// ``backend``: ``"native"`` runs the engine in this process. ``"wasm"`` runs the same engine
/// as a WASI component in a wasmtime sandbox (same results and exceptions; a failure of the
/// sandbox itself raises ``SandboxError``); a build or machine without it raises
/// ``BackendUnavailableError``.
///
/// ``read_only=True`` opens an existing database for reading only: any number of read-only
/// handles, in any processes, each serve the commit they opened (from a copy of its metadata
/// in memory), while a writer may open, commit and close beside them; ``refresh()`` moves the
/// handle to the newest commit. Writes raise ``ReadOnlyError`` and nothing on disk is
/// created or changed. The open takes a shared lock only while it reads, and is refused
/// while a writer is open. A database that is
/// missing, or whose last writer did not close cleanly, raises ``ReadOnlyError`` saying to open
/// it once for writing.
///
/// ``auto_commit_rows``: a write commits by itself once this many inserts and deletes are
/// uncommitted (default 1000, or the ``SRVDB_AUTO_FLUSH_THRESHOLD`` environment variable);
/// ``0`` commits only on ``persist()`` and ``close()``, which makes many small adds of a bulk
/// load cheaper, and a crash before the commit loses all of them.
///
/// ``_defer_syncs`` is private (``srvdb.distributed.ingest``'s shards): nothing is fsynced
/// until ``_sync_directory(path)`` runs over the closed database.
///
/// Raises ``LockedError`` if the lock is taken: by a writer (another handle or process has the
/// database open for writing), or, for a writer, by readers (``LockedError.holder`` is
/// ``"writer"`` or ``"readers"``); ``CorruptError`` if its files are damaged.
#[pyfunction]
#[allow(clippy::too_many_arguments)] // the Python signature: each keyword is an argument
#[pyo3(signature = (path, dim = None, metric = None, backend = "native", embedder = None, *, read_only = false, auto_commit_rows = None, _defer_syncs = false))]
pub(crate) fn open(
    py: Python<'_>,
    path: PathBuf,
    dim: Option<&Bound<'_, PyAny>>,
    metric: Option<&str>,
    backend: &str,
    embedder: Option<&Bound<'_, PyAny>>,
    read_only: bool,
    auto_commit_rows: Option<&Bound<'_, PyAny>>,
    _defer_syncs: bool,
) -> PyResult<Database> {
    Database::new(
        py,
        path,
        dim,
        metric,
        backend,
        embedder,
        read_only,
        auto_commit_rows,
        _defer_syncs,
    )
}

/// Private (``srvdb.distributed.ingest``): makes the closed database in directory ``path``
/// durable, every file in it, the directory and its parent (``srvdb::storage::fs::
/// sync_directory``): the sync pass after ``open(..., _defer_syncs=True)``, whose handle
/// fsyncs nothing. Runs without the GIL. Raises ``LockedError`` while the database is open.
#[pyfunction]
pub(crate) fn _sync_directory(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    py.detach(|| srvdb::storage::fs::sync_directory(&path))
        .map_err(|e| errors::engine(py, e))
}

/// Always False: ``add`` no longer reads any array in place. Every array is copied into the
/// binding's own buffer while the GIL is held, so that another thread changing or resizing
/// it meanwhile cannot make the engine store NaN or read freed memory. Kept so that code
/// calling it still runs; ``embeddings`` is still validated (a wrong dtype raises).
#[pyfunction]
pub(crate) fn reads_in_place(embeddings: &Bound<'_, PyAny>) -> PyResult<bool> {
    convert::matrix(embeddings, "embeddings", None)?;
    Ok(false)
}
