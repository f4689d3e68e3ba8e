"""usearch exact search: `usearch.index.search(dataset, query, exact=True)`, the library's
brute-force path (no HNSW graph is built, since exact search would not use it); the vectors
are kept in a .npy file, as usearch has no storage of its own for this path."""

from __future__ import annotations

import numpy as np

from .base import Adapter
from .numpy_bf import save_metadata


class UsearchExact(Adapter):
    name = "usearch"
    has_batch = True
    how = "usearch.index.search(..., metric=ip, exact=True) over a .npy; metadata in JSON"
    no_filter_reason = "no metadata store: a filter needs the caller's own metadata and a predicate callback"

    def __init__(self):
        import usearch.index

        self.usearch = usearch.index

    def version(self):
        import usearch

        return usearch.__version__

    def ingest(self, path, ids, vectors, metadatas):
        np.save(path / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        save_metadata(path, ids, metadatas)

    def open(self, path):
        self.base = np.load(path / "vectors.npy")

    def _search(self, queries, k):
        return self.usearch.search(self.base, queries, k, self.usearch.MetricKind.IP, exact=True)

    def search(self, query, k):
        return self._search(query, k).keys.tolist()

    def search_batch(self, queries, k):
        return self._search(queries, k).keys
