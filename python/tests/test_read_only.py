"""Read-only opening: `srvdb.open(path, read_only=True)` takes a lock that readers share, in any
number of processes; they answer exactly as NumPy brute force over the vectors written, a
writer is refused while they hold it and they are refused while a writer does (LockedError
naming who holds it), every write raises ReadOnlyError and changes no byte, and refresh()
reopens the database at its path."""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
from pathlib import Path

import numpy as np
import pytest

import srvdb
from conftest import run_python
from reference import Reference

DIM = 16
ROWS = 400
K = 10
SEED = int(os.environ.get("SRVDB_SEED", "20261202"))


def _data(seed: int = SEED) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"id-{i}" for i in range(ROWS)], rng.standard_normal((ROWS, DIM)).astype(np.float32)


def _queries() -> np.ndarray:
    return np.random.default_rng(SEED + 1).standard_normal((5, DIM)).astype(np.float32)


def _write(path: Path, backend: str = "native", seed: int = SEED) -> tuple[list[str], np.ndarray]:
    ids, vectors = _data(seed)
    with srvdb.open(path, backend=backend) as db:
        db.add(ids, vectors, [{"n": i} for i in range(ROWS)])
    return ids, vectors


def _listing(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())} if path.exists() else {}


def _reader(path: str, results, release) -> None:
    """A reader process: opens read-only, answers the queries, reports, and holds the
    database open until `release` is set."""
    try:
        db = srvdb.open(path, read_only=True)
        hits = [db.search(q, K) for q in _queries()]
        results.put(("ok", os.getpid(), len(db), hits))
        release.wait(120)
        db.close()
    except Exception as e:  # reported to the parent, which fails the test with it
        results.put(("error", os.getpid(), type(e).__name__, str(e)))


def test_readers_in_many_processes_agree_with_numpy_and_keep_writers_out(tmp_path):
    path = tmp_path / "db"
    ids, vectors = _write(path)
    ref = Reference(vectors, ids, "cosine")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    release = ctx.Event()
    procs = [ctx.Process(target=_reader, args=(str(path), results, release)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=120) for _ in procs]
        for status, pid, *rest in got:
            assert status == "ok", f"reader {pid}: {rest}"
            count, hits = rest
            assert count == ROWS
            for qi, (q, h) in enumerate(zip(_queries(), hits)):
                ref.check(h, q, K, context=f"reader {pid}, query {qi} (seed {SEED})")
        assert len({pid for _, pid, *_ in got}) == 4, "four distinct processes read at once"
        # All four hold the lock now: a writer here or in another process is refused.
        with pytest.raises(srvdb.LockedError) as e:
            srvdb.open(path)
        assert e.value.holder == "readers"
        assert "locked by readers" in str(e.value)
        out = run_python(
            f"""
            import srvdb
            try:
                srvdb.open({str(path)!r})
            except srvdb.LockedError as e:
                print(e.holder)
            """,
            cwd=tmp_path,
        )
        assert out.strip() == "readers"
        # ... while one more reader, here, joins them.
        with srvdb.open(path, read_only=True) as db:
            assert db.read_only
            assert db.ids() == ids
    finally:
        release.set()
        for p in procs:
            p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with pytest.raises(queue_mod.Empty):
        results.get_nowait()
    # Every reader gone: a writer opens.
    with srvdb.open(path) as db:
        assert len(db) == ROWS


def test_readers_are_refused_while_a_writer_holds_it(backend, tmp_path):
    path = tmp_path / "db"
    _write(path, backend)
    with srvdb.open(path, backend=backend):
        with pytest.raises(srvdb.LockedError) as e:
            srvdb.open(path, read_only=True, backend=backend)
        assert e.value.holder == "writer"
        assert "locked by a writer" in str(e.value)
        out = run_python(
            f"""
            import srvdb
            try:
                srvdb.open({str(path)!r}, read_only=True, backend={backend!r})
            except srvdb.LockedError as e:
                print(e.holder)
            """,
            cwd=tmp_path,
        )
        assert out.strip() == "writer"
    with srvdb.open(path, read_only=True, backend=backend) as db:
        assert len(db) == ROWS


def test_every_write_on_a_reader_raises_and_changes_nothing(backend, tmp_path):
    path = tmp_path / "db"
    ids, vectors = _write(path, backend)
    before = _listing(path)
    db = srvdb.open(path, read_only=True, backend=backend)
    v = np.ones((1, DIM), dtype=np.float32)
    writes = {
        "add": lambda: db.add(["new"], v),
        "upsert": lambda: db.upsert(["id-1"], v),
        "update": lambda: db.update(["id-1"], metadatas=[{"n": -1}]),
        "delete": lambda: db.delete(["id-1"]),
        "delete where": lambda: db.delete(where={"n": 2}),
        "compact": db.compact,
        "create_index": lambda: db.create_index("flat", "int8"),
        "drop_index": db.drop_index,
        "create_field_index": lambda: db.create_field_index("n"),
        "drop_field_index": lambda: db.drop_field_index("n"),
    }
    for name, write in writes.items():
        with pytest.raises(srvdb.ReadOnlyError, match="read_only") as e:
            write()
        assert isinstance(e.value, srvdb.Error), name
    db.persist()  # nothing to make durable
    assert db.ids() == ids
    assert db.get("id-1").metadata == {"n": 1}
    np.testing.assert_array_equal(db.get("id-7").vector, vectors[7])
    db.close()
    assert _listing(path) == before


def test_refresh_reopens_at_the_path(tmp_path):
    live = tmp_path / "db"
    ids, vectors = _write(live)
    db = srvdb.open(live, read_only=True)
    db.refresh()  # nothing new: the same commit
    assert db.ids() == ids
    # A writer cannot open `live` while the reader is open; it builds the next version beside
    # it and swaps the directories.
    _, newer = _write(tmp_path / "next", seed=SEED + 7)
    os.rename(live, tmp_path / "old")
    os.rename(tmp_path / "next", live)
    np.testing.assert_array_equal(db.get("id-3").vector, vectors[3])  # still the old commit
    db.refresh()
    np.testing.assert_array_equal(db.get("id-3").vector, newer[3])
    Reference(newer, ids, "cosine").check(db.search(newer[5], K), newer[5], K)
    db.close()
    with pytest.raises(srvdb.Error, match="closed"):
        db.refresh()
    with srvdb.open(tmp_path / "old") as writer:
        assert not writer.read_only
        with pytest.raises(srvdb.InvalidInputError, match="read_only"):
            writer.refresh()


def test_read_only_open_creates_nothing(backend, tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(srvdb.ReadOnlyError, match="open it for writing once"):
        srvdb.open(missing, read_only=True, backend=backend)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(srvdb.ReadOnlyError):
        srvdb.open(empty, read_only=True, backend=backend)
    assert _listing(empty) == {}
    with pytest.raises(srvdb.InvalidInputError):
        srvdb.open(":memory:", read_only=True)
