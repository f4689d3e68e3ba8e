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

    # The HNSW test: hnswlib.Index (its HNSW graph), space ip, M and ef_construction as given,
    # built with add_items on every core, searched with one thread; the filter is hnswlib's
    # Python callback on the label, deletes are mark_deleted.
    hnsw_modes = ("hnsw",)
    hnsw_filtered = "knn_query(q, k, filter=callback(label)) (a Python callback per visited node)"
    hnsw_delete = "mark_deleted(label) per row"

    def build_hnsw(self, mode, base, m, ef_construction):
        import os

        n, dim = base.shape
        self.graph = self.hnswlib.Index(space="ip", dim=dim)
        self.graph.init_index(max_elements=n, M=m, ef_construction=ef_construction,
                              random_seed=100)
        self.graph.set_num_threads(os.cpu_count() or 1)
        self.graph.add_items(base, np.arange(n))
        self.graph.set_num_threads(1)
        return (f"Index(space='ip', M={m}, ef_construction={ef_construction}); add_items on "
                f"{os.cpu_count()} threads; set_ef(ef); knn_query on 1 thread"), None

    def _ef(self, ef):
        if getattr(self, "_at_ef", None) != ef:
            self.graph.set_ef(ef)
            self._at_ef = ef

    def search_hnsw(self, query, k, mode, ef):
        self._ef(ef)
        labels, _ = self.graph.knn_query(query, k, num_threads=1)
        return labels[0].tolist()

    def search_hnsw_where(self, query, k, mode, ef, field, value, mask, filter_mode):
        self._ef(ef)
        labels, _ = self.graph.knn_query(query, k, num_threads=1,
                                         filter=lambda label: bool(mask[label]))
        return labels[0].tolist()

    def delete_hnsw(self, mode, rows):
        for r in rows.tolist():
            self.graph.mark_deleted(r)
