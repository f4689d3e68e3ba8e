"""usearch exact search: `usearch.index.search(dataset, query, exact=True)`, the library's
brute-force path (no HNSW graph is built, since exact search would not use it); the vectors
are kept in a .npy file, as usearch has no storage of its own for this path."""

from __future__ import annotations

import numpy as np

from .base import Adapter, oversample_of, rescore
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

    # The quantized test: usearch's exact (brute-force) search over int8 rows (round(127 x),
    # the cast usearch's own i8 storage makes of unit vectors; metric ip) and over 1-bit rows
    # (the signs around the per-dimension mean, packed; metric hamming), as they are, and with
    # k x oversample candidates rescored with NumPy over the f32 rows (usearch has no
    # rescoring of its own). An `Index(dtype="i8"/"b1")` would build an HNSW graph first
    # (minutes at 1M rows) that exact search does not use.
    quantized_modes = ("f32", "i8", "i8 x4", "b1", "b1 x10")

    def prepare_quantized(self, mode, base):
        self.qdata = getattr(self, "qdata", {})
        if mode == "f32":
            self.qdata[mode] = (self.base, self.usearch.MetricKind.IP)
            return "usearch.index.search(f32 rows, metric=ip, exact=True)", None
        if mode.startswith("i8"):
            data = np.round(base * 127).astype(np.int8)
            self.qdata[mode] = (data, self.usearch.MetricKind.IP)
            how = "usearch.index.search(int8 rows, metric=ip, exact=True)"
        else:
            self.mean = base.mean(axis=0)
            data = np.packbits(base > self.mean, axis=1)
            self.qdata[mode] = (data, self.usearch.MetricKind.Hamming)
            how = "usearch.index.search(packed sign bits, metric=hamming, exact=True)"
        if "x" in mode:
            how += f", {oversample_of(mode)} x k candidates rescored with NumPy"
        return how, data.nbytes

    def _encode(self, queries, mode):
        if mode == "f32":
            return queries
        if mode.startswith("i8"):
            return np.round(queries * 127).astype(np.int8)
        return np.packbits(queries > self.mean, axis=-1)

    def search_batch_quantized(self, queries, k, mode):
        data, metric = self.qdata[mode]
        wide = k * oversample_of(mode) if "x" in mode else k
        keys = self.usearch.search(data, self._encode(queries, mode), wide, metric,
                                   exact=True).keys
        if wide == k:
            return keys
        queries = np.atleast_2d(queries)
        return rescore(self.base, queries, np.atleast_2d(keys).astype(np.int64), k)

    def search_quantized(self, query, k, mode):
        return np.ravel(self.search_batch_quantized(query, k, mode))[:k].tolist()

    # The HNSW test: usearch.index.Index(ndim, metric=ip, dtype=f32, connectivity=M,
    # expansion_add=ef_construction), add on every core (threads=0), searched with
    # expansion_search = ef and threads=1. Its Python search has no filter here, and its
    # remove() leaves tombstones (the point), so neither is measured.
    hnsw_modes = ("hnsw",)

    def build_hnsw(self, mode, base, m, ef_construction):
        import os

        self.graph = self.usearch.Index(ndim=base.shape[1], metric=self.usearch.MetricKind.IP,
                                        dtype="f32", connectivity=m,
                                        expansion_add=ef_construction)
        self.graph.add(np.arange(len(base)), np.ascontiguousarray(base, dtype=np.float32),
                       threads=0)
        return (f"Index(metric=ip, dtype=f32, connectivity={m}, expansion_add="
                f"{ef_construction}); add(threads=0: {os.cpu_count()} cores); "
                "expansion_search = ef; search(threads=1, exact=False)"), None

    def search_hnsw(self, query, k, mode, ef):
        if self.graph.expansion_search != ef:
            self.graph.expansion_search = ef
        return self.graph.search(query, k, threads=1, exact=False).keys.tolist()
