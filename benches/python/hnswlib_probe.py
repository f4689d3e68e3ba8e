"""hnswlib beside `cargo run --release --example hnsw_probe`, measured the same way.

The shared MiniLM set (`SRVDB_DATA_DIR`, else ../shared/data), normalised, space "ip", M 16,
ef_construction 200: the build on `HNSW_THREADS` threads (default 2; wall and process CPU
seconds), then per ef of `HNSW_PROBE_EFS` (default 64,128,256) recall@10 against
gt_cosine.npy and single-query QPS on 1 thread per CPU-second of the calling thread
(`time.thread_time`, as the probe's default clock): `HNSW_PROBE_REPEATS` passes (default 9),
each running every ef once in turn, the median pass reported and the fastest in brackets
(as the probe). Recall is counted outside the timed loop.

`HNSW_PROBE_WORK=<file>` (a graph the probe wrote with `HNSW_PROBE_DUMP=<file>`) also counts
the work: hnswlib's search algorithm (`searchKnn`: the greedy descent, then the ef search of
the bottom layer) rerun in Python on hnswlib's graph and on that SrvDB graph, with the
distances each query computes and the recall it reaches. A count does not depend on the
machine's load, so it separates a graph or search that does more work from a slower pass.

    python benches/python/hnswlib_probe.py   # needs numpy and hnswlib (0.8.0 measured)
"""
import heapq
import os
import struct
import tempfile
import time

import hnswlib
import numpy as np

data = os.environ.get("SRVDB_DATA_DIR", "../shared/data")
efs = [int(e) for e in os.environ.get("HNSW_PROBE_EFS", "64,128,256").split(",")]
repeats = max(1, int(os.environ.get("HNSW_PROBE_REPEATS", "9")))
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

# Every ef once per pass, so a burst of other work falls on one pass of each ef.
passes = {ef: [] for ef in efs}
recall = {}
for _ in range(repeats):
    for ef in efs:
        index.set_ef(ef)
        found = []
        t = time.thread_time()
        for i in range(len(queries)):
            found.append(index.knn_query(queries[i : i + 1], k=10)[0])
        passes[ef].append(len(queries) / (time.thread_time() - t))
        hits = sum(len(set(f[0].tolist()) & set(g.tolist())) for f, g in zip(found, gt))
        recall[ef] = hits / (10 * len(queries))
print(f"QPS: median of {repeats} passes (best in brackets)")
print("| ef | recall@10 | QPS |")
print("| ---: | ---: | ---: |")
for ef in efs:
    qps = sorted(passes[ef])
    print(f"| {ef} | {recall[ef]:.4f} | {qps[len(qps) // 2]:.0f} ({qps[-1]:.0f}) |")


def hnswlib_graph(path):
    """(entry, top layer, layers) of an index hnswlib saved (its 0.8.0 format), by label."""
    b = open(path, "rb").read()
    _, _, count, size_el, label_at, _ = struct.unpack_from("<6Q", b, 0)
    top, enter = struct.unpack_from("<iI", b, 48)
    max_m, max_m0, _ = struct.unpack_from("<3Q", b, 56)
    at = 56 + 24 + 16  # past mult_ and ef_construction_
    level0 = np.frombuffer(b, np.uint8, count * size_el, at).reshape(count, size_el)
    at += count * size_el
    labels = level0[:, label_at : label_at + 8].copy().view(np.uint64).ravel().astype(np.int64)
    counts = level0[:, 0:4].copy().view(np.uint32).ravel() & 0xFFFF
    links0 = level0[:, 4 : 4 + 4 * max_m0].copy().view(np.uint32)
    layers = [[None] * count] + [dict() for _ in range(top)]
    for i in range(count):
        layers[0][labels[i]] = labels[links0[i, : counts[i]].astype(np.int64)]
    for i in range(count):
        (size,) = struct.unpack_from("<I", b, at)
        at += 4
        raw = np.frombuffer(b, np.uint32, size // 4, at)
        for layer in range(size // (4 * (max_m + 1))):
            rec = raw[layer * (max_m + 1) : (layer + 1) * (max_m + 1)]
            layers[layer + 1][labels[i]] = labels[rec[1 : 1 + (rec[0] & 0xFFFF)].astype(np.int64)]
        at += size
    return labels[enter], top, layers


def srvdb_graph(path):
    """(entry, top layer, layers) of a graph `hnsw_probe` wrote with HNSW_PROBE_DUMP."""
    b = open(path, "rb").read()
    enter, top = struct.unpack_from("<II", b, 0)
    layers = [[] for _ in range(1)] + [dict() for _ in range(top)]
    at = 8
    for node in range(n):
        (size,) = struct.unpack_from("<I", b, at)
        value, at = b[at + 4 : at + 4 + size], at + 4 + size
        p = 2  # format byte, level
        for layer in range(value[1] + 1):
            (c,) = struct.unpack_from("<H", value, p)
            links = np.frombuffer(value, np.uint32, c, p + 2).astype(np.int64)
            p += 2 + 4 * c
            if layer == 0:
                layers[0].append(links)
            else:
                layers[layer][node] = links
    return enter, top, layers


def search(graph, q, ef, k=10):
    """hnswlib's searchKnn on `graph` (no deletions): the labels found and the distances."""
    enter, top, layers = graph
    at, best = enter, 1 - float(base[enter] @ q)
    count = 1
    for layer in range(top, 0, -1):
        changed = True
        while changed:
            changed = False
            links = layers[layer].get(at)
            if links is None or len(links) == 0:
                continue
            count += len(links)
            for node, d in zip(links, 1 - base[links] @ q):
                if d < best:
                    best, at, changed = float(d), int(node), True
    ef = max(ef, k)
    visited = {at}
    results, candidates, lower = [(-best, at)], [(best, at)], best
    while candidates:
        d, c = heapq.heappop(candidates)
        if d > lower:
            break
        links = [x for x in layers[0][c] if x not in visited]
        visited.update(links)
        if not links:
            continue
        count += len(links)
        for node, d in zip(links, 1 - base[links] @ q):
            d = float(d)
            if len(results) < ef or lower > d:
                heapq.heappush(candidates, (d, int(node)))
                heapq.heappush(results, (-d, int(node)))
                if len(results) > ef:
                    heapq.heappop(results)
                lower = -results[0][0]
    return [x for _, x in sorted((-d, x) for d, x in results)[:k]], count


if os.environ.get("HNSW_PROBE_WORK"):
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "hnswlib.bin")
        index.save_index(saved)
        graphs = [("hnswlib", hnswlib_graph(saved))]
    graphs.append(("SrvDB", srvdb_graph(os.environ["HNSW_PROBE_WORK"])))
    print("work: hnswlib's search algorithm rerun on each graph")
    print("| graph | bottom-layer links per node | ef | recall@10 | distances per query |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, graph in graphs:
        degree = np.mean([len(links) for links in graph[2][0]])
        for ef in efs:
            hits = distances = 0
            for q, g in zip(queries, gt):
                found, count = search(graph, q, ef)
                hits += len(set(found) & set(g.tolist()))
                distances += count
            print(
                f"| {name} | {degree:.2f} | {ef} | {hits / (10 * len(queries)):.4f} "
                f"| {distances / len(queries):.0f} |"
            )
