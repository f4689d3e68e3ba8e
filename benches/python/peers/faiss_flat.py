"""faiss IndexFlatIP: exact inner-product search, saved with faiss.write_index."""

from __future__ import annotations

import numpy as np

from .base import Adapter, oversample_of, rescore
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

    # The quantized test: IndexFlatIP; int8 codes (IndexScalarQuantizer QT_8bit, trained per
    # dimension) rescored by IndexRefineFlat with k_factor = the oversample; 1-bit codes
    # (IndexBinaryFlat over the signs around the per-dimension mean, SrvDB's codes), whose
    # k x oversample candidates are rescored with NumPy, as FAISS has no refinement for a
    # binary index.
    quantized_modes = ("f32", "int8 x4", "binary x10")

    def prepare_quantized(self, mode, base):
        faiss = self.faiss
        d = base.shape[1]
        if mode == "f32":
            self.qindex, self.qbase = self.index, None
            return "IndexFlatIP (read_index)", None
        os_ = oversample_of(mode)
        if mode.startswith("int8"):
            sq = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit,
                                            faiss.METRIC_INNER_PRODUCT)
            index = faiss.IndexRefineFlat(sq)
            index.train(base)
            index.add(base)
            index.k_factor = os_
            self.qindex, self.qbase = index, None
            return (f"IndexRefineFlat(IndexScalarQuantizer(QT_8bit, IP)), k_factor {os_} "
                    "(the refine index keeps its own f32 copy)", sq.sa_code_size() * len(base))
        self.mean = base.mean(axis=0)
        index = faiss.IndexBinaryFlat(d)
        index.add(self._bits(base))
        self.qindex, self.qbase, self.os = index, base, os_
        return (f"IndexBinaryFlat over sign bits around the mean, {os_} x k candidates "
                "rescored with NumPy", index.code_size * len(base))

    def _bits(self, x):
        return np.packbits(x > self.mean, axis=1)

    def search_batch_quantized(self, queries, k, mode):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if mode == "f32":  # the flat index, whichever compressed mode was prepared last
            return self.index.search(queries, k)[1]
        if self.qbase is None:
            return self.qindex.search(queries, k)[1]
        _, cand = self.qindex.search(self._bits(queries), k * self.os)
        return rescore(self.qbase, queries, cand, k)

    def search_quantized(self, query, k, mode):
        return self.search_batch_quantized(query[None, :], k, mode)[0].tolist()

    # The HNSW test: IndexHNSWFlat(d, M, METRIC_INNER_PRODUCT), efConstruction as given, built
    # on every core (OpenMP), searched with omp_set_num_threads(1); the filter is an
    # IDSelectorBitmap in SearchParametersHNSW. FAISS's HNSW has no delete.
    hnsw_modes = ("hnsw",)
    hnsw_filtered = "search(q, k, params=SearchParametersHNSW(efSearch, sel=IDSelectorBitmap))"

    def build_hnsw(self, mode, base, m, ef_construction):
        import os

        faiss = self.faiss
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        self.graph = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.graph.hnsw.efConstruction = ef_construction
        self.graph.add(np.ascontiguousarray(base, dtype=np.float32))
        faiss.omp_set_num_threads(1)
        self._selectors = {}
        return (f"IndexHNSWFlat(d, {m}, METRIC_INNER_PRODUCT), efConstruction "
                f"{ef_construction}, add on {os.cpu_count()} threads; search with "
                "SearchParametersHNSW(efSearch=ef), omp_set_num_threads(1)"), None

    def search_hnsw(self, query, k, mode, ef):
        params = self.faiss.SearchParametersHNSW(efSearch=ef)
        _, rows = self.graph.search(query[None, :], k, params=params)
        return [r for r in rows[0].tolist() if r >= 0]

    def search_hnsw_where(self, query, k, mode, ef, field, value, mask, filter_mode):
        key = (field, value)
        if key not in self._selectors:
            bits = np.packbits(mask, bitorder="little")
            # The selector reads `bits` through a raw pointer: keep both alive together.
            self._selectors[key] = (bits, self.faiss.IDSelectorBitmap(
                len(mask), self.faiss.swig_ptr(bits)))
        params = self.faiss.SearchParametersHNSW(efSearch=ef, sel=self._selectors[key][1])
        _, rows = self.graph.search(query[None, :], k, params=params)
        return [r for r in rows[0].tolist() if r >= 0]
