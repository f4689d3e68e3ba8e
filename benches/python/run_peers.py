"""SrvDB against its peers, side by side, in one run: `make bench` (full) and `make bench-smoke`.

    python3 benches/python/run_peers.py [--smoke] [--libs srvdb,faiss,...] [--out FILE.json]
                                        [--report-dir DIR]
                                        [--tests filtered|quantized|hnsw|concurrent]
                                        [--merge-into RESULTS.json] [--rounds N]

1. Makes the peers' virtualenv (peer_env.py; each requirement installed separately, a failure
   recorded) and re-runs itself with its interpreter, which has NumPy and matplotlib.
2. Prepares the data sets once (bench_data.py, cached under target/bench-data) with their
   exact float64 ground truth.
3. Measures the machine's limits (limits.py).
4. Runs each library in its own process (worker.py) with its own interpreter: SrvDB with
   target/pyenv (built by `make python-dev`), the peers with the peers' venv; then its memory
   test (memory_probe.py, a baseline and a test process). A library that is not installed,
   crashes or times out is recorded with the reason, and the run goes on.
5. Writes everything to one JSON file and renders the report from it (report.py).

`--tests filtered` runs only the filtered-search test (each library still ingests its data;
no memory probe). `--merge-into` puts this run's figures of those tests into an earlier run's
JSON (e.g. docs/benchmarks/results.json) and renders the report from the merged file, so a
filtered-only run updates the filtered section and keeps the rest as measured before;
`--merge-from RUN.json` merges a run made earlier (e.g. of other libraries) without running.

`--tests quantized` runs only the quantized test (issue 16: int8 and 1-bit codes rescored
exactly, each library's exact f32 search beside them), on the real MiniLM set and a 1M x 384
set made from it (`minilm-perturbed`, bench_data.py), and on a million real sentences
(`minilm-corpus`) where benches/python/corpus.py has made them; for the libraries with
compressed vectors (SrvDB, FAISS, usearch); a full run leaves it out.

`--tests hnsw` runs only the HNSW test (issue 17, hnsw_test.py: each library's graph index
built with m 16 / ef_construction 200, single-threaded queries at ef 16-256, filtered at 1%,
10%, 50% and after deleting 30% of the rows) on the MiniLM set, and on `minilm-perturbed`
(1M x 384) when `--datasets` names it; for the libraries with one (SrvDB native, hnswlib,
FAISS, usearch, Chroma); a full run leaves it out. `--rounds N` runs every library N times,
one after another in turn (so a noisy spell hits all of them), and reports the median of each
figure over the rounds (each round's figures are kept in the JSON, `hnsw_rounds`).

`--tests concurrent` runs only the 16-thread test (without the batch test and the sweep that
come with it in a full run); with `--libs srvdb,hnswlib,faiss,usearch,numpy --datasets
synthetic` it gives issue 20's two ratios (16-thread QPS against the best exact peer's and the
GEMM ceiling of the same run's limits) in a few minutes.

`--smoke` runs every test on tiny sizes and checks that each library produced every figure or
was reported failed with a reason, and that SrvDB's answers are exact (recall 1.0 against
the float64 reference); it exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peer_env  # noqa: E402  (standard library only)

REPO = peer_env.REPO
SRVDB_PYTHON = REPO / "target" / "pyenv" / "bin" / "python"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; check every figure is there")
    ap.add_argument("--libs", help="comma-separated subset of the libraries (default: all)")
    ap.add_argument("--out", type=Path, help="result JSON (default: target/bench-results/...)")
    ap.add_argument("--tests", help="comma-separated subset of the tests: filtered (default: all)")
    ap.add_argument("--datasets", help="comma-separated subset of the data sets (default: all)")
    ap.add_argument("--timeout", type=int,
                    help="seconds one library's process may take (default: 1200; the 1M HNSW "
                         "builds need more)")
    ap.add_argument("--hnsw-modes",
                    help="comma-separated subset of the HNSW test's modes (e.g. f32,hnsw: "
                         "SrvDB's f32 graph and the peers'; default: all)")
    ap.add_argument("--hnsw-efs",
                    help="comma-separated search-time efs of the HNSW test (default: "
                         "16,32,64,128,256; the 1M set needs 512 to reach recall 0.99)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the libraries this many times in turn; the HNSW figures are the "
                         "median over the rounds (default 1)")
    ap.add_argument("--merge-into", type=Path,
                    help="an earlier run's JSON to merge these figures into before the report")
    ap.add_argument("--merge-from", type=Path,
                    help="with --merge-into and --tests: merge this earlier run's JSON instead "
                         "of running anything (e.g. runs of different libraries at different "
                         "times)")
    ap.add_argument("--work-dir", type=Path,
                    help="scratch directory of the libraries' databases (default: "
                         "target/bench-work/full or smoke); a second run at the same time needs "
                         "its own")
    ap.add_argument("--report-dir", type=Path,
                    help="where benchmarks.md and its PNGs go (default: docs/ for a full run, "
                         "target/bench-smoke/ for --smoke)")
    return ap.parse_args()


def bootstrap() -> dict:
    """Installs the peers' venv if needed and re-executes this script with its Python."""
    packages = peer_env.ensure()
    if Path(sys.prefix).resolve() != peer_env.VENV.resolve():
        if not packages.get("numpy", {}).get("ok"):
            sys.exit("error: NumPy did not install into the peers' venv:\n"
                     + packages.get("numpy", {}).get("error", "(no log)"))
        os.execv(str(peer_env.PYTHON), [str(peer_env.PYTHON), __file__, *sys.argv[1:]])
    return packages


# The HNSW test (hnsw_test.py): the graph's build parameters (issue 17's and the peers'
# defaults), the search-time efs swept, the ef of the filtered part, the data sets that also
# get the filtered and deletion parts (their ground truths are computed in the worker).
HNSW_CONFIG = {"hnsw_m": 16, "hnsw_ef_construction": 200, "hnsw_efs": [16, 32, 64, 128, 256],
               "hnsw_fixed_ef": 128, "hnsw_datasets": ["minilm", "minilm-perturbed"],
               "hnsw_extras": ["minilm"], "hnsw_queries": None, "hnsw_passes": 5}

# A library slower than the time caps answers fewer queries; the report says how many.
CONFIG_FULL = {"k": 10, "warmup_queries": 5, "latency_queries": 200, "latency_min_queries": 100,
               "latency_max_seconds": 30, "batch_queries": 1000, "recall_max_seconds": 60,
               "concurrent_threads": 16, "concurrent_queries": 800, "concurrent_max_seconds": 60,
               "sweep_threads": [1, 2, 4, 8], "sweep_seconds": 2.0,
               "filtered_queries": 100, "filtered_min_queries": 20, "filtered_max_seconds": 20,
               "memory_rows": 10_000, "quantized_batch": 100, "quantized_batch_rounds": 3,
               **HNSW_CONFIG, "timeout_s": 1200}
CONFIG_SMOKE = {"k": 10, "warmup_queries": 2, "latency_queries": 20, "latency_min_queries": 20,
                "latency_max_seconds": 5, "batch_queries": 50, "recall_max_seconds": 10,
                "concurrent_threads": 16, "concurrent_queries": 64, "concurrent_max_seconds": 10,
                "sweep_threads": [1, 2, 4, 8], "sweep_seconds": 0.1,
                "filtered_queries": 10, "filtered_min_queries": 10, "filtered_max_seconds": 5,
               "memory_rows": 2_000, "quantized_batch": 10, "quantized_batch_rounds": 1,
               **HNSW_CONFIG, "hnsw_passes": 1, "timeout_s": 120}


def tail(text: str, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


class Runner:
    def __init__(self, args, packages: dict):
        self.smoke = args.smoke
        self.cfg = dict(CONFIG_SMOKE if args.smoke else CONFIG_FULL)
        # Tests limited by --tests (ingest always runs: it makes the collection searched).
        self.tests = args.tests.split(",") if args.tests else None
        self.only_datasets = args.datasets.split(",") if args.datasets else None
        if self.tests:
            unknown = set(self.tests) - set(TESTS)
            if unknown:
                sys.exit(f"unknown tests {sorted(unknown)}; known: {', '.join(TESTS)}")
            self.cfg["tests"] = ["ingest", *self.tests]
        # The big set is for the filtered test only.
        self.cfg["dataset_tests"] = {"synthetic-big": ["ingest", "filtered"],
                                     "minilm-perturbed": ["ingest", "quantized", "hnsw"],
                                     "minilm-corpus": ["ingest", "quantized"]}
        self.rounds = max(1, args.rounds)
        if args.timeout:
            self.cfg["timeout_s"] = args.timeout
        if args.hnsw_modes:
            self.cfg["hnsw_only_modes"] = args.hnsw_modes.split(",")
        if args.hnsw_efs:
            self.cfg["hnsw_efs"] = [int(ef) for ef in args.hnsw_efs.split(",")]
        self.cfg["rounds"] = self.rounds
        mode = "smoke" if args.smoke else "full"
        self.work = (args.work_dir.resolve() if args.work_dir
                     else REPO / "target" / "bench-work" / mode)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.out = args.out or REPO / "target" / "bench-results" / f"peers-{mode}-{stamp}.json"
        self.packages = packages
        self.results: dict = {"mode": mode, "started_utc": stamp, "config": self.cfg,
                              "machine": machine_info(), "peer_install": {
                                  "packages": packages, **peer_env.install_record()},
                              "datasets": {}, "libraries": {}}

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.results, indent=1))

    def missing_packages(self, lib) -> str | None:
        if lib.interpreter == "srvdb":
            if not SRVDB_PYTHON.exists():
                return f"{SRVDB_PYTHON.relative_to(REPO)} missing: run `make python-dev`"
            return None
        failed = [p for p in lib.packages if not self.packages.get(p, {}).get("ok")]
        if not failed:
            return None
        reasons = []
        for p in failed:
            entry = self.packages.get(p)
            last = tail(entry.get("error", ""), 1) if entry else "not in requirements-peers.txt"
            reasons.append(f"{p}: {last}")
        return "not installed: " + "; ".join(reasons)

    def python_for(self, lib) -> Path:
        return SRVDB_PYTHON if lib.interpreter == "srvdb" else peer_env.PYTHON

    def env_for(self, lib) -> dict:
        env = dict(os.environ)
        for key, value in lib.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(self, libs) -> None:
        from bench_data import FULL, SMOKE, prepare, repo_relative

        t0 = time.perf_counter()
        print("==> data sets (cached in target/bench-data)", flush=True)
        big = any(lib.big for lib in libs) and (self.tests is None or "filtered" in self.tests)
        quantized = bool(self.tests and "quantized" in self.tests
                         and any(lib.quantized for lib in libs))
        # The 1M set for the HNSW test only when asked for (`--datasets minilm-perturbed`).
        quantized |= bool(self.tests and "hnsw" in self.tests and self.only_datasets
                          and "minilm-perturbed" in self.only_datasets)
        data = prepare(REPO / "target" / "bench-data", SMOKE if self.smoke else FULL, big=big,
                       perturbed=quantized)
        usable = {k: str(v) for k, v in data.items() if isinstance(v, Path)
                  and (self.only_datasets is None or k in self.only_datasets)}
        self.results["datasets"] = {k: (str(v) if isinstance(v, Path) else {"skipped": v})
                                    for k, v in data.items()}
        for name, value in data.items():
            if isinstance(value, Path):
                self.results["datasets"][name] = json.loads((value / "info.json").read_text())
                self.results["datasets"][name]["dir"] = repo_relative(value)
            else:
                print(f"    {name}: {value}")
        print(f"    ready in {time.perf_counter() - t0:.1f} s", flush=True)

        print("==> machine limits", flush=True)
        self.limits()
        for round_ in range(self.rounds):
            self.cfg["round"] = round_
            if self.rounds > 1:
                print(f"==> round {round_ + 1} of {self.rounds}", flush=True)
            for lib in libs:
                self.library(lib, usable)
        self.results["wall_seconds"] = time.perf_counter() - t0
        self.results["machine"]["loadavg_at_end"] = os.getloadavg()
        self.save()

    def limits(self) -> None:
        from peers import NUMPY_ENV

        out = self.work / "limits.json"
        self.work.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for key in NUMPY_ENV:
            env.pop(key, None)
        cmd = [str(peer_env.PYTHON), str(HERE / "limits.py"), "--out", str(out),
               "--dir", str(self.work / "limits")]
        if self.smoke:
            cmd.append("--smoke")
        subprocess.run(cmd, env=env, check=True)
        self.results["limits"] = json.loads(out.read_text())
        lim = self.results["limits"]
        print("    read bandwidth " + ", ".join(f"{b['threads']}T {b['gb_per_s']:.1f} GB/s"
                                                for b in lim["bandwidth"])
              + f"; GEMM {lim['gemm']['gflop_per_s']:.0f} GFLOP/s"
              + f"; durable write {lim['disk_write']['gb_per_s']:.2f} GB/s", flush=True)
        self.save()

    def library(self, lib, datasets: dict) -> None:
        earlier = self.results["libraries"].get(lib.name, {})
        entry = self.results["libraries"][lib.name] = {"interpreter": lib.interpreter}
        print(f"==> {lib.name}", flush=True)
        reason = self.missing_packages(lib)
        if reason:
            entry.update(status="not installed", reason=reason)
            print(f"    {reason}")
            self.save()
            return
        workdir = self.work / lib.name
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        datasets = {k: v for k, v in datasets.items() if (lib.big or k != "synthetic-big")
                    and (lib.quantized or lib.hnsw or k != "minilm-perturbed")}
        config = dict(self.cfg, datasets=datasets, workdir=str(workdir / "db"))
        (workdir / "config.json").write_text(json.dumps(config))
        out = workdir / "result.json"
        cmd = [str(self.python_for(lib)), str(HERE / "worker.py"), "--lib", lib.name,
               "--config", str(workdir / "config.json"), "--out", str(out)]
        t0 = time.perf_counter()
        status, detail = self.subprocess(cmd, lib, self.cfg["timeout_s"])
        result = json.loads(out.read_text()) if out.is_file() else {}
        entry.update(result)
        entry["wall_seconds"] = time.perf_counter() - t0
        if status != "ok" or result.get("status") != "ok":
            entry["status"] = status if status != "ok" else result.get("status", "error")
            entry["reason"] = result.get("error") or detail
            print(f"    {entry['status']}: {tail(entry['reason'], 3)}")
        else:
            entry["status"] = "ok"
            print(f"    ok in {entry['wall_seconds']:.1f} s: " + summary_line(result))
        shutil.rmtree(workdir / "db", ignore_errors=True)
        if self.rounds > 1:
            fold_rounds(entry, earlier)
        self.save()
        if lib.memory and "synthetic" in datasets and self.tests is None:
            entry["memory"] = self.memory(lib, Path(datasets["synthetic"]) / "base.npy", workdir)
            m = entry["memory"]
            print("    memory: " + (f"{m['delta_mb']:.1f} MB above baseline" if "delta_mb" in m
                                    else m.get("error", "?")), flush=True)
            self.save()

    def subprocess(self, cmd, lib, timeout) -> tuple[str, str]:
        try:
            proc = subprocess.run(cmd, env=self.env_for(lib), capture_output=True, text=True,
                                  timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
            return "timeout", f"killed after {timeout} s; stderr: {tail(err or '')}"
        if proc.returncode < 0:
            return "crashed", f"killed by signal {-proc.returncode}; stderr: {tail(proc.stderr)}"
        if proc.returncode != 0:
            return "error", f"exit code {proc.returncode}; stderr: {tail(proc.stderr)}"
        return "ok", proc.stdout

    def memory(self, lib, base: Path, workdir: Path) -> dict:
        rows = self.cfg["memory_rows"]
        figures = {"rows": rows}
        for mode in ("baseline", "test"):
            d = workdir / f"memory-{mode}"
            shutil.rmtree(d, ignore_errors=True)
            cmd = [str(self.python_for(lib)), str(HERE / "memory_probe.py"), "--lib", lib.name,
                   "--base", str(base), "--rows", str(rows), "--mode", mode, "--dir", str(d)]
            status, detail = self.subprocess(cmd, lib, self.cfg["timeout_s"])
            shutil.rmtree(d, ignore_errors=True)
            if status != "ok":
                figures["error"] = f"{mode} process {status}: {detail}"
                return figures
            probe = json.loads(detail.strip().splitlines()[-1])
            figures[f"{mode}_kib"] = probe["vmhwm_kib"]
            figures["input_bytes"] = probe["input_bytes"]
        figures["delta_mb"] = (figures["test_kib"] - figures["baseline_kib"]) * 1024 / 1e6
        figures["ratio_to_raw"] = figures["delta_mb"] * 1e6 / figures["input_bytes"]
        return figures


def fold_rounds(entry: dict, earlier: dict) -> None:
    """Adds this round's HNSW figures to the earlier rounds' (`hnsw_rounds`, per data set) and
    makes each data set's `hnsw` their median (hnsw_test.combine_rounds)."""
    from hnsw_test import combine_rounds

    rounds = earlier.get("hnsw_rounds", {})
    for ds, fig in entry.get("datasets", {}).items():
        if "hnsw" in fig:
            rounds.setdefault(ds, []).append(fig["hnsw"])
    entry["hnsw_rounds"] = rounds
    for ds, figs in rounds.items():
        combined = combine_rounds(figs)
        combined["rounds"] = len(figs)
        entry.setdefault("datasets", {}).setdefault(ds, {})["hnsw"] = combined


def summary_line(result: dict) -> str:
    parts = []
    for name, fig in result.get("datasets", {}).items():
        bits = [name]
        if "ingest" in fig:
            bits.append(f"ingest {fig['ingest']['vectors_per_s']:,.0f} vec/s")
        if "latency" in fig:
            bits.append(f"p50 {fig['latency']['p50_ms']:.2f} ms")
        if "concurrent" in fig:
            c = fig["concurrent"]
            bits.append(f"{c['threads']}T {c['qps']:,.0f} QPS (recall {c['recall_at_k']:.3f})")
        if "recall" in fig:
            bits.append(f"recall {fig['recall']['recall_at_k']:.3f}")
        flt = fig.get("filtered", {})
        for mode, cases in flt.get("modes", {}).items():
            bits.append(f"filtered {mode} " + ", ".join(
                f"{c} {v['p50_ms']:.2f} ms (recall {v['recall']:.3f})" for c, v in cases.items()))
        for mode, m in fig.get("hnsw", {}).get("modes", {}).items():
            at = m.get("ef", {}).get("128")
            bits.append(f"hnsw {mode} " + (m["error"][:80] if "error" in m else
                        f"build {m.get('build_seconds', 0):.1f} s" + (
                            f", ef 128 recall {at['recall']:.3f} {at['qps']:,.0f} QPS" if at else "")))
        parts.append(" ".join(bits))
    return "; ".join(parts)


def machine_info() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_start": load}


# What a library must have produced, per data set, for the smoke check.
REQUIRED = ("ingest", "latency", "batch", "recall", "concurrent", "sweep", "filtered")
#: The tests --tests can pick.
TESTS = ("latency", "filtered", "batch", "quantized", "hnsw", "concurrent")


def filtered_problems(name: str, ds: str, fig: dict) -> list[str]:
    """A filtered test with a case missing; for SrvDB also any answer that is not exact
    (recall 1.0, no row the filter excludes, fewer than k only where fewer rows match)."""
    from bench_data import FILTER_CASES

    flt = fig.get("filtered", {})
    if "unsupported" in flt:
        return [f"{name}/{ds}: SrvDB has no filter?"] if name.startswith("srvdb") else []
    problems = []
    want = [c for c, _v, _s in FILTER_CASES]
    modes = flt.get("modes", {})
    if "unfiltered" not in flt or not modes:
        return [f"{name}/{ds}: filtered test incomplete"]
    for mode, cases in modes.items():
        missing = [c for c in want if c not in cases]
        if missing:
            problems.append(f"{name}/{ds}: filtered {mode} missing {missing}")
        if name.startswith("srvdb"):
            for c, v in cases.items():
                if v["recall"] != 1.0 or v["non_matching"] or v["short_answers"]:
                    problems.append(f"{name}/{ds}: filtered {mode} {c}: recall {v['recall']}, "
                                    f"{v['non_matching']} non-matching rows, "
                                    f"{v['short_answers']} short answers; want exact")
    if name == "srvdb" and "indexed" not in modes:
        problems.append(f"{name}/{ds}: no indexed filtered run")
    return problems


def quantized_problems(name: str, ds: str, fig: dict, modes: tuple[str, ...]) -> list[str]:
    """A quantized test with a mode missing or without figures (a peer's mode may fail with
    its error recorded; SrvDB's may not), and SrvDB's exact f32 mode not exact."""
    problems = []
    got = fig.get("quantized", {}).get("modes", {})
    for mode in modes:
        m = got.get(mode)
        if m is None:
            problems.append(f"{name}/{ds}: quantized mode {mode!r} missing")
        elif "error" in m:
            if name.startswith("srvdb"):
                problems.append(f"{name}/{ds}: quantized {mode}: {m['error']}")
        elif "single" not in m or "batch" not in m:
            problems.append(f"{name}/{ds}: quantized {mode}: figures missing")
    exact = got.get("f32", {})
    if name.startswith("srvdb") and "single" in exact and (
            exact["single"]["recall"] != 1.0 or exact["batch"]["recall"] != 1.0):
        problems.append(f"{name}/{ds}: quantized f32 (exact=True) recall "
                        f"{exact['single']['recall']} / {exact['batch']['recall']}, want 1.0")
    return problems


def hnsw_problems(name: str, ds: str, fig: dict, modes: tuple[str, ...]) -> list[str]:
    """An HNSW test with a mode missing or without its ef sweep (a peer's mode may fail with
    its error recorded; SrvDB's may not)."""
    got = fig.get("hnsw", {}).get("modes", {})
    problems = []
    for mode in modes:
        m = got.get(mode)
        if m is None:
            problems.append(f"{name}/{ds}: hnsw mode {mode!r} missing")
        elif "error" in m:
            if name.startswith("srvdb"):
                problems.append(f"{name}/{ds}: hnsw {mode}: {m['error']}")
        elif "ef" not in m:
            problems.append(f"{name}/{ds}: hnsw {mode}: ef sweep missing")
    return problems


def smoke_check(results: dict) -> list[str]:
    """Problems that make `make bench-smoke` fail: a library with status ok but a figure
    missing, a failure without a reason, or SrvDB not ok or not exact."""
    from peers import LIBRARIES

    problems = []
    for name, entry in results["libraries"].items():
        lib = LIBRARIES[name]
        if entry.get("status") != "ok":
            if not entry.get("reason"):
                problems.append(f"{name}: status {entry.get('status')} without a reason")
            if name.startswith("srvdb"):
                problems.append(f"{name}: SrvDB itself did not run: {entry.get('reason')}")
            continue
        only = results["config"].get("tests")
        for ds, fig in entry["datasets"].items():
            need = REQUIRED if lib.tests is None else lib.tests
            if only:
                need = [t for t in need if t in only or t in ("recall", "concurrent", "sweep")
                        and "batch" in only]
            if ds == "synthetic-big":
                need = ("ingest", "filtered")
            if ds == "minilm-perturbed":
                need = ("ingest",)
            missing = [t for t in need if t not in fig]
            if missing:
                problems.append(f"{name}/{ds}: missing {missing}")
            if only and "quantized" in only and lib.quantized:
                problems += quantized_problems(name, ds, fig, lib.make_class().quantized_modes)
            if only and "hnsw" in only and lib.hnsw:
                problems += hnsw_problems(name, ds, fig, lib.make_class().hnsw_modes)
            if "filtered" in fig:
                problems += filtered_problems(name, ds, fig)
            if name.startswith("srvdb") and "latency" in fig:
                recalls = [fig[t]["recall_at_k"] for t in ("recall", "concurrent") if t in fig]
                recalls.append(fig["latency"]["recall"])
                if min(recalls) != 1.0:
                    problems.append(f"{name}/{ds}: recall {recalls}, want 1.0 (exact search)")
        if lib.memory and not only and "delta_mb" not in entry.get("memory", {}):
            problems.append(f"{name}: no memory figure ({entry.get('memory')})")
    return problems


def no_machine_paths(text: str) -> str:
    """`text` with the repository's path made relative and other directories of this machine
    (an interpreter's, in a traceback) left out, for a report kept in the repository."""
    import re

    text = text.replace(f"{REPO}{os.sep}", "")
    return re.sub(r"(/[\w.+-]+)+/(?=[\w.+-]+\.py\b)", "", text)


def merge(earlier: dict, now: dict, tests: list[str]) -> dict:
    """`earlier` with this run's figures of `tests` (per library and data set) put in, the
    data sets and libraries this run adds, and `partial_runs` saying which run measured what."""
    out = json.loads(json.dumps(earlier))
    out.setdefault("partial_runs", []).append(
        {"tests": tests, "started_utc": now["started_utc"], "wall_seconds": now.get("wall_seconds"),
         "machine": now["machine"],
         "bandwidth_2t_gb_per_s": next((b["gb_per_s"] for b in now.get("limits", {}).get(
             "bandwidth", []) if b["threads"] == 2), None),
         "libraries": sorted(n for n, e in now["libraries"].items() if e.get("status") == "ok"),
         "datasets": sorted({ds for e in now["libraries"].values() for ds in e.get("datasets", {})})})
    for ds, info in now["datasets"].items():
        out["datasets"].setdefault(ds, info)
    out["config"] = {**out["config"], **{k: v for k, v in now["config"].items()
                                         if k.startswith(("filtered", "quantized", "hnsw"))}}
    for name, entry in now["libraries"].items():
        old = out["libraries"].setdefault(name, {})
        if entry.get("status") != "ok":
            old.setdefault("partial_failures", []).append(
                {"started_utc": now["started_utc"], "tests": tests, "status": entry.get("status"),
                 "reason": no_machine_paths(entry.get("reason") or "")})
        if entry.get("status") != "ok" or old.get("status") != "ok":
            if old.get("status") == "ok" and entry.get("status") != "ok":
                continue
            old.update({k: v for k, v in entry.items() if k != "partial_failures"})
            continue
        for key in ("version", "how", "exact"):
            old[key] = entry.get(key, old.get(key))
        for ds, fig in entry.get("datasets", {}).items():
            target = old.setdefault("datasets", {}).setdefault(ds, {})
            for test in tests:
                if test not in fig:
                    continue
                if test == "hnsw" and now["config"].get("hnsw_only_modes") and target.get(test):
                    # A run limited by --hnsw-modes (e.g. SrvDB's int8 graph on its own, as
                    # the 1M builds are long) adds its modes to the earlier run's instead of
                    # dropping them.
                    target[test].setdefault("modes", {}).update(fig[test].get("modes", {}))
                    continue
                target[test] = fig[test]
            target.setdefault("shape", fig.get("shape"))
    return out


def main() -> None:
    args = parse_args()
    packages = bootstrap()
    from peers import LIBRARIES

    names = args.libs.split(",") if args.libs else list(LIBRARIES)
    unknown = [n for n in names if n not in LIBRARIES]
    if unknown:
        sys.exit(f"unknown libraries {unknown}; known: {sorted(LIBRARIES)}")
    import report

    report_dir = args.report_dir or (REPO / ("target/bench-smoke" if args.smoke else "docs"))
    if args.merge_from:
        if not (args.merge_into and args.tests):
            sys.exit("--merge-from needs --merge-into and --tests")
        results = merge(json.loads(args.merge_into.read_text()),
                        json.loads(args.merge_from.read_text()), args.tests.split(","))
        written = report.write(results, report_dir,
                               json_name=f"{args.merge_into.name} + {args.merge_from.name}")
        print("==> report: " + ", ".join(os.path.relpath(p, REPO) for p in written))
        return
    runner = Runner(args, packages)
    runner.run([LIBRARIES[n] for n in names])
    print(f"==> results: {os.path.relpath(runner.out, REPO)} ({runner.results['wall_seconds']:.0f} s)")

    results, json_name = runner.results, runner.out.name
    if args.merge_into:
        results = merge(json.loads(args.merge_into.read_text()), runner.results,
                        runner.tests or list(TESTS))
        json_name = f"{args.merge_into.name} + {runner.out.name}"
    written = report.write(results, report_dir, json_name=json_name)
    print("==> report: " + ", ".join(os.path.relpath(p, REPO) for p in written))
    if args.smoke:
        problems = smoke_check(runner.results)
        md = (report_dir / "benchmarks.md").read_text()
        problems += [f"{name}: not in the report" for name in runner.results["libraries"]
                     if f"| {name}" not in md]
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        failed = {p.split(":", 1)[0].split("/", 1)[0] for p in problems}
        passed = len(runner.results["libraries"]) - len(failed)
        # The plain closing line CI reads: one check per library.
        print(f"bench-smoke: {passed} passed, {len(failed)} failed")
        if problems:
            sys.exit(1)


if __name__ == "__main__":
    main()
