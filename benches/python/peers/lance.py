"""LanceDB with no vector index, so its search is a brute-force (exact) scan."""

from __future__ import annotations

import json

import numpy as np

from .base import Adapter, dist_version

TABLE = "bench"


class Lance(Adapter):
    name = "lancedb"
    how = "lancedb.connect(path), create_table from Arrow, no index (flat scan), distance_type dot"

    def __init__(self):
        import lancedb
        import pyarrow as pa

        self.lancedb = lancedb
        self.pa = pa

    def version(self):
        return dist_version("lancedb")

    def ingest(self, path, ids, vectors, metadatas):
        pa = self.pa
        n, dim = vectors.shape
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        table = pa.table({
            "row": pa.array(np.arange(n, dtype=np.int64)),
            "doc_id": pa.array(ids),
            "meta": pa.array([json.dumps(m) for m in metadatas]),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        })
        db = self.lancedb.connect(str(path))
        db.create_table(TABLE, data=table)

    def open(self, path):
        self.table = self.lancedb.connect(str(path)).open_table(TABLE)

    def search(self, query, k):
        res = (self.table.search(query).distance_type("dot").limit(k).select(["row"])
               .to_arrow())
        return res.column("row").to_pylist()
