"""Python binding figures, measured in one run on this machine:

- add throughput from a NumPy float32 array and from Python lists (N x D, persist included);
- the copy `add` makes of a NumPy array while it holds the GIL (so that another thread cannot
  change or free the array under the engine), as a fraction of the add call that includes it,
  of the add with its persist, and against NumPy copying the same array (`ndarray.copy()`);
- single-query search p50 from Python against the same searches timed inside Rust
  (`Database._search_timings`: the engine call alone, no Python in the loop): the difference is
  the binding's overhead;
- search QPS with 1, 2 and 16 Python threads (one shared handle), on the N x D database and on
  a small one whose scans run on the calling thread;
- peak RSS of a process that adds 10,000 x 1536 vectors (the seed API's example, from lists,
  and the same from a NumPy array).

Run with the extension installed (`make python-bench`, or
`target/pyenv/bin/python benches/python/binding_overhead.py`). `--quick` uses 10k rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import srvdb


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def add_throughput(workdir: Path, base: np.ndarray, ids: list[str], as_lists: bool) -> dict:
    data = base.tolist() if as_lists else base
    path = workdir / ("add-lists" if as_lists else "add-numpy")
    db = srvdb.open(path)
    add_seconds = timed(lambda: db.add(ids, data))
    seconds = add_seconds + timed(db.persist)
    db.close()
    n, d = base.shape
    return {
        "add_seconds": add_seconds,
        "seconds": seconds,
        "vectors_per_s": n / seconds,
        "mb_per_s": base.nbytes / seconds / 1e6,
        "n": n,
        "d": d,
    }


def qps(db, queries: np.ndarray, threads: int, seconds: float) -> float:
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> int:
        n = 0
        while time.perf_counter() < deadline:
            db.search(queries[(i * 7 + n) % len(queries)], 10)
            n += 1
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        total = sum(pool.map(loop, range(threads)))
    return total / (time.perf_counter() - t0)


RSS_CHILD = """
import sys
import numpy as np
import srvdb

def hwm_kib():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent across exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

mode = sys.argv[1]
n, d = 10000, 1536
base = hwm_kib()
db = srvdb.SvDBPython("./vectors")
ids = [f"doc_{i}" for i in range(n)]
if mode == "lists":
    embeddings = [[0.1] * d for _ in range(n)]
else:
    embeddings = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
metadatas = [f'{{"id": {i}}}' for i in range(n)]
db.add(ids=ids, embeddings=embeddings, metadatas=metadatas)
db.persist()
results = db.search(query=[0.1] * d, k=10)
assert len(results) == 10
print(base, hwm_kib())
"""


def peak_rss(workdir: Path, mode: str) -> tuple[float, float]:
    """(RSS after imports, peak RSS) in MiB of a fresh process running the 10k x 1536 example."""
    d = workdir / f"rss-{mode}"
    d.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RSS_CHILD), mode],
        cwd=d,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--queries", type=int, default=400, help="single queries timed for p50")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each QPS run")
    ap.add_argument("--quick", action="store_true", help="10k rows, shorter runs")
    args = ap.parse_args()
    if args.quick:
        args.n, args.queries, args.seconds = 10_000, 50, 1.0

    n, d = args.n, args.dim
    rng = np.random.default_rng(42)
    base = rng.standard_normal((n, d), dtype=np.float32)
    ids = [f"doc_{i}" for i in range(n)]
    queries = rng.standard_normal((args.queries, d), dtype=np.float32)
    cpu = platform.processor() or platform.machine()
    print(f"# srvdb {srvdb.__version__} Python binding, {n:,} x {d}, {os.cpu_count()} cores ({cpu}), "
          f"Python {platform.python_version()}, NumPy {np.__version__}")

    with tempfile.TemporaryDirectory(prefix="srvdb-bench-") as tmp:
        work = Path(tmp)
        add_np = add_throughput(work, base, ids, as_lists=False)
        add_ls = add_throughput(work, base, ids, as_lists=True)
        # The copy add makes before it releases the GIL, and NumPy copying the same array.
        copy_s = statistics.median(srvdb.Database._copy_seconds(base) for _ in range(5))
        numpy_copy_s = statistics.median(timed(base.copy) for _ in range(5))

        db = srvdb.open(work / "add-numpy")
        for q in queries[:20]:  # warm the page cache and the thread pool
            db.search(q, 10)
        # Interleaved, query by query, so both see the same machine state.
        py_times, rust_times = [], []
        for q in queries:
            t0 = time.perf_counter()
            db.search(q, 10)
            py_times.append(time.perf_counter() - t0)
            rust_times.extend(db._search_timings(q, 10, 1))
        py_p50, rust_p50 = statistics.median(py_times), statistics.median(rust_times)

        rates = {t: qps(db, queries, t, args.seconds) for t in (1, 2, 16)}
        db.close()

        # Per-call overhead where the scan is short: 1,000 rows, scanned on the calling thread.
        tiny = srvdb.open(work / "tiny")
        tiny.add(ids[:1000], base[:1000])
        for q in queries[:20]:
            tiny.search(q, 10)
        tiny_py, tiny_rust = [], []
        for q in queries:
            t0 = time.perf_counter()
            tiny.search(q, 10)
            tiny_py.append(time.perf_counter() - t0)
            tiny_rust.extend(tiny._search_timings(q, 10, 1))
        tiny_list_py = []
        for q in queries.tolist():
            t0 = time.perf_counter()
            tiny.search(q, 10)
            tiny_list_py.append(time.perf_counter() - t0)
        tiny.close()
        tiny_py_p50, tiny_rust_p50 = statistics.median(tiny_py), statistics.median(tiny_rust)
        tiny_list_p50 = statistics.median(tiny_list_py)

        small_n = 5000
        small = srvdb.open(work / "small")
        small.add(ids[:small_n], base[:small_n])
        qps(small, queries, 1, 0.3)
        small_rates = {t: qps(small, queries, t, args.seconds) for t in (1, 2, 16)}
        small.close()

        rss_lists = peak_rss(work, "lists")
        rss_numpy = peak_rss(work, "numpy")

    print()
    print("| measurement | result |")
    print("| --- | ---: |")
    print(f"| add from NumPy float32 ({n:,} x {d}, incl. persist) | {add_np['seconds']:.2f} s: "
          f"{add_np['vectors_per_s']:,.0f} vectors/s, {add_np['mb_per_s']:,.0f} MB/s |")
    print(f"| copy of the NumPy array by add, GIL held ({base.nbytes / 1e6:,.0f} MB) | {fmt_ms(copy_s)}: "
          f"{copy_s / add_np['add_seconds'] * 100:.1f} % of the add call that includes it ({fmt_ms(add_np['add_seconds'])}), "
          f"{copy_s / add_np['seconds'] * 100:.1f} % of add + persist; "
          f"{copy_s / numpy_copy_s:.2f}x NumPy's ndarray.copy() ({fmt_ms(numpy_copy_s)}) |")
    print(f"| add from lists ({n:,} x {d}, incl. persist; tolist() not timed) | {add_ls['seconds']:.2f} s: "
          f"{add_ls['vectors_per_s']:,.0f} vectors/s, {add_ls['mb_per_s']:,.0f} MB/s |")
    print(f"| search k=10, p50 from Python | {fmt_ms(py_p50)} |")
    print(f"| same searches timed in Rust, p50 | {fmt_ms(rust_p50)} |")
    print(f"| binding overhead (difference of p50s) | {(py_p50 - rust_p50) * 1e6:.0f} us "
          f"({(py_p50 / rust_p50 - 1) * 100:+.1f} %) |")
    print(f"| search k=10 on 1,000 x {d}: p50 from Python / in Rust | {tiny_py_p50 * 1e6:.0f} us / "
          f"{tiny_rust_p50 * 1e6:.0f} us (overhead {(tiny_py_p50 - tiny_rust_p50) * 1e6:.0f} us) |")
    print(f"| same, query as a Python list | {tiny_list_p50 * 1e6:.0f} us "
          f"(overhead {(tiny_list_p50 - tiny_rust_p50) * 1e6:.0f} us) |")
    for t in (1, 2, 16):
        print(f"| QPS, {t} thread{'s' if t > 1 else ''}, {n:,} x {d} | {rates[t]:,.1f} |")
    for t in (1, 2, 16):
        print(f"| QPS, {t} thread{'s' if t > 1 else ''}, {small_n:,} x {d} (scan on the calling thread) "
              f"| {small_rates[t]:,.1f} |")
    print(f"| peak RSS, 10k x 1536 from lists (the seed example) | {rss_lists[1]:,.0f} MiB "
          f"(after imports {rss_lists[0]:,.0f} MiB) |")
    print(f"| peak RSS, 10k x 1536 from a NumPy array | {rss_numpy[1]:,.0f} MiB "
          f"(after imports {rss_numpy[0]:,.0f} MiB) |")


if __name__ == "__main__":
    main()
