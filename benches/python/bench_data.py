"""The benchmark's data sets and their exact ground truth, made once and cached as .npy.

Two sets, each a directory holding `base.npy` (float32, L2-normalised rows), `queries.npy`
(float32, normalised) and `gt.npy` (int32 row numbers of the exact top `GT_K` of each query by
inner product, computed in float64, ties to the lower row):

- `synthetic`: seeded, clustered Gaussian vectors (the seed's 50,000 x 1536 shape);
- `minilm`: the real sentence embeddings in `../shared/data` (or `SRVDB_DATA_DIR`), absent
  on machines without them (the caller reports it as skipped);
- `minilm-perturbed`: for the quantized test, each real row `PERTURBED_VARIANTS` times plus
  Gaussian noise of expected norm `perturbed_noise`, re-normalised (1,000,000 x 384 in the
  full run, as benches/quantized.rs builds it), queried with the real queries;
- `minilm-corpus`: for the quantized test, a million distinct real sentences embedded by
  SrvDB's MiniLM with 200 held-out ones as queries (made by benches/python/corpus.py, about
  an hour; skipped with that command named where it was not made);
- `synthetic-big`: a larger clustered set (1,000,000 x 384 in the full run) that only SrvDB
  native runs, and only for the filtered test (the issue's filtered-search figures at scale).

Each set also gets the metadata columns users filter on (`filters.npz`, see `FILTER_CASES`):
an integer `bucket` whose values select 50%, 5% and 0.1% of the rows (a seeded permutation,
so the counts are exact) and a `source` string; and `filter_gt.npz`, the exact float64 top
`GT_K` of each query among only the rows each filter matches (row numbers of the whole set).

Only NumPy is needed, so every interpreter of the bench can import this module.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
GT_K = 100


@dataclass(frozen=True)
class Sizes:
    """How big each data set is in one run (`full` or `smoke`)."""

    synthetic_n: int
    synthetic_dim: int
    synthetic_queries: int
    real_n: int | None  # None: every row of the real set
    real_queries: int | None
    clusters: int
    seed: int = 20261125


    big_n: int = 0  # the filtered-only set for SrvDB; 0: none
    big_dim: int = 384
    big_queries: int = 100
    perturbed_n: int = 0  # the quantized test's perturbed MiniLM set; 0: none
    perturbed_noise: float = 1.0  # benches/quantized.rs's default (see its doc)
    corpus_n: int = 0  # corpus.py's real 1M set (made separately); 0: not used


FULL = Sizes(synthetic_n=50_000, synthetic_dim=1536, synthetic_queries=1000,
             real_n=None, real_queries=None, clusters=256, big_n=1_000_000,
             perturbed_n=1_000_000, corpus_n=1_000_000)
SMOKE = Sizes(synthetic_n=2_000, synthetic_dim=64, synthetic_queries=50,
              real_n=1_000, real_queries=20, clusters=16, big_n=5_000, big_dim=32,
              big_queries=10, perturbed_n=5_000)
#: Variants of each real row in the perturbed set.
PERTURBED_VARIANTS = 50

#: The filtered test's cases: (name, the `bucket` value it selects, the share of rows that
#: value gets). Every filter is `{"bucket": value}` (an equality, the common case: "only this
#: user's / this source's documents"); the remaining rows get the values 3..9.
FILTER_CASES = (("50%", 0, 0.5), ("5%", 1, 0.05), ("0.1%", 2, 0.001))
#: The `source` strings, drawn uniformly per row.
SOURCES = ("web", "pdf", "email", "chat", "wiki")

#: The HNSW test's filter cases (issue 17: 1%, 10%, 50%): (name, the `hsel` value it selects,
#: the share of rows that value gets); the remaining rows get 0. The column `hsel` is added to
#: the metadata only when the HNSW test runs (`metadatas(..., hnsw=True)`).
HNSW_FILTER_CASES = (("1%", 1, 0.01), ("10%", 10, 0.10), ("50%", 50, 0.50))


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """`n` unit vectors around `clusters` random centres: each is centre + noise, normalised,
    so neighbours are mostly in the same cluster but scores are not degenerate."""
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    which = rng.integers(0, clusters, size=n)
    out = np.empty((n, dim), dtype=np.float32)
    step = 8192
    for start in range(0, n, step):
        rows = which[start:start + step]
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32)
        out[start:start + step] = centres[rows] + 0.9 * noise
    return normalise(out)


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows of the exact top `k` by inner product in float64, best first, ties to the lower
    row (a stable sort). Chunked, so 50,000 x 1536 needs ~0.7 GB at a time."""
    base64 = base.astype(np.float64)
    k = min(k, len(base))
    out = np.empty((len(queries), k), dtype=np.int32)
    step = max(1, min(100, 5_000_000 // max(1, len(base))))
    for start in range(0, len(queries), step):
        scores = queries[start:start + step].astype(np.float64) @ base64.T
        out[start:start + step] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return out


def filter_columns(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket, source index) per row. A seeded permutation gives each case's value to exactly
    round(share x n) rows (at least one), so the selectivities are exact, not expected."""
    rng = np.random.default_rng(seed + 7)
    bucket = np.empty(n, dtype=np.int32)
    order = rng.permutation(n)
    start = 0
    for _name, value, share in FILTER_CASES:
        count = max(1, round(share * n))
        bucket[order[start:start + count]] = value
        start += count
    bucket[order[start:]] = 3 + rng.integers(0, 7, size=n - start)
    source = rng.integers(0, len(SOURCES), size=n).astype(np.int32)
    return bucket, source


def metadatas(directory: Path, rows: int | None = None, hnsw: bool = False) -> list[dict]:
    """Each row's metadata as every library ingests it: its row number, `bucket` and `source`
    (of the first `rows` rows; None: all), and with `hnsw` the HNSW test's `hsel`."""
    cols = np.load(Path(directory) / "filters.npz")
    bucket, source = cols["bucket"][:rows].tolist(), cols["source"][:rows].tolist()
    out = [{"doc": i, "bucket": b, "source": SOURCES[s]}
           for i, (b, s) in enumerate(zip(bucket, source))]
    if hnsw:
        for meta, value in zip(out, hnsw_filter_column(len(cols["bucket"]))[:rows].tolist()):
            meta["hsel"] = value
    return out


def hnsw_filter_column(n: int, seed: int = 20261717) -> np.ndarray:
    """The HNSW test's `hsel` per row: a seeded permutation gives each `HNSW_FILTER_CASES`
    value to exactly round(share x n) rows (at least one), the rest 0."""
    order = np.random.default_rng(seed).permutation(n)
    column = np.zeros(n, dtype=np.int32)
    start = 0
    for _name, value, share in HNSW_FILTER_CASES:
        count = max(1, round(share * n))
        column[order[start:start + count]] = value
        start += count
    return column


def ensure_filters(dest: Path, seed: int) -> None:
    """Adds the filter columns and the filtered ground truth to a prepared set, if missing."""
    if (dest / "filter_gt.npz").is_file():
        return
    base = np.load(dest / "base.npy")
    queries = np.load(dest / "queries.npy")
    bucket, source = filter_columns(len(base), seed)
    gts = {}
    for name, value, _share in FILTER_CASES:
        rows = np.flatnonzero(bucket == value)
        gts[name] = rows[exact_top(base[rows], queries, GT_K)].astype(np.int32)
    np.savez(dest / "filters.npz.tmp.npz", bucket=bucket, source=source)
    np.savez(dest / "filter_gt.npz.tmp.npz", **gts)
    (dest / "filters.npz.tmp.npz").replace(dest / "filters.npz")
    (dest / "filter_gt.npz.tmp.npz").replace(dest / "filter_gt.npz")


def load_filters(dataset_dir: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(bucket per row, {case name: filtered ground truth}) of a prepared set."""
    d = Path(dataset_dir)
    gt = np.load(d / "filter_gt.npz")
    return np.load(d / "filters.npz")["bucket"], {name: gt[name] for name in gt.files}


def repo_relative(path: Path | str) -> str:
    """`path` as recorded in results: relative to the repository, so a report names no
    directory of the machine that ran it (`../shared/data`, `target/bench-data/...`)."""
    return os.path.relpath(os.path.abspath(path), REPO)


def real_data_dir() -> Path | None:
    d = Path(os.environ.get("SRVDB_DATA_DIR", REPO.parent / "shared" / "data"))
    return d if (d / "base.npy").is_file() and (d / "queries.npy").is_file() else None


def _write(dest: Path, base: np.ndarray, queries: np.ndarray, info: dict) -> Path:
    info = dict(info, rows=len(base), dim=base.shape[1], queries=len(queries))
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "base.npy", base)
    np.save(tmp / "queries.npy", queries)
    np.save(tmp / "gt.npy", exact_top(base, queries, GT_K))
    (tmp / "info.json").write_text(json.dumps(info, indent=1))
    tmp.rename(dest)
    return dest


def prepare(cache: Path, sizes: Sizes, big: bool = False,
            perturbed: bool = False) -> dict[str, Path | str]:
    """Each data set's directory, made if missing; a str instead of a Path says why a set is
    skipped. The cache key holds every size and the seed, so a change makes a new set.
    `big`: also the filtered-only `synthetic-big` set (when SrvDB's filtered test runs);
    `perturbed`: also `minilm-perturbed`, and `minilm-corpus` where corpus.py made it (when
    the quantized test runs)."""
    out: dict[str, Path | str] = {}
    s = sizes
    key = f"synthetic-{s.synthetic_n}x{s.synthetic_dim}-q{s.synthetic_queries}-c{s.clusters}-s{s.seed}"
    dest = cache / key
    if not (dest / "gt.npy").is_file():
        rng = np.random.default_rng(s.seed)
        base = clustered(s.synthetic_n, s.synthetic_dim, s.clusters, rng)
        queries = clustered(s.synthetic_queries, s.synthetic_dim, s.clusters,
                            np.random.default_rng(s.seed + 1))
        info = {"name": "synthetic", "source": "clustered Gaussian", **asdict(s)}
        _write(dest, base, queries, info)
    ensure_filters(dest, s.seed)
    out["synthetic"] = dest

    real = real_data_dir()
    if real is None:
        out["minilm"] = "skipped: ../shared/data (or SRVDB_DATA_DIR) has no base.npy/queries.npy"
    else:
        out["minilm"] = prepare_real(cache, s, real)
    if perturbed:
        out["minilm-perturbed"] = (prepare_perturbed(cache, s, real) if real is not None
                                   else out["minilm"])
        if s.corpus_n:
            out["minilm-corpus"] = prepare_corpus(cache, s)
    if big:
        out["synthetic-big"] = prepare_big(cache, s)
    return out


def prepare_big(cache: Path, s: Sizes) -> Path:
    key = f"synthetic-big-{s.big_n}x{s.big_dim}-q{s.big_queries}-c{s.clusters}-s{s.seed}"
    dest = cache / key
    if not (dest / "gt.npy").is_file():
        rng = np.random.default_rng(s.seed + 2)
        base = clustered(s.big_n, s.big_dim, s.clusters, rng)
        queries = clustered(s.big_queries, s.big_dim, s.clusters, np.random.default_rng(s.seed + 3))
        info = {"name": "synthetic-big", "source": "clustered Gaussian", "clusters": s.clusters,
                "seed": s.seed + 2}
        _write(dest, base, queries, info)
    ensure_filters(dest, s.seed + 2)
    return dest


def prepare_perturbed(cache: Path, s: Sizes, real: Path) -> Path:
    key = f"minilm-perturbed-{s.perturbed_n}-v{PERTURBED_VARIANTS}-n{s.perturbed_noise}-s{s.seed}"
    dest = cache / key
    if not (dest / "gt.npy").is_file():
        source = normalise(np.load(real / "base.npy"))
        queries = normalise(np.load(real / "queries.npy")[: s.real_queries])
        rng = np.random.default_rng(s.seed + 4)
        dim = source.shape[1]
        base = np.empty((s.perturbed_n, dim), dtype=np.float32)
        step = 50_000
        for start in range(0, s.perturbed_n, step):
            rows = np.arange(start, min(start + step, s.perturbed_n))
            noise = rng.standard_normal((len(rows), dim), dtype=np.float32)
            base[rows] = source[(rows // PERTURBED_VARIANTS) % len(source)] \
                + noise * np.float32(s.perturbed_noise / np.sqrt(dim))
        base = normalise(base)
        info = {"name": "minilm-perturbed", "variants": PERTURBED_VARIANTS,
                "noise": s.perturbed_noise, "seed": s.seed + 4,
                "source": f"MiniLM rows x {PERTURBED_VARIANTS} + Gaussian noise of norm "
                          f"{s.perturbed_noise}, re-normalised ({repo_relative(real)})"}
        _write(dest, base, queries, info)
    ensure_filters(dest, s.seed + 4)
    return dest


def prepare_corpus(cache: Path, s: Sizes) -> Path | str:
    """corpus.py's set if it was made with `s.corpus_n` rows, else why it is skipped. It is
    not made here: harvesting and embedding a million sentences takes about an hour."""
    dest = cache / "minilm-corpus"
    info = dest / "info.json"
    if not (dest / "gt.npy").is_file() or not info.is_file():
        return ("skipped: not made; run `python benches/python/corpus.py harvest` then "
                "`... corpus.py embed` (about an hour)")
    rows = json.loads(info.read_text()).get("rows")
    if rows != s.corpus_n:
        return f"skipped: {repo_relative(dest)} has {rows} rows, not {s.corpus_n}"
    ensure_filters(dest, s.seed + 5)
    return dest


def prepare_real(cache: Path, s: Sizes, real: Path) -> Path:
    key = f"minilm-{s.real_n or 'all'}-q{s.real_queries or 'all'}"
    dest = cache / key
    if not (dest / "gt.npy").is_file():
        base = normalise(np.load(real / "base.npy")[: s.real_n])
        queries = normalise(np.load(real / "queries.npy")[: s.real_queries])
        info = {"name": "minilm",
                "source": f"MiniLM sentence embeddings, {repo_relative(real)}"}
        _write(dest, base, queries, info)
        check_against_shipped_truth(dest, real)
    ensure_filters(dest, s.seed)
    return dest


def check_against_shipped_truth(dest: Path, real: Path, k: int = 10) -> None:
    """The real set ships its own float64 top-100 (gt_cosine.npy); where all its rows and
    queries are used, our top k must agree with it, or the set is refused."""
    shipped = real / "gt_cosine.npy"
    ours = np.load(dest / "gt.npy")
    if not shipped.is_file() or len(np.load(dest / "base.npy", mmap_mode="r")) != len(
            np.load(real / "base.npy", mmap_mode="r")):
        return
    theirs = np.load(shipped)[: len(ours)]
    agree = np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ours, theirs)])
    if agree != 1.0:
        raise RuntimeError(f"ground truth disagrees with {shipped}: top-{k} overlap {agree:.4f}")


def load(dataset_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base, queries, gt) of a prepared set."""
    d = Path(dataset_dir)
    return np.load(d / "base.npy"), np.load(d / "queries.npy"), np.load(d / "gt.npy")
