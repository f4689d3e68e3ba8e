"""LangChain vector store over a SrvDB database (``pip install "langchain-core>=1.0,<2"``).

.. code-block:: python

    from srvdb.integrations.langchain import SrvDBVectorStore

    store = SrvDBVectorStore("./vectors", embedding=my_embeddings)   # cosine by default
    store.add_texts(["SrvDB is embedded", "LangChain chains"], metadatas=[{"k": 1}, {"k": 2}])
    store.similarity_search_with_score("embedded database", k=1)
    store.as_retriever(search_type="mmr").invoke("database")

Each document is one SrvDB record: the id is the document's id (given, taken from
``Document.id``, or a fresh uuid4), the vector its embedding, and the record's metadata the
JSON ``{"text": page_content, "metadata": {...}}`` (metadata must be JSON-serialisable).
Adding an existing id replaces that document (an upsert). ``delete`` ignores unknown ids.

Scores from ``similarity_search_with_score`` are the engine's: for ``metric="cosine"`` the
cosine similarity (higher is better, in [-1, 1]); for ``"dot"`` the dot product; for ``"l2"``
the squared Euclidean distance (lower is better). ``similarity_search_with_relevance_scores``
maps them to [0, 1], higher better (cosine: ``(1 + s) / 2``).

Filters: the engine has no metadata filters yet. ``filter`` is accepted as a dict of exact
key/value matches on the document metadata (all must match) or a callable taking a
``Document`` and returning a bool; it is applied *after* the search, which over-fetches
(4 × k, at least 32 candidates) and widens the search until ``k`` matches are found or the
whole database has been ranked. A selective filter therefore costs up to a full ranking.

Async methods use LangChain's default (the sync method in an executor thread); SrvDB
releases the GIL during searches and writes, so they do run concurrently.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

import srvdb

from ._common import dedupe_last, exact_match, filtered_hits

__all__ = ["SrvDBVectorStore"]

Filter = Union[dict, Callable[[Document], bool], None]


class SrvDBVectorStore(VectorStore):
    """A LangChain ``VectorStore`` backed by a SrvDB database.

    Args:
        path: directory of the database (created if needed). Ignored if ``database`` is given.
        embedding: the LangChain ``Embeddings`` used for texts and queries.
        metric: ``"cosine"`` (default), ``"dot"`` or ``"l2"`` for a new database; an existing
            database keeps its own (a different value raises ``srvdb.InvalidInputError``).
        backend: ``"native"`` (default) or ``"wasm"``, as in ``srvdb.open``.
        database: an already open ``srvdb.Database`` to use instead of ``path``.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]", None] = None,
        embedding: Optional[Embeddings] = None,
        *,
        metric: Optional[str] = None,
        backend: str = "native",
        database: Optional[srvdb.Database] = None,
    ) -> None:
        if embedding is None:
            raise ValueError("SrvDBVectorStore needs an `embedding`")
        if database is None:
            if path is None:
                raise ValueError("SrvDBVectorStore needs a `path` or a `database`")
            database = srvdb.open(path, metric=metric or "cosine", backend=backend)
        elif metric is not None and metric != database.metric:
            raise ValueError(f"metric {metric!r} given, but the database uses {database.metric!r}")
        self._db = database
        self._embedding = embedding

    # -- properties ---------------------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def database(self) -> srvdb.Database:
        """The underlying ``srvdb.Database``."""
        return self._db

    def close(self) -> None:
        """Commits and closes the database."""
        self._db.close()

    def __enter__(self) -> "SrvDBVectorStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[list[dict]] = None,
        *,
        ids: Optional[list[Optional[str]]] = None,
        **kwargs: Any,
    ) -> list[str]:
        texts = list(texts)
        if not texts:
            return []
        if metadatas is None:
            metadatas = [{} for _ in texts]
        if len(metadatas) != len(texts):
            raise ValueError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        if ids is None:
            ids = [None] * len(texts)
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        out_ids = [str(i) if i is not None and i != "" else str(uuid.uuid4()) for i in ids]
        vectors = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
        payloads = [
            json.dumps({"text": t, "metadata": dict(m or {})}, ensure_ascii=False)
            for t, m in zip(texts, metadatas)
        ]
        keep = dedupe_last(out_ids)
        if len(keep) != len(out_ids):
            self._db.upsert(
                [out_ids[i] for i in keep], vectors[keep], [payloads[i] for i in keep]
            )
        else:
            self._db.upsert(out_ids, vectors, payloads)
        return out_ids

    def delete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Deletes the documents with these ids; unknown ids are ignored. ``ids=None`` deletes
        nothing (returns False, as LangChain's contract allows)."""
        if ids is None:
            return False
        present = [i for i in dict.fromkeys(ids) if i in self._db]
        if present:
            try:
                self._db.delete(present)
            except srvdb.NotFoundError:
                # Another thread deleted one of them meanwhile: delete the rest one by one.
                for id_ in present:
                    try:
                        self._db.delete([id_])
                    except srvdb.NotFoundError:
                        pass
        return True

    # -- reads --------------------------------------------------------------------------------

    @staticmethod
    def _to_document(record: srvdb.Record) -> Document:
        payload = record.metadata
        if isinstance(payload, dict) and "text" in payload:
            return Document(
                id=record.id,
                page_content=payload["text"],
                metadata=payload.get("metadata") or {},
            )
        # A record written without this adapter: its metadata text is the content.
        text = record.metadata_text or ""
        return Document(id=record.id, page_content=text, metadata={})

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        docs = []
        for id_ in ids:
            rec = self._db.get(id_)
            if rec is not None:
                docs.append(self._to_document(rec))
        return docs

    def _accept(self, filter: Filter) -> Optional[Callable[[srvdb.Record], bool]]:
        if filter is None:
            return None
        if callable(filter):
            return lambda rec: bool(filter(self._to_document(rec)))
        if isinstance(filter, dict):
            match = exact_match(filter)
            return lambda rec: match(self._to_document(rec).metadata)
        raise TypeError(
            "filter must be a dict of exact-match metadata values or a callable on Document"
        )

    def _search(
        self, embedding: Sequence[float], k: int, filter: Filter
    ) -> list[tuple[srvdb.Record, float]]:
        query = np.asarray(embedding, dtype=np.float32)
        return list(filtered_hits(self._db, query, k, self._accept(filter)))

    def similarity_search_with_score_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Filter = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        return [(self._to_document(r), float(s)) for r, s in self._search(embedding, k, filter)]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Filter = None,
        **kwargs: Any,
    ) -> list[Document]:
        return [self._to_document(r) for r, _ in self._search(embedding, k, filter)]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Filter = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(
            self._embedding.embed_query(query), k, filter=filter
        )

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: Filter = None,
        **kwargs: Any,
    ) -> list[Document]:
        return self.similarity_search_by_vector(
            self._embedding.embed_query(query), k, filter=filter
        )

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        metric = self._db.metric
        if metric == "cosine":
            # Clamped: float32 rounding can put an exact match a hair above 1.
            return lambda s: min(1.0, max(0.0, (1.0 + s) / 2.0))
        if metric == "l2":
            # Squared distance; LangChain's Euclidean mapping takes the distance itself.
            return lambda d: self._euclidean_relevance_score_fn(float(np.sqrt(max(d, 0.0))))
        return self._max_inner_product_relevance_score_fn

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter = None,
        **kwargs: Any,
    ) -> list[Document]:
        candidates = self._search(embedding, max(fetch_k, k), filter)
        if not candidates:
            return []
        vectors = np.stack([r.vector for r, _ in candidates])
        picked = maximal_marginal_relevance(
            np.asarray(embedding, dtype=np.float32), vectors, lambda_mult=lambda_mult, k=k
        )
        return [self._to_document(candidates[i][0]) for i in picked]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter = None,
        **kwargs: Any,
    ) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, filter=filter
        )

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: Optional[list[dict]] = None,
        *,
        ids: Optional[list[str]] = None,
        path: Union[str, "os.PathLike[str]", None] = None,
        metric: Optional[str] = None,
        backend: str = "native",
        database: Optional[srvdb.Database] = None,
        **kwargs: Any,
    ) -> "SrvDBVectorStore":
        """Opens (or creates) the database at ``path`` (or uses ``database``) and adds
        ``texts``."""
        store = cls(path, embedding, metric=metric, backend=backend, database=database)
        store.add_texts(texts, metadatas, ids=ids)
        return store
