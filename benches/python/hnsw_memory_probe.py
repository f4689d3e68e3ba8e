"""Resident memory of a database with an HNSW index, opened in a fresh process.

    python hnsw_memory_probe.py build --base BASE.npy --dir DIR [--quantization int8]
    python hnsw_memory_probe.py query --queries QUERIES.npy --gt GT.npy --dir DIR [--efs 256,512]
    python hnsw_memory_probe.py open --dir DIR --queries QUERIES.npy [--ef 128] [--backend native]
    python hnsw_memory_probe.py exact --dir DIR --queries QUERIES.npy [--k 10] [--warmup 5]

`build` ingests BASE.npy (row numbers as ids, metric dot) into a new database in DIR and
builds the graph (m 16, ef_construction 200, as the HNSW test), then closes it. `query`
opens DIR in a new process, so nothing of the build or of the input rows is resident, runs
every query at each ef in turn (single queries, one thread) and prints, as JSON, recall@10
against GT.npy and QPS per ef, then the process's memory
from /proc/self/status: VmRSS (resident), RssAnon (memory the process allocated: the graph,
the codes, the ids), RssFile (mapped file pages: the memory-mapped rows the search read,
which the kernel may drop at any time) and VmHWM (peak resident), plus the same four taken
after importing srvdb and NumPy and loading the queries, before opening, so the difference
is what the database costs. Issue 17's "resident memory with int8 <= 0.6 GB (rows
memory-mapped)" is that difference in RssAnon, and the RssFile beside it. Last, after the
memory is taken, the same queries with `exact=True` (the f32 scan), for the QPS ratio.

`open` is the memory part alone, for the peer benchmark's HNSW test (hnsw_test.py runs it
after each SrvDB build): open DIR, run the queries at one ef, and print the RssAnon growth
after opening and after the queries, and the RssFile growth, in MB.

`exact`, also for the HNSW test: open DIR, run the exact scan (`exact=True`) of every query
after `--warmup` of them, and print each query's seconds and answer (row numbers). The test
runs it with `RAYON_NUM_THREADS=1`, to time the scan on the one thread a graph search uses.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import srvdb

from hnsw_test import rss_mb, timed_answers

FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def status_mb() -> dict[str, float]:
    return {field: rss_mb(field) for field in FIELDS}


def timed(search, queries: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """QPS of `search` over the queries one at a time, and recall@10 (counted afterwards)."""
    t0 = time.perf_counter()
    answers = [search(q) for q in queries]
    seconds = time.perf_counter() - t0
    hits = sum(len({int(id_) for id_, _ in a} & set(t.tolist())) for a, t in zip(answers, gt))
    return {"recall": hits / (10 * len(queries)), "qps": len(queries) / seconds}


def build(args: argparse.Namespace) -> None:
    base = np.load(args.base, mmap_mode="r")
    db = srvdb.open(str(args.dir), dim=base.shape[1], metric="dot")
    step = 50_000
    t0 = time.perf_counter()
    for start in range(0, len(base), step):
        rows = np.ascontiguousarray(base[start:start + step], dtype=np.float32)
        db.add([str(i) for i in range(start, start + len(rows))], rows)
    ingest = time.perf_counter() - t0
    t0, cpu0 = time.perf_counter(), time.process_time()
    db.create_index(kind="hnsw", m=16, ef_construction=200, quantization=args.quantization)
    print(json.dumps({"rows": len(base), "ingest_seconds": ingest,
                      "build_seconds": time.perf_counter() - t0,
                      "build_cpu_seconds": time.process_time() - cpu0,
                      "index": str(db.index_info())}))
    db.close()


def query(args: argparse.Namespace) -> None:
    queries = np.load(args.queries).astype(np.float32)
    gt = np.load(args.gt)[:, :10]
    before = status_mb()
    t0 = time.perf_counter()
    db = srvdb.open(str(args.dir))
    opened = time.perf_counter() - t0
    after_open = status_mb()
    per_ef = {ef: timed(lambda q, ef=ef: db.search(q, 10, ef=ef), queries, gt)
              for ef in args.efs}
    after = status_mb()
    print(json.dumps({
        "queries": len(queries), "efs": per_ef, "open_seconds": opened,
        "before_open_mb": before, "after_open_mb": after_open, "after_queries_mb": after,
        "database_anon_mb": after["RssAnon"] - before["RssAnon"],
        "database_file_mb": after["RssFile"] - before["RssFile"],
        "index": str(db.index_info()),
    }, indent=1), flush=True)
    print(json.dumps({"exact": timed(lambda q: db.search(q, 10, exact=True), queries, gt)}))
    db.close()


def fresh_open(args: argparse.Namespace) -> None:
    queries = np.load(args.queries).astype(np.float32)
    before = status_mb()
    t0 = time.perf_counter()
    db = srvdb.open(str(args.dir), backend=args.backend)
    opened = time.perf_counter() - t0
    after_open = status_mb()
    for q in queries:
        db.search(q, 10, ef=args.ef)
    after = status_mb()
    print(json.dumps({
        "open_seconds": opened, "queries": len(queries), "ef": args.ef,
        "open_anon_mb": after_open["RssAnon"] - before["RssAnon"],
        "queried_anon_mb": after["RssAnon"] - before["RssAnon"],
        "queried_file_mb": after["RssFile"] - before["RssFile"],
    }))
    db.close()


def exact(args: argparse.Namespace) -> None:
    queries = np.load(args.queries).astype(np.float32)
    db = srvdb.open(str(args.dir), backend=args.backend)
    seconds, found = timed_answers(
        lambda q: [id_ for id_, _ in db.search(q, args.k, exact=True)], queries, args.warmup)
    print(json.dumps({"seconds": seconds, "found": found}))
    db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--base", required=True)
    b.add_argument("--dir", required=True)
    b.add_argument("--quantization", default="int8", help='"int8", or "none" for f32')
    q = sub.add_parser("query")
    q.add_argument("--queries", required=True)
    q.add_argument("--gt", required=True)
    q.add_argument("--dir", required=True)
    q.add_argument("--efs", default="256,512", help="comma-separated search-time efs")
    o = sub.add_parser("open")
    o.add_argument("--dir", required=True)
    o.add_argument("--queries", required=True)
    o.add_argument("--ef", type=int, default=128)
    o.add_argument("--backend", default="native")
    e = sub.add_parser("exact")
    e.add_argument("--dir", required=True)
    e.add_argument("--queries", required=True)
    e.add_argument("--k", type=int, default=10)
    e.add_argument("--warmup", type=int, default=5)
    e.add_argument("--backend", default="native")
    args = ap.parse_args()
    if args.cmd == "open":
        fresh_open(args)
        return
    if args.cmd == "exact":
        exact(args)
        return
    if args.cmd == "build":
        if args.quantization == "none":
            args.quantization = None
        build(args)
    else:
        args.efs = [int(ef) for ef in args.efs.split(",")]
        query(args)


if __name__ == "__main__":
    main()
