"""hnswlib beside `cargo run --release --example hnsw_probe`, measured the same way.

The shared MiniLM set (`SRVDB_DATA_DIR`, else ../shared/data), normalised, space "ip", M 16,
ef_construction 200: the build on `HNSW_THREADS` threads (default 2; wall and process CPU
seconds), then per ef of `HNSW_PROBE_EFS` (default 64,128,256) recall@10 against
gt_cosine.npy and single-query QPS on 1 thread per CPU-second of the calling thread
(`time.thread_time`, as the probe's default clock), the best of `HNSW_PROBE_REPEATS` passes
(default 3). Recall is counted outside the timed loop.

    python benches/python/hnswlib_probe.py   # needs numpy and hnswlib (0.8.0 measured)
"""
import os
import time

import hnswlib
import numpy as np

data = os.environ.get("SRVDB_DATA_DIR", "../shared/data")
efs = [int(e) for e in os.environ.get("HNSW_PROBE_EFS", "64,128,256").split(",")]
repeats = int(os.environ.get("HNSW_PROBE_REPEATS", "3"))
threads = int(os.environ.get("HNSW_THREADS", "2"))
base = np.load(os.path.join(data, "base.npy")).astype(np.float32)
queries = np.load(os.path.join(data, "queries.npy")).astype(np.float32)
gt = np.load(os.path.join(data, "gt_cosine.npy"))[:, :10]
base /= np.linalg.norm(base, axis=1, keepdims=True)
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
n, dim = base.shape

index = hnswlib.Index(space="ip", dim=dim)
index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=100)
index.set_num_threads(threads)
wall, cpu = time.perf_counter(), time.process_time()
index.add_items(base, np.arange(n))
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(f"hnswlib {n} x {dim}: build {wall:.2f} s on {threads} threads ({cpu:.2f} CPU-s)")
index.set_num_threads(1)
print("| ef | recall@10 | QPS |")
print("| ---: | ---: | ---: |")
for ef in efs:
    index.set_ef(ef)
    best = float("inf")
    for _ in range(repeats):
        found = []
        t = time.thread_time()
        for i in range(len(queries)):
            found.append(index.knn_query(queries[i : i + 1], k=10)[0])
        best = min(best, time.thread_time() - t)
        hits = sum(len(set(f[0].tolist()) & set(g.tolist())) for f, g in zip(found, gt))
    print(f"| {ef} | {hits / (10 * len(queries)):.4f} | {len(queries) / best:.0f} |")
