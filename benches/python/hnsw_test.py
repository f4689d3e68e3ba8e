"""The HNSW test (issue 17), run by worker.py for a library with graph modes
(`Adapter.hnsw_modes`) when the run names it: `run_peers.py --tests hnsw`.

For each mode, in the library's order: build the graph from the open collection's f32 rows
(m 16, ef_construction 200 where the library takes them; on all cores where it allows; timed,
with the process's resident-set growth over the build; for SrvDB, also the memory of the
collection opened in a new process and searched there), then single queries, one thread, at
each search-time ef of `hnsw_efs`, one ef at a time over every query (`hnsw_passes` passes
of them, 5 since 5 December 04:00 UTC, 1 before), as a user runs one setting. Per ef:
recall@10 against the float64 ground truth, QPS (queries / their summed wall time) and
p50/p99. SrvDB's exact scan of the same database (`exact=True`) is swept after
them as the case `exact`, for the ratio QPS(graph) / QPS(scan). Runs before 4 December 15:45
UTC interleaved the efs and the exact scan query by query: a query's later efs then re-read
rows its earlier efs had just brought into the caches (20k f32 at ef 128: about 200 us a
query that way, 400 us ef by ef), and the exact scan, reading every row, evicted the graph
before each of SrvDB's graph queries, which no other library's graph suffered (20k int8 at
ef 32: 17,292 QPS alone, about 7,000 with an exact scan before each query).

Then, on the data sets of `hnsw_extras` (the real MiniLM set: their ground truths are computed
here with NumPy, in float64):
- `filtered`: the filter `{"hsel": v}` matching 1%, 10% and 50% of the rows
  (bench_data.HNSW_FILTER_CASES), at ef `hnsw_fixed_ef`, in each of the library's filtered
  modes (SrvDB: its planner, and the exact filtered scan beside it), one mode at a time
  (in the reverse order in every second round of `--rounds`);
  recall@10 against the exact top 10 among the matching rows.
- `deleted`: 30% of the rows (a seeded choice) deleted with the library's own delete, then
  the ef sweep again; recall@10 against the exact top 10 among the survivors. Last, as it
  changes the collection; on the library's last mode.

Every part records its error and the next one runs.
"""

from __future__ import annotations

import time

import numpy as np

from bench_data import HNSW_FILTER_CASES, exact_top, hnsw_filter_column
from report import EXACT_ONE_THREAD

#: Share of the rows the deletion part deletes.
DELETED_SHARE = 0.3


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (VmRSS), or one part of it (RssAnon: memory the process
    allocated; RssFile: pages of mapped files, such as SrvDB's memory-mapped rows), in MB."""
    for line in open("/proc/self/status"):
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def recall_at_k(found: list[list[int]], gt: np.ndarray, k: int) -> float:
    """Mean over queries of |found top k ∩ true top k| / |true top k| (short truths: fewer
    than k rows qualify)."""
    total = 0.0
    for f, g in zip(found, gt):
        want = [int(r) for r in g[:k] if r >= 0]
        total += len(set(map(int, f[:k])) & set(want)) / max(1, len(want))
    return total / max(1, len(gt))


def summary(times: list[float], found: list[list[int]], gt: np.ndarray, k: int) -> dict:
    ms = np.array(times) * 1e3
    return {"n": len(times), "qps": len(times) / max(sum(times), 1e-12),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "recall": recall_at_k(found, gt, k)}


def timed_answers(ask, queries: np.ndarray, warmup: int) -> tuple[list[float], list[list[int]]]:
    """`ask` (a query function) over `warmup` queries, then over every query: each one's
    seconds and answer."""
    for i in range(warmup):
        ask(queries[i % len(queries)])
    times, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = ask(q)
        times.append(time.perf_counter() - t0)
        found.append([int(h) for h in hits])
    return times, found


def sweep(cases: dict, queries: np.ndarray, gt: np.ndarray, k: int, warmup: int) -> dict:
    """Single queries over `cases` (name -> query function), one case at a time: its warm-up
    queries, then every query."""
    return {c: summary(*timed_answers(ask, queries, warmup), gt, k) for c, ask in cases.items()}


def ef_sweep(adapter, mode: str, efs: list[int], queries: np.ndarray, gt: np.ndarray, k: int,
             warmup: int, passes: int = 1) -> dict:
    """`sweep` over the search-time efs, then SrvDB's exact scan; a library that must reopen
    its index to change ef (Chroma: `hnsw_ef_reopens`) is told the ef before its sweep."""
    out = {}
    # Each ef over `passes` passes of the queries: 200 queries of the 20k set take about 50 ms
    # at ef 96, short enough for one hiccup of a shared machine to move a figure by 10%.
    timed, timed_gt = np.concatenate([queries] * passes), np.concatenate([gt] * passes)
    for ef in efs:
        if adapter.hnsw_ef_reopens:
            adapter.set_hnsw_ef(mode, ef)
        out.update(sweep({str(ef): lambda q, ef=ef: adapter.search_hnsw(q, k, mode, ef)},
                         timed, timed_gt, k, warmup))
    if adapter.hnsw_exact_baseline:
        out.update(sweep({"exact": lambda q: adapter.search_exact(q, k)}, queries, gt, k, warmup))
    return out


def filtered_truth(base: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The exact float64 top k among `rows` (row numbers of the whole set), -1 padded."""
    top = rows[exact_top(base[rows], queries, k)]
    if top.shape[1] < k:
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)
    return top


def run(adapter, base: np.ndarray, queries: np.ndarray, gt: np.ndarray, cfg: dict,
        extras: bool, out: dict, save) -> None:
    """The HNSW test (see the module's doc); `out` is filled part by part, `save()` after each."""
    k, efs, warmup = cfg["k"], cfg["hnsw_efs"], cfg["warmup_queries"]
    queries = queries[: cfg.get("hnsw_queries") or len(queries)]
    gt = gt[: len(queries)]
    out.update(efs=efs, queries=len(queries), rows=len(base), modes={},
               sweep="one setting at a time")
    params = {"m": cfg["hnsw_m"], "ef_construction": cfg["hnsw_ef_construction"]}
    only = cfg.get("hnsw_only_modes")
    modes = [m for m in adapter.hnsw_modes if not only or m in only]
    for mode in modes:
        fig = out["modes"][mode] = {}
        try:
            before = rss_mb()
            anon_before = rss_mb("RssAnon")
            t0, cpu0 = time.perf_counter(), time.process_time()
            fig["how"], seconds = adapter.build_hnsw(mode, base, **params)
            fig["build_seconds"] = seconds if seconds is not None else time.perf_counter() - t0
            # CPU seconds of all the process's threads: steadier than wall time on a shared
            # machine (a library that rebuilds in a subprocess shows only its own share).
            fig["build_cpu_seconds"] = time.process_time() - cpu0
            fig["rss_delta_mb"] = rss_mb() - before
            fig["rss_mb"] = rss_mb()
            # The build's growth split: allocated memory (the graph, codes, buffers kept by
            # the allocator) and mapped file pages (rows read from the page cache).
            fig["rss_anon_delta_mb"] = rss_mb("RssAnon") - anon_before
            fig["rss_file_mb"] = rss_mb("RssFile")
            save()
            if adapter.hnsw_fresh_open:
                # The build's growth includes what the allocator kept from it: the memory a
                # user meets is the collection opened in a new process (issue 17's target).
                try:
                    fig["fresh_open"] = adapter.hnsw_fresh_open_memory(mode, queries, max(efs))
                except Exception as e:  # recorded; the ef sweep still runs
                    fig["fresh_open"] = {"error": f"{type(e).__name__}: {e}"}
                save()
            fig["ef"] = ef_sweep(adapter, mode, efs, queries, gt, k, warmup,
                                 cfg.get("hnsw_passes", 1))
            if adapter.hnsw_exact_one_thread:
                # The graph answers each query on one thread and the exact scan on every
                # core: the ratio is at the same thread count, so the scan is also
                # timed on one thread (in a new process: the thread pool is sized at start).
                times, found = adapter.exact_one_thread(queries, k, warmup)
                fig["ef"][EXACT_ONE_THREAD] = summary(times, found, gt, k)
        except Exception as e:  # recorded; the next mode still runs
            fig["error"] = f"{type(e).__name__}: {e}"
        save()
        if extras and adapter.hnsw_filtered and "error" not in fig:
            fig["filtered"] = filtered(adapter, base, queries, mode, cfg)
            save()
    if extras and adapter.hnsw_delete and modes:
        mode = modes[-1]
        if "error" not in out["modes"][mode]:
            out["deleted"] = deleted(adapter, base, queries, mode, cfg)
            save()


def filtered(adapter, base, queries, mode, cfg) -> dict:
    k, ef = cfg["k"], cfg["hnsw_fixed_ef"]
    column = hnsw_filter_column(len(base))
    out = {"ef": ef, "how": adapter.hnsw_filtered, "cases": {}}
    adapter.set_hnsw_ef(mode, ef)
    # One mode after the other, in the other order every other round: the mode that runs
    # second finds the first one's rows in the caches (at 1% both read the same 200), so with
    # one order the median over rounds would favour it.
    filter_modes = list(adapter.hnsw_filter_modes)
    if cfg.get("round", 0) % 2:
        filter_modes.reverse()
    for name, value, _share in HNSW_FILTER_CASES:
        mask = column == value
        try:
            truth = filtered_truth(base, queries, np.flatnonzero(mask), k)
            cases = {fm: (lambda q, fm=fm: adapter.search_hnsw_where(q, k, mode, ef, "hsel",
                                                                      value, mask, fm))
                     for fm in filter_modes}
            figures = sweep(cases, queries, truth, k, cfg["warmup_queries"])
            for fm, f in figures.items():
                f["matching"] = int(mask.sum())
            out["cases"][name] = figures
        except Exception as e:
            out["cases"][name] = {"error": f"{type(e).__name__}: {e}"}
    return out


def deleted(adapter, base, queries, mode, cfg) -> dict:
    k = cfg["k"]
    rng = np.random.default_rng(20261730)
    gone = np.sort(rng.choice(len(base), size=round(DELETED_SHARE * len(base)), replace=False))
    out = {"deleted_rows": len(gone), "how": adapter.hnsw_delete, "mode": mode}
    try:
        t0 = time.perf_counter()
        adapter.delete_hnsw(mode, gone)
        out["delete_seconds"] = time.perf_counter() - t0
        survivors = np.setdiff1d(np.arange(len(base)), gone)
        truth = filtered_truth(base, queries, survivors, k)
        out["ef"] = ef_sweep(adapter, mode, cfg["hnsw_efs"], queries, truth, k,
                             cfg["warmup_queries"])
        gone_set = set(gone.tolist())
        out["deleted_returned"] = 0  # checked on a last pass at the largest ef
        for q in queries:
            hits = adapter.search_hnsw(q, k, mode, cfg["hnsw_efs"][-1])
            out["deleted_returned"] += sum(int(h) in gone_set for h in hits)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def combine_rounds(rounds: list):
    """One figure set from several rounds' identical structures: the median of each number,
    the first round's text; a key missing from a round is taken from the rounds having it."""
    first = rounds[0]
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for r in rounds if isinstance(r, dict) for k in r))
        return {key: combine_rounds([r[key] for r in rounds if isinstance(r, dict) and key in r])
                for key in keys}
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        return first
    values = [r for r in rounds if isinstance(r, (int, float))]
    median = float(np.median(values))
    return int(median) if all(isinstance(v, int) for v in values) else median
