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
        import time

        t0 = time.perf_counter()
        client = self._client(path)
        col = client.create_collection(COLLECTION, metadata={"hnsw:space": "ip"})
        step = client.get_max_batch_size()
        for start in range(0, len(ids), step):
            col.add(ids=ids[start:start + step], embeddings=vectors[start:start + step],
                    metadatas=metadatas[start:start + step])
        _stop(client)
        self.ingest_seconds = time.perf_counter() - t0

    def open(self, path):
        self.path = path
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

    # The HNSW test: Chroma's own HNSW (its defaults: M 16, ef_construction 100), built as
    # the rows are added, so its build time is the ingest's; ef_search set per ef with
    # modify(configuration=...) and a reopen (an open handle keeps the ef it loaded with);
    # the filter is query(where=...); deletes are delete(ids).
    hnsw_modes = ("default",)
    hnsw_filtered = 'query(..., where={"hsel": v}) with its HNSW index'
    hnsw_delete = "delete(ids)"
    hnsw_ef_reopens = True

    def build_hnsw(self, mode, base, m, ef_construction):
        self.search(base[0], 10)  # loads the index: counted in the RSS growth
        return ("its default HNSW (M 16, ef_construction 100) built by add() during ingest "
                "(build time: the durable ingest's); "
                'ef: modify(configuration={"hnsw": {"ef_search": ef}}), then reopened'), getattr(
                    self, "ingest_seconds", None)

    def set_hnsw_ef(self, mode, ef):
        self.col.modify(configuration={"hnsw": {"ef_search": ef}})
        _stop(self.client)
        self.open(self.path)

    def search_hnsw(self, query, k, mode, ef):
        return self.search(query, k)

    def search_hnsw_where(self, query, k, mode, ef, field, value, mask, filter_mode):
        res = self.col.query(query_embeddings=query[None, :], n_results=k,
                             where={field: value}, include=[])
        return [int(i) for i in res["ids"][0]]

    def delete_hnsw(self, mode, rows):
        ids = [str(r) for r in rows.tolist()]
        step = self.client.get_max_batch_size()
        for start in range(0, len(ids), step):
            self.col.delete(ids=ids[start:start + step])

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
