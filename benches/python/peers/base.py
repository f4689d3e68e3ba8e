"""The interface every library's adapter implements, and the durable-close helper.

An adapter wraps one library, exactly as a user would call it, behind five calls:

- `ingest(path, ids, vectors, metadatas)`: create a collection in the empty directory `path`,
  add every row (ids are the row numbers as strings, metadata one dict per row) and make it
  durable with the library's own persist/close. The caller then fsyncs every file under
  `path` (`fsync_tree`), which is counted in the ingest time too.
- `open(path)`: reopen that collection from disk (a fresh handle, as after a restart).
- `search(query, k)`: the row numbers of the `k` best hits, best first. Must be safe to call
  from many threads at once on one handle (a library that cannot must lock, and show it).
- `search_batch(queries, k)`: the same for many queries at once, as an (nq, k) array; only
  where the library has a batch API (`has_batch`), never a loop written here.
- `close()`: release the handle.

For the filtered test (a library without a metadata filter leaves `filtered` None and says
why in `no_filter_reason`):

- `search_where(query, k, bucket, mode)`: the row numbers of the `k` best rows whose metadata
  field `bucket` equals the integer `bucket`, best first, with the library's own filter, in
  one of its `filter_modes` (or `"indexed"`, after `index_field`).
- `index_field(field)`: build the library's field/scalar index on `field` if it has one that
  filtered search uses, and return how (shown in the report); None when it has none.

For the quantized test (`run_peers.py --tests quantized`; a library without compressed
vectors leaves `quantized_modes` empty):

- `prepare_quantized(mode, base)`: build what `mode` searches (one of `quantized_modes`, e.g.
  `"int8 x4"`: int8 codes, 4 x k candidates rescored exactly) from the open collection and
  its f32 rows `base`; returns (how, bytes the mode keeps besides the f32 rows, or None).
- `search_quantized(query, k, mode)` / `search_batch_quantized(queries, k, mode)`: as
  `search` / `search_batch`, in that mode.

For the HNSW test (`run_peers.py --tests hnsw`, hnsw_test.py; a library without a graph
index leaves `hnsw_modes` empty):

- `build_hnsw(mode, base, m, ef_construction)`: build the graph `mode` searches (one of
  `hnsw_modes`) over the f32 rows `base` (row numbers as labels), on all cores where the
  library allows, and set its searches to one thread; returns (how, build seconds or None:
  None means the call's own wall time, else e.g. Chroma's, whose graph is built by ingest).
- `search_hnsw(query, k, mode, ef)`: the row numbers of the `k` best, at search-time `ef`.
- `search_hnsw_where(query, k, mode, ef, field, value, mask, filter_mode)`: the same among the
  rows whose metadata `field` equals `value` (`mask`: those rows, for a library whose filter
  is a callback or a bitmap), in one of `hnsw_filter_modes`; only where `hnsw_filtered` says how.
- `set_hnsw_ef(mode, ef)`: for a library that must reopen its index to change ef
  (`hnsw_ef_reopens`); the others take ef per search.
- `delete_hnsw(mode, rows)`: delete those rows with the library's own delete (where
  `hnsw_delete` says how); later searches must not return them.
- `hnsw_fresh_open_memory(mode, queries, ef)`: where `hnsw_fresh_open` is set, what the
  collection with its graph costs opened in a new process and searched there (MB allocated
  after opening and after the queries, and mapped file pages), as a dict; the handle of this
  process is closed meanwhile and reopened after.

Vectors are L2-normalised float32, so inner product = cosine; every adapter uses the metric
its library computes fastest of the two.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class Adapter:
    name = "?"
    #: True when the library's search is exact (brute force), False for an approximate index.
    exact = True
    has_batch = False
    #: The library's note on how it is used here (shown in the report).
    how = ""
    #: How the library filters on metadata (shown in the report); None: it cannot.
    filtered: str | None = None
    no_filter_reason = "no metadata filter"
    #: The library's ways of applying a filter (e.g. LanceDB's pre- and post-filter).
    filter_modes: tuple[str, ...] = ("default",)

    #: The quantized test's modes, the library's exact f32 search first (see above).
    quantized_modes: tuple[str, ...] = ()

    def version(self) -> str:
        raise NotImplementedError

    def ingest(self, path: Path, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        raise NotImplementedError

    def open(self, path: Path) -> None:
        raise NotImplementedError

    def search(self, query: np.ndarray, k: int) -> list[int]:
        raise NotImplementedError

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def search_where(self, query: np.ndarray, k: int, bucket: int, mode: str) -> list[int]:
        raise NotImplementedError

    def index_field(self, field: str) -> str | None:
        return None

    def prepare_quantized(self, mode: str, base: np.ndarray) -> tuple[str, int | None]:
        raise NotImplementedError

    def search_quantized(self, query: np.ndarray, k: int, mode: str) -> list[int]:
        raise NotImplementedError

    def search_batch_quantized(self, queries: np.ndarray, k: int, mode: str) -> np.ndarray:
        raise NotImplementedError

    #: The HNSW test's modes (see above); empty: no graph index.
    hnsw_modes: tuple[str, ...] = ()
    #: How the graph search filters (shown in the report); None: it cannot.
    hnsw_filtered: str | None = None
    hnsw_filter_modes: tuple[str, ...] = ("graph",)
    #: How rows are deleted from the graph (shown in the report); None: they cannot be.
    hnsw_delete: str | None = None
    #: Also times `search_exact(query, k)` (the exact scan of the same collection) in the sweep.
    hnsw_exact_baseline = False
    #: Also times the exact scan on one thread (`exact_one_thread`), when it uses every core.
    hnsw_exact_one_thread = False
    #: The library can measure a fresh process's memory (`hnsw_fresh_open_memory`).
    hnsw_fresh_open = False
    #: Changing ef means reopening the index: the sweep then runs ef by ef, not interleaved.
    hnsw_ef_reopens = False

    def set_hnsw_ef(self, mode: str, ef: int) -> None:
        pass

    def build_hnsw(self, mode: str, base: np.ndarray, m: int,
                   ef_construction: int) -> tuple[str, float | None]:
        raise NotImplementedError

    def search_hnsw(self, query: np.ndarray, k: int, mode: str, ef: int) -> list[int]:
        raise NotImplementedError

    def search_hnsw_where(self, query: np.ndarray, k: int, mode: str, ef: int, field: str,
                          value: int, mask: np.ndarray, filter_mode: str) -> list[int]:
        raise NotImplementedError

    def delete_hnsw(self, mode: str, rows: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def oversample_of(mode: str) -> int:
    """The oversample a quantized mode's name ends with (`"int8 x4"` -> 4)."""
    return int(mode.rsplit("x", 1)[1])


def rescore(base: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The `k` best of each query's `candidates` (row numbers, -1 for none) by exact inner
    product over the f32 rows `base`, best first: the rescoring step for a library whose
    compressed search has none of its own. `queries` is (nq, d), `candidates` (nq, c)."""
    cand = np.where(candidates < 0, 0, candidates)
    scores = np.einsum("qcd,qd->qc", base[cand], queries)
    scores[candidates < 0] = -np.inf
    k = min(k, cand.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cand, np.take_along_axis(part, order, axis=1), axis=1)


def fsync_tree(path: Path) -> int:
    """fsyncs every file under `path`, then every directory (deepest first), so the files'
    names are durable too. Returns the bytes of the files, for the report."""
    total = 0
    dirs = []
    for root, _subdirs, files in os.walk(path):
        dirs.append(root)
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    for root in reversed(dirs):
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return total


def dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)
