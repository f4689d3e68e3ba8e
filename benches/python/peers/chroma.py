"""chromadb PersistentClient: an HNSW index (chroma has no exact search), so approximate:
its recall is reported, not assumed. Inner-product space, default HNSW parameters."""

from __future__ import annotations

import numpy as np

from .base import Adapter, dist_version

COLLECTION = "bench"


class Chroma(Adapter):
    name = "chroma"
    exact = False
    has_batch = True
    how = "PersistentClient, HNSW (approximate, defaults), space ip; batch: query() with many embeddings"
    filtered = 'query(..., where={"bucket": v}) (its metadata filter with the HNSW index)'

    def __init__(self):
        import chromadb

        self.chromadb = chromadb

    def version(self):
        return dist_version("chromadb")

    def _client(self, path):
        from chromadb.config import Settings

        return self.chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))

    def ingest(self, path, ids, vectors, metadatas):
        client = self._client(path)
        col = client.create_collection(COLLECTION, metadata={"hnsw:space": "ip"})
        step = client.get_max_batch_size()
        for start in range(0, len(ids), step):
            col.add(ids=ids[start:start + step], embeddings=vectors[start:start + step],
                    metadatas=metadatas[start:start + step])
        _stop(client)

    def open(self, path):
        self.client = self._client(path)
        self.col = self.client.get_collection(COLLECTION)

    def search(self, query, k):
        res = self.col.query(query_embeddings=query[None, :], n_results=k, include=[])
        return [int(i) for i in res["ids"][0]]

    def search_batch(self, queries, k):
        res = self.col.query(query_embeddings=queries, n_results=k, include=[])
        return np.array([[int(i) for i in row] for row in res["ids"]])

    def search_where(self, query, k, bucket, mode):
        res = self.col.query(query_embeddings=query[None, :], n_results=k,
                             where={"bucket": bucket}, include=[])
        return [int(i) for i in res["ids"][0]]

    def close(self):
        _stop(self.client)


def _stop(client) -> None:
    """Chroma has no public close(): stopping the client's system flushes and releases it."""
    system = getattr(client, "_system", None)
    if system is not None:
        system.stop()
    clear = getattr(client, "clear_system_cache", None)
    if clear is not None:
        clear()
