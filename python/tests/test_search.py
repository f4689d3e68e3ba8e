"""Search against NumPy brute force: random data for every metric, and the real sentence
embeddings against their exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from reference import Reference

METRICS = ["cosine", "dot", "l2"]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n,dim", [(300, 37), (9000, 64)])
def test_random_data_matches_brute_force(open_db, metric, n, dim):
    rng = np.random.default_rng(n * 1000 + dim)
    # Components ~ N(0, 1/dim): scores are O(1), so 1e-5 is a meaningful tolerance.
    base = (rng.standard_normal((n, dim)) / np.sqrt(dim)).astype(np.float32)
    ids = [f"r{i}" for i in range(n)]
    db = open_db(metric=metric)
    # Four batches: arrays and lists, float32 and float64.
    q4 = n // 4
    db.add(ids[:q4], base[:q4])
    db.add(ids[q4 : 2 * q4], base[q4 : 2 * q4].tolist())
    db.add(ids[2 * q4 : 3 * q4], base[2 * q4 : 3 * q4].astype(np.float64))
    db.add(ids[3 * q4 :], base[3 * q4 :])
    assert len(db) == n

    # Delete every 7th, upsert every 11th of the rest with a fresh vector.
    live = np.ones(n, dtype=bool)
    gone = list(range(0, n, 7))
    db.delete([ids[i] for i in gone])
    live[gone] = False
    up = [i for i in range(3, n, 11) if live[i]]
    fresh = (rng.standard_normal((len(up), dim)) / np.sqrt(dim)).astype(np.float32)
    db.upsert([ids[i] for i in up], fresh)
    base = base.copy()
    base[up] = fresh
    keep = np.flatnonzero(live)
    ref = Reference(base[keep], [ids[i] for i in keep], metric)
    assert len(db) == len(keep)

    queries = (rng.standard_normal((70, dim)) / np.sqrt(dim)).astype(np.float32)
    all_scores = ref.scores(queries)
    agreement = []
    for k in [1, 10, 100]:
        batch = db.search_batch(queries, k)
        assert len(batch) == len(queries)
        ids_arr, scores_arr = db.search_batch(queries, k, numpy=True)
        assert ids_arr.shape == scores_arr.shape == (len(queries), k)
        assert scores_arr.dtype == np.float32 and ids_arr.dtype == object
        for qi, q in enumerate(queries):
            ctx = f"{metric} n={n} dim={dim} k={k} q{qi}"
            s = all_scores[qi]
            if qi < 12:
                single = db.search(q, k)
                ref.check(single, q, k, context=ctx + " single", s=s)
                # The batch kernels (GEMM from 64 queries) round differently from the
                # single-query one: scores agree position by position, and the ids may differ
                # only among near-ties, at the boundary or in their order.
                np.testing.assert_allclose([h[1] for h in single], scores_arr[qi], rtol=1e-6, atol=1e-6)
                sid, bid = [h[0] for h in single], list(ids_arr[qi])
                by_id = {h[0]: h[1] for h in single} | dict(zip(bid, scores_arr[qi]))
                for x in set(sid) ^ set(bid):
                    assert abs(by_id[x] - single[-1][1]) <= 1e-5, (ctx, x, by_id[x], single[-1][1])
            agreement.append(ref.check(batch[qi], q, k, context=ctx + " batch", s=s))
    # Same ids in the same order, not merely equal scores (random data has no near-ties).
    assert np.mean(agreement) >= 0.999


def test_real_embeddings_match_ground_truth(open_db, real_data):
    base, queries, gt, gt_scores = (
        real_data["base"],
        real_data["queries"],
        real_data["gt"],
        real_data["gt_scores"],
    )
    n = len(base)
    ids = [f"s{i}" for i in range(n)]
    db = open_db()
    for start in range(0, n, 5000):
        db.add(ids[start : start + 5000], base[start : start + 5000])
    db.persist()

    ref = Reference(base, ids, "cosine")
    all_scores = ref.scores(queries)
    exact = 0
    ids_arr, scores_arr = db.search_batch(queries, 100, numpy=True)
    for qi, q in enumerate(queries):
        single = db.search(q, 10)
        ref.check(single, q, 10, context=f"real q{qi}", s=all_scores[qi])
        hits = list(zip(ids_arr[qi], scores_arr[qi].astype(float)))
        ref.check(hits, q, 100, context=f"real batch q{qi}", s=all_scores[qi])
        # Against the shipped ground truth (float64 scores stored as float32).
        np.testing.assert_allclose(scores_arr[qi], gt_scores[qi], atol=1e-5)
        exact += sum(h[0] == f"s{r}" for h, r in zip(single, gt[qi, :10]))
    assert exact / (10 * len(queries)) >= 0.999


def test_edge_cases(open_db):
    db = open_db()
    assert db.search([1.0, 2.0], 10) == []
    assert db.search_batch([[1.0, 2.0], [3.0, 4.0]], 10) == [[], []]
    db.add(["a", "b", "c"], [[1, 0], [0, 1], [1, 1]])
    assert db.search([1.0, 0.0], 0) == []
    assert db.search_batch([[1.0, 0.0]], 0) == [[]]
    ids, scores = db.search_batch(np.zeros((0, 2), np.float32), 3, numpy=True)
    assert ids.shape == scores.shape == (0, 0)
    hits = db.search([1.0, 0.0], 50)
    assert [h[0] for h in hits] == ["a", "c", "b"]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-6)
    # A zero query has cosine 0 with everything, and is still answered.
    assert len(db.search([0.0, 0.0], 2)) == 2


def test_l2_is_squared_distance_lowest_first(open_db):
    db = open_db(metric="l2")
    db.add(["o", "x", "far"], np.array([[0, 0], [3, 4], [30, 40]], np.float32))
    assert db.search([0.0, 0.0], 3) == [("o", 0.0), ("x", 25.0), ("far", 2500.0)]
