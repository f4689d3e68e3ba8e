"""Filters (`where`, `where_document`) and the data API around them: `count`, `records`,
filtered `search` / `search_batch`, `delete` and `update`, field indexes, `:memory:`
databases and `srvdb.Client` collections.

Every filtered answer is checked against an independent evaluator of the dialect
(`filter_reference.py`, written from the specification) and NumPy brute force over the rows
it selects (`reference.py`), on randomized metadata with thousands of seeded random filters.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

import srvdb

from filter_reference import NOT_AN_OBJECT, matches, stored_metadata
from reference import Reference

DIM = 8
N = 240
WORDS = ["alpha", "beta", "gamma", "delta", "Rust", "rust", "vector", "db", "émoji✓", "a b"]
STRINGS = ["", "a", "b", "ab", "B", "doc", "doc-1", "zeta", "é"]


# ---------------------------------------------------------------------------------------------
# Random data


def random_scalar(rng: random.Random):
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randrange(-5, 6)
    if kind == 1:
        return rng.choice([-2.5, -1.0, 0.0, 0.5, 1.0, 2.0, 3.25, 1e3])
    if kind == 2:
        return rng.choice(STRINGS)
    return rng.random() < 0.5


def random_value(rng: random.Random, depth: int = 0):
    """A metadata field value: scalars (int, float, str, bool), null, lists, nested objects."""
    roll = rng.random()
    if roll < 0.6:
        return random_scalar(rng)
    if roll < 0.7:
        return None
    if roll < 0.88 or depth > 1:
        return [random_scalar(rng) for _ in range(rng.randrange(0, 4))]
    return {k: random_value(rng, depth + 1) for k in rng.sample(["x", "y", "z"], rng.randrange(1, 4))}


def random_metadata(rng: random.Random):
    """What one record's metadata is given as: usually a dict with some fields missing,
    sometimes None, plain text, JSON text, a JSON list or a scalar."""
    roll = rng.random()
    if roll < 0.06:
        return None
    if roll < 0.10:
        return rng.choice(["plain text", "year: 2001", "{not json"])
    if roll < 0.13:
        return [1, 2, "a"]
    if roll < 0.15:
        return rng.choice([5, "7", "true", '"s"'])
    meta = {}
    for field in ["i", "f", "s", "b", "mixed", "tags", "nested"]:
        if rng.random() < 0.75:
            if field == "i":
                meta[field] = rng.randrange(-5, 6)
            elif field == "f":
                meta[field] = rng.choice([-1.5, 0.0, 1.0, 2.5, 3.0])
            elif field == "s":
                meta[field] = rng.choice(STRINGS)
            elif field == "b":
                meta[field] = rng.random() < 0.5
            elif field == "tags":
                meta[field] = [rng.choice(STRINGS + [1, 2, True]) for _ in range(rng.randrange(0, 4))]
            elif field == "nested":
                meta[field] = {"x": rng.randrange(0, 4), "y": rng.choice(STRINGS), "deep": {"z": rng.randrange(3)}}
            else:
                meta[field] = random_value(rng)
    if rng.random() < 0.1:
        meta["a.b"] = rng.randrange(3)  # an exact key with a dot wins over the path
    if rng.random() < 0.1:
        meta["a"] = {"b": rng.randrange(3)}
    if rng.random() < 0.1:
        meta["json as text"] = json.dumps({"i": 1})  # a string, not an object
    if rng.random() < 0.2 and isinstance(meta, dict):
        return json.dumps(meta)  # given as JSON text: stored (and filtered) as JSON
    return meta


def random_document(rng: random.Random):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 6)))


FIELDS = ["i", "f", "s", "b", "mixed", "tags", "nested", "nested.x", "nested.y", "nested.deep.z",
          "a.b", "a", "missing", "s.x", "json as text"]


def random_operand(rng: random.Random, op: str):
    if op in ("$in", "$nin"):
        return [random_scalar(rng) for _ in range(rng.randrange(0, 4))]
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return rng.choice([rng.randrange(-5, 6), rng.choice([-1.5, 0.5, 1.0, 2.5]), rng.choice(STRINGS)])
    return random_scalar(rng)


def random_where(rng: random.Random, depth: int = 0) -> dict:
    roll = rng.random()
    if depth < 3 and roll < 0.12:
        return {"$and": [random_where(rng, depth + 1) for _ in range(rng.randrange(1, 4))]}
    if depth < 3 and roll < 0.24:
        return {"$or": [random_where(rng, depth + 1) for _ in range(rng.randrange(1, 4))]}
    if depth < 3 and roll < 0.30:
        return {"$not": random_where(rng, depth + 1)}
    if roll < 0.32:
        return {}
    where = {}
    for _ in range(1 if rng.random() < 0.8 else 2):
        field = rng.choice(FIELDS)
        if rng.random() < 0.3:
            where[field] = random_scalar(rng)
        else:
            ops = rng.sample(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"], 1 if rng.random() < 0.8 else 2)
            where[field] = {op: random_operand(rng, op) for op in ops}
    return where


def random_where_document(rng: random.Random, depth: int = 0) -> dict:
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return {"$and": [random_where_document(rng, depth + 1) for _ in range(rng.randrange(1, 3))]}
    if depth < 2 and roll < 0.3:
        return {"$or": [random_where_document(rng, depth + 1) for _ in range(rng.randrange(1, 3))]}
    needle = rng.choice(WORDS + ["a", "", "ust", "zzz"])
    return {rng.choice(["$contains", "$not_contains"]): needle}


def random_filter(rng: random.Random):
    roll = rng.random()
    where = random_where(rng) if roll < 0.85 else None
    document = random_where_document(rng) if roll > 0.65 else None
    if where is None and document is None:
        where = random_where(rng)
    return where, document


class Model:
    """What the test wrote: per id its vector, stored metadata and document."""

    def __init__(self, metric: str = "cosine") -> None:
        self.metric = metric
        self.vectors: dict[str, np.ndarray] = {}
        self.meta: dict[str, object] = {}
        self.docs: dict[str, str | None] = {}

    def put(self, id_, vector, metadata, document):
        self.vectors[id_] = np.asarray(vector, dtype=np.float32)
        self.meta[id_] = stored_metadata(metadata)
        self.docs[id_] = document

    def remove(self, id_):
        del self.vectors[id_], self.meta[id_], self.docs[id_]

    def matching(self, where, document, order):
        """The ids in `order` (the database's insertion order) the reference selects."""
        return [i for i in order if matches(where, document, self.meta[i], self.docs[i])]

    def reference(self, ids) -> Reference:
        base = np.stack([self.vectors[i] for i in ids]) if ids else np.zeros((0, DIM), np.float32)
        return Reference(base, list(ids), self.metric)


def make_rows(rng: random.Random, n: int = N, prefix: str = "r"):
    """`n` random records: ids, vectors, metadatas, and documents (None for the last quarter)."""
    vectors = np.asarray([[rng.gauss(0, 1) for _ in range(DIM)] for _ in range(n)], dtype=np.float32)
    ids = [f"{prefix}{i:04d}" for i in range(n)]
    metas = [random_metadata(rng) for _ in range(n)]
    docs = [random_document(rng) for _ in range(n)]
    half = n * 3 // 4
    return ids, vectors, metas, docs[:half] + [None] * (n - half)


def fill(db, rng: random.Random, n: int = N, prefix: str = "r", model: Model | None = None) -> Model:
    """Adds `n` random records (some without a document) and returns the model of them."""
    model = model or Model(db.metric)
    ids, vectors, metas, docs = make_rows(rng, n, prefix)
    half = n * 3 // 4
    db.add(ids[:half], vectors[:half], metadatas=metas[:half], documents=docs[:half])
    db.add(ids[half:], vectors[half:], metadatas=metas[half:])
    for i in range(n):
        model.put(ids[i], vectors[i], metas[i], docs[i])
    return model


def check_filter(db, model: Model, rng: random.Random, where, document, context: str) -> None:
    """count, records and filtered search / search_batch agree with the reference."""
    want = model.matching(where, document, db.ids())
    assert db.count(where=where, where_document=document) == len(want), context
    got = [r.id for r in db.records(where=where, where_document=document)]
    assert got == want, context
    if rng.random() < 0.3:
        limit, offset = rng.randrange(0, 10), rng.randrange(0, 10)
        got = [r.id for r in db.records(where=where, where_document=document, limit=limit, offset=offset)]
        assert got == want[offset:offset + limit], context
    ref = model.reference(want)
    k = rng.choice([1, 5, 10, 50])
    query = np.asarray([rng.gauss(0, 1) for _ in range(DIM)], dtype=np.float32)
    hits = db.search(query, k, where=where, where_document=document)
    if want:
        ref.check(hits, query, k, context=context)
    else:
        assert hits == [], context
    if rng.random() < 0.2:
        queries = np.asarray([[rng.gauss(0, 1) for _ in range(DIM)] for _ in range(3)], dtype=np.float32)
        lists = db.search_batch(queries, k, where=where, where_document=document)
        assert len(lists) == 3
        for qi, hits in enumerate(lists):
            if want:
                ref.check(hits, queries[qi], k, context=f"{context} batch {qi}")
            else:
                assert hits == [], context


@pytest.fixture
def filtered_db(open_db):
    """An empty database of dimension DIM on the test's backend."""
    return open_db(dim=DIM)


# ---------------------------------------------------------------------------------------------
# The property test


@pytest.mark.parametrize("seed", [1, 2])
def test_random_filters_match_the_reference(filtered_db, backend, seed):
    rng = random.Random(seed)
    db = filtered_db
    model = fill(db, rng)
    rounds = 1500 if backend == "native" else 300
    for round_ in range(rounds):
        where, document = random_filter(rng)
        context = f"seed {seed} round {round_}: where={where!r} where_document={document!r}"
        check_filter(db, model, rng, where, document, context)


def test_filter_semantics_by_example(filtered_db):
    """The documented edges, each on its own, with the expected ids written out."""
    db = filtered_db
    rows = {
        "int1": {"n": 1, "s": "x", "b": True, "l": ["a", "b"], "o": {"p": {"q": 2}}},
        "float1": {"n": 1.0, "s": "y", "b": False, "l": [], "o": {"p": 3}},
        "str1": {"n": "1", "s": "xy", "b": 1, "l": ["c", 1]},
        "null": {"n": None},
        "empty": {},
        "none": None,
        "text": "n: 1",
        "list": [{"n": 1}],
        "dotted": {"o.p": 9, "o": {"p": 7}},
    }
    ids = list(rows)
    db.add(ids, np.eye(len(ids), DIM, dtype=np.float32) + 0.1, metadatas=[rows[i] for i in ids])

    def ids_of(where):
        return [r.id for r in db.records(where=where)]

    assert ids_of({"n": 1}) == ["int1", "float1"]  # int vs float numerically
    assert ids_of({"n": {"$ne": 1}}) == ["str1", "null", "empty", "none", "dotted"]  # missing/null match $ne
    assert ids_of({"n": {"$gte": 1}}) == ["int1", "float1"]  # "1" is not a number
    assert ids_of({"n": {"$in": ["1", 2]}}) == ["str1"]
    assert ids_of({"n": {"$nin": [1]}}) == ["str1", "null", "empty", "none", "dotted"]
    assert ids_of({"b": True}) == ["int1"]  # true is not 1
    assert ids_of({"b": 1}) == ["str1"]  # only the number 1, not true
    assert ids_of({"l": "a"}) == ["int1"]  # any element
    assert ids_of({"l": {"$ne": "a"}}) == ["float1", "str1", "null", "empty", "none", "dotted"]
    assert ids_of({"l": {"$in": [1, "zz"]}}) == ["str1"]
    assert ids_of({"o.p.q": 2}) == ["int1"]
    assert ids_of({"o.p": 3}) == ["float1"]
    assert ids_of({"o.p": 9}) == ["dotted"]  # the exact key wins
    assert ids_of({"o": {"$ne": 2}}) == [i for i in ids if i not in ("text", "list")]  # objects equal no scalar
    assert ids_of({"s": {"$gt": "x"}}) == ["float1", "str1"]
    assert ids_of({"$not": {"n": 1}}) == ["str1", "null", "empty", "none", "text", "list", "dotted"]
    assert ids_of({}) == ids
    assert ids_of({"$or": [{"n": 1.0}, {"s": "xy"}]}) == ["int1", "float1", "str1"]
    assert ids_of({"$and": [{"n": 1}, {"s": "y"}]}) == ["float1"]
    assert ids_of({"n": {"$gt": 0, "$lt": 1.5}, "s": "x"}) == ["int1"]
    # This test's own expectations agree with the reference evaluator.
    for where in [{"n": 1}, {"l": {"$ne": "a"}}, {"o.p": 9}, {"$not": {"n": 1}}]:
        want = [i for i in ids if matches(where, None, stored_metadata(rows[i]), None)]
        assert ids_of(where) == want, where


def test_where_document(filtered_db):
    db = filtered_db
    db.add(["a", "b"], np.ones((2, DIM), np.float32), documents=["Rust is fast", "rusty nails"])
    db.add(["c"], np.ones((1, DIM), np.float32))

    def ids_of(document, where=None):
        return [r.id for r in db.records(where=where, where_document=document)]

    assert ids_of({"$contains": "Rust"}) == ["a"]  # case-sensitive
    assert ids_of({"$contains": "ust"}) == ["a", "b"]
    assert ids_of({"$not_contains": "Rust"}) == ["b", "c"]  # no document: $not_contains holds
    assert ids_of({"$or": [{"$contains": "fast"}, {"$contains": "nails"}]}) == ["a", "b"]
    assert ids_of({"$and": [{"$contains": "ust"}, {"$not_contains": "fast"}]}) == ["b"]
    assert db.count(where_document={"$contains": ""}) == 2


# ---------------------------------------------------------------------------------------------
# Malformed filters

BAD_WHERE = [
    [1],
    "year",
    {"$foo": 1},
    {"a": {"$foo": 1}},
    {"a": {"$gt": True}},
    {"a": {"$eq": None}},
    {"a": None},
    {"a": [1, 2]},
    {"a": {"$in": 1}},
    {"a": {"$in": [[1]]}},
    {"a": {"$eq": {"b": 1}}},
    {"a": {}},
    {"$and": []},
    {"$and": {"a": 1}},
    {"$or": [1]},
    {"$not": []},
    {"a": float("nan")},
    {"a": {1, 2}},
]
BAD_DOCUMENT = [
    "rust",
    {},
    {"$contains": 1},
    {"$contains": "a", "$not_contains": "b"},
    {"$foo": "x"},
    {"$and": []},
    {"$or": ["x"]},
]


def _deep(depth: int) -> dict:
    where: dict = {"a": 1}
    for _ in range(depth):
        where = {"$not": where}
    return where


def test_malformed_where_raises_invalid_filter_error(filtered_db):
    db = filtered_db
    db.add(["x"], np.ones((1, DIM), np.float32), metadatas=[{"a": 1}])
    too_long = {"a": {"$in": ["x" * 100] * 700}}
    for where in BAD_WHERE + [_deep(40), too_long]:
        for call in (
            lambda: db.count(where=where),
            lambda: db.records(where=where),
            lambda: db.search(np.ones(DIM), 3, where=where),
            lambda: db.search_batch(np.ones((2, DIM)), 3, where=where),
            lambda: db.delete(where=where),
            lambda: db.delete(["x"], where=where),
        ):
            with pytest.raises(srvdb.InvalidFilterError) as info:
                call()
            err = info.value
            assert isinstance(err, srvdb.InvalidInputError) and isinstance(err, ValueError)
            assert err.part and err.part.startswith("where") and not err.part.startswith("where_document"), (where, err.part)
            assert err.reason, where
            assert err.part in str(err)
    assert len(db) == 1  # no failed delete deleted anything


def test_malformed_where_document_raises_invalid_filter_error(filtered_db):
    db = filtered_db
    for document in BAD_DOCUMENT:
        with pytest.raises(srvdb.InvalidFilterError) as info:
            db.count(where_document=document)
        assert info.value.part.startswith("where_document"), (document, info.value.part)


def test_invalid_filter_names_the_offending_part(filtered_db):
    db = filtered_db
    with pytest.raises(srvdb.InvalidFilterError) as info:
        db.count(where={"$and": [{"a": 1}, {"year": {"$gt": True}}]})
    assert info.value.part == "where.$and[1].year.$gt"
    with pytest.raises(srvdb.InvalidFilterError) as info:
        db.count(where=_deep(40))
    assert "32" in info.value.reason
    with pytest.raises(srvdb.InvalidFilterError) as info:
        db.count(where=[1])
    assert info.value.part == "where"
    assert db.count(where=_deep(20)) == 0  # within the limit


def test_invalid_filter_error_is_exported():
    assert issubclass(srvdb.InvalidFilterError, srvdb.InvalidInputError)
    assert issubclass(srvdb.InvalidFilterError, ValueError)
    assert "InvalidFilterError" in srvdb.__all__
    assert srvdb.InvalidFilterError.__module__ == "srvdb"


# ---------------------------------------------------------------------------------------------
# Filters with delete, update and upsert


def test_delete_by_filter(filtered_db):
    rng = random.Random(7)
    db = filtered_db
    model = fill(db, rng)
    where = {"i": {"$gte": 2}}
    doomed = model.matching(where, None, db.ids())
    assert doomed
    assert db.delete(where=where) == len(doomed)
    for id_ in doomed:
        model.remove(id_)
        assert id_ not in db
    assert len(db) == len(model.vectors)
    assert db.count(where=where) == 0
    for round_ in range(100):
        where_, document = random_filter(rng)
        check_filter(db, model, rng, where_, document, f"after delete, round {round_}")


def test_delete_ids_with_a_filter_deletes_only_matching_ids(filtered_db):
    db = filtered_db
    db.add(["a", "b", "c"], np.ones((3, DIM), np.float32), metadatas=[{"k": 1}, {"k": 2}, {"k": 1}])
    assert db.delete(["a", "b"], where={"k": 1}) == 1
    assert db.ids() == ["b", "c"]
    with pytest.raises(srvdb.NotFoundError):
        db.delete(["b", "nope"], where={"k": 2})
    assert db.ids() == ["b", "c"]  # an unknown id deletes nothing


def test_delete_needs_ids_or_a_filter(filtered_db):
    db = filtered_db
    db.add(["a", "b"], np.ones((2, DIM), np.float32))
    with pytest.raises(srvdb.InvalidInputError, match="where=\\{\\}"):
        db.delete()
    assert len(db) == 2
    assert db.delete(where={}) == 2
    assert len(db) == 0


def test_delete_by_document_filter(filtered_db):
    db = filtered_db
    db.add(["a", "b", "c"], np.ones((3, DIM), np.float32), documents=["keep", "drop me", "keep too"])
    assert db.delete(where_document={"$contains": "drop"}) == 1
    assert db.ids() == ["a", "c"]


def test_update_metadata_changes_what_filters_see(filtered_db):
    db = filtered_db
    vectors = np.asarray(np.random.default_rng(3).normal(size=(3, DIM)), dtype=np.float32)
    db.add(["a", "b", "c"], vectors, metadatas=[{"k": 1}, {"k": 1}, {"k": 2}], documents=["x", "y", "z"])
    db.update(["b"], metadatas=[{"k": 2}])
    assert [r.id for r in db.records(where={"k": 2})] == ["b", "c"]
    record = db["b"]
    np.testing.assert_array_equal(record.vector, vectors[1])  # the vector is untouched
    assert record.document == "y"  # and so is the document
    hits = db.search(vectors[0], 10, where={"k": 1})
    assert [h[0] for h in hits] == ["a"]
    db.update("a", documents=["now with rust"])
    assert db.count(where_document={"$contains": "rust"}) == 1
    assert db["a"].metadata == {"k": 1}
    db.update(["c"], metadatas=[None])
    assert db["c"].metadata is None
    assert db.count(where={"k": {"$ne": 2}}) == 2  # c has no metadata now: $ne matches
    new = np.ones((1, DIM), np.float32)
    db.update(["c"], embeddings=new)
    np.testing.assert_allclose(db["c"].vector, new[0])


def test_update_unknown_id_changes_nothing(filtered_db):
    db = filtered_db
    db.add(["a"], np.ones((1, DIM), np.float32), metadatas=[{"k": 1}])
    with pytest.raises(srvdb.NotFoundError):
        db.update(["a", "nope"], metadatas=[{"k": 2}, {"k": 3}])
    assert db["a"].metadata == {"k": 1}
    with pytest.raises(srvdb.InvalidInputError):
        db.update(["a"], metadatas=[{"k": 2}, {"k": 3}])  # two entries for one id
    with pytest.raises(srvdb.DimensionMismatchError):
        db.update(["a"], embeddings=np.ones((1, DIM + 1), np.float32))
    assert db["a"].metadata == {"k": 1}


def test_upsert_changes_what_filters_see(filtered_db):
    rng = random.Random(11)
    db = filtered_db
    model = fill(db, rng, n=80)
    ids = rng.sample(sorted(model.vectors), 20)
    vectors = np.asarray(np.random.default_rng(5).normal(size=(20, DIM)), dtype=np.float32)
    metas = [random_metadata(rng) for _ in ids]
    db.upsert(ids, vectors, metadatas=metas)
    for i, id_ in enumerate(ids):
        model.put(id_, vectors[i], metas[i], None)
    for round_ in range(200):
        where, document = random_filter(rng)
        check_filter(db, model, rng, where, document, f"after upsert, round {round_}")


# ---------------------------------------------------------------------------------------------
# Field indexes


def test_field_indexes_give_the_same_answers_and_persist(backend, tmp_path):
    rng = random.Random(5)
    path = tmp_path / "db"
    db = srvdb.open(path, dim=DIM, backend=backend)
    try:
        db.create_field_index("s")
        model = fill(db, rng)
        db.create_field_index("nested.x")
        db.create_field_index("s")  # again: no-op
        assert db.field_indexes() == ["nested.x", "s"]
        fields = [{"s": rng.choice(STRINGS)} for _ in range(10)] + [{"nested.x": {"$in": [0, 2]}}]
        for where in fields:
            check_filter(db, model, rng, where, None, f"indexed {where}")
        db.close()
        db = srvdb.open(path, backend=backend)
        assert db.field_indexes() == ["nested.x", "s"]
        doomed = model.matching({"s": "a"}, None, db.ids())
        db.delete(doomed)
        for id_ in doomed:
            model.remove(id_)
        db.compact()
        for where in fields + [{"s": "a"}]:
            check_filter(db, model, rng, where, None, f"after compaction {where}")
        assert db.drop_field_index("s") is True
        assert db.drop_field_index("s") is False
        assert db.field_indexes() == ["nested.x"]
        check_filter(db, model, rng, {"s": "b"}, None, "after drop")
    finally:
        db.close()


def test_filters_after_reopen_and_compaction(backend, tmp_path):
    rng = random.Random(9)
    path = tmp_path / "db"
    db = srvdb.open(path, dim=DIM, backend=backend)
    try:
        db.count(where={})
        model = fill(db, rng)
        db.update(sorted(model.vectors)[:10], metadatas=[{"s": "updated"}] * 10)
        for id_ in sorted(model.vectors)[:10]:
            model.meta[id_] = {"s": "updated"}
        db.close()
        db = srvdb.open(path, backend=backend)
        assert db.count(where={"s": "updated"}) == 10
        doomed = rng.sample(sorted(model.vectors), 40)
        db.delete(doomed)
        for id_ in doomed:
            model.remove(id_)
        db.compact()
        for round_ in range(150):
            where, document = random_filter(rng)
            check_filter(db, model, rng, where, document, f"after compaction, round {round_}")
    finally:
        db.close()


def test_indexes_and_filters_after_a_crash(backend, tmp_path):
    """A process that dies after a commit and more uncommitted writes: reopened, the database
    has the committed records and metadata, its field index included."""
    child = f"""
        import os, random, srvdb
        from test_filters import DIM, fill
        db = srvdb.open({str(tmp_path / "db")!r}, dim=DIM, backend={backend!r})
        db.create_field_index("s")
        rng = random.Random(21)
        model = fill(db, rng, n=120, prefix="p")
        db.update(["p0000", "p0001"], metadatas=[{{"s": "committed"}}] * 2)
        db.persist()
        db.update(["p0002", "p0003"], metadatas=[{{"s": "lost"}}] * 2)
        fill(db, rng, n=30, prefix="q")
        db.delete(where={{"s": "a"}})
        os._exit(0)  # no close, no commit
    """
    from conftest import run_python

    run_python(child, cwd=Path(__file__).parent, env={"SRVDB_AUTO_FLUSH_THRESHOLD": "0"})
    model = Model()
    ids, vectors, metas, docs = make_rows(random.Random(21), 120, "p")
    for i in range(len(ids)):
        model.put(ids[i], vectors[i], metas[i], docs[i])
    model.meta["p0000"] = model.meta["p0001"] = {"s": "committed"}
    rng = random.Random(22)
    with srvdb.open(tmp_path / "db", backend=backend) as db:
        assert db.field_indexes() == ["s"]
        assert db.ids() == ids
        assert db.count(where={"s": "lost"}) == 0
        for where in [{"s": "committed"}, {"s": "a"}, {"s": {"$in": ["b", "doc"]}}, {"s": {"$ne": "a"}}]:
            check_filter(db, model, rng, where, None, f"after crash {where}")
        for round_ in range(100):
            where, document = random_filter(rng)
            check_filter(db, model, rng, where, document, f"after crash, round {round_}")


# ---------------------------------------------------------------------------------------------
# In-memory databases


def test_memory_database_filters_and_forgets():
    rng = random.Random(13)
    db = srvdb.open(":memory:", dim=DIM)
    model = fill(db, rng, n=60)
    for round_ in range(50):
        where, document = random_filter(rng)
        check_filter(db, model, rng, where, document, f"memory round {round_}")
    db.close()
    again = srvdb.open(":memory:", dim=DIM)
    assert len(again) == 0  # nothing was kept
    again.close()


def test_memory_database_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with srvdb.open(":memory:") as db:
        db.add(["a"], [[1.0, 2.0]])
        db.persist()
        assert db.search([1.0, 2.0], 1)[0][0] == "a"
    assert list(tmp_path.iterdir()) == []


def test_memory_database_is_native_only():
    with pytest.raises(srvdb.InvalidInputError, match="memory"):
        srvdb.open(":memory:", backend="wasm")


# ---------------------------------------------------------------------------------------------
# Collections


def test_client_collections(tmp_path):
    client = srvdb.Client(tmp_path / "store")
    assert client.list_collections() == []
    docs = client.create_collection("docs", dim=DIM, metric="l2")
    docs.add(["a"], np.ones((1, DIM), np.float32), metadatas=[{"k": 1}])
    notes = client.get_or_create_collection("notes", dim=3)
    assert client.list_collections() == ["docs", "notes"]
    assert client.get_collection("docs") is docs
    assert client.get_or_create_collection("docs") is docs
    with pytest.raises(srvdb.InvalidInputError, match="exists"):
        client.create_collection("docs")
    with pytest.raises(srvdb.NotFoundError) as info:
        client.get_collection("nope")
    assert isinstance(info.value, KeyError) and info.value.id == "nope"
    assert (tmp_path / "store" / "docs").is_dir()
    client.delete_collection("notes")
    assert notes.closed
    assert not (tmp_path / "store" / "notes").exists()
    assert client.list_collections() == ["docs"]
    with pytest.raises(srvdb.NotFoundError):
        client.delete_collection("notes")
    client.close()
    assert docs.closed
    # A new client sees what the last one stored.
    with srvdb.Client(tmp_path / "store") as again:
        docs = again.get_collection("docs")
        assert docs.metric == "l2" and docs.ids() == ["a"]
        assert docs["a"].metadata == {"k": 1}


def test_collection_is_a_database_in_its_subdirectory(tmp_path):
    with srvdb.Client(tmp_path) as client:
        client.create_collection("c1", dim=2).add(["x"], [[1.0, 0.0]])
    with srvdb.open(tmp_path / "c1") as db:
        assert db.ids() == ["x"]


def test_delete_collection_refuses_a_collection_open_elsewhere(tmp_path):
    with srvdb.Client(tmp_path) as client:
        client.create_collection("c", dim=2)
        client.close()
        other = srvdb.open(tmp_path / "c")
        try:
            with pytest.raises(srvdb.LockedError):
                client.delete_collection("c")
            assert (tmp_path / "c").is_dir()
        finally:
            other.close()
        client.delete_collection("c")
        assert client.list_collections() == []


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "a\\b", "../x", "/abs", "a\0b", ".hidden", "x" * 129, "sp ace", 7, None]
)
def test_collection_names_are_validated(tmp_path, name):
    client = srvdb.Client(tmp_path)
    for call in (client.create_collection, client.get_collection, client.get_or_create_collection,
                 client.delete_collection):
        with pytest.raises(srvdb.InvalidInputError):
            call(name)
    assert list(tmp_path.iterdir()) == []


def test_collection_names_accepted(tmp_path):
    names = ["a", "A-b_c.d", "x" * 128, "0"]
    with srvdb.Client(tmp_path) as client:
        for name in names:
            client.create_collection(name)
        assert client.list_collections() == sorted(names)


def test_memory_client():
    client = srvdb.Client(":memory:")
    c = client.create_collection("c", dim=2)
    c.add(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], metadatas=[{"t": "x"}, {"t": "y"}])
    assert client.list_collections() == ["c"]
    assert client.get_collection("c") is c
    assert [h[0] for h in c.search([1.0, 0.0], 5, where={"t": "y"})] == ["b"]
    client.delete_collection("c")
    assert client.list_collections() == []
    with pytest.raises(srvdb.NotFoundError):
        client.get_collection("c")
    with pytest.raises(srvdb.InvalidInputError):
        srvdb.Client(":memory:", backend="wasm")


def test_a_directory_that_is_not_a_database_is_no_collection(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_text("x")
    with srvdb.Client(tmp_path) as client:
        client.create_collection("real", dim=2)
        assert client.list_collections() == ["real"]
        with pytest.raises(srvdb.NotFoundError):
            client.get_collection("photos")
        with pytest.raises(srvdb.NotFoundError):
            client.delete_collection("photos")
        for make in (client.create_collection, client.get_or_create_collection):
            with pytest.raises(srvdb.InvalidInputError, match="not a SrvDB collection.*holiday.jpg"):
                make("photos", dim=2)
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.jpg"]
    # An empty directory may become one.
    (tmp_path / "empty").mkdir()
    with srvdb.Client(tmp_path) as client:
        client.create_collection("empty", dim=2).add(["a"], [[1.0, 0.0]])
        assert client.list_collections() == ["empty", "real"]


def test_a_held_collection_is_checked_as_open_checks(tmp_path):
    with srvdb.Client(tmp_path) as client:
        client.create_collection("d", dim=3, metric="dot")
        assert client.get_or_create_collection("d", dim=3, metric="ip").dim == 3
        assert client.get_or_create_collection("d", dim=np.int64(3)).dim == 3
        for bad in (3.0, "3", True):
            with pytest.raises(srvdb.InvalidInputError, match="dim must be an int"):
                client.get_or_create_collection("d", dim=bad)
        with pytest.raises(srvdb.InvalidInputError, match="dimension 3, not 4"):
            client.get_or_create_collection("d", dim=4)
        with pytest.raises(srvdb.InvalidInputError, match="unknown metric"):
            client.get_or_create_collection("d", metric="bogus")
        with pytest.raises(srvdb.InvalidInputError, match="uses metric 'dot'"):
            client.get_or_create_collection("d", metric="l2")
        client.create_collection("open-dim")
        with pytest.raises(srvdb.InvalidInputError, match="without a dimension yet"):
            client.get_or_create_collection("open-dim", dim=5)


def test_an_open_refused_for_its_arguments_leaves_nothing_behind(backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(srvdb.InvalidInputError, match="path is empty"):
        srvdb.open("", dim=2, backend=backend)
    for dim in (0, 65537):
        with pytest.raises(srvdb.InvalidInputError, match="out of range"):
            srvdb.open(tmp_path / "db", dim=dim, backend=backend)
    assert list(tmp_path.iterdir()) == []


def test_client_refuses_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(srvdb.InvalidInputError, match="not a directory"):
        srvdb.Client(path)


# ---------------------------------------------------------------------------------------------
# Argument checking in the binding


def test_records_limit_and_offset_are_checked(filtered_db):
    db = filtered_db
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(srvdb.InvalidInputError):
            db.records(limit=bad)
        with pytest.raises(srvdb.InvalidInputError):
            db.records(offset=bad)


def test_records_returns_records(filtered_db):
    db = filtered_db
    db.add(["a", "b"], np.eye(2, DIM, dtype=np.float32), metadatas=[{"k": "v"}, "text"], documents=["d1", "d2"])
    records = db.records()
    assert [r.id for r in records] == ["a", "b"]
    assert records[0].metadata == {"k": "v"} and records[1].metadata == "text"
    assert records[0].document == "d1"
    np.testing.assert_array_equal(records[1].vector, np.eye(2, DIM, dtype=np.float32)[1])
    assert db.count() == len(db) == 2
    assert db.records(limit=1, offset=1)[0].id == "b"
    assert db.records(offset=5) == []


def test_search_without_filter_is_unchanged(open_db):
    db = open_db(dim=2)
    db.add(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
    assert db.search([1.0, 0.0], 1) == db.search([1.0, 0.0], 1, where=None, where_document=None)
    assert db.search_batch([[1.0, 0.0]], 1, where=None) == [db.search([1.0, 0.0], 1)]


def test_text_noise_is_not_a_filter_key():
    # The reference treats plain-text metadata as no object at all.
    assert stored_metadata("plain") is NOT_AN_OBJECT
    assert stored_metadata('{"a": 1}') == {"a": 1}
    assert not matches({"a": {"$ne": 1}}, None, NOT_AN_OBJECT, None)
    assert matches({"$not": {"a": 1}}, None, NOT_AN_OBJECT, None)
    assert matches({"a": {"$ne": 1}}, None, None, None)


# ---------------------------------------------------------------------------------------------
# Text databases

from test_text import SENTENCES  # noqa: E402


def test_text_query_with_filters(model, tmp_path):
    with srvdb.open(tmp_path / "db", embedder=model) as db:
        db.count(where={})
        ids = [f"s{i}" for i in range(len(SENTENCES))]
        metas = [{"i": i, "even": i % 2 == 0} for i in range(len(SENTENCES))]
        db.add(ids, documents=SENTENCES, metadatas=metas)
        vectors = db.embed(SENTENCES)
        where = {"even": True}
        want_ids = [id_ for id_, m in zip(ids, metas) if m["even"]]
        ref = Reference(np.stack([vectors[int(i[1:])] for i in want_ids]), want_ids, "cosine")
        k = 3
        for qi, text in enumerate(SENTENCES[:4]):
            hits = db.query(text, k, where=where)
            ref.check([(h[0], h[1]) for h in hits], vectors[qi], k, tol=1e-4, context=text)
            assert all(h[2] == SENTENCES[int(h[0][1:])] for h in hits)
        lists = db.query(SENTENCES[:2], k, where=where, where_document={"$not_contains": "zzz"})
        assert len(lists) == 2 and all(len(hits) == min(k, len(want_ids)) for hits in lists)
        assert db.query([], k, where=where) == []
        with pytest.raises(srvdb.InvalidFilterError):
            db.query("x", k, where={"$bad": 1})


def test_text_update_reembeds_documents(model, tmp_path):
    with srvdb.open(tmp_path / "db", embedder=model) as db:
        db.add(["a", "b"], documents=SENTENCES[:2], metadatas=[{"k": 1}, {"k": 2}])
        db.update(["a"], metadatas=[{"k": 3}])
        before = db["b"].vector.copy()
        db.update(["b"], metadatas=[{"k": 4}])
        np.testing.assert_array_equal(db["b"].vector, before)  # metadata only: same vector
        db.update(["a"], documents=[SENTENCES[2]])
        record = db["a"]
        assert record.document == SENTENCES[2] and record.metadata == {"k": 3}
        want = db.embed([SENTENCES[2]])[0]
        cos = float(np.dot(record.vector, want) / (np.linalg.norm(record.vector) * np.linalg.norm(want)))
        assert cos > 0.9999
        with pytest.raises(srvdb.InvalidInputError):
            db.update(["a", "b"], documents=[SENTENCES[3]])  # one document for two ids


def test_search_batch_numpy_with_a_filter(filtered_db):
    db = filtered_db
    vectors = np.asarray(np.random.default_rng(1).normal(size=(6, DIM)), dtype=np.float32)
    db.add([f"v{i}" for i in range(6)], vectors, metadatas=[{"even": i % 2 == 0} for i in range(6)])
    ids, scores = db.search_batch(vectors[:2], 5, where={"even": True}, numpy=True)
    assert ids.shape == scores.shape == (2, 3)  # 3 records match, fewer than k
    ref = Reference(vectors[[0, 2, 4]], ["v0", "v2", "v4"], "cosine")
    for qi in range(2):
        ref.check(list(zip(ids[qi], scores[qi].tolist())), vectors[qi], 5, context=f"query {qi}")


def test_stubs_name_the_new_arguments():
    """The .pyi declares the filter arguments the extension takes, with the same names."""
    import ast
    import inspect

    stub = ast.parse((Path(srvdb.__file__).parent / "_srvdb.pyi").read_text(encoding="utf-8"))
    (database,) = [n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == "Database"]
    declared: dict[str, set[str]] = {}
    for fn in database.body:
        if isinstance(fn, ast.FunctionDef):
            a = fn.args
            declared.setdefault(fn.name, set()).update(x.arg for x in a.args + a.kwonlyargs)
    for name in ["search", "search_batch", "query", "records", "count", "delete", "update",
                 "create_field_index", "drop_field_index", "field_indexes"]:
        real = set(inspect.signature(getattr(srvdb.Database, name)).parameters)
        assert real == declared[name], (name, real, declared[name])


def test_client_on_each_backend(backend, tmp_path):
    with srvdb.Client(tmp_path, backend=backend) as client:
        c = client.create_collection("c", dim=2)
        assert c.backend == backend
        c.add(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], metadatas=[{"t": "x"}, {"t": "y"}])
        assert [h[0] for h in c.search([1.0, 0.0], 5, where={"t": "y"})] == ["b"]
        client.delete_collection("c")
        assert client.list_collections() == [] and c.closed
