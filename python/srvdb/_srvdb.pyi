"""Type stubs for the compiled extension ``srvdb._srvdb`` (re-exported by ``srvdb``)."""

from os import PathLike
from types import TracebackType
from typing import Any, Iterator, Literal, Mapping, Optional, Sequence, SupportsFloat, SupportsIndex, TypedDict, TypeVar, Union, final, overload

import numpy as np
import numpy.typing as npt

__all__ = ["Database", "Record", "SvDBPython", "open", "reads_in_place", "__version__"]

__version__: str

_Path = Union[str, "PathLike[str]"]
#: One vector: a 1-D NumPy float array (or a 2-D array with one row) or a sequence of numbers.
_Vector = Union[npt.NDArray[np.floating[Any]], Sequence[SupportsFloat]]
#: Vectors: a 2-D NumPy float array (one row per vector) or a sequence of vectors.
_Vectors = Union[npt.NDArray[np.floating[Any]], Sequence[_Vector]]
#: Metadata of one record: a str (stored exactly as given), a JSON-serialisable value
#: (stored as JSON), or None.
_Metadata = Union[str, Mapping[str, Any], Sequence[Any], int, float, bool, None]
#: A ``where`` filter on the metadata, in Chroma's dialect: ``{"field": value}``,
#: ``{"field": {"$gt": 1}}``, ``{"$and": [...]}``, ``{"$or": [...]}``, ``{"$not": {...}}``.
_Where = Mapping[str, Any]
#: A ``where_document`` filter on the stored documents: ``{"$contains": "text"}``,
#: ``{"$not_contains": "text"}``, ``{"$and": [...]}``, ``{"$or": [...]}``.
_WhereDocument = Mapping[str, Any]
_Hits = list[tuple[str, float]]
_TextHits = list[tuple[str, float, Optional[str]]]
_T = TypeVar("_T")

class _IndexInfo(TypedDict):
    """What ``index_info`` reports."""

    kind: Literal["flat", "hnsw"]
    quantization: Optional[Literal["int8", "binary"]]
    rows: int
    bytes: int
    #: The graph's links per node and candidates per insertion (None unless ``"hnsw"``).
    m: Optional[int]
    ef_construction: Optional[int]

def open(
    path: _Path,
    dim: Optional[SupportsIndex] = None,
    metric: Optional[Literal["cosine", "dot", "l2"]] = None,
    backend: Literal["native", "wasm"] = "native",
    embedder: Optional[_Path] = None,
    *,
    read_only: bool = False,
    auto_commit_rows: Optional[int] = None,
) -> Database:
    """Opens (creating if needed) the SrvDB database in directory ``path``.

    ``read_only=True`` opens an existing database for reading only: any number of read-only
    handles, in any processes, each serve the commit they opened while one writer may open,
    commit and close beside them (``refresh()`` moves to the newest commit); writes raise
    ``ReadOnlyError``, nothing on disk is created or changed. Readers are refused while a
    writer is open, and writers while a reader opens (``LockedError``, whose ``holder`` is
    ``"writer"`` or ``"readers"``).

    ``embedder`` (``"all-MiniLM-L6-v2"`` or a sentence-transformers folder, str or Path) makes it a
    text database: ``add(ids, documents=...)`` and ``query(texts)``. A new database records the
    embedder; another one on reopen raises ``EmbedderMismatchError``; a missing model raises
    ``ModelError`` naming the install command (``pip install --no-index
    --find-links target/wheels srvdb-minilm``).

    ``auto_commit_rows``: a write commits by itself once this many inserts and deletes are
    uncommitted (default 1000, or ``SRVDB_AUTO_FLUSH_THRESHOLD``); ``0`` commits only on
    ``persist()`` and ``close()`` (cheaper bulk loads; a crash before the commit loses them).

    ``path=":memory:"`` gives an ephemeral database in memory (``backend="native"`` only),
    gone when it is closed.

    ``dim`` fixes the dimension of a new database (otherwise the first ``add`` does) and must
    match an existing one's. ``metric`` is ``"cosine"`` (the default for a new database),
    ``"dot"`` or ``"l2"``; an existing database keeps its own, and a different one given here
    raises ``InvalidInputError``. ``backend="wasm"`` runs the same engine as a WASI component
    in a wasmtime sandbox (same results and exceptions; its calls are serialised); a failure
    of the sandbox itself raises ``srvdb.SandboxError``. It needs the extension built with the
    ``wasm`` feature and the component (``SRVDB_COMPONENT``, else the repository's ``make
    component`` output), else it raises ``BackendUnavailableError``.
    """

def reads_in_place(embeddings: _Vectors) -> bool:
    """Always False: every array is copied while the GIL is held (another thread changing or
    resizing it meanwhile cannot reach the engine). Kept for existing callers; still
    validates ``embeddings``."""

@final
class Record:
    """A stored record, as ``Database.get`` returns it."""

    @property
    def id(self) -> str: ...
    @property
    def vector(self) -> npt.NDArray[np.float32]:
        """The vector as stored (float32)."""
    @property
    def metadata(self) -> Any:
        """Parsed JSON (dict, list, ...) if the metadata is JSON, else its text; None if none."""
    @property
    def metadata_text(self) -> Optional[str]:
        """The metadata exactly as stored, or None."""
    @property
    def document(self) -> Optional[str]:
        """The text stored with the record (``add(documents=...)``), or None."""

@final
class Database:
    """A SrvDB database. A context manager; supports ``len(db)``, ``id in db`` and ``iter(db)``
    (ids). Share one between threads: searches run in parallel, without the GIL."""

    def __new__(
        cls,
        path: _Path,
        dim: Optional[SupportsIndex] = None,
        metric: Optional[Literal["cosine", "dot", "l2"]] = None,
        backend: Literal["native", "wasm"] = "native",
        embedder: Optional[_Path] = None,
        *,
        read_only: bool = False,
        auto_commit_rows: Optional[int] = None,
    ) -> Database: ...
    def add(
        self,
        ids: Sequence[str],
        embeddings: Optional[_Vectors] = None,
        metadatas: Optional[Sequence[_Metadata]] = None,
        documents: Optional[Sequence[str]] = None,
        *,
        progress: Optional[bool] = None,
    ) -> None:
        """Inserts a batch atomically; ``documents`` are stored with the records, and embedded
        when no ``embeddings`` are given (needs ``embedder=`` at open). Raises
        ``DuplicateIdError`` for an existing or repeated id, ``DimensionMismatchError``,
        ``InvalidInputError``; then nothing is written. A NumPy array is copied before the
        GIL is released: changing it from another thread cannot affect what is stored.
        ``progress``: a tqdm bar while documents are embedded (if tqdm is installed); None
        shows one for 1,000 documents or more in a terminal or notebook."""
    def upsert(
        self,
        ids: Sequence[str],
        embeddings: Optional[_Vectors] = None,
        metadatas: Optional[Sequence[_Metadata]] = None,
        documents: Optional[Sequence[str]] = None,
        *,
        progress: Optional[bool] = None,
    ) -> None:
        """Like ``add``, but an existing id is replaced."""
    @overload
    def query(
        self,
        texts: str,
        k: SupportsIndex = 10,
        where: Optional[_Where] = None,
        where_document: Optional[_WhereDocument] = None,
        *,
        oversample: Optional[SupportsIndex] = None,
        ef: Optional[SupportsIndex] = None,
        exact: bool = False,
    ) -> _TextHits:
        """The ``k`` best ``(id, score, document)`` hits for one text (needs ``embedder=``),
        among the records matching ``where`` / ``where_document``."""
    @overload
    def query(
        self,
        texts: Sequence[str],
        k: SupportsIndex = 10,
        where: Optional[_Where] = None,
        where_document: Optional[_WhereDocument] = None,
        *,
        oversample: Optional[SupportsIndex] = None,
        ef: Optional[SupportsIndex] = None,
        exact: bool = False,
    ) -> list[_TextHits]: ...
    def embed(self, texts: Sequence[str], *, progress: Optional[bool] = None) -> npt.NDArray[np.float32]:
        """The embedder's unit vectors for ``texts``, shape ``(len(texts), dim)``."""
    @property
    def embedder(self) -> Optional[str]:
        """The name of the embedder the database recorded, or None for plain vectors."""
    def delete(
        self,
        ids: Union[str, Sequence[str], None] = None,
        *,
        where: Optional[_Where] = None,
        where_document: Optional[_WhereDocument] = None,
    ) -> int:
        """Deletes ``ids``, or every record matching the filter, or those of ``ids`` that match
        it; returns how many were deleted. An unknown id raises ``NotFoundError`` and deletes
        nothing. Neither ids nor a filter raises ``InvalidInputError`` (``where={}`` deletes
        every record)."""
    def update(
        self,
        ids: Union[str, Sequence[str]],
        metadatas: Optional[Sequence[_Metadata]] = None,
        documents: Optional[Sequence[str]] = None,
        embeddings: Optional[_Vectors] = None,
    ) -> None:
        """Changes only what is given of existing records, atomically (an unknown id raises
        ``NotFoundError`` and changes nothing). A metadata-only update rewrites no vector; on
        a database with an embedder, ``documents`` without ``embeddings`` are re-embedded."""
    def records(
        self,
        where: Optional[_Where] = None,
        where_document: Optional[_WhereDocument] = None,
        limit: Optional[SupportsIndex] = None,
        offset: SupportsIndex = 0,
    ) -> list[Record]:
        """The matching records (all without a filter) in insertion order, skipping ``offset``,
        at most ``limit``."""
    def count(self, where: Optional[_Where] = None, where_document: Optional[_WhereDocument] = None) -> int:
        """How many records match (``len(db)`` without a filter)."""
    def create_field_index(self, field: str) -> None:
        """Indexes metadata field ``field`` (a dotted path) so filters on it touch only the
        matching records; committed with the records. Creating an existing index does nothing."""
    def drop_field_index(self, field: str) -> bool:
        """Drops the index of ``field``; False if there was none."""
    def field_indexes(self) -> list[str]:
        """The indexed fields, sorted."""
    @overload
    def create_index(
        self, kind: Literal["flat"] = "flat", quantization: Literal["int8", "binary"] = "int8"
    ) -> _IndexInfo:
        """Keeps compressed codes of the vectors (int8: 4x smaller, binary: 32x) that searches
        scan before rescoring their best ``k * oversample`` candidates exactly; kept in step with
        every write, delete and ``compact``. Returns ``index_info()``."""
    @overload
    def create_index(
        self,
        kind: Literal["hnsw"],
        quantization: Optional[Literal["int8"]] = None,
        *,
        m: Optional[SupportsIndex] = None,
        ef_construction: Optional[SupportsIndex] = None,
    ) -> _IndexInfo:
        """An HNSW graph that searches traverse (on the float32 vectors, or on int8 codes)
        keeping ``ef`` candidates, then rescore exactly. ``m``: links per node (default 16,
        2 to 128); ``ef_construction``: candidates per insertion (default 200, 1 to 10000).
        Committed with the records (a crash leaves the last committed graph; reopening does
        not rebuild it), kept in step with every write, delete and ``compact``."""
    def drop_index(self) -> bool:
        """Drops the vector index; False if there was none."""
    def index_info(self) -> _IndexInfo:
        """``kind``, ``quantization`` (None without codes), ``rows`` covered, ``bytes`` held,
        ``m`` / ``ef_construction`` (for ``"hnsw"``)."""
    @overload
    def get(self, id: str) -> Optional[Record]: ...
    @overload
    def get(self, id: str, default: _T) -> Union[Record, _T]: ...
    def __getitem__(self, key: str, /) -> Record: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def ids(self) -> list[str]:
        """The live ids, in insertion order."""
    def search(
        self,
        query: _Vector,
        k: SupportsIndex = 10,
        where: Optional[_Where] = None,
        where_document: Optional[_WhereDocument] = None,
        *,
        oversample: Optional[SupportsIndex] = None,
        ef: Optional[SupportsIndex] = None,
        exact: bool = False,
    ) -> _Hits:
        """The ``k`` best ``(id, score)`` pairs, best first (squared L2 distance: lowest first),
        among the records matching ``where`` / ``where_document``: exactly the ``k`` best of
        them, fewer only when fewer match. A malformed filter raises ``InvalidFilterError``.
        With a compressed index: ``k * oversample`` candidates (default 3 for int8, 10 for
        binary) rescored exactly; with an HNSW index: the graph traversal keeps ``ef``
        candidates (1 to 10000; default 128, raised to ``k``) and rescores the best exactly;
        ``exact=True`` scans the f32 vectors instead."""
    @overload
    def search_batch(
        self,
        queries: _Vectors,
        k: SupportsIndex = 10,
        *,
        where: Optional[_Where] = None,
        where_document: Optional[_WhereDocument] = None,
        numpy: Literal[False] = False,
        oversample: Optional[SupportsIndex] = None,
        ef: Optional[SupportsIndex] = None,
        exact: bool = False,
    ) -> list[_Hits]: ...
    @overload
    def search_batch(
        self,
        queries: _Vectors,
        k: SupportsIndex = 10,
        *,
        where: Optional[_Where] = None,
        where_document: Optional[_WhereDocument] = None,
        numpy: Literal[True],
        oversample: Optional[SupportsIndex] = None,
        ef: Optional[SupportsIndex] = None,
        exact: bool = False,
    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]: ...
    def persist(self) -> None:
        """Makes every change so far durable."""
    def compact(self) -> None:
        """Rewrites the database without deleted records (crash-safe)."""
    def close(self) -> None:
        """Commits and closes; later calls raise ``srvdb.Error``. Raises ``PoisonedError``
        (the handle is closed all the same) if an earlier write failed midway: the writes
        since the last commit are lost."""
    def __enter__(self) -> Database: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool:
        """Closes. An exception leaving the block propagates (a close failure is added to it
        as a note); otherwise a close failure is raised."""
    @property
    def dim(self) -> Optional[int]:
        """The dimension, or None until the first ``add``."""
    @property
    def metric(self) -> Literal["cosine", "dot", "l2"]: ...
    @property
    def path(self) -> PathLike[str]: ...
    @property
    def backend(self) -> Literal["native", "wasm"]: ...
    @property
    def closed(self) -> bool: ...
    @property
    def read_only(self) -> bool:
        """True when opened with ``read_only=True``."""
    def refresh(self) -> None:
        """Read-only handles: opens the database at ``path`` again and continues on it, at the
        newest commit (a writer's handle raises ``InvalidInputError``). Raises ``LockedError``
        while a writer has the database open: refresh once it has closed."""
    def _search_timings(self, query: _Vector, k: SupportsIndex = 10, iterations: int = 100) -> list[float]: ...
    def _coalesce_stats(self) -> Optional[tuple[int, int]]: ...
    @staticmethod
    def _copy_seconds(embeddings: _Vectors) -> float: ...

@final
class SvDBPython:
    """The original SrvDB API. ``SvDBPython(path)``: dimension from the first ``add``, cosine."""

    def __new__(cls, path: _Path, *, backend: Literal["native", "wasm"] = "native") -> SvDBPython: ...
    def add(
        self,
        ids: Sequence[str],
        embeddings: _Vectors,
        metadatas: Optional[Sequence[Optional[str]]] = None,
    ) -> None: ...
    def search(self, query: _Vector, k: SupportsIndex = 10, *, ef: Optional[SupportsIndex] = None) -> _Hits: ...
    def search_batch(
        self, queries: _Vectors, k: SupportsIndex = 10, *, ef: Optional[SupportsIndex] = None
    ) -> list[_Hits]: ...
    def get(self, id: str) -> Optional[str]:
        """The metadata string exactly as stored, or None."""
    def count(self) -> int: ...
    def delete(self, ids: Union[str, Sequence[str]]) -> int:
        """Deletes the ids that exist (unknown ids are skipped) and persists."""
    def get_all_ids(self) -> list[str]: ...
    def persist(self) -> None: ...
    def close(self) -> None:
        """Commits and closes; raises ``PoisonedError`` if an earlier write failed midway."""
    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __enter__(self) -> SvDBPython: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool: ...
