"""SrvDB through its Python extension: `backend="native"` (in process) or `backend="wasm"`
(the same engine as a WASI component in the wasmtime sandbox)."""

from __future__ import annotations

import numpy as np

from .base import Adapter, oversample_of


class SrvDB(Adapter):
    has_batch = True

    def __init__(self, backend: str = "native"):
        import srvdb

        self.srvdb = srvdb
        self.backend = backend
        self.name = "srvdb" if backend == "native" else f"srvdb-{backend}"
        self.how = f'srvdb.open(path, metric="dot", backend="{backend}"); one add(), close()'
        # Exact at every selectivity: the filter is a row bitmap applied during the scan.
        self.filtered = ('search(q, k, where={"bucket": v}) (exact; the filter applied during '
                         'the scan); indexed: create_field_index("bucket")')
        self.filter_modes = ("scan",)

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

    def search_where(self, query, k, bucket, mode):
        return [int(id_) for id_, _ in self.db.search(query, k, where={"bucket": bucket})]

    def index_field(self, field):
        self.db.create_field_index(field)
        return f'create_field_index("{field}")'

    # The quantized test: the exact f32 scan (exact=True), then create_index with int8 and
    # with binary codes (each replaces the last), searched at oversample 4 and 10 (issue
    # 16's limits, and FAISS's k_factor here), the candidates rescored exactly by the engine.
    quantized_modes = ("f32", "int8 x4", "binary x10")

    def prepare_quantized(self, mode, base):
        if mode == "f32":
            return "search(q, k, exact=True): the f32 scan", None
        quantization = mode.split()[0]
        info = self.db.create_index(kind="flat", quantization=quantization)
        info = self.db.index_info() if info is None else info
        size = info.get("bytes") if isinstance(info, dict) else getattr(info, "bytes", None)
        return (f'create_index(kind="flat", quantization="{quantization}"); '
                f"search(q, k, oversample={oversample_of(mode)})"), size

    def _options(self, mode):
        return {"exact": True} if mode == "f32" else {"oversample": oversample_of(mode)}

    def search_quantized(self, query, k, mode):
        return [int(id_) for id_, _ in self.db.search(query, k, **self._options(mode))]

    def search_batch_quantized(self, queries, k, mode):
        ids, _ = self.db.search_batch(queries, k, numpy=True, **self._options(mode))
        return ids.astype(np.int64)

    def close(self):
        self.db.close()
