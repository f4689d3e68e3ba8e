"""LlamaIndex vector store over a SrvDB database (``pip install "llama-index-core>=0.14,<0.15"``).

.. code-block:: python

    from llama_index.core import StorageContext, VectorStoreIndex
    from srvdb.integrations.llama_index import SrvDBVectorStore

    store = SrvDBVectorStore(path="./vectors")            # cosine by default
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=store)
    )

Each node is one SrvDB record: the node id, its embedding, the node's text as the record's
document, and as the record's metadata the dict of LlamaIndex's ``node_to_metadata_dict`` (the
node's own metadata keys at the top level, where filters see them, plus ``_node_content``,
``_node_type`` and ``ref_doc_id``). The store keeps the text (``stores_text = True``), so
``query`` returns whole nodes. Adding an existing node id replaces it. Records written by
earlier versions, with the text inside ``_node_content``, read as before.

``MetadataFilters`` become the engine's filter (Chroma's dialect, applied during the scan, so
the top k are exactly the k best matching nodes): EQ, NE, GT, GTE, LT, LTE, IN, NIN map to
the operators of the same name; ANY to ``$in`` and ALL to one ``$eq`` per value, CONTAINS to
``$eq`` (on a list-valued field, each matches if any element does); IS_EMPTY to "no string,
number or bool value" (missing, null, ``""``, ``[]``; unlike LlamaIndex's evaluator, also an
object or a list of empty strings); conditions AND, OR and NOT (none of
the filters) and nested ``MetadataFilters`` nest. TEXT_MATCH and TEXT_MATCH_INSENSITIVE
(substring of a metadata value) have no engine operator and raise ``NotImplementedError``.
``doc_ids`` filter on ``ref_doc_id``; ``node_ids`` (an empty list restricts nothing) are
scored exactly over those nodes. A malformed filter raises ``srvdb.InvalidFilterError``.

``query`` supports ``VectorStoreQueryMode.DEFAULT`` and ``MMR`` (``mmr_threshold``, from the
query or ``vector_store_kwargs``, default 0.5; candidates ``mmr_prefetch_k``, else
``mmr_prefetch_factor`` (default 4) times ``similarity_top_k``). A query without an embedding
returns the first ``similarity_top_k`` matching nodes in insertion order, with no
similarities. Similarities are the engine's scores (cosine similarity by default, higher is
better). ``delete(ref_doc_id)`` and filtered ``delete_nodes`` run as one filtered delete in
the engine.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Union

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

import srvdb

from ._common import best_first, dedupe_last, delete_ids, ids_matching, open_database, scores

__all__ = ["SrvDBVectorStore", "to_where"]

#: MMR candidates per requested node when neither ``mmr_prefetch_k`` nor
#: ``mmr_prefetch_factor`` is given (LlamaIndex's stores use the same factor).
_MMR_PREFETCH_FACTOR = 4.0

_SAME_NAME = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}

def _has_value(key: str) -> dict:
    """``key`` holds a non-empty string, a number or a bool (or a list holding one): every
    number is at least the lowest double, and bools equal only bools."""
    return {
        "$or": [
            {key: {"$gt": ""}},
            {key: {"$gte": -1.7976931348623157e308}},
            {key: {"$in": [True, False]}},
        ]
    }


def _one_filter(f: MetadataFilter) -> dict:
    op, key, value = f.operator, f.key, f.value
    if op in _SAME_NAME:
        return {key: {_SAME_NAME[op]: value}}
    if op == FilterOperator.ANY:
        return {key: {"$in": value}}
    if op == FilterOperator.ALL:
        values = list(value) if isinstance(value, list) else [value]
        if not values:
            return {}
        return {"$and": [{key: {"$eq": v}} for v in values]}
    if op == FilterOperator.CONTAINS:
        return {key: {"$eq": value}}
    if op == FilterOperator.IS_EMPTY:
        return {"$not": _has_value(key)}
    raise NotImplementedError(
        f"filter operator {op.name} on {key!r} has no SrvDB equivalent: SrvDB matches "
        "substrings only in the node text (where_document); use EQ, NE, GT, GTE, LT, LTE, IN, "
        "NIN, ANY, ALL, CONTAINS or IS_EMPTY"
    )


def to_where(filters: Optional[MetadataFilters]) -> Optional[dict]:
    """``filters`` as SrvDB's ``where`` (Chroma's dialect), None if they restrict nothing."""
    if filters is None or not filters.filters:
        return None
    parts = [
        to_where(f) if isinstance(f, MetadataFilters) else _one_filter(f) for f in filters.filters
    ]
    parts = [p if p is not None else {} for p in parts]
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    any_of = parts[0] if len(parts) == 1 else {"$or": parts}
    if condition == FilterCondition.OR:
        return any_of
    if condition == FilterCondition.NOT:
        return {"$not": any_of}
    raise NotImplementedError(f"filter condition {condition!r} has no SrvDB equivalent")


def _and(*wheres: Optional[dict]) -> Optional[dict]:
    parts = [w for w in wheres if w is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


class SrvDBVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store backed by a SrvDB database.

    Args:
        path: directory of the database (created if needed), or ``":memory:"``.
        collection_name: a collection inside ``persist_directory`` (default ``"langchain"``,
            Chroma's); without ``persist_directory``, an in-memory collection.
        persist_directory: a directory of collections (one database per subdirectory).
        metric: ``"cosine"`` (default), ``"dot"`` or ``"l2"`` for a new database.
        backend: ``"native"`` (default) or ``"wasm"``, as in ``srvdb.open``.
        database: an already open ``srvdb.Database`` to use instead of opening one.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    path: Optional[str] = None

    _db: srvdb.Database = PrivateAttr()
    _client: Any = PrivateAttr(default=None)

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]", None] = None,
        *,
        collection_name: Optional[str] = None,
        persist_directory: Union[str, "os.PathLike[str]", None] = None,
        metric: Optional[str] = None,
        backend: str = "native",
        database: Optional[srvdb.Database] = None,
        **kwargs: Any,
    ) -> None:
        client = None
        if database is None:
            database, client = open_database(
                path,
                persist_directory=persist_directory,
                collection_name=collection_name,
                metric=metric,
                backend=backend,
            )
        path = None if database.path is None else os.fspath(database.path)
        super().__init__(path=path, **kwargs)
        self._db = database
        self._client = client

    @classmethod
    def class_name(cls) -> str:
        return "SrvDBVectorStore"

    @property
    def client(self) -> srvdb.Database:
        """The underlying ``srvdb.Database``."""
        return self._db

    def close(self) -> None:
        """Commits and closes the database."""
        self._db.close()

    # -- writes -------------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        if not nodes:
            return []
        ids = [n.node_id for n in nodes]
        kept = [nodes[i] for i in dedupe_last(ids)]
        vectors = np.asarray([n.get_embedding() for n in kept], dtype=np.float32)
        metadatas = [
            node_to_metadata_dict(n, remove_text=True, flat_metadata=self.flat_metadata)
            for n in kept
        ]
        documents = [n.get_content(metadata_mode=MetadataMode.NONE) for n in kept]
        self._db.upsert([n.node_id for n in kept], vectors, metadatas, documents)
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Deletes every node whose ``ref_doc_id`` is this one (one filtered delete)."""
        self._db.delete(where={"ref_doc_id": ref_doc_id})

    def delete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        """Deletes the nodes with these ids (unknown ones are ignored) that ``filters``
        select; ``node_ids=None`` means every node the filters select."""
        where = to_where(filters)
        if node_ids is None:
            if where is not None:
                self._db.delete(where=where)
            return
        keep = ids_matching(self._db, where)
        delete_ids(self._db, [i for i in node_ids if keep is None or i in keep])

    def clear(self) -> None:
        self._db.delete(where={})

    # -- reads --------------------------------------------------------------------------------

    @staticmethod
    def _to_node(record: srvdb.Record) -> BaseNode:
        # Records written before the text had its own column keep it in _node_content.
        node = metadata_dict_to_node(record.metadata, text=record.document)
        node.embedding = record.vector.tolist()
        return node

    def get_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> List[BaseNode]:
        where = to_where(filters)
        if node_ids is None:
            return [self._to_node(r) for r in self._db.records(where=where)]
        keep = ids_matching(self._db, where)
        out = []
        for id_ in node_ids:
            rec = self._db.get(id_)
            if rec is not None and (keep is None or id_ in keep):
                out.append(self._to_node(rec))
        return out

    def _where(self, query: VectorStoreQuery) -> Optional[dict]:
        where = to_where(query.filters)
        # An empty list restricts nothing: VectorStoreIndex passes node_ids=[] to stores that
        # keep the text (as other stores, e.g. Chroma and Qdrant, this reads it as "no ids").
        if query.doc_ids:
            where = _and(where, {"ref_doc_id": {"$in": list(query.doc_ids)}})
        return where

    def _candidates(
        self, query: VectorStoreQuery, q: np.ndarray, k: int, where: Optional[dict]
    ) -> list[tuple[srvdb.Record, float]]:
        """The ``k`` best matching records and their scores, best first."""
        total = len(self._db)
        if k <= 0 or total == 0:
            return []
        if query.node_ids:
            # Only these nodes: score them here, exactly as the engine does.
            keep = ids_matching(self._db, where)
            recs = [self._db.get(i) for i in dict.fromkeys(query.node_ids)]
            recs = [r for r in recs if r is not None and (keep is None or r.id in keep)]
            if not recs:
                return []
            s = scores(self._db.metric, np.stack([r.vector for r in recs]), q)
            return [(recs[i], float(s[i])) for i in best_first(self._db.metric, s)[:k]]
        out = []
        for id_, score in self._db.search(q, min(k, total), where=where):
            rec = self._db.get(id_)
            if rec is not None:  # None only if another thread deleted it meanwhile
                out.append((rec, float(score)))
        return out

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            raise NotImplementedError(
                f"SrvDBVectorStore supports VectorStoreQueryMode.DEFAULT and MMR, not {query.mode}"
            )
        where = self._where(query)
        top_k = query.similarity_top_k
        if query.query_embedding is None:
            return self._query_without_embedding(query, where)
        q = np.asarray(query.query_embedding, dtype=np.float32)
        if query.mode == VectorStoreQueryMode.DEFAULT:
            hits = self._candidates(query, q, top_k, where)
            return VectorStoreQueryResult(
                nodes=[self._to_node(r) for r, _ in hits],
                similarities=[s for _, s in hits],
                ids=[r.id for r, _ in hits],
            )
        prefetch = kwargs.get("mmr_prefetch_k")
        if prefetch is None:
            factor = kwargs.get("mmr_prefetch_factor", _MMR_PREFETCH_FACTOR)
            prefetch = int(top_k * factor)
        hits = self._candidates(query, q, max(prefetch, top_k), where)
        if not hits:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        threshold = query.mmr_threshold
        if threshold is None:
            threshold = kwargs.get("mmr_threshold")
        by_id = {r.id: r for r, _ in hits}
        sims, ids = get_top_k_mmr_embeddings(
            query.query_embedding,
            [r.vector.tolist() for r, _ in hits],
            similarity_top_k=top_k,
            embedding_ids=list(by_id),
            mmr_threshold=threshold,
        )
        return VectorStoreQueryResult(
            nodes=[self._to_node(by_id[i]) for i in ids],
            similarities=[float(s) for s in sims],
            ids=list(ids),
        )

    def _query_without_embedding(
        self, query: VectorStoreQuery, where: Optional[dict]
    ) -> VectorStoreQueryResult:
        """The first ``similarity_top_k`` matching nodes in insertion order (no ranking)."""
        top_k = query.similarity_top_k
        if query.node_ids:
            records = self.get_nodes(list(query.node_ids), None)
            keep = ids_matching(self._db, where)
            nodes = [n for n in records if keep is None or n.node_id in keep][:top_k]
        else:
            nodes = [self._to_node(r) for r in self._db.records(where=where, limit=top_k)]
        return VectorStoreQueryResult(nodes=nodes, similarities=None, ids=[n.node_id for n in nodes])
