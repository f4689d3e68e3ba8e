"""LanceDB with no vector index, so its search is a brute-force (exact) scan. The filter
columns (`bucket`, `source`) are real columns, so `.where()` can use them; its `"indexed"` mode
adds a scalar index on `bucket` (`create_scalar_index`)."""

from __future__ import annotations

import json

import numpy as np

from .base import Adapter, dist_version

TABLE = "bench"


class Lance(Adapter):
    name = "lancedb"
    how = "lancedb.connect(path), create_table from Arrow, no index (flat scan), distance_type dot"
    filtered = ("search(q).where(\"bucket = v\") with prefilter=True (its default) and with "
                "prefilter=False (a post-filter of the k nearest); indexed: "
                "create_scalar_index(\"bucket\") and prefilter=True")
    filter_modes = ("prefilter", "postfilter")

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
            "bucket": pa.array([m["bucket"] for m in metadatas], type=pa.int64()),
            "source": pa.array([m["source"] for m in metadatas]),
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

    def search_where(self, query, k, bucket, mode):
        res = (self.table.search(query).distance_type("dot")
               .where(f"bucket = {int(bucket)}", prefilter=(mode != "postfilter"))
               .limit(k).select(["row"]).to_arrow())
        return res.column("row").to_pylist()

    def index_field(self, field):
        self.table.create_scalar_index(field)
        return f'create_scalar_index("{field}") (BTREE), then prefilter=True'
