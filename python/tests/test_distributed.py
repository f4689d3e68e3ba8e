"""Sharded search on Ray actors (`srvdb.distributed.open`).

Every sharded answer is compared with one `srvdb.open` database holding the same rows written
in the same order (ids and scores exactly equal, ties included), and both with NumPy brute
force over a model of the writes kept in this file (`reference.py`; the write order decides
ties). The data repeat some vectors exactly, in different batches, so ties cross shards.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import srvdb
import srvdb.distributed as sd

from conftest import run_python
from reference import Reference

DIM = 8
WORDS = ["alpha", "beta", "gamma", "delta"]


class Model:
    """The live records in write order (an upsert moves a record to the end, as it takes a
    new row in the engine): the independent reference's view of the database."""

    def __init__(self):
        self.rows: dict[str, tuple[np.ndarray, dict, str]] = {}

    def write(self, ids, vectors, metadatas, documents):
        for id, v, m, d in zip(ids, vectors, metadatas, documents):
            self.rows.pop(id, None)
            self.rows[id] = (np.asarray(v, dtype=np.float32), m, d)

    def delete(self, ids):
        for id in ids:
            del self.rows[id]

    def reference(self, metric, keep=lambda id, meta, doc: True) -> Reference:
        chosen = [(id, r) for id, r in self.rows.items() if keep(id, r[1], r[2])]
        base = np.array([r[0] for _, r in chosen], dtype=np.float32).reshape(len(chosen), DIM)
        return Reference(base, [id for id, _ in chosen], metric)


def batches(seed: int):
    """Writes as (mode, ids, vectors, metadatas, documents): three adds (the third repeats
    vectors of the first two exactly, so equal scores land on different shards) and an upsert
    of earlier ids."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((200, DIM)).astype(np.float32)
    out = []
    for b, (lo, hi) in enumerate([(0, 90), (90, 200)]):
        ids = [f"r{i}" for i in range(lo, hi)]
        out.append(("add", ids, base[lo:hi], None, None))
    dup_ids = [f"dup{i}" for i in range(60)]
    dup_vecs = base[rng.integers(0, 200, 60)]
    out.append(("add", dup_ids, dup_vecs, None, None))
    up_ids = [f"r{i}" for i in rng.choice(200, 30, replace=False)]
    out.append(("upsert", up_ids, rng.standard_normal((30, DIM)).astype(np.float32), None, None))
    # Metadata and documents for every write, drawn here so both databases get the same.
    full = []
    for mode, ids, vecs, _, _ in out:
        metas = [{"g": int(rng.integers(0, 5)), "w": WORDS[int(rng.integers(0, 4))]} for _ in ids]
        docs = [f"{WORDS[int(rng.integers(0, 4))]} text {id}" for id in ids]
        full.append((mode, ids, vecs, metas, docs))
    return full


def fill(sharded, single, model, seed):
    for mode, ids, vecs, metas, docs in batches(seed):
        for db in (sharded, single):
            getattr(db, mode)(ids, vecs, metas, docs)
        model.write(ids, vecs, metas, docs)
    gone = ["r1", "r2", "dup3"]
    sharded.delete(gone)
    single.delete(gone)
    model.delete(gone)


FILTERS = [
    (None, None, lambda id, m, d: True),
    ({"g": {"$lt": 2}}, None, lambda id, m, d: m["g"] < 2),
    ({"$or": [{"w": "beta"}, {"g": 4}]}, None, lambda id, m, d: m["w"] == "beta" or m["g"] == 4),
    (None, {"$contains": "gamma"}, lambda id, m, d: "gamma" in d),
    ({"g": 3}, {"$not_contains": "alpha"}, lambda id, m, d: m["g"] == 3 and "alpha" not in d),
]


@pytest.fixture(scope="module", params=[(2, "cosine"), (3, "l2"), (4, "cosine")], ids=str)
def loaded(request, ray_cluster, tmp_path_factory):
    """A sharded database and one database with the same writes, and the model of them."""
    shards, metric = request.param
    root = tmp_path_factory.mktemp(f"sharded-{shards}-{metric}")
    sharded = sd.open(root / "db", shards, dim=DIM, metric=metric)
    single = srvdb.open(root / "single", dim=DIM, metric=metric)
    model = Model()
    fill(sharded, single, model, seed=shards)
    yield sharded, single, model, metric
    sharded.close()
    single.close()


def test_search_equals_one_database_and_brute_force(loaded):
    sharded, single, model, metric = loaded
    rng = np.random.default_rng(7)
    # Queries: fresh points, and stored vectors (whose exact copies tie across shards).
    stored = np.array([r[0] for r in list(model.rows.values())[::17]])
    queries = np.vstack([rng.standard_normal((6, DIM)).astype(np.float32), stored])
    for where, where_document, keep in FILTERS:
        ref = model.reference(metric, keep)
        for k in (1, 10, 57, 400):
            got = sharded.search_batch(queries, k, where=where, where_document=where_document)
            want = single.search_batch(queries, k, where=where, where_document=where_document)
            assert got == want, (where, where_document, k)
            for q, hits in zip(queries, got):
                ref.check(hits, q, k, context=f"{where} {where_document} k={k}")
            one = sharded.search(queries[-1], k, where, where_document)
            assert one == single.search(queries[-1], k, where, where_document)
    ids, scores = sharded.search_batch(queries, 400, where={"g": 0}, numpy=True)
    want_ids, want_scores = single.search_batch(queries, 400, where={"g": 0}, numpy=True)
    assert ids.tolist() == want_ids.tolist()
    np.testing.assert_array_equal(scores, want_scores)
    # A tie across shards decides which record makes the cut at k.
    assert any(
        len({s for _, s in hits}) < len(hits) for hits in sharded.search_batch(stored, 3)
    ), "the data should hold exact ties"


def test_reads_across_shards(loaded):
    sharded, single, model, _ = loaded
    assert len(sharded) == len(single) == len(model.rows)
    assert sharded.ids() == list(model.rows)
    assert list(sharded) == list(model.rows)
    assert "r5" in sharded and "r1" not in sharded and 5 not in sharded
    for id in ["r0", "dup7", "r150"]:
        got = sharded.get(id)
        vec, meta, doc = model.rows[id]
        assert got.id == id and got.metadata == meta and got.document == doc
        np.testing.assert_array_equal(got.vector, vec)
    assert sharded.get("r1") is None and sharded.get("r1", "none") == "none"
    with pytest.raises(srvdb.NotFoundError):
        sharded["r1"]
    where = {"g": {"$gte": 3}}
    assert sharded.count(where) == sum(m["g"] >= 3 for _, m, _ in model.rows.values())
    assert sharded.count(where_document={"$contains": "delta"}) == single.count(
        where_document={"$contains": "delta"}
    )
    for limit, offset in [(None, 0), (10, 0), (7, 25), (1000, 3)]:
        got = sharded.records(where, limit=limit, offset=offset)
        want = single.records(where, limit=limit, offset=offset)
        assert [r.id for r in got] == [r.id for r in want]
        assert [r.metadata for r in got] == [r.metadata for r in want]


def test_writes_raise_what_one_database_raises_and_write_nothing(ray_cluster, tmp_path):
    sharded = sd.open(tmp_path / "db", 3, dim=4)
    single = srvdb.open(tmp_path / "single", dim=4)
    ids = [f"x{i}" for i in range(30)]
    vecs = np.random.default_rng(1).standard_normal((30, 4)).astype(np.float32)
    for db in (sharded, single):
        db.add(ids, vecs)
    bad_batches = [
        (["n1", "x7", "n2"], vecs[:3]),  # an existing id (on some shard) at index 1
        (["n1", "n2", "n1"], vecs[:3]),  # repeated within the batch
        (["n1", "n1", "x3", "x3"], vecs[:4]),  # a repeat before an existing id
        (["n1", "x3", "n2", "n2"], vecs[:4]),  # an existing id before a repeat
        (["n1", "n2"], np.ones((2, 5), np.float32)),  # wrong dimension
        (["n1", "n2"], np.array([[1, 2, 3, np.nan], [1, 2, 3, 4]], np.float32)),
        (["n1", ""], vecs[:2]),  # an empty id
        (["n1", "n2"], vecs[:1]),  # one vector for two ids
    ]
    for batch_ids, batch_vecs in bad_batches:
        with pytest.raises(srvdb.Error) as want:
            single.add(batch_ids, batch_vecs)
        with pytest.raises(srvdb.Error) as got:
            sharded.add(batch_ids, batch_vecs)
        assert type(got.value) is type(want.value), (batch_ids, got.value, want.value)
        for attr in ("index", "id", "expected", "got"):
            assert getattr(got.value, attr, None) == getattr(want.value, attr, None), (batch_ids, attr)
        assert len(sharded) == 30 and "n1" not in sharded
    # upsert repeats within a batch are refused too; an existing id is replaced.
    with pytest.raises(srvdb.DuplicateIdError):
        sharded.upsert(["x1", "x1"], vecs[:2])
    sharded.upsert(["x1", "n9"], vecs[:2])
    assert len(sharded) == 31
    np.testing.assert_array_equal(sharded.get("x1").vector, vecs[0])
    # An unknown id deletes nothing on any shard.
    with pytest.raises(srvdb.NotFoundError) as err:
        sharded.delete(["x2", "x4", "nope", "x5"])
    assert err.value.id == "nope"
    assert all(id in sharded for id in ["x2", "x4", "x5"])
    with pytest.raises(srvdb.InvalidInputError):
        sharded.delete()
    with pytest.raises(srvdb.InvalidFilterError):
        sharded.search(vecs[0], 3, where={"g": {"$bogus": 1}})
    with pytest.raises(srvdb.DimensionMismatchError):
        sharded.search(np.ones(5, np.float32), 3)
    assert sharded.delete("x2") == 1
    assert sharded.delete(where={}) == 30  # x0..x29 without x2, and n9: on every shard
    assert len(sharded) == 0
    sharded.close()
    single.close()


def test_reopen_from_the_manifest(ray_cluster, tmp_path):
    root = tmp_path / "db"
    vecs = np.random.default_rng(2).standard_normal((40, 4)).astype(np.float32)
    ids = [f"k{i}" for i in range(40)]
    with sd.open(root, 4, metric="l2") as db:
        assert db.dim is None
        db.add(ids, vecs)
        db.delete(["k0"])
        # An index on every shard; the scan options reach every shard.
        info = db.create_index(kind="hnsw", m=8)
        single = srvdb.open(":memory:", dim=4, metric="l2")
        single.add(ids, vecs)
        single.delete(["k0"])
        want = single.create_index(kind="hnsw", m=8)
        assert (info["kind"], info["m"], info["rows"]) == ("hnsw", 8, want["rows"])
        assert db.index_info() == info
        ref = Reference(vecs[1:], ids[1:], "l2")
        ref.check(db.search(vecs[7], 10, exact=True), vecs[7], 10)
        ref.check(db.search_batch(vecs[7:8], 10, ef=64)[0], vecs[7], 10)
        with pytest.raises(srvdb.InvalidInputError):
            db.search(vecs[7], 10, ef=0)
        assert db.drop_index() and db.index_info()["kind"] == "flat"
    assert sd.read_manifest(root).dim == 4
    with pytest.raises(srvdb.InvalidInputError, match="4 shards"):
        sd.open(root, 3)
    with pytest.raises(srvdb.InvalidInputError):
        sd.open(root, metric="cosine")
    with pytest.raises(srvdb.InvalidInputError, match="shards="):
        sd.open(tmp_path / "nothing")
    with pytest.raises(srvdb.DimensionMismatchError):
        sd.open(root, dim=5)
    # A shard directory gone from its node: the actor refuses to serve an empty shard.
    (root / "shard-00002").rename(tmp_path / "aside")
    with pytest.raises(sd.ShardUnavailableError, match="shard 2") as err:
        sd.open(root)
    assert err.value.shard == 2
    (tmp_path / "aside").rename(root / "shard-00002")
    # Shard directories with records and no manifest (an interrupted ingest) are not adopted.
    with srvdb.open(tmp_path / "orphan" / "shard-00001", dim=4) as stray:
        stray.add(["s"], vecs[:1])
    with pytest.raises(srvdb.InvalidInputError, match="interrupted ingest"):
        sd.open(tmp_path / "orphan", 2)
    assert sd.read_manifest(tmp_path / "orphan") is None
    (tmp_path / "ingesting").mkdir()
    (tmp_path / "ingesting" / ".ingest-in-progress").write_text("[]")
    with pytest.raises(srvdb.InvalidInputError, match="interrupted ingest"):
        sd.open(tmp_path / "ingesting", 2)
    with sd.open(root, read_only=True) as db:
        assert db.shards == 4 and db.metric == "l2" and db.dim == 4
        assert db.ids() == ids[1:]
        ref = Reference(vecs[1:], ids[1:], "l2")
        ref.check(db.search(vecs[5], 10), vecs[5], 10)
        with pytest.raises(sd.ReadOnlyError):
            db.add(["z"], vecs[:1])
        # One except clause catches a write on a reader, sharded or not.
        with pytest.raises(srvdb.ReadOnlyError):
            db.delete(ids[1:2])


def test_killed_actor_serves_again_with_every_persisted_write(ray_cluster, tmp_path):
    ray = ray_cluster
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((400, 8)).astype(np.float32)
    ids = [f"p{i}" for i in range(400)]
    with sd.open(tmp_path / "db", 2, dim=8) as db:
        db.add(ids[:200], vecs[:200])
        db.persist()
        db.add(ids[200:], vecs[200:])
        db.upsert(["p3"], vecs[399:])
        db.persist()  # acknowledged: every write above must survive
        victim = 1
        actor = db.actors[victim]
        old_pid = ray.get(actor.info.remote())["pid"]
        start = time.perf_counter()
        ray.kill(actor, no_restart=False)
        hits = db.search(vecs[10], 5)  # mid-stream: answered, by the old process or the new
        # ray.kill is asynchronous: wait until the restarted process answers.
        while ray.get(actor.info.remote())["pid"] == old_pid:
            if time.perf_counter() - start > 120:  # a hang guard, not a speed check
                pytest.fail("the killed shard actor did not restart")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        print(f"\nshard {victim} killed: a restarted actor answered after {elapsed:.2f} s")
        model = {id: v for id, v in zip(ids, vecs)}
        model["p3"] = vecs[399]
        order = [i for i in ids if i != "p3"] + ["p3"]
        ref = Reference(np.array([model[i] for i in order]), order, "cosine")
        ref.check(hits, vecs[10], 5)
        assert db.ids() == order
        assert len(db) == 400
        np.testing.assert_array_equal(db.get("p3").vector, vecs[399])
        # A write after the restart goes through (no id is applied twice).
        db.add(["after"], vecs[:1])
        assert db.count() == 401


def wait_until_dead(ray, actor):
    """ray.kill is asynchronous: returns once calls to `actor` fail."""
    deadline = time.monotonic() + 120  # a hang guard, not a speed check
    while time.monotonic() < deadline:
        try:
            ray.get(actor.info.remote())
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.01)
    pytest.fail("the killed actor kept answering")


def test_a_shard_that_cannot_answer_is_named_or_flagged(ray_cluster, tmp_path):
    ray = ray_cluster
    vecs = np.random.default_rng(4).standard_normal((120, 4)).astype(np.float32)
    ids = [f"u{i}" for i in range(120)]
    db = sd.open(tmp_path / "db", 3, dim=4)
    db.add(ids, vecs)
    dead = 2
    ray.kill(db.actors[dead], no_restart=True)
    wait_until_dead(ray, db.actors[dead])
    with pytest.raises(sd.ShardUnavailableError, match=f"shard {dead}") as err:
        db.search(vecs[0], 5)
    assert err.value.shard == dead and isinstance(err.value, srvdb.Error)
    with pytest.raises(sd.ShardError):
        db.count()
    got = db.search(vecs[0], 5, allow_partial=True)
    assert got.partial and got.missing_shards == (dead,)
    alive = [i for i, id in enumerate(ids) if sd.shard_of(id, 3) != dead]
    Reference(vecs[alive], [ids[i] for i in alive], "cosine").check(list(got), vecs[0], 5)
    batch = db.search_batch(vecs[:3], 4, allow_partial=True)
    assert batch.partial and batch.missing_shards == (dead,) and len(batch) == 3
    with pytest.raises(sd.ShardUnavailableError):  # its unpersisted writes may be lost
        db.close()
    assert db.closed


def test_complete_answer_with_allow_partial_is_not_flagged(loaded):
    sharded, single, _, _ = loaded
    q = np.ones(DIM, np.float32)
    got = sharded.search(q, 5, allow_partial=True)
    assert not got.partial and got.missing_shards == () and list(got) == single.search(q, 5)


def test_import_and_open_without_ray(tmp_path):
    out = run_python(
        f"""
        import sys
        sys.modules["ray"] = None  # `import ray` fails, as where Ray is not installed
        import srvdb, srvdb.distributed
        try:
            srvdb.distributed.open({str(tmp_path / "db")!r}, 2)
        except ImportError as e:
            print(e)
        """,
        cwd=tmp_path,
    )
    assert 'pip install "ray[data]"' in out
    assert not (tmp_path / "db").exists()


def test_text_query_equals_one_database(ray_cluster, model, tmp_path):
    single = srvdb.open(tmp_path / "single", embedder="all-MiniLM-L6-v2")
    docs = [f"{w} note {i} about {WORDS[i % 4]}" for i, w in enumerate(WORDS * 6)]
    ids = [f"t{i}" for i in range(len(docs))]
    metas = [{"i": i} for i in range(len(docs))]
    with sd.open(tmp_path / "db", 2, embedder="all-MiniLM-L6-v2") as db:
        db.add(ids, documents=docs, metadatas=metas)
        single.add(ids, documents=docs, metadatas=metas)
        assert db.dim == 384 and db.embedder == "all-MiniLM-L6-v2"
        for text in ["alpha notes", "something about delta"]:
            assert db.query(text, 5) == single.query(text, 5)
            where = {"i": {"$lt": 10}}
            assert db.query([text], 5, where=where) == single.query([text], 5, where=where)
        hits = db.query("beta", 3)
        assert all(doc == docs[ids.index(id)] for id, _, doc in hits)
    single.close()


# ---------------------------------------------------------------------------------------------
# The shard actor's class and its order log, in this process (no Ray needed)


def test_a_retried_write_is_applied_once_and_a_refused_one_leaves_the_order(tmp_path):
    from srvdb.distributed._actor import ShardActor, create_shard

    create_shard(str(tmp_path / "s"), 2, "l2", None)
    actor = ShardActor(str(tmp_path / "s"), 0, "l2")
    vecs = np.array([[0, 0], [1, 1]], np.float32)
    actor.write("add", ["a", "b"], [10, 11], vecs, None, None)
    actor.write("add", ["a", "b"], [10, 11], vecs, None, None)  # Ray's retry after a crash
    assert actor.info()["count"] == 2
    with pytest.raises(srvdb.DuplicateIdError):  # a new write (new numbers) is refused
        actor.write("add", ["b"], [12], vecs[:1], None, None)
    actor.persist()
    actor.close()
    # Reopened (as after a restart): the refused write's number is not b's.
    actor = ShardActor(str(tmp_path / "s"), 0, "l2")
    assert actor.ids() == [(10, "a"), (11, "b")] and actor.info()["max_seq"] == 12
    actor.close()


def test_records_without_order_lines_rank_first_by_position(tmp_path):
    from srvdb.distributed._actor import ShardActor
    from srvdb.distributed._order import LOG_NAME, UNLOGGED

    with srvdb.open(tmp_path / "s", dim=2) as db:  # as ingest writes a shard: no order.log
        db.add(["x", "y"], np.ones((2, 2), np.float32))
    actor = ShardActor(str(tmp_path / "s"), 0, "cosine")
    actor.write("upsert", ["x"], [0], np.ones((1, 2), np.float32), None, None)
    actor.persist()
    actor.close()
    with open(tmp_path / "s" / LOG_NAME, "a", encoding="utf-8") as f:
        f.write('[7, "y"')  # a line torn by a crash mid-append
    actor = ShardActor(str(tmp_path / "s"), 0, "cosine")
    assert actor.ids() == [(UNLOGGED, "y"), (0, "x")]
    hits = actor.search(np.ones(2, np.float32), False, 2, None, None, {}, False)[0][0]
    assert [(key, id) for _, key, id in hits] == [(UNLOGGED, "y"), (0, "x")]
    actor.close()


def test_the_order_log_is_compacted_on_persist_and_keeps_the_order(tmp_path):
    from srvdb.distributed._actor import ShardActor, create_shard
    from srvdb.distributed._order import LOG_NAME

    create_shard(str(tmp_path / "s"), 2, "cosine", None)
    actor = ShardActor(str(tmp_path / "s"), 0, "cosine")
    ids = [f"i{j}" for j in range(1100)]
    vecs = np.ones((1100, 2), np.float32)
    seq = 0
    for mode in ["add", "upsert", "upsert", "upsert"]:
        actor.write(mode, ids, list(range(seq, seq + 1100)), vecs, None, None)
        seq += 1100
    actor.write("upsert", ["i5"], [seq], vecs[:1], None, None)  # i5 moves to the end
    want = [(3300 + j, id) for j, id in enumerate(ids) if id != "i5"] + [(seq, "i5")]
    assert actor.ids() == want
    actor.persist()
    lines = (tmp_path / "s" / LOG_NAME).read_text().splitlines()
    assert len(lines) == 1100  # one per live record, from 4401
    actor.close()
    actor = ShardActor(str(tmp_path / "s"), 0, "cosine")
    assert actor.ids() == want and actor.info()["max_seq"] == seq
    actor.close()
