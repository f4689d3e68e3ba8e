"""LlamaIndex vector store over a SrvDB database (``pip install "llama-index-core>=0.14,<0.15"``).

.. code-block:: python

    from llama_index.core import StorageContext, VectorStoreIndex
    from srvdb.integrations.llama_index import SrvDBVectorStore

    store = SrvDBVectorStore(path="./vectors")            # cosine by default
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=store)
    )

Each node is one SrvDB record: the node id, its embedding, and as the record's metadata the
JSON of LlamaIndex's ``node_to_metadata_dict`` (the node's own metadata keys at the top level,
plus ``_node_content``, ``_node_type`` and ``ref_doc_id``). The store keeps the text
(``stores_text = True``), so ``query`` returns whole nodes. Adding an existing node id
replaces it.

``query`` supports ``VectorStoreQueryMode.DEFAULT`` with ``similarity_top_k``; similarities
are the engine's scores (cosine similarity by default, higher is better). Metadata filters
(``MetadataFilters``: ExactMatch/EQ and the other operators LlamaIndex's
``build_metadata_filter_fn`` evaluates, AND/OR) and ``doc_ids`` / ``node_ids`` (an empty list restricts nothing) are applied
*after* the search, which over-fetches (4 × k, at least 32) and widens until ``top_k``
matches are found or the whole database has been ranked: the engine has no filters yet.

``delete(ref_doc_id)`` and filtered ``get_nodes`` / ``delete_nodes`` read every record's
metadata (a scan, O(number of records)): SrvDB has no secondary index yet.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Sequence, Union

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import (
    build_metadata_filter_fn,
    metadata_dict_to_node,
    node_to_metadata_dict,
)

import srvdb

from ._common import dedupe_last, filtered_hits

__all__ = ["SrvDBVectorStore"]


class SrvDBVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store backed by a SrvDB database.

    Args:
        path: directory of the database (created if needed). Ignored if ``database`` is given.
        metric: ``"cosine"`` (default), ``"dot"`` or ``"l2"`` for a new database.
        backend: ``"native"`` (default) or ``"wasm"``, as in ``srvdb.open``.
        database: an already open ``srvdb.Database`` to use instead of ``path``.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    path: Optional[str] = None

    _db: srvdb.Database = PrivateAttr()

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]", None] = None,
        *,
        metric: Optional[str] = None,
        backend: str = "native",
        database: Optional[srvdb.Database] = None,
        **kwargs: Any,
    ) -> None:
        if database is None:
            if path is None:
                raise ValueError("SrvDBVectorStore needs a `path` or a `database`")
            database = srvdb.open(path, metric=metric or "cosine", backend=backend)
        super().__init__(path=os.fspath(database.path), **kwargs)
        self._db = database

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
        keep = dedupe_last(ids)
        kept = [nodes[i] for i in keep]
        vectors = np.asarray([n.get_embedding() for n in kept], dtype=np.float32)
        metadatas = [
            node_to_metadata_dict(n, remove_text=False, flat_metadata=self.flat_metadata)
            for n in kept
        ]
        self._db.upsert([n.node_id for n in kept], vectors, metadatas)
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Deletes every node whose ``ref_doc_id`` is this one (a scan of all records)."""
        doomed = [
            id_
            for id_, md in self._all_metadata()
            if isinstance(md, dict) and md.get("ref_doc_id") == ref_doc_id
        ]
        if doomed:
            self._db.delete(doomed)

    def delete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        doomed = [n.node_id for n in self.get_nodes(node_ids, filters)]
        if doomed:
            self._db.delete(doomed)

    def clear(self) -> None:
        ids = self._db.ids()
        if ids:
            self._db.delete(ids)

    # -- reads --------------------------------------------------------------------------------

    def _all_metadata(self):
        for id_ in self._db.ids():
            rec = self._db.get(id_)
            if rec is not None:
                yield id_, rec.metadata

    @staticmethod
    def _to_node(record: srvdb.Record) -> BaseNode:
        node = metadata_dict_to_node(record.metadata)
        node.embedding = record.vector.tolist()
        return node

    def get_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> List[BaseNode]:
        keep = self._filter_fn(filters)
        ids = self._db.ids() if node_ids is None else node_ids
        out = []
        for id_ in ids:
            rec = self._db.get(id_)
            if rec is not None and (keep is None or keep(rec)):
                out.append(self._to_node(rec))
        return out

    @staticmethod
    def _filter_fn(
        filters: Optional[MetadataFilters],
        doc_ids: Optional[List[str]] = None,
        node_ids: Optional[List[str]] = None,
    ) -> Optional[Callable[[srvdb.Record], bool]]:
        checks: list[Callable[[srvdb.Record], bool]] = []
        if filters is not None and filters.filters:
            fn = build_metadata_filter_fn(lambda md: md, filters)
            checks.append(lambda rec: isinstance(rec.metadata, dict) and fn(rec.metadata))
        # An empty list restricts nothing: VectorStoreIndex passes node_ids=[] to stores that
        # keep the text (as other stores, e.g. Chroma and Qdrant, this reads it as "no ids").
        if doc_ids:
            docs = set(doc_ids)
            checks.append(
                lambda rec: isinstance(rec.metadata, dict) and rec.metadata.get("ref_doc_id") in docs
            )
        if node_ids:
            nodes = set(node_ids)
            checks.append(lambda rec: rec.id in nodes)
        if not checks:
            return None
        return lambda rec: all(check(rec) for check in checks)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise NotImplementedError(
                f"SrvDBVectorStore supports VectorStoreQueryMode.DEFAULT only, not {query.mode}"
            )
        if query.query_embedding is None:
            raise ValueError("SrvDBVectorStore.query needs query.query_embedding")
        accept = self._filter_fn(query.filters, query.doc_ids, query.node_ids)
        q = np.asarray(query.query_embedding, dtype=np.float32)
        nodes, sims, ids = [], [], []
        for rec, score in filtered_hits(self._db, q, query.similarity_top_k, accept):
            nodes.append(self._to_node(rec))
            sims.append(float(score))
            ids.append(rec.id)
        return VectorStoreQueryResult(nodes=nodes, similarities=sims, ids=ids)
