"""SrvDB through its Python extension: `backend="native"` (in process) or `backend="wasm"`
(the same engine as a WASI component in the wasmtime sandbox)."""

from __future__ import annotations

import numpy as np

from .base import Adapter


class SrvDB(Adapter):
    has_batch = True

    def __init__(self, backend: str = "native"):
        import srvdb

        self.srvdb = srvdb
        self.backend = backend
        self.name = "srvdb" if backend == "native" else f"srvdb-{backend}"
        self.how = f'srvdb.open(path, metric="dot", backend="{backend}"); one add(), close()'

    def version(self):
        return self.srvdb.__version__

    def ingest(self, path, ids, vectors, metadatas):
        db = self.srvdb.open(path, dim=vectors.shape[1], metric="dot", backend=self.backend)
        db.add(ids, vectors, metadatas)
        db.close()

    def open(self, path):
        self.db = self.srvdb.open(path, backend=self.backend)

    def search(self, query, k):
        return [int(id_) for id_, _ in self.db.search(query, k)]

    def search_batch(self, queries, k):
        ids, _ = self.db.search_batch(queries, k, numpy=True)
        return ids.astype(np.int64)

    def close(self):
        self.db.close()
