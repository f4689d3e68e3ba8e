"""Helpers shared by the framework adapters (no framework imports here)."""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np

import srvdb

#: The collection name Chroma (and langchain-chroma) uses when none is given.
DEFAULT_COLLECTION = "langchain"

#: ``srvdb.open``'s name for an ephemeral database that lives only in this process.
MEMORY = ":memory:"


def dedupe_last(ids: Iterable[str]) -> list[int]:
    """Positions to keep so that each id appears once, its last occurrence winning (a batch that
    repeats an id behaves like the same writes done one after the other)."""
    last: dict[str, int] = {}
    for i, id_ in enumerate(ids):
        last[id_] = i
    return sorted(last.values())


def open_database(
    path: Any,
    *,
    persist_directory: Any,
    collection_name: Optional[str],
    metric: Optional[str],
    backend: str,
) -> tuple[srvdb.Database, Any]:
    """Opens the database an adapter was pointed at, the way Chroma's names mean it:

    - ``path``: that directory is the database (``":memory:"`` for an ephemeral one);
    - ``persist_directory``: a directory of collections, ``collection_name`` (default
      ``"langchain"``) being one of them, created if needed;
    - neither: an ephemeral in-memory collection, as Chroma gives without a directory.

    Returns the database and the ``srvdb.Client`` that owns it (None for ``path``), which the
    caller keeps alive with the database (an in-memory client's collections go with it)."""
    if path is not None and persist_directory is not None:
        raise ValueError(
            "give either `path` (one database directory) or `persist_directory` (a directory "
            "of collections, with `collection_name`), not both"
        )
    if path is not None:
        if collection_name is not None:
            raise ValueError(
                "`collection_name` picks a collection inside `persist_directory`; `path` is "
                "already one database: pass `persist_directory=` instead of `path=`"
            )
        return srvdb.open(path, metric=metric, backend=backend), None
    root = MEMORY if persist_directory is None else os.fspath(persist_directory)
    name = DEFAULT_COLLECTION if collection_name is None else collection_name
    client = srvdb.Client(root, backend=backend)
    return client.get_or_create_collection(name, metric=metric), client


def present(db: srvdb.Database, ids: Iterable[str]) -> list[str]:
    """The distinct ids of ``ids`` that ``db`` holds, in first-seen order."""
    return [i for i in dict.fromkeys(ids) if i in db]


def delete_ids(db: srvdb.Database, ids: Sequence[str]) -> int:
    """Deletes those of ``ids`` that exist, ignoring unknown ids, as LangChain and LlamaIndex
    expect (the engine's ``delete`` refuses a batch with an unknown id). Returns how many were
    deleted."""
    ids = present(db, ids)
    if not ids:
        return 0
    try:
        return db.delete(ids)
    except srvdb.NotFoundError:
        # Another thread deleted one of them meanwhile: delete the rest one by one.
        gone = 0
        for id_ in ids:
            try:
                gone += db.delete([id_])
            except srvdb.NotFoundError:
                pass
        return gone


def ids_matching(
    db: srvdb.Database, where: Optional[dict], where_document: Optional[dict] = None
) -> Optional[set[str]]:
    """The ids of the records the filters select (None when they restrict nothing). Reads only
    the matching records; used where ids and a filter are given together, which the engine
    does not take in one request."""
    if where is None and where_document is None:
        return None
    return {r.id for r in db.records(where=where, where_document=where_document)}


def scores(metric: str, vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The engine's score of each row of ``vectors`` against ``query``: cosine similarity or
    dot product (higher is better), squared L2 distance (lower is better)."""
    m = np.asarray(vectors, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    if metric == "dot":
        return m @ q
    if metric == "l2":
        d = m - q
        return np.einsum("ij,ij->i", d, d)
    norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, (m @ q) / norms, 0.0)


def best_first(metric: str, values: np.ndarray) -> np.ndarray:
    """Positions of ``values`` (scores from :func:`scores`) best first, ties in input order."""
    return np.argsort(values if metric == "l2" else -values, kind="stable")
