"""The Pythonic API: input forms, metadata, records, container protocol, handles."""

from __future__ import annotations

import numpy as np
import pytest

import srvdb


class ArrayLike:
    """Not an ndarray, but converts to one (like a PyTorch CPU tensor or a DataFrame)."""

    def __init__(self, data):
        self.data = data

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __iter__(self):  # pragma: no cover - the binding must use __array__ instead
        raise AssertionError("iterated instead of converted with __array__")


def test_every_input_form_stores_the_same_vectors(open_db):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((6, 5)).astype(np.float32)
    forms = {
        "f32": data,
        "f64": data.astype(np.float64),
        "f16-exact": data.astype(np.float16).astype(np.float32),  # checked separately below
        "fortran": np.asfortranarray(data),
        "strided": np.repeat(data, 2, axis=0)[::2],
        "transposed": np.ascontiguousarray(data.T).T,
        "big-endian": data.astype(">f4"),
        "readonly": np.frombuffer(data.tobytes(), dtype=np.float32).reshape(6, 5),
        "unaligned": np.frombuffer(b"\0" + data.tobytes(), dtype=np.float32, offset=1).reshape(6, 5),
        "negative strides": data[::-1].copy()[::-1],
        "longdouble": data.astype(np.longdouble),
        "lists": data.tolist(),
        "tuples": [tuple(r) for r in data.tolist()],
        "list of arrays": list(data),
        "list of f64 arrays": list(data.astype(np.float64)),
        "generator": (r for r in data.tolist()),
        "np scalars": [[np.float32(x) for x in r] for r in data],
        "__array__ object": ArrayLike(data),
    }
    db = open_db()
    for name, emb in forms.items():
        ids = [f"{name}-{i}" for i in range(6)]
        db.add(ids, emb)
        want = data if name != "f16-exact" else forms["f16-exact"]
        for i, id_ in enumerate(ids):
            np.testing.assert_array_equal(db[id_].vector, want[i], err_msg=name)
    db.add(["f16-0"], data[:1].astype(np.float16))
    np.testing.assert_array_equal(db["f16-0"].vector, data[0].astype(np.float16).astype(np.float32))
    db.add(["ints"], [[1, 2, 3, 4, 5]])  # Python ints in lists are numbers
    assert db["ints"].vector.tolist() == [1, 2, 3, 4, 5]


def test_reads_in_place_is_always_false():
    # Every array is copied while the GIL is held (issue 13): nothing is read in place any more.
    for arr in (np.ones((4, 3), np.float32), np.ones((8, 3), np.float32)[2:5], [[1.0, 2.0]]):
        assert srvdb.reads_in_place(arr) is False
    with pytest.raises(srvdb.InvalidInputError, match="dtype"):
        srvdb.reads_in_place(np.ones((4, 3), np.int32))


def test_queries_in_every_form(open_db):
    db = open_db()
    db.add(["x", "y"], np.array([[1, 0, 0], [0, 1, 0]], np.float32))
    want = db.search([1.0, 0.0, 0.0], 2)
    assert want[0] == ("x", 1.0)
    for q in ([1, 0, 0], (1.0, 0.0, 0.0), np.array([1, 0, 0], np.float64),
              np.array([[1, 0, 0]], np.float32), np.array([1, 9, 9, 0, 9, 9, 0, 9, 9], np.float32)[::3],
              np.array([1, 0, 0], np.float16), np.array([1, 0, 0], ">f4")):
        assert db.search(q, 2) == want
    assert db.search(query=[1.0, 0.0, 0.0], k=1) == want[:1]
    assert db.search_batch(queries=[[1.0, 0.0, 0.0]], k=1) == [want[:1]]
    assert db.search(ArrayLike(np.array([1.0, 0.0, 0.0])), 2) == want


def test_metadata_forms(open_db):
    db = open_db()
    metas = [{"title": "A", "n": [1, 2]}, '{"raw": true}', "just text, not JSON", None,
             ["a", 1], 3.5, "", "ünïcödé ✓"]
    ids = [f"m{i}" for i in range(len(metas))]
    db.add(ids, np.eye(len(metas), dtype=np.float32), metas)
    assert db["m0"].metadata == {"title": "A", "n": [1, 2]}
    assert db["m1"].metadata == {"raw": True} and db["m1"].metadata_text == '{"raw": true}'
    assert db["m2"].metadata == "just text, not JSON"
    assert db["m3"].metadata is None and db["m3"].metadata_text is None
    assert db["m4"].metadata == ["a", 1]
    assert db["m5"].metadata == 3.5
    assert db["m6"].metadata_text == ""
    assert db["m7"].metadata == "ünïcödé ✓"
    # The seed API returns the exact stored strings.
    db.close()
    legacy = srvdb.SvDBPython(db.path, backend=db.backend)
    assert legacy.get("m1") == '{"raw": true}'
    assert legacy.get("m2") == "just text, not JSON"
    assert legacy.get("m7") == "ünïcödé ✓"
    legacy.close()


def test_metadata_is_stored_as_json_dumps_writes_it(open_db):
    """Dicts, lists and numbers are stored exactly as `json.dumps(m, ensure_ascii=False)`
    writes them; str metadata exactly as given."""
    import json

    class Tag(int):
        pass

    metas = [
        {"doc": 1, "source": "synthetic"},
        {"nested": {"a": [1, 2, {"b": None}], "t": True, "f": False}, "": "empty key"},
        {"esc": 'quote " back \\ nl \n tab \t cr \r bell \x07 del \x7f', "ü": "✓ 日本"},
        {"big": 2**70, "neg": -(2**63), "max": 2**63 - 1},
        {"float": 0.1, "exp": 1e-05, "int-like": 3.0},
        {1: "int key"},
        {"sub": Tag(5)},
        [],
        {},
        [[], {}, [None, True]],
        # Separators and brackets inside strings and keys (a batch is encoded as one list and
        # split at its top-level commas).
        {"a, b": "x, y", "br": "]}[{", "q": 'say "hi", then \\", ['},
        ["", ", ", "\\", "\"", "}, {"],
        "not json, [stored as text]",
        None,
        12,
        "",
    ]
    ids = [f"j{i}" for i in range(len(metas))]
    db = open_db()
    db.add(ids, np.eye(len(metas), dtype=np.float32), metas)
    for i, m in zip(ids, metas):
        if isinstance(m, str) or m is None:
            assert db[i].metadata_text == m, i
        else:
            assert db[i].metadata_text == json.dumps(m, ensure_ascii=False), i


def test_unserialisable_metadata_is_named_by_its_position(open_db):
    db = open_db()
    metas = [{"ok": 1}, "text", None, {"ok": 2}, {"bad": object()}, {"ok": 3}]
    with pytest.raises(srvdb.InvalidInputError, match="metadata 4 .*cannot be stored as JSON") as e:
        db.add([f"u{i}" for i in range(6)], np.eye(6, dtype=np.float32), metas)
    assert e.value.index == 4 and len(db) == 0
    with pytest.raises(srvdb.InvalidInputError, match="metadata 1 ") as e:
        db.add(["a", "b"], np.eye(2, dtype=np.float32), [{"v": 1.0}, {"v": float("inf")}])
    assert e.value.index == 1 and len(db) == 0


def test_container_protocol_and_properties(open_db):
    db = open_db("c", dim=3, metric="dot")
    assert (db.dim, db.metric, db.backend, db.closed) == (3, "dot", db.backend, False)
    assert len(db) == 0 and list(db) == [] and "a" not in db and 5 not in db
    db.add(["a", "b"], [[1, 2, 3], [4, 5, 6]], [{"k": 1}, None])
    db.upsert(["b", "c"], [[0, 0, 1], [1, 1, 1]], [{"k": 2}, {"k": 3}])
    assert len(db) == 3 and list(db) == ["a", "b", "c"] and db.ids() == ["a", "b", "c"]
    assert "b" in db
    rec = db["b"]
    assert isinstance(rec, srvdb.Record)
    assert rec.id == "b" and rec.vector.dtype == np.float32 and rec.vector.tolist() == [0, 0, 1]
    assert rec.metadata == {"k": 2}
    assert "srvdb.Record" in repr(rec) and "srvdb.Database" in repr(db)
    assert db.delete("a") == 1
    assert db.delete(["b", "c", "b"]) == 2
    assert len(db) == 0
    db.compact()
    assert len(db) == 0 and db.dim == 3


def test_database_class_is_open(tmp_path):
    db = srvdb.Database(tmp_path / "x", dim=2)
    assert db.dim == 2
    db.close()
    assert db.closed and "closed" in repr(db)
    with pytest.raises(srvdb.Error, match="closed"):
        db.search([1.0, 2.0], 1)
    with pytest.raises(srvdb.Error, match="closed"):
        db.add(["a"], [[1.0, 2.0]])


def test_search_batch_numpy_output(open_db):
    rng = np.random.default_rng(4)
    db = open_db()
    base = rng.standard_normal((40, 6)).astype(np.float32)
    db.add([f"p{i}" for i in range(40)], base)
    ids, scores = db.search_batch(base[:5], 3, numpy=True)
    assert ids.shape == (5, 3) and scores.shape == (5, 3)
    assert list(ids[:, 0]) == [f"p{i}" for i in range(5)]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-6)
    ids, scores = db.search_batch(base[:2], 100, numpy=True)  # k above the count
    assert ids.shape == (2, 40)


def test_version():
    assert isinstance(srvdb.__version__, str) and srvdb.__version__.count(".") == 2
    assert set(srvdb.__all__) <= set(dir(srvdb))
