"""LangChain vector store over a SrvDB database (``pip install "langchain-core>=1.0,<2"``).

.. code-block:: python

    from srvdb.integrations.langchain import SrvDBEmbeddings, SrvDBVectorStore

    store = SrvDBVectorStore(persist_directory="./vectors", collection_name="notes",
                             embedding=SrvDBEmbeddings())          # cosine by default
    store.add_texts(["SrvDB is embedded", "LangChain chains"],
                    metadatas=[{"year": 2024}, {"year": 2019}])
    store.similarity_search_with_score("embedded database", k=1, filter={"year": {"$gt": 2020}})
    store.as_retriever(search_type="mmr").invoke("database")

Where a database lives, with Chroma's names: ``persist_directory`` is a directory of
collections and ``collection_name`` (default ``"langchain"``) one of them; ``path`` is one
database directory; with neither, the store is an ephemeral in-memory database, as Chroma's
is. ``database=`` takes an open ``srvdb.Database``.

Each document is one SrvDB record: the id is the document's id (given, taken from
``Document.id``, or a fresh uuid4), the vector its embedding, the record's document its
``page_content`` and the record's metadata the document's metadata dict itself (which must be
JSON-serialisable). So ``db.query()``, ``db.records()`` and ``Record.document`` see the text.
Adding an existing id replaces that document (an upsert). ``delete`` ignores unknown ids.
Stores written by earlier versions of this adapter, which kept ``{"text": ..., "metadata":
{...}}`` in the metadata, are read as before and rewritten to this layout when the store is
opened (a metadata-only update: no vector is rewritten), so that filters see the metadata.

Filters are Chroma's dialect and run inside the engine, during the scan: ``filter=`` (Chroma's
``where``) on the metadata, e.g. ``{"source": "a.md"}``, ``{"year": {"$gte": 2000}}``,
``{"$or": [{"tag": "x"}, {"tag": {"$in": ["y", "z"]}}]}``; ``where_document=`` on the text,
``{"$contains": "word"}``. The top k are exactly the k best matching documents, however few
match. A malformed filter raises ``srvdb.InvalidFilterError`` (a ``ValueError``) naming the
offending part. A list-valued metadata field matches ``$eq``/``$in`` if any element does.

Scores from ``similarity_search_with_score`` are the engine's, where Chroma returns distances
(lower is better). For ``metric="cosine"`` (the default) the score is the cosine similarity,
higher is better, in [-1, 1]: Chroma's cosine distance is ``1 - score``. For ``"dot"`` it is
the dot product (Chroma's ``"ip"`` distance is ``1 - score``); for ``"l2"`` the squared
Euclidean distance, lower is better, the same number Chroma's ``"l2"`` space returns.
``similarity_search_with_relevance_scores`` maps them to [0, 1], higher better (cosine:
``(1 + s) / 2``; Chroma's ``1 - distance`` gives ``s`` itself).

Async methods use LangChain's default (the sync method in an executor thread); SrvDB
releases the GIL during searches and writes, so they do run concurrently.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

import srvdb

from ._common import MEMORY, dedupe_last, delete_ids, ids_matching, open_database

__all__ = ["SrvDBEmbeddings", "SrvDBVectorStore"]

_PathLike = Union[str, "os.PathLike[str]"]

#: What ``get`` can return besides ids, as Chroma names them.
_INCLUDABLE = ("documents", "metadatas", "embeddings")


class SrvDBEmbeddings(Embeddings):
    """LangChain ``Embeddings`` from SrvDB's built-in text model, so no other embedding package
    is needed: all-MiniLM-L6-v2 by default (``pip install --find-links target/wheels
    srvdb-minilm``), or the path of a sentence-transformers folder of a BERT-family
    model. Vectors are unit length (384 numbers for MiniLM) and equal sentence-transformers'
    to a cosine of at least 0.9999.

    The model loads on first use, in memory only; a missing model raises ``srvdb.ModelError``
    naming the install command. ``database=`` reuses the model of an open text database
    (``srvdb.open(path, embedder=...)``) instead of loading it again.
    """

    def __init__(self, model: Optional[str] = None, *, database: Optional[srvdb.Database] = None):
        if database is not None and database.embedder is None:
            raise ValueError(
                "that database has no embedder: open it with srvdb.open(path, "
                "embedder='all-MiniLM-L6-v2'), or give SrvDBEmbeddings a model instead"
            )
        if database is not None and model is not None:
            raise ValueError("give SrvDBEmbeddings either `model` or `database`, not both")
        self.model = srvdb.text.DEFAULT_MODEL if model is None else model
        self._db = database
        self._lock = threading.Lock()

    def _embedder(self) -> srvdb.Database:
        with self._lock:
            if self._db is None:
                self._db = srvdb.open(MEMORY, embedder=self.model)
            return self._db

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._embedder().embed(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self._embedder().embed([text])[0].tolist()


class SrvDBVectorStore(VectorStore):
    """A LangChain ``VectorStore`` backed by a SrvDB database.

    Args:
        path: directory of one database (created if needed), or ``":memory:"``.
        embedding: the LangChain ``Embeddings`` for texts and queries. Default: the database's
            own embedder if it is a text database, else :class:`SrvDBEmbeddings` (the built-in
            all-MiniLM-L6-v2). ``embedding_function=`` is accepted as Chroma's name for it.
        collection_name: the collection inside ``persist_directory`` (Chroma's names; default
            ``"langchain"``); without ``persist_directory``, an in-memory collection.
        persist_directory: a directory of collections (one database per subdirectory).
        metric: ``"cosine"`` (default), ``"dot"`` or ``"l2"`` for a new database; an existing
            database keeps its own (a different value raises ``srvdb.InvalidInputError``).
        backend: ``"native"`` (default) or ``"wasm"``, as in ``srvdb.open``.
        database: an already open ``srvdb.Database`` to use instead of opening one.
    """

    def __init__(
        self,
        path: Optional[_PathLike] = None,
        embedding: Optional[Embeddings] = None,
        *,
        collection_name: Optional[str] = None,
        persist_directory: Optional[_PathLike] = None,
        embedding_function: Optional[Embeddings] = None,
        metric: Optional[str] = None,
        backend: str = "native",
        database: Optional[srvdb.Database] = None,
    ) -> None:
        if embedding is not None and embedding_function is not None:
            raise ValueError("give `embedding` or `embedding_function` (Chroma's name), not both")
        embedding = embedding if embedding is not None else embedding_function
        self._client = None
        if database is None:
            database, self._client = open_database(
                path,
                persist_directory=persist_directory,
                collection_name=collection_name,
                metric=metric,
                backend=backend,
            )
        elif path is not None or persist_directory is not None or collection_name is not None:
            raise ValueError("give `database` or where to open one (`path`, `persist_directory`), not both")
        elif metric is not None and metric != database.metric:
            raise ValueError(f"metric {metric!r} given, but the database uses {database.metric!r}")
        if embedding is None:
            embedding = SrvDBEmbeddings(database=database) if database.embedder else SrvDBEmbeddings()
        self._db = database
        self._embedding = embedding
        upgrade_legacy_records(database)

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
        metas = [dict(m or {}) for m in metadatas]
        keep = dedupe_last(out_ids)
        if len(keep) != len(out_ids):
            out = [out_ids[i] for i in keep]
            self._db.upsert(out, vectors[keep], [metas[i] for i in keep], [texts[i] for i in keep])
        else:
            self._db.upsert(out_ids, vectors, metas, texts)
        return out_ids

    def update_documents(self, ids: list[str], documents: list[Document]) -> None:
        """Replaces the text, metadata and embedding of existing documents, as Chroma's
        ``update_documents`` does. An unknown id raises ``srvdb.NotFoundError`` and changes
        nothing."""
        if len(ids) != len(documents):
            raise ValueError(f"{len(ids)} ids for {len(documents)} documents")
        if not ids:
            return
        texts = [d.page_content for d in documents]
        vectors = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
        self._db.update(
            list(ids),
            metadatas=[dict(d.metadata or {}) for d in documents],
            documents=texts,
            embeddings=vectors,
        )

    def update_document(self, document_id: str, document: Document) -> None:
        """``update_documents`` for one document."""
        self.update_documents([document_id], [document])

    def delete(
        self,
        ids: Optional[list[str]] = None,
        where: Optional[dict] = None,
        *,
        where_document: Optional[dict] = None,
        **kwargs: Any,
    ) -> Optional[bool]:
        """Deletes the documents with these ids (unknown ids are ignored), or those ``where``
        / ``where_document`` select, or, given both, those of the ids that the filter selects.
        With neither, deletes nothing and returns False (LangChain's contract allows it)."""
        if ids is None and where is None and where_document is None:
            return False
        if ids is None:
            self._db.delete(where=where, where_document=where_document)
        else:
            keep = ids_matching(self._db, where, where_document)
            delete_ids(self._db, [i for i in ids if keep is None or i in keep])
        return True

    # -- reads --------------------------------------------------------------------------------

    @staticmethod
    def _to_document(record: srvdb.Record) -> Document:
        text, metadata = _content(record)
        return Document(id=record.id, page_content=text, metadata=metadata)

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        docs = []
        for id_ in ids:
            rec = self._db.get(id_)
            if rec is not None:
                docs.append(self._to_document(rec))
        return docs

    def get(
        self,
        ids: Union[str, Sequence[str], None] = None,
        where: Optional[dict] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        where_document: Optional[dict] = None,
        include: Optional[Sequence[str]] = None,
    ) -> dict[str, Any]:
        """Documents by id and/or filter, shaped as langchain-chroma's ``get``: a dict with
        ``ids``, ``documents``, ``metadatas`` and ``embeddings`` lists (those not in
        ``include``, by default ``["documents", "metadatas"]``, are None), in insertion order
        (in the order of ``ids`` when ids are given; unknown ids are left out)."""
        include = list(_INCLUDABLE[:2] if include is None else include)
        for part in include:
            if part not in _INCLUDABLE:
                raise ValueError(f"include takes {', '.join(_INCLUDABLE)}, not {part!r}")
        offset = 0 if offset is None else offset
        if ids is None:
            records = self._db.records(
                where=where, where_document=where_document, limit=limit, offset=offset
            )
        else:
            ids = [ids] if isinstance(ids, str) else list(ids)
            keep = ids_matching(self._db, where, where_document)
            records = [
                r for r in (self._db.get(i) for i in dict.fromkeys(ids))
                if r is not None and (keep is None or r.id in keep)
            ]
            records = records[offset:] if limit is None else records[offset : offset + limit]
        contents = [_content(r) for r in records]
        return {
            "ids": [r.id for r in records],
            "documents": [t for t, _ in contents] if "documents" in include else None,
            "metadatas": [m for _, m in contents] if "metadatas" in include else None,
            "embeddings": [r.vector for r in records] if "embeddings" in include else None,
            "included": include,
        }

    def _search(
        self,
        embedding: Sequence[float],
        k: int,
        filter: Optional[dict],
        where_document: Optional[dict],
    ) -> list[tuple[srvdb.Record, float]]:
        if callable(filter):
            raise TypeError(
                "filter takes a dict in Chroma's dialect, e.g. {'source': 'a.md'} or "
                "{'year': {'$gt': 2000}}, which the engine applies during the search; "
                "callables are no longer accepted"
            )
        total = len(self._db)
        if k <= 0 or total == 0:
            return []
        query = np.asarray(embedding, dtype=np.float32)
        hits = self._db.search(query, min(k, total), where=filter, where_document=where_document)
        out = []
        for id_, score in hits:
            rec = self._db.get(id_)
            if rec is not None:  # None only if another thread deleted it meanwhile
                out.append((rec, float(score)))
        return out

    def similarity_search_with_score_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Optional[dict] = None,
        where_document: Optional[dict] = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        hits = self._search(embedding, k, filter, where_document)
        return [(self._to_document(r), s) for r, s in hits]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Optional[dict] = None,
        where_document: Optional[dict] = None,
        **kwargs: Any,
    ) -> list[Document]:
        return [self._to_document(r) for r, _ in self._search(embedding, k, filter, where_document)]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Optional[dict] = None,
        where_document: Optional[dict] = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(
            self._embedding.embed_query(query), k, filter=filter, where_document=where_document
        )

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: Optional[dict] = None,
        where_document: Optional[dict] = None,
        **kwargs: Any,
    ) -> list[Document]:
        return self.similarity_search_by_vector(
            self._embedding.embed_query(query), k, filter=filter, where_document=where_document
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
        filter: Optional[dict] = None,
        where_document: Optional[dict] = None,
        **kwargs: Any,
    ) -> list[Document]:
        candidates = self._search(embedding, max(fetch_k, k), filter, where_document)
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
        filter: Optional[dict] = None,
        where_document: Optional[dict] = None,
        **kwargs: Any,
    ) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query),
            k,
            fetch_k,
            lambda_mult,
            filter=filter,
            where_document=where_document,
        )

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Optional[Embeddings] = None,
        metadatas: Optional[list[dict]] = None,
        *,
        ids: Optional[list[str]] = None,
        path: Optional[_PathLike] = None,
        collection_name: Optional[str] = None,
        persist_directory: Optional[_PathLike] = None,
        metric: Optional[str] = None,
        backend: str = "native",
        database: Optional[srvdb.Database] = None,
        **kwargs: Any,
    ) -> "SrvDBVectorStore":
        """Opens (or creates) the database (see the class) and adds ``texts``."""
        store = cls(
            path,
            embedding,
            collection_name=collection_name,
            persist_directory=persist_directory,
            embedding_function=kwargs.pop("embedding_function", None),
            metric=metric,
            backend=backend,
            database=database,
        )
        store.add_texts(texts, metadatas, ids=ids)
        return store


# -- the record layout ----------------------------------------------------------------------------


def _legacy_payload(record: srvdb.Record) -> Optional[tuple[str, dict]]:
    """``(text, metadata)`` if ``record`` was written by the adapter before documents had their
    own column (no document; metadata exactly ``{"text": str, "metadata": dict}``), else None."""
    md = record.metadata
    if (
        record.document is None
        and isinstance(md, dict)
        and md.keys() == {"text", "metadata"}
        and isinstance(md["text"], str)
        and isinstance(md["metadata"], dict)
    ):
        return md["text"], md["metadata"]
    return None


def _content(record: srvdb.Record) -> tuple[str, dict]:
    """A record as LangChain's ``(page_content, metadata)``."""
    legacy = _legacy_payload(record)
    if legacy is not None:
        return legacy
    md = record.metadata
    if record.document is not None:
        return record.document, md if isinstance(md, dict) else {}
    if isinstance(md, dict):
        return "", md
    # A record written without this adapter, with text as its metadata: that is the content.
    return record.metadata_text or "", {}


def upgrade_legacy_records(db: srvdb.Database) -> int:
    """Rewrites the records an earlier version of this adapter wrote (``{"text", "metadata"}``
    in the metadata, no document) to the current layout: the text as the document, the user's
    metadata as the metadata, so filters and ``db.query()`` see them. Only metadata and
    documents are rewritten, not vectors (on a text database, which would embed the documents
    afresh, the stored vectors are given back unchanged). Returns how many were upgraded.

    Candidates are found by the engine (a string ``text`` field and no document), so a store
    with none costs one filtered count."""
    where = {"text": {"$gte": ""}}
    no_document = {"$not_contains": ""}
    if db.count(where=where, where_document=no_document) == 0:
        return 0
    legacy = []
    for rec in db.records(where=where, where_document=no_document):
        payload = _legacy_payload(rec)
        if payload is not None:
            legacy.append((rec.id, payload))
    if legacy:
        ids = [id_ for id_, _ in legacy]
        # A text database would embed the documents afresh: keep the stored vectors instead.
        vectors = np.stack([db[i].vector for i in ids]) if db.embedder is not None else None
        db.update(
            ids,
            metadatas=[md for _, (_, md) in legacy],
            documents=[text for _, (text, _) in legacy],
            embeddings=vectors,
        )
        db.persist()
    return len(legacy)
