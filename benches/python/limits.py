"""This machine's limits, measured with NumPy in the same run as the libraries:

- memory read bandwidth with 1 and 2 threads: the best of a few NumPy reductions (float32
  max, int64 sum) streamed over a buffer far larger than the caches; with 2 threads each
  thread reduces one half (NumPy releases the GIL). A reduction that is not purely
  memory-bound reads low, which makes the floors derived from it lenient, never strict;
  the method that won is recorded.
- float32 GEMM GFLOP/s (NumPy matmul, all BLAS threads; which BLAS and kernel is recorded);
- durable disk write GB/s: os.write of 8 MiB blocks, then fsync, in a directory on the
  file system the libraries write to.

    python limits.py --out LIMITS.json --dir WORKDIR [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def best_seconds(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


REDUCTIONS = {
    "float32 max": lambda a: np.max(a),
    "int64 sum": lambda a: np.sum(a.view(np.int64)),
}


def read_bandwidth(nbytes: int, threads: int, reps: int) -> dict:
    buf = np.ones(nbytes // 8 * 2, dtype=np.float32)  # ones, so every page is resident
    parts = np.array_split(buf, threads)
    results = {}
    with ThreadPoolExecutor(threads) as pool:
        for name, reduce in REDUCTIONS.items():
            list(pool.map(reduce, parts))  # warm
            seconds = best_seconds(lambda: list(pool.map(reduce, parts)), reps)
            results[name] = buf.nbytes / seconds / 1e9
    method = max(results, key=results.get)
    return {"threads": threads, "gb_per_s": results[method], "method": method,
            "by_method": results, "buffer_bytes": buf.nbytes}


def gemm(m: int, n: int, k: int, reps: int) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a @ b
    seconds = best_seconds(lambda: a @ b, reps)
    return {"shape": [m, n, k], "gflop_per_s": 2 * m * n * k / seconds / 1e9, "blas": blas_info()}


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [{k: v for k, v in pool.items() if k in keep} for pool in threadpool_info()]


def durable_write(directory: Path, nbytes: int, reps: int) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(1).integers(0, 255, 8 << 20, dtype=np.uint8).tobytes()
    path = directory / "limits-write.bin"

    def write():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(nbytes // len(block)):
                os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)

    try:
        seconds = best_seconds(write, reps)
    finally:
        path.unlink(missing_ok=True)
    written = nbytes // len(block) * len(block)
    return {"gb_per_s": written / seconds / 1e9, "bytes": written, "block_bytes": len(block)}


def measure(workdir: Path, smoke: bool) -> dict:
    mib = 1 << 20
    bw_bytes, disk_bytes = (64 * mib, 32 * mib) if smoke else (1024 * mib, 1024 * mib)
    reps = 2 if smoke else 5
    return {
        "bandwidth": [read_bandwidth(bw_bytes, t, reps) for t in (1, 2)],
        "gemm": gemm(256, 2048, 256, reps) if smoke else gemm(1024, 16384, 1536, 3),
        "disk_write": durable_write(workdir, disk_bytes, 2),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    args.out.write_text(json.dumps(measure(args.dir, args.smoke), indent=1))


if __name__ == "__main__":
    main()
