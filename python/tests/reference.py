"""NumPy brute force: the reference every search result is compared with."""

from __future__ import annotations

import numpy as np

HIGHER_IS_BETTER = {"cosine": True, "dot": True, "l2": False}


class Reference:
    """Exact scores of `base` (float32 data, scored in float64) under `metric`."""

    def __init__(self, base: np.ndarray, ids: list[str], metric: str):
        self.base = np.asarray(base, dtype=np.float64)
        self.ids = list(ids)
        self.metric = metric
        self.norms = np.linalg.norm(self.base, axis=1)
        self.sq_norms = self.norms**2
        self.row_of = {id_: i for i, id_ in enumerate(self.ids)}

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Scores of every row for each query: shape (len(queries), len(base)), or (len(base),)
        for one query."""
        q = np.asarray(queries, dtype=np.float64)
        one = q.ndim == 1
        q = np.atleast_2d(q)
        dots = q @ self.base.T
        if self.metric == "dot":
            s = dots
        elif self.metric == "cosine":
            denom = np.linalg.norm(q, axis=1)[:, None] * self.norms[None, :]
            s = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
        elif self.metric == "l2":
            # Exact (not the expanded form, which cancels badly for near neighbours).
            s = np.stack([((self.base - row) ** 2).sum(axis=1) for row in q])
        else:
            raise ValueError(self.metric)
        return s[0] if one else s

    def top_k(self, s: np.ndarray, k: int) -> np.ndarray:
        """Rows of the exact top k for scores `s`, best first, ties to the lower row."""
        key = -s if HIGHER_IS_BETTER[self.metric] else s
        return np.argsort(key, kind="stable")[:k]

    def check(self, got, query, k, tol=1e-5, context="", s=None):
        """`got` ([(id, score)]) is the exact top k for `query`: the same ids in the same order
        (a swap is accepted only between scores within `tol`), and every score within `tol`
        (relative above 1) of the float64 reference. Returns the fraction of ranks whose id is
        exactly the reference's."""
        if s is None:
            s = self.scores(query)
        order = self.top_k(s, k)
        assert len(got) == len(order), f"{context}: {len(got)} hits, want {len(order)}"
        got_ids = [h[0] for h in got]
        assert len(set(got_ids)) == len(got_ids), f"{context}: duplicate ids {got_ids}"
        same = 0
        for rank, (id_, score) in enumerate(got):
            want_row = order[rank]
            want = s[want_row]
            scale = max(1.0, abs(want))
            assert id_ in self.row_of, f"{context}: unknown id {id_!r}"
            true = s[self.row_of[id_]]
            assert abs(score - want) <= tol * scale, (
                f"{context}: rank {rank}: score {score} vs reference {want} "
                f"(want {self.ids[want_row]!r}, got {id_!r})"
            )
            assert abs(score - true) <= tol * scale, f"{context}: {id_!r} reported {score}, scores {true}"
            if id_ == self.ids[want_row]:
                same += 1
            else:
                assert abs(true - want) <= tol * scale, (
                    f"{context}: rank {rank}: got {id_!r} ({true}), want {self.ids[want_row]!r} ({want})"
                )
        return same / max(1, len(order))


def assert_topk(got, base, ids, query, k, metric, tol=1e-5, context=""):
    """One-off `Reference(base, ids, metric).check(...)`."""
    return Reference(base, ids, metric).check(got, query, k, tol=tol, context=context)
