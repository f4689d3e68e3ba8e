"""Which 1-bit estimator could lift binary recall@10 on minilm-perturbed (issue 16)?

A NumPy simulation of the binary code scan's candidate selection: each row gets a key from its
sign bits and a prepared query, the `k * oversample` best keys are the candidates, and since the
engine rescores the candidates exactly, recall@10 is the share of the true top 10 among them.
Recall is deterministic, so this answers "which estimator?" without timing anything, in minutes,
before any code format changes.

Variants (each over the same rows and queries):

- `today`: what `src/quant/mod.rs` scores: signs of `row - mean`, the query in 4-bit steps
  (`-8..=7` times a per-query step, rounded half away from zero), ties to the lower row. It
  should reproduce the engine's recall (benches/quantized.rs, run_peers.py);
- `float-query`: the same signs, the query unquantized (the bound for more query bits);
- `factor`: a per-row correction stored beside the code (RaBitQ's estimator):
  `<q, x - c> ~ |x - c|^2 / |x - c|_1 * <q, sign(x - c)>`;
- `hadamard+factor`: random sign flips and two orthonormal Walsh-Hadamard transforms over
  overlapping 256-wide blocks (0..256, then 128..384: an orthogonal transform of all 384
  dimensions without padding) before the signs, then the factor; also with a float query;
- `dense-rotation+factor`: a random orthogonal matrix (QR of a Gaussian) instead;
- `kmeans{N}+factor`: signs around the nearest of N centroids (k-means on a 50k sample;
  `--centroids`, default 256) instead of one mean, `<q, centroid>` added per row; and
  `kmeans{N}+hadamard+factor+float-query`, the same residual rotated, the query unquantized;
- `projected576+factor`: 576 sign bits instead of 384 (a random rotation plus 192 random
  directions; 0.047x the f32 bytes, under the 1-bit target's 0.05x), with the factor;
- `oracle+factor` (perturbed set only): signs around each row's own group mean (the 50 noisy
  copies of one sentence): the centring no index could learn, an upper bound for centroids.

Sets: `perturbed` (bench_data.py's `minilm-perturbed`: 50 noisy copies of each MiniLM row),
`minilm` (the real 20k), and two 1M sets whose variations follow the data instead of
isotropic noise (`neighbour-mix`, `data-noise`; see `densified`), and `corpus`: the first
`--rows` of a million distinct real sentences with their own 200 queries (corpus.py's
`minilm-corpus`, in target/bench-data). Each prints the mean cosine
gap between a query's 1st and 10th true neighbours (0.121 on the real 20k set).

    python benches/python/binary_estimators.py [--set perturbed|minilm|neighbour-mix|data-noise|corpus] [--rows 1000000]
        [--oversample 5 10 20] [--centroids 256 1024] [--only VARIANT ...]

Needs NumPy and the MiniLM data (`SRVDB_DATA_DIR` or `../shared/data`). The perturbed set is
built as `bench_data.py` builds it (same seed), its float64 ground truth computed here. At 1M
rows it needs about 8 GB and 15-25 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
K = 10
VARIANTS = 50  # bench_data.PERTURBED_VARIANTS
SEED = 20261125 + 4  # bench_data.FULL.seed + 4: the perturbed set's noise
DIM_BLOCK = 256
CORPUS = REPO / "target" / "bench-data" / "minilm-corpus"  # corpus.py's million sentences


def data_dir() -> Path:
    return Path(os.environ.get("SRVDB_DATA_DIR", REPO.parent / "shared" / "data"))


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def load(name: str, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base, queries, true top 10 by float64 inner product, ties to the lower row)."""
    if name == "corpus":
        if not (CORPUS / "gt.npy").is_file():
            raise SystemExit(f"{CORPUS} has no set: make it with benches/python/corpus.py")
        base, queries = np.load(CORPUS / "base.npy")[:rows], np.load(CORPUS / "queries.npy")
        if len(base) == len(np.load(CORPUS / "base.npy", mmap_mode="r")):
            # The whole set: corpus.py computed this truth the same way (bench_data.exact_top).
            return base, queries, np.load(CORPUS / "gt.npy")[:, :K]
        return base, queries, exact_top10(base, queries)
    real = data_dir()
    source = normalise(np.load(real / "base.npy"))
    queries = normalise(np.load(real / "queries.npy"))
    if name == "minilm":
        base = source
    elif name == "perturbed":
        rng = np.random.default_rng(SEED)
        dim = source.shape[1]
        base = np.empty((rows, dim), dtype=np.float32)
        for start in range(0, rows, 50_000):
            r = np.arange(start, min(start + 50_000, rows))
            noise = rng.standard_normal((len(r), dim), dtype=np.float32)
            base[r] = source[(r // VARIANTS) % len(source)] + noise * np.float32(1 / np.sqrt(dim))
        base = normalise(base)
    else:
        base = densified(name, source, rows)
    return base, queries, exact_top10(base, queries)


def exact_top10(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query's true top `K` rows by float64 inner product, ties to the lower row."""
    scores = np.empty((len(queries), len(base)), dtype=np.float64)
    q64 = queries.astype(np.float64)
    for start in range(0, len(base), 100_000):
        scores[:, start:start + 100_000] = q64 @ base[start:start + 100_000].astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :K]


def densified(name: str, source: np.ndarray, rows: int) -> np.ndarray:
    """A larger set whose variations follow the data rather than isotropic noise; row `r`
    comes from source row `r % len(source)`:
    - `neighbour-mix`: moved a uniform share in [0, 1) of the way to one of its 10 nearest
      real neighbours (a point between two related sentences);
    - `data-noise`: plus 0.3 times the difference of two random real rows (noise in the
      directions the embeddings vary in)."""
    rng = np.random.default_rng(7)
    n0, dim = source.shape
    near = None
    if name == "neighbour-mix":
        sim = source @ source.T
        np.fill_diagonal(sim, -2)
        near = np.argsort(-sim, axis=1)[:, :10]
        del sim
    base = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 50_000):
        r = np.arange(start, min(start + 50_000, rows))
        i = r % n0
        if near is not None:
            j = near[i, rng.integers(0, 10, len(r))]
            t = rng.uniform(0, 1, (len(r), 1)).astype(np.float32)
            base[r] = source[i] + t * (source[j] - source[i])
        else:
            a, b = rng.integers(0, n0, len(r)), rng.integers(0, n0, len(r))
            base[r] = source[i] + np.float32(0.3) * (source[a] - source[b])
    return normalise(base)


def quantize_query(q: np.ndarray) -> np.ndarray:
    """The query as `Codebook::prepare` holds it: 4-bit steps, half away from zero."""
    lo = np.minimum(q.min(axis=1, keepdims=True), 0)
    hi = np.maximum(q.max(axis=1, keepdims=True), 0)
    step = np.maximum(-lo / 8, hi / 7)
    v = np.sign(q / step) * np.floor(np.abs(q / step) + 0.5)
    return np.clip(v, -8, 7) * step


def fwht(a: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh-Hadamard transform of each row (length a power of two)."""
    n = a.shape[1]
    a = a.copy()
    h = 1
    while h < n:
        a = a.reshape(len(a), -1, 2, h)
        x, y = a[:, :, 0, :].copy(), a[:, :, 1, :].copy()
        a[:, :, 0, :], a[:, :, 1, :] = x + y, x - y
        a = a.reshape(len(a), n)
        h *= 2
    return a / np.float32(np.sqrt(n))


def hadamard(dim: int, seed: int = 7):
    """Sign flips, WHT over 0..256, sign flips, WHT over dim-256..dim: orthogonal."""
    rng = np.random.default_rng(seed)
    s1 = rng.choice([-1, 1], dim).astype(np.float32)
    s2 = rng.choice([-1, 1], dim).astype(np.float32)

    def apply(x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        for start in range(0, len(x), 100_000):
            y = x[start:start + 100_000] * s1
            y[:, :DIM_BLOCK] = fwht(y[:, :DIM_BLOCK])
            y = y * s2
            y[:, dim - DIM_BLOCK:] = fwht(y[:, dim - DIM_BLOCK:])
            out[start:start + 100_000] = y
        return out

    return apply


def best_rows(keys: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` highest keys, ties to the lower row (as the engine's shortlist ranks)."""
    t = np.partition(keys, len(keys) - keep)[len(keys) - keep]
    above = np.flatnonzero(keys > t)
    tied = np.flatnonzero(keys == t)[: keep - len(above)]
    return np.concatenate([above, tied])


def recall(residual, queries, truth, oversamples, factor=False, offset=None, quantized=True):
    """Recall@10 per oversample of keys `f * <q, sign(residual)> (+ offset)`."""
    signs = np.where(residual > 0, 1, -1).astype(np.float32)
    f = None
    if factor:
        # A row equal to its centre (a one-row cluster) has no residual: factor 0.
        l1 = np.abs(residual).sum(1)
        sq = np.square(residual).sum(1)
        f = np.divide(sq, l1, out=np.zeros_like(sq), where=l1 > 0).astype(np.float32)
    q = quantize_query(queries) if quantized else queries
    hits = dict.fromkeys(oversamples, 0)
    for start in range(0, len(q), 50):
        keys = (signs @ q[start:start + 50].T).T
        if f is not None:
            keys *= f
        if offset is not None:
            keys += offset(start, start + 50)
        for j, row_keys in enumerate(keys):
            for os_ in oversamples:
                rows = best_rows(row_keys, K * os_)
                hits[os_] += len(np.intersect1d(rows, truth[start + j]))
    return {os_: hits[os_] / (len(q) * K) for os_ in oversamples}


def kmeans(base: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` centroids (8 Lloyd steps on a 50k-row sample, seeded) and each row's nearest."""
    rng = np.random.default_rng(3)
    sample = base[rng.choice(len(base), min(len(base), 50_000), replace=False)]
    cent = sample[rng.choice(len(sample), count, replace=False)].copy()
    for _ in range(8):
        near = np.argmax(sample @ cent.T - 0.5 * (cent * cent).sum(1), axis=1)
        for j in range(count):
            members = sample[near == j]
            if len(members):
                cent[j] = members.mean(axis=0)
    half_sq = 0.5 * (cent * cent).sum(1)
    near = np.concatenate([np.argmax(base[s:s + 100_000] @ cent.T - half_sq, axis=1)
                           for s in range(0, len(base), 100_000)])
    return cent, near


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", choices=["perturbed", "minilm", "neighbour-mix", "data-noise",
                                     "corpus"],
                   default="perturbed")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--oversample", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--centroids", type=int, nargs="+", default=[256],
                   help="k-means centroid counts to try")
    p.add_argument("--only", nargs="+", default=None, help="run only these variants")
    a = p.parse_args()

    def wants(name: str) -> bool:
        return a.only is None or name in a.only

    t0 = time.time()
    base, queries, truth = load(a.set, a.rows)
    n, dim = base.shape
    first = np.einsum("qd,qd->q", queries, base[truth[:, 0]])
    tenth = np.einsum("qd,qd->q", queries, base[truth[:, K - 1]])
    print(f"{a.set}: {n} x {dim}, {len(queries)} queries, built in {time.time() - t0:.0f} s; "
          f"gap 1st-10th neighbour {np.mean(first - tenth):.3f}")
    mean = base.mean(axis=0)
    centred = base - mean

    def report(name, r):
        cells = "  ".join(f"x{o}: {v:.4f}" for o, v in r.items())
        print(f"{name:44s} {cells}   ({time.time() - t0:.0f} s)", flush=True)

    if wants("today"):
        report("today", recall(centred, queries, truth, a.oversample))
    if wants("float-query"):
        report("float-query", recall(centred, queries, truth, a.oversample, quantized=False))
    if wants("factor"):
        report("factor", recall(centred, queries, truth, a.oversample, factor=True))
    h = hadamard(dim)
    hq = h(queries)
    if wants("hadamard+factor") or wants("hadamard+factor+float-query"):
        rotated = h(centred)
        if wants("hadamard+factor"):
            report("hadamard+factor", recall(rotated, hq, truth, a.oversample, factor=True))
        if wants("hadamard+factor+float-query"):
            report("hadamard+factor+float-query",
                   recall(rotated, hq, truth, a.oversample, factor=True, quantized=False))
        del rotated
    if wants("dense-rotation+factor"):
        r, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((dim, dim)))
        r = r.astype(np.float32)
        report("dense-rotation+factor",
               recall(centred @ r, queries @ r, truth, a.oversample, factor=True))
    if wants("projected576+factor"):
        # 576 sign bits (0.047x the f32 bytes, under the 1-bit target's 0.05x): a random
        # rotation of the 384 dimensions plus 192 random unit directions.
        g = np.random.default_rng(11).standard_normal((dim, 576)).astype(np.float32)
        g[:, :dim] = np.linalg.qr(g[:, :dim])[0]
        g[:, dim:] /= np.linalg.norm(g[:, dim:], axis=0, keepdims=True)
        report("projected576+factor",
               recall(centred @ g, queries @ g, truth, a.oversample, factor=True))
    del centred
    for count in a.centroids:
        names = (f"kmeans{count}+factor", f"kmeans{count}+hadamard+factor+float-query")
        if not any(wants(name) for name in names):
            continue
        cent, near = kmeans(base, count)
        offset = lambda s, e, c=cent, nr=near: (queries[s:e] @ c.T)[:, nr]  # noqa: E731
        if wants(f"kmeans{count}+factor"):
            report(f"kmeans{count}+factor",
                   recall(base - cent[near], queries, truth, a.oversample, factor=True,
                          offset=offset))
        if wants(f"kmeans{count}+hadamard+factor+float-query"):
            report(f"kmeans{count}+hadamard+factor+float-query",
                   recall(h(base - cent[near]), hq, truth, a.oversample, factor=True,
                          offset=offset, quantized=False))
    if a.set == "perturbed" and n % VARIANTS == 0 and wants("oracle+factor"):
        group = np.arange(n) // VARIANTS
        means = base.reshape(-1, VARIANTS, dim).mean(axis=1)
        report("oracle+factor",
               recall(base - means[group], queries, truth, a.oversample, factor=True,
                      offset=lambda s, e: (queries[s:e] @ means.T)[:, group]))


if __name__ == "__main__":
    main()
