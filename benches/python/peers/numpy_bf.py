"""NumPy brute force: the vectors in a .npy file, scored with a BLAS matrix-vector product."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import Adapter


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k highest scores along the last axis, best first."""
    k = min(k, scores.shape[-1])
    part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


def save_metadata(path: Path, ids: list[str], metadatas: list[dict]) -> None:
    """Libraries with no metadata store keep it beside the index, as their users would."""
    with open(path / "metadata.json", "w") as f:
        json.dump({"ids": ids, "metadatas": metadatas}, f)


class NumpyBruteForce(Adapter):
    name = "numpy"
    has_batch = True
    how = "np.save/np.load; scores = base @ q (BLAS sgemv), argpartition; batch: Q @ base.T in blocks of 256"
    filtered = ("the metadata JSON beside the vectors read into a bucket array at open; per query "
                "rows = flatnonzero(bucket == v), then base[rows] @ q")

    def version(self) -> str:
        return np.__version__

    def ingest(self, path, ids, vectors, metadatas):
        np.save(path / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        save_metadata(path, ids, metadatas)

    def open(self, path):
        self.base = np.load(path / "vectors.npy")
        with open(path / "metadata.json") as f:
            self.bucket = np.array([m["bucket"] for m in json.load(f)["metadatas"]])

    def search(self, query, k):
        return top_k_rows(self.base @ query, k).tolist()

    def search_batch(self, queries, k):
        out = []
        for start in range(0, len(queries), 256):
            out.append(top_k_rows(queries[start:start + 256] @ self.base.T, k))
        return np.concatenate(out)

    def search_where(self, query, k, bucket, mode):
        rows = np.flatnonzero(self.bucket == bucket)
        return rows[top_k_rows(self.base[rows] @ query, k)].tolist()
