"""Peak RSS of one library holding N vectors, measured in a fresh process.

    python memory_probe.py --lib NAME --base BASE.npy --rows N --mode baseline|test --dir DIR

Both modes import the library (through its adapter) and load the same N x d float32 input.
`test` then ingests it into a new collection in DIR (durably, as in the ingest test),
reopens it and runs 10 searches; `baseline` stops there. Prints {"vmhwm_kib": ...}: the
peak resident set (VmHWM from /proc/self/status, not ru_maxrss, which Linux carries over
from the parent across exec). test minus baseline is what the library itself costs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import metadatas  # noqa: E402
from peers import LIBRARIES  # noqa: E402
from peers.base import fsync_tree  # noqa: E402


def vmhwm_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def read_rows(path: Path, rows: int) -> np.ndarray:
    """The first `rows` rows of a 2-D .npy file, read straight into one array. Not np.load
    (which would read the whole file) nor a memory map (whose pages would count in the peak
    of both processes, then go, and hide what the library adds after them)."""
    with open(path, "rb") as f:
        fmt = np.lib.format
        major, _ = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        assert not fortran and len(shape) == 2, (path, shape)
        out = np.empty((min(rows, shape[0]), shape[1]), dtype=dtype)
        f.readinto(memoryview(out).cast("B"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--base", required=True, type=Path)
    ap.add_argument("--rows", required=True, type=int)
    ap.add_argument("--mode", required=True, choices=["baseline", "test"])
    ap.add_argument("--dir", required=True, type=Path)
    args = ap.parse_args()
    adapter = LIBRARIES[args.lib].make()
    vectors = read_rows(args.base, args.rows)
    # The same metadata as the ingest test (its filter columns), held by both processes.
    metas = metadatas(args.base.parent, len(vectors))
    if args.mode == "test":
        n = len(vectors)
        args.dir.mkdir(parents=True)
        adapter.ingest(args.dir, [str(i) for i in range(n)], vectors, metas)
        fsync_tree(args.dir)
        adapter.open(args.dir)
        for q in vectors[:10]:
            hits = adapter.search(q, 10)
            assert len(hits) == min(10, n), hits
        adapter.close()
    print(json.dumps({"vmhwm_kib": vmhwm_kib(), "rows": len(vectors), "input_bytes": vectors.nbytes}))


if __name__ == "__main__":
    main()
