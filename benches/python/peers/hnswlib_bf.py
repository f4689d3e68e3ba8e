"""hnswlib BFIndex: hnswlib's brute-force index, saved with save_index."""

from __future__ import annotations

import numpy as np

from .base import Adapter, dist_version
from .numpy_bf import save_metadata


class HnswlibBF(Adapter):
    name = "hnswlib"
    has_batch = True
    how = "BFIndex(space='ip'); save_index/load_index; metadata in a JSON file beside it"
    no_filter_reason = "no metadata store: a filter needs the caller's own metadata and a Python filter callback"

    def __init__(self):
        import hnswlib

        self.hnswlib = hnswlib

    def version(self):
        return dist_version("hnswlib")

    def ingest(self, path, ids, vectors, metadatas):
        n, dim = vectors.shape
        index = self.hnswlib.BFIndex(space="ip", dim=dim)
        index.init_index(max_elements=n)
        index.add_items(vectors, np.arange(n))
        index.save_index(str(path / "index.bin"))
        save_metadata(path, ids, metadatas)
        (path / "dim").write_text(f"{n} {dim}")

    def open(self, path):
        n, dim = map(int, (path / "dim").read_text().split())
        self.index = self.hnswlib.BFIndex(space="ip", dim=dim)
        self.index.load_index(str(path / "index.bin"), max_elements=n)

    def search(self, query, k):
        labels, _ = self.index.knn_query(query, k)
        return labels[0].tolist()

    def search_batch(self, queries, k):
        labels, _ = self.index.knn_query(queries, k)
        return labels
