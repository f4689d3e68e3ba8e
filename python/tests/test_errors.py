"""Bad input raises the right exception, names the position at fault, and leaves the database
exactly as it was."""

from __future__ import annotations

import numpy as np
import pytest

import srvdb
from conftest import run_python

DIM = 8


@pytest.fixture
def db(open_db):
    rng = np.random.default_rng(3)
    db = open_db()
    db.add([f"id{i}" for i in range(50)], rng.standard_normal((50, DIM)).astype(np.float32),
           [{"i": i} for i in range(50)])
    db.persist()
    return db


def state(db):
    q = np.linspace(-1, 1, DIM, dtype=np.float32)
    return (
        len(db),
        db.ids(),
        db.search(q, 10),
        db.get("id7").metadata,
        db.get("id7").vector.tolist(),
    )


def good(n=1, dim=DIM):
    return np.ones((n, dim), np.float32)


# (name, call, expected exception, expected `index` or None)
BAD_WRITES = [
    ("wrong dim, array", lambda db: db.add(["x"], good(1, DIM + 1)), srvdb.DimensionMismatchError, None),
    ("wrong dim, list", lambda db: db.add(["x", "y"], [[0.0] * DIM, [0.0] * (DIM - 1)]), srvdb.DimensionMismatchError, 1),
    ("NaN, array", lambda db: db.add(["x", "y"], np.array([[1.0] * DIM, [np.nan] * DIM], np.float32)), srvdb.InvalidInputError, 1),
    ("inf, list", lambda db: db.add(["x"], [[1.0] * (DIM - 1) + [float("inf")]]), srvdb.InvalidInputError, 0),
    ("float64 overflow", lambda db: db.add(["x"], np.full((1, DIM), 1e300)), srvdb.InvalidInputError, 0),
    ("ids vs embeddings", lambda db: db.add(["x", "y"], good(3)), srvdb.InvalidInputError, None),
    ("ids vs metadatas", lambda db: db.add(["x", "y"], good(2), [{}]), srvdb.InvalidInputError, None),
    ("duplicate in batch", lambda db: db.add(["x", "y", "x"], good(3)), srvdb.DuplicateIdError, 2),
    ("existing id", lambda db: db.add(["x", "id3"], good(2)), srvdb.DuplicateIdError, 1),
    ("empty id", lambda db: db.add(["x", ""], good(2)), srvdb.InvalidInputError, 1),
    ("over-long id", lambda db: db.add(["x" * 1025], good(1)), srvdb.InvalidInputError, 0),
    ("int id", lambda db: db.add(["x", 5], good(2)), srvdb.InvalidInputError, 1),
    ("ids as one str", lambda db: db.add("xy", good(2)), srvdb.InvalidInputError, None),
    ("int dtype", lambda db: db.add(["x"], np.ones((1, DIM), np.int64)), srvdb.InvalidInputError, None),
    ("bool dtype", lambda db: db.add(["x"], np.ones((1, DIM), bool)), srvdb.InvalidInputError, None),
    ("complex dtype", lambda db: db.add(["x"], np.ones((1, DIM), np.complex64)), srvdb.InvalidInputError, None),
    ("str dtype", lambda db: db.add(["x"], np.full((1, DIM), "1.0")), srvdb.InvalidInputError, None),
    ("object dtype", lambda db: db.add(["x"], np.ones((1, DIM), object)), srvdb.InvalidInputError, None),
    ("1-D array", lambda db: db.add(["x"], np.ones(DIM, np.float32)), srvdb.InvalidInputError, None),
    ("3-D array", lambda db: db.add(["x"], np.ones((1, 1, DIM), np.float32)), srvdb.InvalidInputError, None),
    ("str component", lambda db: db.add(["x"], [["1.0"] * DIM]), srvdb.InvalidInputError, 0),
    ("None component", lambda db: db.add(["x", "y"], [[1.0] * DIM, [None] * DIM]), srvdb.InvalidInputError, 1),
    ("int-array row", lambda db: db.add(["x"], [np.ones(DIM, np.int32)]), srvdb.InvalidInputError, 0),
    ("flat list", lambda db: db.add(["x"], [1.0] * DIM), srvdb.InvalidInputError, 0),
    ("embeddings str", lambda db: db.add(["x"], "1,2,3"), srvdb.InvalidInputError, None),
    ("embeddings int", lambda db: db.add(["x"], 3), srvdb.InvalidInputError, None),
    ("metadata set", lambda db: db.add(["x"], good(1), [{1, 2}]), srvdb.InvalidInputError, 0),
    ("metadata NaN", lambda db: db.add(["x", "y"], good(2), [{}, {"v": float("nan")}]), srvdb.InvalidInputError, 1),
    ("metadata bytes", lambda db: db.add(["x"], good(1), [b"raw"]), srvdb.InvalidInputError, 0),
    ("metadatas one dict", lambda db: db.add(["x"], good(1), {"a": 1}), srvdb.InvalidInputError, None),
    ("upsert wrong dim", lambda db: db.upsert(["id1"], good(1, 3)), srvdb.DimensionMismatchError, None),
    ("upsert NaN", lambda db: db.upsert(["id1", "id2"], [[0.0] * DIM, [float("nan")] * DIM]), srvdb.InvalidInputError, 1),
    ("upsert duplicate", lambda db: db.upsert(["id1", "id1"], good(2)), srvdb.DuplicateIdError, 1),
    ("delete unknown", lambda db: db.delete(["id1", "nope"]), srvdb.NotFoundError, None),
    ("delete int", lambda db: db.delete([1]), srvdb.InvalidInputError, 0),
]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("name,call,exc,index", BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_bad_write_is_rejected_and_changes_nothing(db, name, call, exc, index):
    before = state(db)
    with pytest.raises(exc) as e:
        call(db)
    assert isinstance(e.value, srvdb.Error)
    assert e.value.index == index, f"{name}: index {e.value.index}, message: {e.value}"
    if index is not None:
        assert f"{index}" in str(e.value)
    assert state(db) == before
    # And the handle still works.
    db.add(["after"], good(1))
    assert "after" in db


BAD_QUERIES = [
    ("wrong dim", lambda db: db.search([1.0] * (DIM + 2), 3), srvdb.DimensionMismatchError),
    ("wrong dim k=0", lambda db: db.search([1.0] * (DIM + 2), 0), srvdb.DimensionMismatchError),
    ("NaN", lambda db: db.search([float("nan")] * DIM, 3), srvdb.InvalidInputError),
    ("negative k", lambda db: db.search([1.0] * DIM, -1), srvdb.InvalidInputError),
    ("float k", lambda db: db.search([1.0] * DIM, 2.5), srvdb.InvalidInputError),
    ("bool k", lambda db: db.search([1.0] * DIM, True), srvdb.InvalidInputError),
    ("str k", lambda db: db.search([1.0] * DIM, "3"), srvdb.InvalidInputError),
    ("str query", lambda db: db.search("query", 3), srvdb.InvalidInputError),
    ("nested query", lambda db: db.search([[1.0] * DIM], 3), srvdb.InvalidInputError),
    ("int dtype query", lambda db: db.search(np.ones(DIM, np.int32), 3), srvdb.InvalidInputError),
    ("2-D query", lambda db: db.search(np.ones((2, DIM), np.float32), 3), srvdb.InvalidInputError),
    ("batch wrong dim", lambda db: db.search_batch(np.ones((3, DIM - 1), np.float32), 3), srvdb.DimensionMismatchError),
    ("batch ragged", lambda db: db.search_batch([[1.0] * DIM, [1.0] * 3], 3), srvdb.DimensionMismatchError),
    ("batch NaN", lambda db: db.search_batch([[1.0] * DIM, [float("nan")] * DIM], 3), srvdb.InvalidInputError),
    ("batch negative k", lambda db: db.search_batch(np.ones((2, DIM), np.float32), -5), srvdb.InvalidInputError),
]


@pytest.mark.parametrize("name,call,exc", BAD_QUERIES, ids=[b[0] for b in BAD_QUERIES])
def test_bad_query_is_rejected(db, name, call, exc):
    before = state(db)
    with pytest.raises(exc):
        call(db)
    assert state(db) == before


def test_k_zero_answers_empty(db):
    assert db.search([1.0] * DIM, 0) == []
    assert db.search_batch(np.ones((3, DIM), np.float32), 0) == [[], [], []]
    assert db.search([1.0] * DIM, np.int64(2)) != []


def test_exception_tree_and_details(db):
    assert issubclass(srvdb.DimensionMismatchError, ValueError)
    assert issubclass(srvdb.NotFoundError, KeyError)
    assert issubclass(srvdb.IoError, OSError)
    for cls in (srvdb.DimensionMismatchError, srvdb.DuplicateIdError, srvdb.NotFoundError,
                srvdb.InvalidInputError, srvdb.CorruptError, srvdb.LockedError, srvdb.IoError,
                srvdb.PoisonedError, srvdb.BackendUnavailableError, srvdb.SandboxError):
        assert issubclass(cls, srvdb.Error)
    with pytest.raises(KeyError) as e:
        db["missing"]
    assert e.value.id == "missing"
    assert str(e.value) == 'id "missing" not found'  # not KeyError's quoted repr
    with pytest.raises(ValueError) as e:
        db.search([1.0] * 3, 1)
    assert (e.value.expected, e.value.got) == (DIM, 3)
    assert "expected 8, got 3" in str(e.value)
    assert db.get("missing") is None
    assert db.get("missing", 42) == 42


@pytest.mark.parametrize("call,message", [
    (lambda db: db.add(["x", "y"], good(2), [{}]), "1 metadatas for 2 ids: pass one per id, or none"),
    (lambda db: db.upsert(["x", "y"], good(2), documents=["one"]), "1 documents for 2 ids: pass one per id, or none"),
    (lambda db: db.add([], [], [{}]), "metadatas or documents given without ids"),
], ids=["metadatas", "documents", "no ids"])
def test_lengths_that_disagree_give_the_engines_message(db, call, message):
    """The engine checks the lengths (not the binding), so every backend and every language
    binding reports the same words."""
    before = state(db)
    with pytest.raises(srvdb.InvalidInputError) as e:
        call(db)
    assert message in str(e.value) and e.value.index is None
    assert state(db) == before


def test_first_batch_ragged_or_empty(open_db):
    db = open_db()
    with pytest.raises(srvdb.InvalidInputError) as e:
        db.add(["a", "b", "c"], [[1.0, 2.0], [1.0, 2.0], [1.0]])
    assert e.value.index == 2 and "embedding 2 has 1" in str(e.value)
    assert db.dim is None and len(db) == 0
    db.add([], [])  # nothing at all is fine
    db.add([], np.zeros((0, 5), np.float32))
    assert db.dim is None


def test_messages_say_what_to_do(open_db):
    db = open_db()
    with pytest.raises(srvdb.DuplicateIdError, match="once in a batch"):
        db.upsert(["u", "u"], [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(srvdb.InvalidInputError, match="vectors are empty"):
        db.add(["a"], [[]])
    db.add(["a"], [[1.0, 0.0]])
    with pytest.raises(srvdb.InvalidInputError, match="int too large for a float32"):
        db.search([10**400, 0], 1)
    with pytest.raises(srvdb.InvalidInputError, match="int too large for a float32"):
        db.add(["b"], [[10**400, 0]])
    assert db.ids() == ["a"]


def test_bad_open_arguments(tmp_path, backend):
    with pytest.raises(srvdb.InvalidInputError, match="unknown metric"):
        srvdb.open(tmp_path / "a", metric="hamming", backend=backend)
    with pytest.raises(srvdb.InvalidInputError, match="dim"):
        srvdb.open(tmp_path / "b", dim=-3, backend=backend)
    with pytest.raises(srvdb.InvalidInputError, match="out of range"):
        srvdb.open(tmp_path / "c", dim=0, backend=backend)
    with pytest.raises(srvdb.InvalidInputError, match="backend"):
        srvdb.open(tmp_path / "d", backend="gpu")


def test_wasm_backend_without_its_component(tmp_path):
    # A fresh interpreter: the sandbox is loaded once per process.
    out = run_python(
        f"""
        import srvdb
        try:
            srvdb.open({str(tmp_path / "w")!r}, backend="wasm")
        except srvdb.BackendUnavailableError as e:
            assert isinstance(e, NotImplementedError)
            print(e)
        """,
        tmp_path,
        env={"SRVDB_COMPONENT": str(tmp_path / "missing.wasm")},
    )
    assert "make component" in out or "`wasm` cargo feature" in out, out
    assert not (tmp_path / "w").exists()


def test_corrupt_file(tmp_path, backend):
    with srvdb.open(tmp_path / "db", backend=backend) as db:
        db.add(["a"], [[1.0, 2.0]])
    with open(tmp_path / "db" / "vectors.bin", "r+b") as f:
        f.write(b"NOTSRVDB")
    with pytest.raises(srvdb.CorruptError) as e:
        srvdb.open(tmp_path / "db", backend=backend)
    assert e.value.path.endswith("vectors.bin")
    assert "vectors.bin" in str(e.value)
