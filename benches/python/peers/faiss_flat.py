"""faiss IndexFlatIP: exact inner-product search, saved with faiss.write_index."""

from __future__ import annotations

import numpy as np

from .base import Adapter
from .numpy_bf import save_metadata


class FaissFlat(Adapter):
    name = "faiss"
    has_batch = True
    how = "IndexFlatIP; write_index/read_index; metadata in a JSON file beside it"
    no_filter_reason = "no metadata store: a filter needs the caller's own metadata turned into an IDSelector"

    def __init__(self):
        import faiss

        self.faiss = faiss

    def version(self):
        return self.faiss.__version__

    def ingest(self, path, ids, vectors, metadatas):
        index = self.faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.faiss.write_index(index, str(path / "index.faiss"))
        save_metadata(path, ids, metadatas)

    def open(self, path):
        self.index = self.faiss.read_index(str(path / "index.faiss"))

    def search(self, query, k):
        _, rows = self.index.search(query[None, :], k)
        return rows[0].tolist()

    def search_batch(self, queries, k):
        _, rows = self.index.search(np.ascontiguousarray(queries), k)
        return rows
