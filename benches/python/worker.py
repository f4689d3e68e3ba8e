"""Runs one library's tests in this process and writes its figures as JSON.

Started by run_peers.py, one process per library, with that library's interpreter:

    python worker.py --lib faiss --config CONFIG.json --out RESULT.json

CONFIG.json holds the data sets (name -> prepared directory), a work directory for the
library's files, and the test sizes. RESULT.json is rewritten after every test, so a crash or
a timeout still leaves the figures measured before it.

Tests per data set, in order: `ingest` (durable: the library's persist/close and an fsync of
every file it wrote), `latency` (reopen from disk, then single queries one after another; after
`latency_min_queries`, stopped once they took `latency_max_seconds`), `batch` (all queries in
one batch call, where the library has one; else the same queries one by one, untimed, for
recall, for at most `recall_max_seconds`), `concurrent` (a fixed number of single queries from 16 threads
sharing one handle, with the recall of those answers; stopped early, and marked so, if it
passes `concurrent_max_seconds`) and `sweep` (QPS at 1, 2, 4 and 8
threads for a fixed time each). Recall@k is against the float64 ground truth in `gt.npy`.

`filtered` (after `latency`, on the same handle; for libraries with a metadata filter): single
queries unfiltered, then with `{"bucket": value}` filters matching 50%, 5% and 0.1% of the rows,
in each of the library's filter modes (`Adapter.filter_modes`), then again after the library's
field/scalar index on `bucket` where it has one (`Adapter.index_field`). Each case: p50/p95
latency and recall@k against the exact float64 top k among only the matching rows
(`filter_gt.npz`; where fewer than k rows match, against all of them), and how many returned
rows did not match the filter.

`quantized` (only when the run names it: `run_peers.py --tests quantized`; for libraries with
compressed vectors, `Adapter.quantized_modes`): for each mode, in the library's order (its
exact f32 search first), build it from the open collection (timed, with the bytes it keeps
besides the f32 rows), then single queries (p50/p95/p99 and recall@k) and batches of
`quantized_batch` queries (`quantized_batch_rounds` passes over the query set; per-query time
of each call, and recall). Each compressed mode is then timed again beside the exact mode
(`paired_single`: alternating blocks of `PAIR_BLOCK` single queries; see `Worker.paired`). A
mode that fails records its error and the next one runs.

`hnsw` (only when the run names it: `run_peers.py --tests hnsw`; for libraries with a graph
index, `Adapter.hnsw_modes`): hnsw_test.py (build, the ef sweep, filtered and after deleting
30% of the rows). The metadata then also holds its filter column `hsel`.

The config's `tests` (None: all but `quantized` and `hnsw`) limits the tests of a run (`run_peers.py --tests`), and
`dataset_tests` the tests of one data set (the big filtered-only set); `ingest` always runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hnsw_test  # noqa: E402
from bench_data import FILTER_CASES, load, load_filters, metadatas, repo_relative  # noqa: E402
from peers import LIBRARIES  # noqa: E402
from peers.base import fsync_tree  # noqa: E402


def recall_at_k(found: np.ndarray, gt: np.ndarray, k: int) -> float:
    """Mean over queries of |found top k ∩ true top k| / k. `found` rows may be short."""
    hits = sum(len(set(map(int, f[:k])) & set(map(int, g[:k]))) for f, g in zip(found, gt))
    return hits / (k * len(gt))


#: Single queries per block of the paired timing (`Worker.paired`); the first of each block
#: is not counted.
PAIR_BLOCK = 10


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "n": len(ms)}


def run_threads(adapter, queries: np.ndarray, k: int, threads: int, count: int | None,
                seconds: float | None) -> tuple[float, int, dict[int, list[int]]]:
    """Single queries from `threads` threads on one handle: `count` queries in all (query i is
    queries[i % len]), or as many as are started within `seconds`, whichever ends first (None:
    no limit). Returns (wall seconds, queries done, answers by query number)."""
    ticket = itertools.count()  # next() is atomic under the GIL
    answers: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def loop():
        start.wait()
        try:
            while True:
                i = next(ticket)
                if count is not None and i >= count:
                    return
                if seconds is not None and time.perf_counter() >= deadline[0]:
                    return
                answers[i] = adapter.search(queries[i % len(queries)], k)
        except BaseException as e:  # reported below, in the main thread
            errors.append(e)

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + (seconds or 0)
    start.wait()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, len(answers), answers


class Run:
    def __init__(self, lib_name: str, config: dict, out: Path):
        self.lib = LIBRARIES[lib_name]
        self.cfg = config
        self.out = out
        self.result: dict = {"library": lib_name, "status": "running", "datasets": {}}

    def save(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1))
        tmp.replace(self.out)

    def wants(self, test: str, dataset: str | None = None) -> bool:
        if test in ("quantized", "hnsw") and test not in (self.cfg.get("tests") or ()):
            return False
        only = [self.lib.tests, self.cfg.get("tests"),
                self.cfg.get("dataset_tests", {}).get(dataset) if dataset else None]
        return all(o is None or test in o for o in only)

    def main(self) -> None:
        adapter = self.lib.make()
        self.result.update(version=adapter.version(), exact=adapter.exact,
                           has_batch=adapter.has_batch, how=adapter.how,
                           python=repo_relative(sys.executable), numpy=np.__version__,
                           env={k: os.environ.get(k) for k in self.lib.env})
        if self.lib.name == "numpy":
            self.result["blas"] = blas_info()
        self.save()
        for name, directory in self.cfg["datasets"].items():
            self.result["datasets"][name] = figures = {}
            self.dataset(adapter, name, Path(directory), figures)
        self.result["status"] = "ok"
        self.save()

    def dataset(self, adapter, name: str, directory: Path, fig: dict) -> None:
        base, queries, gt = load(directory)
        fig["shape"] = list(base.shape)
        path = Path(self.cfg["workdir"]) / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        fig["ingest"] = self.ingest(adapter, path, directory, base)
        self.save()
        t0 = time.perf_counter()
        adapter.open(path)
        fig["reopen_seconds"] = time.perf_counter() - t0
        if self.wants("latency", name):
            fig["latency"] = self.latency(adapter, queries, gt)
            self.save()
        if self.wants("filtered", name):
            if adapter.filtered is None:
                fig["filtered"] = {"unsupported": adapter.no_filter_reason}
            else:
                fig["filtered"] = {}
                self.filtered(adapter, directory, queries, fig["filtered"])
            self.save()
        if self.wants("batch", name):
            fig["batch"], fig["recall"] = self.batch_and_recall(adapter, queries, gt)
            self.save()
            fig["concurrent"] = self.concurrent(adapter, queries, gt)
            self.save()
            fig["sweep"] = self.sweep(adapter, queries, fig["concurrent"])
            self.save()
        elif self.wants("concurrent", name):
            # `--tests concurrent`: the 16-thread test alone (issue 20's two ratios).
            fig["concurrent"] = self.concurrent(adapter, queries, gt)
            self.save()
        if adapter.quantized_modes and self.wants("quantized", name):
            fig["quantized"] = {"f32_bytes": int(base.nbytes), "modes": {}}
            self.quantized(adapter, base, queries, gt, fig["quantized"]["modes"])
        if adapter.hnsw_modes and self.wants("hnsw", name) and name in self.cfg["hnsw_datasets"]:
            fig["hnsw"] = {}
            hnsw_test.run(adapter, base, queries, gt, self.cfg,
                          name in self.cfg.get("hnsw_extras", ()), fig["hnsw"], self.save)
            self.save()
        adapter.close()

    def ingest(self, adapter, path: Path, directory: Path, base: np.ndarray) -> dict:
        n = len(base)
        ids = [str(i) for i in range(n)]
        metas = metadatas(directory, hnsw=self.wants("hnsw"))
        t0 = time.perf_counter()
        adapter.ingest(path, ids, base, metas)
        disk_bytes = fsync_tree(path)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "vectors_per_s": n / seconds,
                "raw_mb_per_s": base.nbytes / seconds / 1e6, "disk_bytes": disk_bytes}

    def latency(self, adapter, queries: np.ndarray, gt: np.ndarray) -> dict:
        c, k = self.cfg, self.cfg["k"]
        for i in range(c["warmup_queries"]):
            adapter.search(queries[i % len(queries)], k)
        times, found = [], []
        for i in range(c["latency_queries"]):
            if i >= c["latency_min_queries"] and sum(times) > c["latency_max_seconds"]:
                break
            q = queries[i % len(queries)]
            t0 = time.perf_counter()
            hits = adapter.search(q, k)
            times.append(time.perf_counter() - t0)
            found.append(hits)
        figures = percentiles(times)
        figures["recall"] = recall_at_k(found, gt[np.arange(len(found)) % len(gt)], k)
        return figures

    def filtered(self, adapter, directory: Path, queries: np.ndarray, out: dict) -> None:
        """The filtered test (see the module's doc); `out` is filled case by case, so a crash
        or timeout keeps what was measured."""
        bucket, gts = load_filters(directory)
        out["how"] = adapter.filtered
        out["rows"] = len(bucket)
        out["matching"] = {name: int((bucket == value).sum()) for name, value, _ in FILTER_CASES}
        out["unfiltered"] = self.filtered_case(adapter, queries, None, None, None, bucket)
        self.save()
        out["modes"] = {}
        for mode in adapter.filter_modes:
            cases = out["modes"][mode] = {}
            for name, value, _share in FILTER_CASES:
                cases[name] = self.filtered_case(adapter, queries, value, gts[name], mode, bucket)
                self.save()
        t0 = time.perf_counter()
        how = adapter.index_field("bucket")
        if how:
            out["index"] = {"how": how, "seconds": time.perf_counter() - t0}
            cases = out["modes"]["indexed"] = {}
            for name, value, _share in FILTER_CASES:
                cases[name] = self.filtered_case(adapter, queries, value, gts[name], "indexed",
                                                 bucket)
                self.save()

    def filtered_case(self, adapter, queries, value, gt, mode, bucket) -> dict:
        """Single queries with the filter `bucket == value` (None: unfiltered) in `mode`:
        latency percentiles, recall@k against `gt` (None: not checked) and the count of
        returned rows the filter excludes."""
        c, k = self.cfg, self.cfg["k"]

        def ask(q):
            if value is None:
                return adapter.search(q, k)
            return adapter.search_where(q, k, value, mode)

        for i in range(c["warmup_queries"]):
            ask(queries[i % len(queries)])
        times, found = [], []
        for i in range(c["filtered_queries"]):
            if i >= c["filtered_min_queries"] and sum(times) > c["filtered_max_seconds"]:
                break
            q = queries[i % len(queries)]
            t0 = time.perf_counter()
            hits = ask(q)
            times.append(time.perf_counter() - t0)
            found.append([int(h) for h in hits])
        figures = percentiles(times)
        if value is not None:
            matching = int((bucket == value).sum())
            want = min(k, matching)
            truth = gt[np.arange(len(found)) % len(gt), :want]
            hits = sum(len(set(f[:k]) & set(map(int, g))) for f, g in zip(found, truth))
            figures["recall"] = hits / (want * len(found)) if want else 1.0
            figures["non_matching"] = sum(int(bucket[r] != value) for f in found for r in f
                                          if 0 <= r < len(bucket))
            figures["short_answers"] = sum(len(f) < want for f in found)
        return figures

    def quantized(self, adapter, base: np.ndarray, queries: np.ndarray, gt: np.ndarray,
                  out: dict) -> None:
        """The quantized test (see the module's doc); `out` is filled mode by mode."""
        c, k = self.cfg, self.cfg["k"]
        size = c["quantized_batch"]
        for mode in adapter.quantized_modes:
            fig = out[mode] = {}
            try:
                t0 = time.perf_counter()
                fig["how"], fig["bytes"] = adapter.prepare_quantized(mode, base)
                fig["build_seconds"] = time.perf_counter() - t0
                for i in range(c["warmup_queries"]):
                    adapter.search_quantized(queries[i % len(queries)], k, mode)
                times, found = [], []
                for i in range(c["latency_queries"]):
                    if i >= c["latency_min_queries"] and sum(times) > c["latency_max_seconds"]:
                        break
                    q = queries[i % len(queries)]
                    t0 = time.perf_counter()
                    hits = adapter.search_quantized(q, k, mode)
                    times.append(time.perf_counter() - t0)
                    found.append(hits)
                fig["single"] = percentiles(times)
                fig["single"]["recall"] = recall_at_k(found, gt[np.arange(len(found)) % len(gt)], k)
                self.save()
                starts = list(range(0, len(queries) - size + 1, size)) or [0]
                adapter.search_batch_quantized(queries[:size], k, mode)
                per_query, hits_, total = [], 0, 0
                for _ in range(c["quantized_batch_rounds"]):
                    for s in starts:
                        batch = queries[s:s + size]
                        t0 = time.perf_counter()
                        rows = adapter.search_batch_quantized(batch, k, mode)
                        per_query.append((time.perf_counter() - t0) / len(batch))
                        hits_ += recall_at_k(rows, gt[s:s + len(batch)], k) * len(batch)
                        total += len(batch)
                fig["batch"] = {"size": min(size, len(queries)), "calls": len(per_query),
                                "per_query_ms": float(np.median(per_query) * 1e3),
                                "recall": hits_ / total}
                if mode != "f32" and "single" in out.get("f32", {}):
                    try:  # its own failure keeps the figures above
                        fig["paired_single"] = self.paired(adapter, queries, k, mode)
                    except Exception as e:
                        fig["paired_error"] = f"{type(e).__name__}: {e}"
            except Exception as e:  # recorded; the next mode still runs
                fig["error"] = f"{type(e).__name__}: {e}"
            self.save()

    def paired(self, adapter, queries: np.ndarray, k: int, mode: str) -> dict:
        """Single queries of `mode` and of the exact `f32` mode timed side by side: blocks of
        `PAIR_BLOCK` queries, exact then `mode` on the same queries, alternating, the first
        query of each block not counted (it pays for the switch: the other mode's pass left
        the caches full of its own data). On a shared VM the memory's speed drifts by 1.5x
        within seconds, so two p50s taken a mode apart (the `single` figures) can compare two
        different machines; these two were measured in the same seconds."""
        c = self.cfg
        exact, coded = [], []
        start, i = time.perf_counter(), 0
        while len(coded) < c["latency_queries"]:
            if len(coded) >= c["latency_min_queries"] and \
                    time.perf_counter() - start > c["latency_max_seconds"]:
                break
            for m, times in (("f32", exact), (mode, coded)):
                for j in range(PAIR_BLOCK):
                    q = queries[(i + j) % len(queries)]
                    t0 = time.perf_counter()
                    adapter.search_quantized(q, k, m)
                    if j:
                        times.append(time.perf_counter() - t0)
            i += PAIR_BLOCK
        return {"block": PAIR_BLOCK, "pairs": len(coded),  # counted queries of each mode
                "p50_ms": float(np.median(coded) * 1e3),
                "exact_p50_ms": float(np.median(exact) * 1e3)}

    def batch_and_recall(self, adapter, queries: np.ndarray, gt: np.ndarray) -> tuple[dict, dict]:
        c, k = self.cfg, self.cfg["k"]
        nb = min(c["batch_queries"], len(queries))
        if adapter.has_batch:
            adapter.search_batch(queries[:2], k)
            t0 = time.perf_counter()
            rows = adapter.search_batch(queries[:nb], k)
            seconds = time.perf_counter() - t0
            batch = {"queries": nb, "seconds": seconds, "qps": nb / seconds}
        else:
            rows, t0 = [], time.perf_counter()
            for q in queries[:nb]:
                if time.perf_counter() - t0 > c["recall_max_seconds"]:
                    break
                rows.append(adapter.search(q, k))
            batch = {"queries": nb, "seconds": None, "qps": None,
                     "note": "no batch API: recall from single queries"}
        recall = {"queries": len(rows), "recall_at_k": recall_at_k(rows, gt[:len(rows)], k)}
        return batch, recall

    def concurrent(self, adapter, queries: np.ndarray, gt: np.ndarray) -> dict:
        c = self.cfg
        threads, count, cap = c["concurrent_threads"], c["concurrent_queries"], c["concurrent_max_seconds"]
        wall, done, answers = run_threads(adapter, queries, c["k"], threads, count, cap)
        order = sorted(answers)
        return {"threads": threads, "queries": done, "seconds": wall, "qps": done / wall,
                "capped_at_seconds": cap if done < count else None,
                "recall_at_k": recall_at_k([answers[i] for i in order],
                                           gt[np.array(order) % len(gt)], c["k"])}

    def sweep(self, adapter, queries: np.ndarray, concurrent: dict) -> dict:
        """QPS at each thread count for a fixed time; the top count is the concurrent test's."""
        out = {}
        for t in self.cfg["sweep_threads"]:
            wall, done, _ = run_threads(adapter, queries, self.cfg["k"], t, None,
                                        self.cfg["sweep_seconds"])
            out[str(t)] = {"queries": done, "seconds": wall, "qps": done / wall}
        out[str(concurrent["threads"])] = {key: concurrent[key] for key in ("queries", "seconds", "qps")}
        return out


def blas_info() -> list[dict]:
    """Which BLAS NumPy loaded and which kernel (core type) it chose, via threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    return [{k: v for k, v in pool.items() if k in ("internal_api", "version", "architecture",
                                                     "num_threads", "threading_layer")}
            for pool in threadpool_info()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True, choices=sorted(LIBRARIES))
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    run = Run(args.lib, json.loads(args.config.read_text()), args.out)
    run.result["machine"] = platform.machine()
    try:
        run.main()
    except BaseException as e:
        run.result["status"] = "error"
        run.result["error"] = f"{type(e).__name__}: {e}"
        run.result["traceback"] = traceback.format_exc()[-4000:]
        run.save()
        sys.exit(1)


if __name__ == "__main__":
    main()
