"""Threads: searches run without the GIL, in parallel with each other and with a writer, and
each sees whole batches only."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import srvdb

DIM = 64


def test_16_searchers_and_a_writer(open_db):
    rng = np.random.default_rng(11)
    initial, batch, batches = 5000, 200, 20
    total = initial + batch * batches
    base = (rng.standard_normal((total, DIM)) / np.sqrt(DIM)).astype(np.float32)
    ids = [f"v{i}" for i in range(total)]
    queries = (rng.standard_normal((8, DIM)) / np.sqrt(DIM)).astype(np.float32)
    k = 10
    # Expected top-k of each query after b of the writer's batches, for every b.
    scores = queries.astype(np.float64) @ base.astype(np.float64).T
    scores /= np.linalg.norm(queries, axis=1)[:, None] * np.linalg.norm(base, axis=1)[None, :]
    expected = [
        [tuple(ids[j] for j in np.argsort(-scores[qi, : initial + b * batch], kind="stable")[:k])
         for b in range(batches + 1)]
        for qi in range(len(queries))
    ]

    db = open_db()
    db.add(ids[:initial], base[:initial])
    started = 0  # batches the writer has begun
    finished = 0  # batches whose add has returned
    stop = threading.Event()
    errors: list[str] = []

    def writer():
        nonlocal started, finished
        try:
            for b in range(batches):
                lo = initial + b * batch
                started = b + 1
                db.add(ids[lo : lo + batch], base[lo : lo + batch])
                finished = b + 1
                time.sleep(0.002)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(f"writer: {e!r}")
        finally:
            stop.set()

    def searcher(seed: int) -> int:
        local = np.random.default_rng(seed)
        n = 0
        while not stop.is_set() or n < 5:
            qi = int(local.integers(len(queries)))
            lo = finished
            hits = db.search(queries[qi], k)
            hi = started
            got = tuple(h[0] for h in hits)
            if got not in expected[qi][lo : hi + 1]:
                errors.append(f"query {qi}: {got} is not the top {k} after any of batches {lo}..{hi}")
                return n
            s = [h[1] for h in hits]
            if s != sorted(s, reverse=True):
                errors.append(f"query {qi}: scores not sorted: {s}")
            n += 1
        return n

    with ThreadPoolExecutor(max_workers=17) as pool:
        w = pool.submit(writer)
        searches = [pool.submit(searcher, s) for s in range(16)]
        w.result(timeout=120)
        counts = [f.result(timeout=120) for f in searches]
    assert not errors, errors[:5]
    assert all(c >= 5 for c in counts)
    assert len(db) == total
    for qi, q in enumerate(queries):
        assert tuple(h[0] for h in db.search(q, k)) == expected[qi][batches]


def _max_gap_while(worker, min_seconds: float):
    """Runs `worker` in a thread; meanwhile this thread spins on pure-Python work. Returns
    (worker duration, longest pause of this thread)."""
    done = threading.Event()
    elapsed = []

    def run():
        t0 = time.perf_counter()
        worker()
        elapsed.append(time.perf_counter() - t0)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    last = time.perf_counter()
    gap = 0.0
    while not done.is_set():
        now = time.perf_counter()
        gap = max(gap, now - last)
        last = now
        sum(range(100))  # holds the GIL briefly, like any Python code
    t.join()
    assert elapsed[0] >= min_seconds, f"worker too quick ({elapsed[0]:.3f} s) to show anything"
    return elapsed[0], gap


def test_search_and_add_release_the_gil(open_db):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((30000, 256)).astype(np.float32)
    db = open_db()
    db.add([f"b{i}" for i in range(len(base))], base)
    queries = rng.standard_normal((1500, 256)).astype(np.float32)

    duration, gap = _max_gap_while(lambda: db.search_batch(queries, 10), 0.2)
    # Holding the GIL would stall this thread for the whole call.
    assert gap < duration / 2, f"main thread stalled {gap:.3f} s during a {duration:.3f} s batch search"

    def searches():
        for q in queries[:100]:
            db.search(q, 10)

    duration, gap = _max_gap_while(searches, 0.1)
    assert gap < duration / 2, f"main thread stalled {gap:.3f} s during {duration:.3f} s of searches"

    more = rng.standard_normal((60000, 256)).astype(np.float32)
    duration, gap = _max_gap_while(lambda: db.add([f"m{i}" for i in range(len(more))], more), 0.05)
    assert gap < max(duration / 2, 0.05), f"main thread stalled {gap:.3f} s during a {duration:.3f} s add"


# Thread scaling is a speed figure, so it is measured by `make python-bench`
# (benches/python/binding_overhead.py: QPS with 1, 2 and 16 threads), not asserted here: a timed
# assertion on this shared 2-core machine fails whenever another process is busy. That searches
# do not serialise on the GIL is asserted deterministically above.
