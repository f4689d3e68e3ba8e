"""Read-only opening: `srvdb.open(path, read_only=True)` handles, in any number of processes,
answer exactly as NumPy brute force over the commit they opened, also while a writer commits
and compacts beside them, and refresh() moves them to the newest commit; a reader is refused
while a writer is open, and a writer while a reader opens (LockedError naming who holds it);
every write raises ReadOnlyError and changes no byte."""

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


def _answers(db) -> tuple[int, list, dict]:
    return len(db), [db.search(q, K) for q in _queries()], db.get("id-0").metadata


def _reader(path: str, commands, results) -> None:
    """A reader process: opens read-only and reports its answers, then serves `commands`:
    "search" reports them again, "refresh" refreshes first (reporting a LockedError's holder
    instead), "stop" closes."""
    try:
        db = srvdb.open(path, read_only=True)
        results.put(("ok", os.getpid(), *_answers(db)))
        while (command := commands.get(timeout=120)) != "stop":
            if command == "refresh":
                try:
                    db.refresh()
                except srvdb.LockedError as e:
                    results.put(("locked", os.getpid(), e.holder))
                    continue
            results.put(("ok", os.getpid(), *_answers(db)))
        db.close()
    except Exception as e:  # reported to the parent, which fails the test with it
        results.put(("error", os.getpid(), type(e).__name__, str(e)))


def _check(got, ref: Reference, rows: int, meta: dict, what: str) -> None:
    status, pid, *rest = got
    assert status == "ok", f"reader {pid} {what}: {rest}"
    count, hits, first_meta = rest
    assert count == rows, f"reader {pid} {what}"
    assert first_meta == meta, f"reader {pid} {what}"
    for qi, (q, h) in enumerate(zip(_queries(), hits)):
        ref.check(h, q, K, context=f"reader {pid} {what}, query {qi} (seed {SEED})")


def test_readers_in_many_processes_keep_their_commit_beside_a_writer(tmp_path):
    path = tmp_path / "db"
    ids, vectors = _write(path)
    old = Reference(vectors, ids, "cosine")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    commands = [ctx.Queue() for _ in range(4)]
    procs = [ctx.Process(target=_reader, args=(str(path), c, results)) for c in commands]
    for p in procs:
        p.start()

    def ask_all(command: str) -> list:
        for c in commands:
            c.put(command)
        return [results.get(timeout=120) for _ in procs]

    try:
        got = [results.get(timeout=120) for _ in procs]
        for g in got:
            _check(g, old, ROWS, {"n": 0}, "at open")
        assert len({pid for _, pid, *_ in got}) == 4, "four distinct processes read at once"

        # A writer opens beside them, and changes every answer: new rows, a metadata rewrite
        # of every row (redb reuses the freed pages), deletes, then a compaction.
        rng = np.random.default_rng(SEED + 9)
        new_ids = [f"new-{i}" for i in range(200)]
        new_vectors = rng.standard_normal((200, DIM)).astype(np.float32)
        with srvdb.open(path) as writer:
            assert not writer.read_only
            for generation in range(1, 4):
                writer.update(ids, metadatas=[{"n": i, "gen": generation} for i in range(ROWS)])
                writer.persist()
            writer.add(new_ids, new_vectors)
            writer.delete(ids[1:50])
            writer.persist()
            writer.compact()
            for g in ask_all("search"):
                _check(g, old, ROWS, {"n": 0}, "beside the writer")
            for g in ask_all("refresh"):
                assert g[0] == "locked" and g[2] == "writer", g
            with pytest.raises(srvdb.LockedError) as e:
                srvdb.open(path, read_only=True)
            assert e.value.holder == "writer"
        for g in ask_all("search"):
            _check(g, old, ROWS, {"n": 0}, "after the writer closed")
        kept = [0] + list(range(50, ROWS))
        new = Reference(np.concatenate([vectors[kept], new_vectors]),
                        [ids[i] for i in kept] + new_ids, "cosine")
        for g in ask_all("refresh"):
            _check(g, new, len(kept) + 200, {"n": 0, "gen": 3}, "refreshed")
        for c in commands:
            c.put("stop")
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with pytest.raises(queue_mod.Empty):
        results.get_nowait()


@pytest.mark.skipif(os.name != "posix", reason="the lock is a POSIX flock")
def test_a_writer_is_refused_only_while_a_reader_opens(tmp_path):
    """Readers hold the shared lock on LOCK only while they open; a writer is refused in that
    moment (here the lock is taken by hand, as an opening reader takes it), naming them."""
    import fcntl

    path = tmp_path / "db"
    _write(path)
    with srvdb.open(path, read_only=True) as reader:
        with srvdb.open(path) as writer:  # beside an open reader
            assert not writer.read_only
        fd = os.open(path / "LOCK", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
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
            with srvdb.open(path, read_only=True) as other:  # readers open together
                assert other.ids() == reader.ids()
        finally:
            os.close(fd)
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


def test_a_reader_keeps_its_commit_beside_a_writer_then_refreshes(backend, tmp_path):
    path = tmp_path / "db"
    ids, vectors = _write(path, backend)
    reader = srvdb.open(path, read_only=True, backend=backend)
    extra = np.random.default_rng(SEED + 3).standard_normal((50, DIM)).astype(np.float32)
    with srvdb.open(path, backend=backend) as writer:
        writer.add([f"x-{i}" for i in range(50)], extra)
        writer.update(ids[:10], metadatas=[{"n": -i} for i in range(10)])
        writer.delete(ids[10:20])
        writer.persist()
        writer.compact()
        with pytest.raises(srvdb.LockedError) as e:
            reader.refresh()
        assert e.value.holder == "writer"
        # Still the commit it opened, beside the open writer.
        assert len(reader) == ROWS and reader.get("id-5").metadata == {"n": 5}
        Reference(vectors, ids, "cosine").check(reader.search(extra[0], K), extra[0], K)
    reader.refresh()
    kept = list(range(10)) + list(range(20, ROWS))
    new = Reference(np.concatenate([vectors[kept], extra]),
                    [ids[i] for i in kept] + [f"x-{i}" for i in range(50)], "cosine")
    assert len(reader) == len(kept) + 50
    assert reader.get("id-5").metadata == {"n": -5}
    assert reader.get("id-15") is None
    for q in _queries():
        new.check(reader.search(q, K), q, K)
    reader.close()


def test_refresh_reopens_at_the_path(tmp_path):
    live = tmp_path / "db"
    ids, vectors = _write(live)
    db = srvdb.open(live, read_only=True)
    db.refresh()  # nothing new: the same commit
    assert db.ids() == ids
    # A writer may also build the next version beside it and swap the directories.
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """A child forked while a writer is open (multiprocessing's fork start method, servers
    that fork workers) does not keep the directory locked once the parent closes it."""
    import warnings

    path = tmp_path / "db"
    _write(path)
    db = srvdb.open(path)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
        pid = os.fork()
    if pid == 0:  # the child: wait until the parent says so, touching nothing
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    try:
        db.close()
        with srvdb.open(path) as again:  # the child still lives
            assert len(again) == ROWS
        with srvdb.open(path, read_only=True) as reader:
            assert len(reader) == ROWS
    finally:
        os.write(write_end, b"x")
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
