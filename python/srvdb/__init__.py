"""SrvDB: an embedded vector database with exact SIMD search.

Two APIs over the same Rust engine:

- ``srvdb.open(path, dim=None, metric=None, backend="native")`` returns a :class:`Database`
  (``backend="wasm"`` runs the same engine as a WASI component in a wasmtime sandbox):
  a context manager with ``len()``, ``in``, ``add``/``upsert``/``delete``/``get``,
  ``search``/``search_batch``, ``persist`` and ``compact``, taking NumPy arrays (copied
  while the GIL is held, so other threads may change them afterwards) or sequences, and
  metadata as dicts or strings.
- ``srvdb.open(path, embedder="all-MiniLM-L6-v2")``: text in, text out.
  ``db.add(ids, documents=[...])`` embeds and stores the texts, ``db.query(texts, k)`` returns
  ``(id, score, document)`` hits (``pip install --no-index --find-links target/wheels srvdb-minilm``
  after ``make wheel`` for the model; see :mod:`srvdb.text`).
- Filters in Chroma's dialect: ``db.search(q, k, where={"year": {"$gt": 2000}},
  where_document={"$contains": "rust"})`` is exact at every selectivity; ``records``,
  ``count``, ``delete`` and ``update`` take the same filters.
- ``srvdb.Client(path)``: named collections, each a database in its own subdirectory;
  ``srvdb.open(":memory:")`` and ``srvdb.Client(":memory:")`` keep everything in memory.
- ``srvdb.SvDBPython(path)``: the original SrvDB API, unchanged.

Searches and writes release the GIL, so threads run them in parallel. Errors are
:class:`srvdb.Error` subclasses (see ``srvdb._errors``).
"""

from ._errors import (
    BackendUnavailableError,
    CorruptError,
    DimensionMismatchError,
    DuplicateIdError,
    EmbedderMismatchError,
    Error,
    InvalidFilterError,
    InvalidInputError,
    IoError,
    LockedError,
    ModelError,
    NotFoundError,
    PoisonedError,
    ReadOnlyError,
    SandboxError,
)
from ._srvdb import Database, Record, SvDBPython, __version__, open, reads_in_place
from . import text
from .client import Client

__all__ = [
    "open",
    "Client",
    "Database",
    "Record",
    "SvDBPython",
    "reads_in_place",
    "text",
    "Error",
    "DimensionMismatchError",
    "DuplicateIdError",
    "NotFoundError",
    "InvalidInputError",
    "InvalidFilterError",
    "CorruptError",
    "LockedError",
    "ReadOnlyError",
    "IoError",
    "PoisonedError",
    "BackendUnavailableError",
    "SandboxError",
    "EmbedderMismatchError",
    "ModelError",
    "__version__",
]
