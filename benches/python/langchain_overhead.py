"""What the LangChain adapter costs on top of a direct SrvDB search, measured in one run.

On the 20,000 x 384 MiniLM sentence set (../shared/data or $SRVDB_DATA_DIR: base.npy,
base.txt, queries.npy; skipped if absent), one cosine database holding each sentence as the
document text and `{"row": i, "bucket": i % 20}` as its metadata, as the adapter writes them.
Per query, k = 10, best-of-rounds p50 / mean over the query set:

- `db.search(q, k)`: the engine call from Python (NumPy float32 query);
- `db.search` + `db.get` of each hit: what any store must add to return the texts;
- `store.similarity_search_by_vector(list, k)`: the LangChain call (list of floats in, as
  LangChain passes embeddings, Documents out);
- the same two with `filter={"bucket": 3}` (5% of the rows), which the adapter passes to
  the engine as `where`.

Run: `target/pyenv/bin/python benches/python/langchain_overhead.py` (needs langchain-core).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import srvdb

REPO = Path(__file__).resolve().parents[2]
K = 10
ROUNDS = 5
WHERE = {"bucket": 3}


def data_dir() -> Path | None:
    for c in (os.environ.get("SRVDB_DATA_DIR"), str(REPO.parent / "shared" / "data")):
        if c and (Path(c) / "base.npy").exists():
            return Path(c)
    return None


def timed(fns, queries) -> list[list[float]]:
    """Microseconds per query for each of `fns` (each a function of the query index), best of
    ROUNDS per query position. The calls are interleaved (all of them on a query, in rotating
    order, before the next query) so that a noisy machine shifts them alike."""
    best = [[float("inf")] * len(queries) for _ in fns]
    for r in range(ROUNDS):
        for i in range(len(queries)):
            for j in range(len(fns)):
                f = (j + i + r) % len(fns)
                t = time.perf_counter()
                fns[f](i)
                best[f][i] = min(best[f][i], (time.perf_counter() - t) * 1e6)
    return best


def main() -> None:
    d = data_dir()
    if d is None:
        print("SKIP: real embeddings not found (set SRVDB_DATA_DIR or put them in ../shared/data)")
        return
    try:
        from langchain_core.embeddings import FakeEmbeddings
        from srvdb.integrations.langchain import SrvDBVectorStore
    except ImportError:
        sys.exit("needs langchain-core: pip install -r python/requirements-integrations.txt")

    base = np.ascontiguousarray(np.load(d / "base.npy"), dtype=np.float32)
    queries = np.ascontiguousarray(np.load(d / "queries.npy"), dtype=np.float32)
    texts = (d / "base.txt").read_text(encoding="utf-8").splitlines() if (d / "base.txt").exists() else []
    if len(texts) != len(base):
        texts = [f"sentence {i}" for i in range(len(base))]
    n, dim = base.shape
    with tempfile.TemporaryDirectory() as tmp:
        db = srvdb.open(Path(tmp) / "db", metric="cosine")
        ids = [f"s{i}" for i in range(n)]
        db.add(ids, base, [{"row": i, "bucket": i % 20} for i in range(n)], texts)
        db.persist()
        store = SrvDBVectorStore(database=db, embedding=FakeEmbeddings(size=dim))
        qlists = [q.tolist() for q in queries]

        # Same answers both ways.
        for q, ql in zip(queries[:20], qlists[:20]):
            assert [h[0] for h in db.search(q, K)] == [doc.id for doc in store.similarity_search_by_vector(ql, K)]
            assert [h[0] for h in db.search(q, K, where=WHERE)] == [
                doc.id for doc in store.similarity_search_by_vector(ql, K, filter=WHERE)
            ]

        def with_get(i):
            return [db.get(h).metadata for h, _ in db.search(queries[i], K)]

        direct, fetched, via_lc, direct_f, via_lc_f = timed(
            [
                lambda i: db.search(queries[i], K),
                with_get,
                lambda i: store.similarity_search_by_vector(qlists[i], K),
                lambda i: db.search(queries[i], K, where=WHERE),
                lambda i: store.similarity_search_by_vector(qlists[i], K, filter=WHERE),
            ],
            queries,
        )
        db.close()

    def row(name, xs):
        return f"| {name} | {statistics.median(xs):.0f} | {statistics.fmean(xs):.0f} |"

    print(f"{n} x {dim} cosine, k={K}, {len(queries)} queries, best of {ROUNDS} rounds per query")
    print("| call | p50 (us) | mean (us) |\n| --- | --- | --- |")
    print(row("db.search (NumPy query)", direct))
    print(row("db.search + db.get of the hits", fetched))
    print(row("SrvDBVectorStore.similarity_search_by_vector (list query)", via_lc))
    print(row(f"db.search, where={json.dumps(WHERE)} (5% of rows)", direct_f))
    print(row(f"SrvDBVectorStore.similarity_search_by_vector, filter={json.dumps(WHERE)}", via_lc_f))
    p50d, p50l = statistics.median(direct), statistics.median(via_lc)
    print(f"LangChain overhead at p50: +{p50l - p50d:.0f} us ({(p50l / p50d - 1) * 100:.1f}% over the direct search)")


if __name__ == "__main__":
    main()
