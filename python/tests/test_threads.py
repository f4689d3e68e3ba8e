"""Threads: searches and gets run without the GIL, in parallel with each other and with one
writer that adds, deletes, upserts, persists and compacts; every answer must be exactly the
answer of a state the writer published while the call ran (issue 13: the old version of this
test stayed below the engine's 4 MiB coalescing threshold, so coalesced searches never ran
against a writer, and it never mixed in get, delete, upsert or compact)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SEED = 11
DIM = 128
# 12,000 x 128 float32 rows (6 MB with their norms and padding): above the 4 MiB below which
# the engine does not coalesce concurrent single searches.
INITIAL = 12_000
K = 10
QUERIES = 16
STEPS = 24
TOL = 1e-5


class Plan:
    """The writer's calls and the state after each one, computed before any thread starts.

    State `s` is the database after the first `s` state-changing calls (add, delete, upsert);
    `persist` and `compact` change nothing a reader may see. A state maps each live id to its
    slot in `pool`, the array of every vector ever written; the record written for slot `j`
    has metadata `{"id": id, "v": j}` and document `f"{id}@{j}"`.
    """

    def __init__(self, rng: np.random.Generator):
        self.queries = rng.standard_normal((QUERIES, DIM)).astype(np.float32)
        vectors = [rng.standard_normal((INITIAL, DIM)).astype(np.float32)]
        self.initial_ids = [f"v{i}" for i in range(INITIAL)]
        state = {id_: j for j, id_ in enumerate(self.initial_ids)}
        self.states = [dict(state)]
        self.calls: list[tuple] = []  # (name, ids, slots) or (name,)
        slots = INITIAL

        def new_vectors(n: int, near: int) -> np.ndarray:
            # The first `near` lie close to a query, so they enter its top k.
            v = rng.standard_normal((n, DIM)).astype(np.float32)
            picks = rng.integers(QUERIES, size=near)
            v[:near] = self.queries[picks] + 0.3 * v[:near]
            return v

        def write(name: str, ids: list[str], fresh: np.ndarray | None):
            nonlocal slots
            if fresh is None:
                for id_ in ids:
                    del state[id_]
                self.calls.append((name, ids, None))
            else:
                new_slots = list(range(slots, slots + len(ids)))
                slots += len(ids)
                vectors.append(fresh)
                state.update(zip(ids, new_slots))
                self.calls.append((name, ids, new_slots))
            self.states.append(dict(state))

        for step in range(STEPS):
            write("add", [f"a{step}-{j}" for j in range(40)], new_vectors(40, 20))
            pool = np.concatenate(vectors)
            # Delete the current best match of three queries, and twelve ids at random.
            live = list(state)
            live_slots = np.array([state[i] for i in live])
            best = set()
            for qi in rng.choice(QUERIES, size=3, replace=False):
                s = cosine(self.queries[qi : qi + 1], pool[live_slots])[0]
                best.add(live[int(np.argmax(s))])
            others = [live[i] for i in rng.choice(len(live), size=12, replace=False)]
            write("delete", list(dict.fromkeys([*best, *others])), None)
            # Upsert: ten live ids get new vectors (five of them near a query), five ids are new.
            live = list(state)
            moved = [live[i] for i in rng.choice(len(live), size=10, replace=False)]
            write("upsert", moved + [f"u{step}-{j}" for j in range(5)], new_vectors(15, 5))
            if step % 4 == 3:
                self.calls.append(("persist",))
            if step % 6 == 5:
                self.calls.append(("compact",))
        self.pool = np.concatenate(vectors)
        self.all_ids = sorted({id_ for st in self.states for id_ in st})
        # Exact cosine of every query with every vector ever written (float64).
        self.scores = cosine(self.queries, self.pool)
        self._top: dict[tuple[int, int], np.ndarray] = {}

    def top_scores(self, s: int, qi: int) -> np.ndarray:
        """The exact top-k scores of query `qi` in state `s`, best first."""
        key = (s, qi)
        if key not in self._top:
            live = np.fromiter(self.states[s].values(), dtype=np.int64)
            sc = self.scores[qi, live]
            self._top[key] = np.sort(sc)[::-1][:K]
        return self._top[key]

    def search_matches(self, s: int, qi: int, hits) -> bool:
        """`hits` is an exact top k of query `qi` in state `s`: every id live there, its score
        its own, and the score at each rank the reference's (ties may come in either order)."""
        want = self.top_scores(s, qi)
        state = self.states[s]
        if len(hits) != len(want) or len({h[0] for h in hits}) != len(hits):
            return False
        for (id_, score), ref in zip(hits, want):
            slot = state.get(id_)
            if slot is None or abs(score - ref) > TOL or abs(score - self.scores[qi, slot]) > TOL:
                return False
        return True

    def get_matches(self, s: int, id_: str, record) -> bool:
        slot = self.states[s].get(id_)
        if slot is None or record is None:
            return slot is None and record is None
        return (
            record.id == id_
            and record.metadata == {"id": id_, "v": slot}
            and record.document == f"{id_}@{slot}"
            and np.array_equal(record.vector, self.pool[slot])
        )


def cosine(q: np.ndarray, base: np.ndarray) -> np.ndarray:
    q64, b64 = q.astype(np.float64), base.astype(np.float64)
    dots = q64 @ b64.T
    return dots / (np.linalg.norm(q64, axis=1)[:, None] * np.linalg.norm(b64, axis=1)[None, :])


def test_searches_and_gets_see_published_states_while_one_thread_writes(open_db, backend):
    rng = np.random.default_rng(SEED)
    plan = Plan(rng)
    db = open_db(metric="cosine")
    initial = plan.pool[:INITIAL]
    db.add(
        plan.initial_ids,
        initial,
        metadatas=[{"id": id_, "v": j} for j, id_ in enumerate(plan.initial_ids)],
        documents=[f"{id_}@{j}" for j, id_ in enumerate(plan.initial_ids)],
    )
    started = 0  # state-changing calls the writer has begun
    finished = 0  # state-changing calls that have returned
    stop = threading.Event()
    errors: list[str] = []
    calls = {"persist": 0, "compact": 0}

    def writer():
        nonlocal started, finished
        try:
            for call in plan.calls:
                name = call[0]
                if name in calls:
                    getattr(db, name)()
                    calls[name] += 1
                    continue
                _, ids, slots = call
                started += 1
                if name == "delete":
                    db.delete(ids)
                else:
                    getattr(db, name)(
                        ids,
                        plan.pool[slots],
                        metadatas=[{"id": id_, "v": j} for id_, j in zip(ids, slots)],
                        documents=[f"{id_}@{j}" for id_, j in zip(ids, slots)],
                    )
                finished = started
                time.sleep(0.005)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(f"writer: {e!r}")
        finally:
            stop.set()

    def reader(kind: str, seed: int) -> int:
        local = np.random.default_rng(seed)
        n = 0
        while (not stop.is_set() or n < 5) and not errors:
            lo = finished
            if kind == "search":
                qi = int(local.integers(QUERIES))
                hits = db.search(plan.queries[qi], K)
                hi = started
                ok = any(plan.search_matches(s, qi, hits) for s in range(lo, hi + 1))
                what = f"search for query {qi}: {hits[:3]}..."
            elif kind == "batch":
                picks = local.choice(QUERIES, size=4, replace=False)
                found = db.search_batch(plan.queries[picks], K)
                hi = started
                # One batch is answered from one snapshot: one state must match every query.
                ok = any(
                    all(plan.search_matches(s, int(qi), hits) for qi, hits in zip(picks, found))
                    for s in range(lo, hi + 1)
                )
                what = f"search_batch for queries {list(picks)}"
            else:
                id_ = plan.all_ids[int(local.integers(len(plan.all_ids)))]
                record = db.get(id_)
                hi = started
                ok = any(plan.get_matches(s, id_, record) for s in range(lo, hi + 1))
                what = f"get({id_!r}) = {record!r} ({None if record is None else record.document})"
            if not ok:
                errors.append(f"{what} matches no state published in {lo}..{hi} (seed {SEED})")
                return n
            n += 1
        return n

    kinds = ["search"] * 4 + ["batch"] + ["get"] * 2
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(kinds) + 1) as pool:
        w = pool.submit(writer)
        readers = [pool.submit(reader, kind, SEED + i) for i, kind in enumerate(kinds)]
        w.result(timeout=120)
        counts = [f.result(timeout=120) for f in readers]
    elapsed = time.perf_counter() - t0
    checked = dict.fromkeys(kinds, 0)
    for kind, c in zip(kinds, counts):
        checked[kind] += c
    stats = db._coalesce_stats()
    print(f"{backend}: {elapsed:.1f} s, {finished} writes, {calls}, answers checked {checked}, "
          f"coalescing (queries, scans) {stats}")
    assert not errors, errors[:5]
    assert finished == len(plan.states) - 1 and calls == {"persist": 6, "compact": 4}
    assert all(c >= 5 for c in counts), counts
    if stats is not None:
        # The coalesced path ran against the writer: some scans answered several searches.
        queries, scans = stats
        assert queries > scans, f"no search was coalesced ({queries} searches, {scans} scans)"
    # The final state, exactly.
    final = plan.states[-1]
    assert sorted(db.ids()) == sorted(final)
    for qi in range(QUERIES):
        assert plan.search_matches(len(plan.states) - 1, qi, db.search(plan.queries[qi], K))


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
