"""Durability across processes: what one process writes, the next one reads; delete, upsert
and compact survive reopening; uncommitted writes of a killed process are gone."""

from __future__ import annotations

import json

import numpy as np
import pytest

import srvdb
from conftest import run_python
from reference import assert_topk

N, DIM = 2000, 48


def data():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((N, DIM)).astype(np.float32)
    fresh = rng.standard_normal((100, DIM)).astype(np.float32)
    return base, fresh


def test_across_processes_with_delete_upsert_compact(backend, tmp_path):
    base, fresh = data()
    np.save(tmp_path / "base.npy", base)
    np.save(tmp_path / "fresh.npy", fresh)
    # 1. Create, write, persist; leave without close (process exit drops the handle).
    run_python(
        f"""
        import numpy as np, srvdb
        base = np.load("base.npy")
        db = srvdb.open("db", dim={DIM}, metric="dot", backend={backend!r})
        db.add([f"id{{i}}" for i in range({N})], base,
               [{{"i": i, "tag": "even" if i % 2 == 0 else "odd"}} for i in range({N})])
        db.persist()
        """,
        cwd=tmp_path,
    )
    # 2. Reopen in another process: delete, upsert, persist.
    out = run_python(
        f"""
        import numpy as np, srvdb
        fresh = np.load("fresh.npy")
        db = srvdb.open("db", backend={backend!r})
        print(len(db), db.dim, db.metric)
        db.delete([f"id{{i}}" for i in range(0, {N}, 10)])
        db.upsert([f"id{{i}}" for i in range(1, 201, 2)], fresh,
                  [{{"i": i, "upserted": True}} for i in range(1, 201, 2)])
        db.persist()
        db.close()
        """,
        cwd=tmp_path,
    )
    assert out.split() == [str(N), str(DIM), "dot"]

    expected = {f"id{i}": base[i] for i in range(N) if i % 10 != 0}
    for j, i in enumerate(range(1, 201, 2)):
        expected[f"id{i}"] = fresh[j]

    def check(db):
        assert len(db) == len(expected)
        assert set(db.ids()) == set(expected)
        assert "id0" not in db and "id10" not in db and "id1" in db
        rec = db.get("id3")
        assert rec.metadata == {"i": 3, "upserted": True}
        np.testing.assert_array_equal(rec.vector, fresh[1])
        assert db.get("id4").metadata == {"i": 4, "tag": "even"}
        ids = list(expected)
        ref = np.stack([expected[i] for i in ids])
        for q in fresh[:5]:
            assert_topk(db.search(q, 10), ref, ids, q, 10, "dot")

    # 3. Parent: reopen, check, compact.
    db = srvdb.open(tmp_path / "db", backend=backend)
    check(db)
    db.compact()
    check(db)
    db.close()
    # 4. Another process after compaction.
    out = run_python(
        f"""
        import srvdb
        db = srvdb.open("db", metric="dot", backend={backend!r})
        print(len(db), db.get("id3").metadata_text)
        """,
        cwd=tmp_path,
    )
    count, meta = out.split(" ", 1)
    assert int(count) == len(expected)
    assert json.loads(meta) == {"i": 3, "upserted": True}
    db = srvdb.open(tmp_path / "db", backend=backend)
    check(db)
    db.close()


def test_uncommitted_writes_of_a_killed_process_are_gone(backend, tmp_path):
    run_python(
        f"""
        import os, srvdb
        db = srvdb.open("db", backend={backend!r})
        db.add(["kept"], [[1.0, 2.0]])
        db.persist()
        db.add(["lost"], [[3.0, 4.0]])
        os._exit(0)  # no persist, no close, no drop
        """,
        cwd=tmp_path,
        env={"SRVDB_AUTO_FLUSH_THRESHOLD": "0"},
    )
    db = srvdb.open(tmp_path / "db", backend=backend)
    assert db.ids() == ["kept"]
    db.close()


def test_context_manager_commits_and_releases_the_lock(backend, tmp_path):
    with srvdb.open(tmp_path / "db", backend=backend) as db:
        db.add(["a"], [[1.0, 0.0]], [{"x": 1}])
        with pytest.raises(srvdb.LockedError) as e:
            srvdb.open(tmp_path / "db", backend=backend)
        assert str(tmp_path / "db") in str(e.value)
    assert db.closed
    with pytest.raises(srvdb.Error, match="closed"):
        len(db)
    db.close()  # closing twice is fine
    # Another process can open it now, and sees the record.
    out = run_python(
        f"""
        import srvdb
        with srvdb.open("db", backend={backend!r}) as db:
            print(db.get("a").metadata)
        """,
        cwd=tmp_path,
    )
    assert out.strip() == "{'x': 1}"


def test_locked_by_another_process(backend, tmp_path):
    db = srvdb.open(tmp_path / "db", backend=backend)
    out = run_python(
        f"""
        import srvdb
        try:
            srvdb.open("db", backend={backend!r})
        except srvdb.LockedError as e:
            print("locked", e.path)
        """,
        cwd=tmp_path,
    )
    assert out.startswith("locked")
    db.close()


def test_reopen_with_other_dim_or_metric(backend, tmp_path):
    srvdb.open(tmp_path / "db", dim=4, metric="l2", backend=backend).close()
    with pytest.raises(srvdb.DimensionMismatchError):
        srvdb.open(tmp_path / "db", dim=5, backend=backend)
    with pytest.raises(srvdb.InvalidInputError, match="l2"):
        srvdb.open(tmp_path / "db", metric="cosine", backend=backend)
    with srvdb.open(tmp_path / "db", backend=backend) as db:
        assert (db.dim, db.metric) == (4, "l2")
