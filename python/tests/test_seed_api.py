"""The original API, `srvdb.SvDBPython`, call for call."""

from __future__ import annotations

import re

import numpy as np
import pytest

import srvdb
from conftest import run_python
from reference import assert_topk

VERBATIM = """\
import srvdb
db = srvdb.SvDBPython("./vectors")
ids = [f"doc_{i}" for i in range(10000)]
embeddings = [[0.1] * 1536 for _ in range(10000)]
metadatas = [f'{{"id": {i}}}' for i in range(10000)]
db.add(ids=ids, embeddings=embeddings, metadatas=metadatas)
db.persist()
results = db.search(query=[0.1] * 1536, k=10)
for id, score in results:
    print(f"{id}: {score:.4f}")
"""


def test_verbatim_program_prints_ten_hits(tmp_path):
    out = run_python(VERBATIM, cwd=tmp_path)
    lines = out.splitlines()
    assert len(lines) == 10, out
    for line in lines:
        assert re.fullmatch(r"doc_\d+: 1\.0000", line), line
    # Every vector is identical, so ties go to the earliest rows.
    assert lines == [f"doc_{i}: 1.0000" for i in range(10)]
    # It persisted: a second process sees all 10,000 records and their metadata.
    check = run_python(
        """
        import srvdb
        db = srvdb.SvDBPython("./vectors")
        print(db.count(), db.get("doc_7"), len(db.get_all_ids()))
        """,
        cwd=tmp_path,
    )
    assert check.split() == ["10000", '{"id":', "7}", "10000"]


def test_every_method(backend, tmp_path):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((300, 24)).astype(np.float32)
    ids = [f"id{i}" for i in range(300)]
    texts = [f"chunk {i}: plain text, not JSON {{" for i in range(300)]
    db = srvdb.SvDBPython(str(tmp_path / "v"), backend=backend)
    assert db.count() == 0 and db.get_all_ids() == []
    assert db.search(query=[0.0] * 24, k=3) == []
    # Lists for the first half, a NumPy array (what model.encode returns) for the second.
    db.add(ids=ids[:150], embeddings=base[:150].tolist(), metadatas=texts[:150])
    db.add(ids=ids[150:], embeddings=base[150:], metadatas=texts[150:])
    assert db.count() == 300 and len(db) == 300 and "id5" in db
    assert db.get_all_ids() == ids
    # The exact string comes back, JSON or not.
    assert db.get("id3") == texts[3]
    assert db.get("nope") is None
    for q in base[:5]:
        assert_topk(db.search(query=q, k=7), base, ids, q, 7, "cosine")
    batch = db.search_batch(queries=base[10:20], k=5)
    assert len(batch) == 10
    for q, hits in zip(base[10:20], batch):
        assert_topk(hits, base, ids, q, 5, "cosine")
    # Delete is lenient (unknown ids are skipped) and reports what it deleted.
    assert db.delete(["id1", "id2", "never-was"]) == 2
    assert db.delete("id3") == 1
    assert db.delete(["id1"]) == 0
    assert db.count() == 297 and db.get("id1") is None
    db.persist()
    db.close()


def test_dimension_comes_from_first_add_and_is_fixed(tmp_path):
    db = srvdb.SvDBPython(tmp_path / "v")
    db.add(ids=["a"], embeddings=[[1.0, 2.0, 3.0]], metadatas=['{"k": 1}'])
    with pytest.raises(srvdb.DimensionMismatchError) as e:
        db.add(ids=["b"], embeddings=[[1.0] * 1536], metadatas=["x"])
    assert e.value.expected == 3 and e.value.got == 1536 and e.value.index == 0
    assert isinstance(e.value, ValueError)
    assert db.count() == 1
    db.close()
    # Fixed across reopen too.
    db = srvdb.SvDBPython(tmp_path / "v")
    with pytest.raises(srvdb.DimensionMismatchError):
        db.search(query=[1.0, 2.0], k=1)
    assert db.search(query=[1.0, 2.0, 3.0], k=1)[0][0] == "a"
    db.close()


def test_delete_is_durable_without_persist(tmp_path):
    run_python(
        """
        import srvdb
        db = srvdb.SvDBPython("v")
        db.add(ids=["a", "b", "c"], embeddings=[[1, 0], [0, 1], [1, 1]], metadatas=["A", "B", "C"])
        db.persist()
        """,
        cwd=tmp_path,
    )
    # Delete, then die without closing: the delete must already be on disk.
    run_python(
        """
        import os, srvdb
        db = srvdb.SvDBPython("v")
        assert db.delete(["b", "zzz"]) == 1
        os._exit(0)
        """,
        cwd=tmp_path,
    )
    db = srvdb.SvDBPython(tmp_path / "v")
    assert db.get_all_ids() == ["a", "c"]
    assert db.get("b") is None and db.get("c") == "C"
    db.close()


def test_duplicate_ids_are_rejected(tmp_path):
    db = srvdb.SvDBPython(tmp_path / "v")
    db.add(ids=["a"], embeddings=[[1.0, 0.0]], metadatas=["x"])
    with pytest.raises(srvdb.DuplicateIdError) as e:
        db.add(ids=["b", "a"], embeddings=[[0.0, 1.0], [1.0, 1.0]], metadatas=["y", "z"])
    assert e.value.id == "a" and e.value.index == 1
    assert db.get_all_ids() == ["a"]
    db.close()
