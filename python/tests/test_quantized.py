"""Compressed vectors (`create_index`): recall against NumPy brute force on the shared MiniLM set
(skipped when it is absent) and on clustered random data, `index_info`, persistence, writes after
the index is built, filters, `exact=True`, and argument errors. Every expectation is computed
here with NumPy (tests/reference.py), never taken from the engine."""

from __future__ import annotations

import numpy as np
import pytest

import srvdb
from reference import Reference

K = 10


def clustered(n: int, queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` rows and `queries` queries around the same 40 random centres: neighbourhoods as
    real embeddings have them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    rows = centres[rng.integers(0, 40, n + queries)] + 0.35 * rng.standard_normal((n + queries, dim))
    rows = rows.astype(np.float32)
    return rows[:n], rows[n:]


def recall(got_lists, truth_rows, ids) -> float:
    """Mean fraction of each query's true top k that came back."""
    hits = 0
    for got, rows in zip(got_lists, truth_rows):
        want = {ids[r] for r in rows}
        hits += len(want & {h[0] for h in got})
    return hits / (len(truth_rows) * len(truth_rows[0]))


def assert_exact_scores(got_lists, queries, ref: Reference, context: str):
    """Rescored hits carry their exact scores (float64 reference, float32 tolerance), best
    first, and never repeat an id."""
    for qi, got in enumerate(got_lists):
        s = ref.scores(queries[qi])
        ids = [h[0] for h in got]
        assert len(set(ids)) == len(ids), f"{context}: duplicate ids"
        for id_, score in got:
            true = s[ref.row_of[id_]]
            assert abs(score - true) <= 1e-5 * max(1.0, abs(true)), f"{context}: {id_} {score} vs {true}"
        scores = [h[1] for h in got]
        if ref.metric == "l2":
            assert scores == sorted(scores), context
        else:
            assert scores == sorted(scores, reverse=True), context


def fill(db, base: np.ndarray, metadatas=None) -> list[str]:
    ids = [f"r{i}" for i in range(len(base))]
    db.add(ids, base, metadatas=metadatas)
    return ids


def test_without_an_index_info_reports_the_exact_scan(open_db):
    db = open_db()
    assert db.index_info() == {
        "kind": "flat",
        "quantization": None,
        "rows": 0,
        "bytes": 0,
        "m": None,
        "ef_construction": None,
    }
    assert db.drop_index() is False


@pytest.mark.parametrize(
    ("quantization", "oversample", "min_recall"),
    [("int8", 4, 0.98), ("binary", 10, 0.85)],
)
def test_recall_on_clustered_data(open_db, quantization, oversample, min_recall):
    base, queries = clustered(3000, 40, 96, seed=7)
    db = open_db(metric="cosine")
    ids = fill(db, base)
    info = db.create_index(kind="flat", quantization=quantization)
    assert info == db.index_info()
    assert info["kind"] == "flat" and info["quantization"] == quantization
    assert info["rows"] == len(base)
    f32_bytes = base.nbytes
    # Codes: 96 bytes + a norm per row (int8), 2 words per row (binary); plus the codebook.
    least = len(base) * (96 if quantization == "int8" else 16)
    most = (0.3 if quantization == "int8" else 0.05) * f32_bytes + 64 * 1024
    assert least <= info["bytes"] <= most, info

    ref = Reference(base, ids, "cosine")
    truth = [ref.top_k(ref.scores(q), K) for q in queries]
    got = db.search_batch(queries, K, oversample=oversample)
    assert recall(got, truth, ids) >= min_recall
    assert_exact_scores(got, queries, ref, quantization)
    # Single searches take the same options and give the same answers.
    for qi in range(0, len(queries), 10):
        one = db.search(queries[qi], K, oversample=oversample)
        assert [h[0] for h in one] == [h[0] for h in got[qi]]
    # Enough candidates to rescore every row: the exact answer.
    full = db.search_batch(queries[:5], K, oversample=len(base) // K)
    for qi in range(5):
        ref.check(full[qi], queries[qi], K, context=f"{quantization} full rescoring q{qi}")


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_exact_true_equals_brute_force(open_db, metric, quantization):
    base, queries = clustered(800, 8, 32, seed=11)
    db = open_db(metric=metric)
    ids = fill(db, base)
    db.create_index(quantization=quantization)
    ref = Reference(base, ids, metric)
    for qi, q in enumerate(queries):
        got = db.search(q, K, exact=True)
        assert ref.check(got, q, K, context=f"{metric} {quantization} q{qi}") == 1.0
    lists = db.search_batch(queries, K, exact=True)
    for qi, q in enumerate(queries):
        assert ref.check(lists[qi], q, K, context=f"batch q{qi}") == 1.0


def test_index_persists_across_reopen(open_db):
    base, queries = clustered(1000, 10, 48, seed=21)
    db = open_db()
    fill(db, base)
    info = db.create_index(quantization="int8")
    before = db.search_batch(queries, K)
    db.close()
    db = open_db()
    assert db.index_info() == info
    assert db.search_batch(queries, K) == before


@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_writes_after_the_index_keep_it_right(open_db, quantization):
    base, queries = clustered(1200, 6, 32, seed=31)
    db = open_db(metric="cosine")
    ids = fill(db, base)
    db.create_index(quantization=quantization)

    # Rows added after the index, each a copy of a query: each must be its query's best hit
    # (its code was written with it).
    new_ids = [f"new{i}" for i in range(len(queries))]
    db.add(new_ids, queries)
    # Upserts move existing ids onto the queries too (scaled: the same direction).
    moved = [f"r{i}" for i in range(len(queries))]
    db.upsert(moved, queries * 3.0)
    deleted = [f"r{i}" for i in range(100, 400, 3)]
    db.delete(deleted)

    live = {id_: row for id_, row in zip(ids, base)}
    for id_, q in zip(moved, queries):
        live[id_] = q * 3.0
    for id_ in deleted:
        del live[id_]
    for id_, q in zip(new_ids, queries):
        live[id_] = q
    live_ids = list(live)
    ref = Reference(np.stack([live[i] for i in live_ids]), live_ids, "cosine")
    assert db.index_info()["rows"] == len(base) + 2 * len(queries)

    got = db.search_batch(queries, K)
    for qi, hits in enumerate(got):
        top2 = {h[0] for h in hits[:2]}
        assert top2 == {new_ids[qi], moved[qi]}, hits[:3]
        assert not {h[0] for h in hits} & set(deleted)
    assert_exact_scores(got, queries, ref, "after writes")
    # Every row a candidate: exactly brute force over the live rows.
    full = db.search_batch(queries, K, oversample=len(base) // K + 1)
    for qi, q in enumerate(queries):
        ref.check(full[qi], q, K, context=f"full rescoring q{qi}")

    # Compaction retrains and rewrites the codes: same answers, rows = live records.
    db.compact()
    assert db.index_info()["rows"] == len(live_ids)
    assert db.index_info()["quantization"] == quantization
    again = db.search_batch(queries, K)
    for qi, hits in enumerate(again):
        assert {h[0] for h in hits[:2]} == {new_ids[qi], moved[qi]}
        assert not {h[0] for h in hits} & set(deleted)
    assert_exact_scores(again, queries, ref, "after compact")


@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_filters_apply_during_the_code_scan(open_db, quantization):
    base, queries = clustered(2000, 6, 32, seed=41)
    metadatas = [{"group": i % 4, "rare": i % 97 == 0} for i in range(len(base))]
    db = open_db(metric="l2")
    ids = fill(db, base, metadatas=metadatas)
    db.create_index(quantization=quantization)
    for where, keep in [({"group": 2}, lambda i: i % 4 == 2), ({"rare": True}, lambda i: i % 97 == 0)]:
        rows = [i for i in range(len(base)) if keep(i)]
        ref = Reference(base[rows], [ids[i] for i in rows], "l2")
        for qi, q in enumerate(queries):
            hits = db.search(q, K, where=where)
            assert {h[0] for h in hits} <= set(ref.ids), f"{where}: a hit that does not match"
            assert len(hits) == min(K, len(rows))
            assert_exact_scores([hits], [q], ref, f"{where} q{qi}")
            # Enough candidates to rescore every matching row: exactly brute force.
            full = db.search(q, K, where=where, oversample=len(base) // K)
            ref.check(full, q, K, context=f"{where} full q{qi}")
            exact = db.search(q, K, where=where, exact=True)
            assert ref.check(exact, q, K, context=f"{where} exact q{qi}") == 1.0


def test_drop_index_goes_back_to_the_exact_scan(open_db):
    base, _ = clustered(500, 0, 16, seed=51)
    db = open_db()
    ids = fill(db, base)
    db.create_index(quantization="binary")
    assert db.drop_index() is True
    assert db.drop_index() is False
    assert db.index_info() == {
        "kind": "flat",
        "quantization": None,
        "rows": 0,
        "bytes": 0,
        "m": None,
        "ef_construction": None,
    }
    ref = Reference(base, ids, "cosine")
    assert ref.check(db.search(base[3], K), base[3], K) == 1.0
    # Another quantization replaces an index; the same again changes nothing.
    first = db.create_index(quantization="int8")
    assert db.create_index(quantization="int8") == first
    assert db.create_index(quantization="binary")["quantization"] == "binary"


def test_recall_on_minilm(backend, tmp_path, real_data):
    """The issue's targets on the shared 20k MiniLM set (its cosine ground truth, 200
    queries): int8 recall@10 >= 0.99 at oversample 4, binary >= 0.95 at oversample 10."""
    base, queries, gt = real_data["base"], real_data["queries"][:200], real_data["gt"][:200, :K]
    ids = [str(i) for i in range(len(base))]
    for quantization, oversample, target in [("int8", 4, 0.99), ("binary", 10, 0.95)]:
        db = srvdb.open(tmp_path / quantization, metric="cosine", backend=backend)
        db.add(ids, base)
        db.create_index(quantization=quantization)
        got = db.search_batch(queries, K, oversample=oversample)
        measured = recall(got, gt, ids)
        db.close()
        assert measured >= target, f"{quantization} recall@10 {measured:.4f} < {target}"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"kind": "tree", "quantization": "int8"}, "unknown index kind"),
        ({"quantization": "int4"}, "unknown quantization"),
    ],
)
def test_bad_index_specs_raise(open_db, kwargs, says):
    db = open_db()
    db.add(["a"], np.ones((1, 4), dtype=np.float32))
    with pytest.raises(srvdb.InvalidInputError, match=says) as err:
        db.create_index(**kwargs)
    assert isinstance(err.value, ValueError)
    assert db.index_info()["quantization"] is None


@pytest.mark.parametrize("oversample", [0, -1, 1001, True, 2.5, "4"])
def test_bad_oversample_raises(open_db, oversample):
    db = open_db()
    db.add(["a", "b"], np.eye(2, 4, dtype=np.float32))
    q = np.ones(4, dtype=np.float32)
    for call in (
        lambda: db.search(q, 1, oversample=oversample),
        lambda: db.search_batch([q], 1, oversample=oversample),
        lambda: db.query("text", 1, oversample=oversample),
    ):
        with pytest.raises(srvdb.InvalidInputError, match="oversample must be an int from 1 to 1000"):
            call()
