"""srvdb.distributed.ingest: a ray.data.Dataset written as N shard databases plus a manifest.

The references are written here: the shard of an id is BLAKE2b computed with hashlib, search
is NumPy brute force in float64 over the dataset, text vectors are the built-in embedder run in
this process. Needs Ray Data (`make python-test` installs python/requirements-distributed.txt);
without it the Ray tests skip, saying so. They run on the session's small local cluster
(conftest's `ray_cluster`).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import srvdb
import srvdb.distributed as sd
import srvdb.text

from conftest import REPO, run_python

MARKER = ".ingest-in-progress"


@pytest.fixture(scope="module")
def ray(ray_cluster):
    """The session's local Ray cluster (conftest), with Ray Data's progress bars off."""
    pytest.importorskip("ray.data", reason='Ray Data is not installed (pip install "ray[data]", '
                                           "or -r python/requirements-distributed.txt)")
    ray_cluster.data.DataContext.get_current().enable_progress_bars = False
    return ray_cluster


def blake_shard(id: str, shards: int) -> int:
    """The partition the manifest's hash names ("blake2b-64"), computed independently."""
    return int.from_bytes(hashlib.blake2b(id.encode(), digest_size=8).digest(), "little") % shards


def rows(n: int, dim: int, seed: int = 0, prefix: str = "doc") -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"{prefix}-{i}" for i in range(n)], rng.standard_normal((n, dim)).astype(np.float32)


def dataset(ray, ids, vectors, **columns):
    items = [{"id": i, "vec": v, **{k: c[n] for k, c in columns.items()}}
             for n, (i, v) in enumerate(zip(ids, vectors))]
    return ray.data.from_items(items, override_num_blocks=8)


def open_shards(root: Path, shards: int) -> list[srvdb.Database]:
    return [srvdb.open(root / f"shard-{s:05d}") for s in range(shards)]


def assert_complete(root: Path, shards: int, ids, vectors, metas=None, metric="cosine"):
    """The manifest names `shards` shards; every row is in exactly its BLAKE2b shard with its
    vector bit for bit (and metadata); the union is the dataset; no ingest marker is left."""
    manifest = sd.read_manifest(root)
    assert manifest is not None and manifest.shards == shards
    assert manifest.dim == vectors.shape[1] and manifest.metric == metric
    assert not (root / MARKER).exists()
    want = {i: n for n, i in enumerate(ids)}
    seen: set[str] = set()
    for s, db in enumerate(open_shards(root, shards)):
        with db:
            assert db.dim == vectors.shape[1] and db.metric == metric
            for rec in db.records():
                assert blake_shard(rec.id, shards) == s, rec.id
                assert rec.id not in seen
                seen.add(rec.id)
                n = want[rec.id]
                assert rec.vector.dtype == np.float32
                assert np.array_equal(rec.vector.view(np.uint32), vectors[n].view(np.uint32)), rec.id
                if metas is not None:
                    assert rec.metadata == metas[n]
    assert seen == set(ids)


def test_every_row_lands_in_its_shard_with_its_vector_and_metadata(ray, tmp_path):
    ids, vectors = rows(2000, 24)
    vectors[7] = -0.0  # sign bits must survive too
    years = [int(y) for y in np.random.default_rng(1).integers(1990, 2030, len(ids))]
    tags = [f"t{n % 5}" for n in range(len(ids))]
    ds = dataset(ray, ids, vectors, year=years, tag=tags)
    manifest = sd.ingest(ds, tmp_path / "db", 3, vector_column="vec",
                         metadata_columns=["year", "tag"], batch_size=500)
    assert (manifest.shards, manifest.dim, manifest.metric, manifest.embedder) == (3, 24, "cosine", None)
    assert sd.read_manifest(tmp_path / "db") == manifest
    assert_complete(tmp_path / "db", 3, ids, vectors,
                    metas=[{"year": y, "tag": t} for y, t in zip(years, tags)])


def test_one_shard_holds_everything(ray, tmp_path):
    ids, vectors = rows(200, 8, seed=2)
    sd.ingest(dataset(ray, ids, vectors), tmp_path / "db", 1, vector_column="vec")
    assert_complete(tmp_path / "db", 1, ids, vectors)


def test_shard_numbers_agree_with_hashlib_blake2b_for_every_id():
    """ingest hashes a batch at a time (shard_numbers); each answer must be the manifest's
    BLAKE2b-64 of that one id, or rows would land where open() never looks."""
    from srvdb.distributed._manifest import shard_numbers

    rng = np.random.default_rng(18)
    ids = ["", "é", "日本語", "a" * 1000, "\x00"] + [
        "".join(chr(int(c)) for c in rng.integers(32, 0x2FFF, int(n)))
        for n in rng.integers(1, 24, 3000)]
    for shards in (1, 2, 3, 4, 7, 4096):
        got = shard_numbers(ids, shards)
        assert got.shape == (len(ids),)
        assert got.tolist() == [blake_shard(i, shards) for i in ids], shards
    assert shard_numbers([], 3).tolist() == []


@pytest.mark.parametrize("shards", [2, 3])
def test_each_shard_holds_its_rows_in_dataset_order(ray, tmp_path, shards):
    """Batches are split by sorting on the shard; the sort must keep each shard's rows in the
    dataset's order (ties among ingested records rank by row within a shard)."""
    ids, vectors = rows(1000, 8, seed=4)
    ds = ray.data.from_items([{"id": i, "vec": v} for i, v in zip(ids, vectors)],
                             override_num_blocks=1)  # one block: the dataset's order is fixed
    sd.ingest(ds, tmp_path / "db", shards, vector_column="vec", batch_size=128)
    for s, db in enumerate(open_shards(tmp_path / "db", shards)):
        with db:
            assert [r.id for r in db.records()] == [i for i in ids if blake_shard(i, shards) == s]


def test_a_materialised_dataset_is_read_from_its_blocks_in_order(ray, tmp_path, monkeypatch):
    """A materialised dataset's blocks are fetched directly (no iter_batches): Arrow tensor
    columns over several blocks arrive whole, each shard in dataset order; the same rows as a
    lazy dataset (through iter_batches) give the same shards."""
    import pyarrow as pa
    from ray.data.dataset import MaterializedDataset
    from ray.data.extensions import ArrowTensorArray

    ids, vectors = rows(3000, 16, seed=9)
    tables = [pa.table({"id": ids[a:a + 700], "vec": ArrowTensorArray.from_numpy(vectors[a:a + 700])})
              for a in range(0, len(ids), 700)]  # five blocks, the last short
    materialised = ray.data.from_arrow(tables)
    assert isinstance(materialised, MaterializedDataset)
    with monkeypatch.context() as m:
        def refuse(*args, **kwargs):
            raise AssertionError("a materialised dataset went through iter_batches")
        m.setattr(MaterializedDataset, "iter_batches", refuse)
        sd.ingest(materialised, tmp_path / "m", 3, vector_column="vec", batch_size=256)
    assert_complete(tmp_path / "m", 3, ids, vectors)
    for s, db in enumerate(open_shards(tmp_path / "m", 3)):
        with db:
            assert [r.id for r in db.records()] == [i for i in ids if blake_shard(i, 3) == s]

    lazy = materialised.map_batches(lambda b: b, batch_format="pyarrow")
    assert not isinstance(lazy, MaterializedDataset)
    sd.ingest(lazy, tmp_path / "l", 3, vector_column="vec", batch_size=256)
    assert_complete(tmp_path / "l", 3, ids, vectors)


def reference_top(vectors: np.ndarray, q: np.ndarray, k: int, metric: str) -> list[int]:
    v, q = vectors.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        score = -(v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
    elif metric == "dot":
        score = -(v @ q)
    else:
        score = ((v - q) ** 2).sum(1)
    return list(np.argsort(score, kind="stable")[:k])


@pytest.mark.parametrize("metric,shards", [("cosine", 2), ("l2", 4), ("dot", 3)])
def test_search_over_the_shards_merged_equals_brute_force(ray, tmp_path, metric, shards):
    ids, vectors = rows(2000, 32, seed=3)
    sd.ingest(dataset(ray, ids, vectors), tmp_path / "db", shards, vector_column="vec",
              metric=metric)
    queries = np.random.default_rng(4).standard_normal((20, 32)).astype(np.float32)
    k = 10
    dbs = open_shards(tmp_path / "db", shards)
    try:
        for q in queries:
            hits = [h for db in dbs for h in db.search(q, k)]
            # Each shard's exact top k, merged: the best k overall (l2: lowest distance first).
            hits.sort(key=lambda h: h[1], reverse=metric != "l2")
            assert [h[0] for h in hits[:k]] == [ids[i] for i in reference_top(vectors, q, k, metric)]
    finally:
        for db in dbs:
            db.close()


@pytest.mark.parametrize("shards", [2, 4])
def test_srvdb_distributed_open_serves_what_ingest_wrote(ray, tmp_path, shards):
    ids, vectors = rows(1200, 16, seed=9)
    years = [n % 4 for n in range(len(ids))]
    sd.ingest(dataset(ray, ids, vectors, year=years), tmp_path / "db", shards,
              vector_column="vec", metadata_columns=["year"])
    queries = np.random.default_rng(10).standard_normal((8, 16)).astype(np.float32)
    with sd.open(tmp_path / "db") as db:
        assert (db.shards, db.dim, len(db)) == (shards, 16, len(ids))
        assert np.array_equal(db["doc-17"].vector, vectors[17]) and db["doc-17"].metadata == {"year": 1}
        for q, hits in zip(queries, db.search_batch(queries, 10)):
            assert [h[0] for h in hits] == [ids[i] for i in reference_top(vectors, q, 10, "cosine")]
        even = [i for i, y in enumerate(years) if y == 2]
        hits = db.search(queries[0], 5, where={"year": 2})
        top = reference_top(vectors[even], queries[0], 5, "cosine")
        assert [h[0] for h in hits] == [ids[even[i]] for i in top]


def test_text_column_is_embedded_like_the_builtin_embedder_in_process(ray, tmp_path, model):
    reference = json.loads((REPO / "tests/data/text_reference.json").read_text(encoding="utf-8"))
    texts = [s["text"] for s in reference["sentences"]]
    ids = [f"s{i}" for i in range(len(texts))]
    ds = ray.data.from_items([{"id": i, "text": t, "n": n} for n, (i, t) in enumerate(zip(ids, texts))],
                             override_num_blocks=4)
    manifest = sd.ingest(ds, tmp_path / "db", 2, text_column="text", metadata_columns=["n"],
                         embedder=model, batch_size=8, concurrency=1)
    assert manifest.embedder == "all-MiniLM-L6-v2" and manifest.dim == reference["dimension"]
    with srvdb.open(":memory:", embedder=model) as local:
        expected = local.embed(texts).astype(np.float64)
    seen = set()
    for s, db in enumerate(open_shards(tmp_path / "db", 2)):
        with db:
            assert db.embedder == "all-MiniLM-L6-v2"
            for rec in db.records():
                n = ids.index(rec.id)
                assert blake_shard(rec.id, 2) == s
                assert rec.document == texts[n] and rec.metadata == {"n": n}
                v = rec.vector.astype(np.float64)
                cos = v @ expected[n] / (np.linalg.norm(v) * np.linalg.norm(expected[n]))
                assert cos >= 0.9999, (rec.id, cos)
                seen.add(rec.id)
    assert seen == set(ids)


def shard_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("shard-"))


def test_a_failing_map_leaves_nothing_and_a_rerun_is_complete(ray, tmp_path):
    ids, vectors = rows(1500, 16, seed=5)
    root = tmp_path / "db"
    root.mkdir()
    (root / "notes.txt").write_text("the user's")

    def explode(batch):
        if "doc-1200" in set(batch["id"].tolist()):
            raise RuntimeError("upstream failure")
        return batch

    failing = dataset(ray, ids, vectors).map_batches(explode, batch_format="numpy")
    with pytest.raises(Exception, match="upstream failure"):
        sd.ingest(failing, root, 3, vector_column="vec", batch_size=100)
    assert sd.read_manifest(root) is None
    assert shard_dirs(root) == [] and not (root / MARKER).exists()
    sd.ingest(dataset(ray, ids, vectors), root, 3, vector_column="vec")
    assert_complete(root, 3, ids, vectors)
    assert (root / "notes.txt").read_text() == "the user's"


def wait_unlocked(directory: Path, timeout: float = 60.0) -> None:
    """Waits until no process holds `directory`'s database open (a killed driver's writer
    actors are ended by Ray shortly after it dies)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            srvdb.open(directory).close()
            return
        except srvdb.LockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_killed_ingest_is_redone_cleanly_by_a_rerun(ray, tmp_path):
    """A driver killed midway (SIGKILL) leaves the marker and partial shards, no manifest; a
    re-run (here with fewer shards) removes exactly what it made and writes a complete
    database. The child joins this test's cluster."""
    root = tmp_path / "db"
    root.mkdir()
    (root / "shard-notes").mkdir()  # a user's directory, near the pattern but not in it
    ids, vectors = rows(2000, 16, seed=6)
    np.save(tmp_path / "vectors.npy", vectors)
    child = textwrap.dedent(f"""
        import time, numpy as np, ray, srvdb.distributed as sd
        ray.init(address={ray.get_runtime_context().gcs_address!r}, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        vectors = np.load({str(tmp_path / "vectors.npy")!r})
        items = [{{"id": f"doc-{{i}}", "vec": v}} for i, v in enumerate(vectors)]
        def slow(batch):
            if int(batch["id"][0].split("-")[1]) >= 400:
                time.sleep(600)  # killed here, after the first batches were written
            return batch
        ds = ray.data.from_items(items, override_num_blocks=20).map_batches(slow, batch_size=100)
        sd.ingest(ds, {str(root)!r}, 3, vector_column="vec", batch_size=100)
        print("finished")
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # Killed once some rows have reached a shard's files (the first batches are in).
        while not any((root / d).is_dir() and any((root / d).iterdir())
                      for d in ("shard-00000", "shard-00001", "shard-00002")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child wrote no shard in 120 s"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (root / MARKER).exists() and sd.read_manifest(root) is None
    for d in shard_dirs(root):
        if d != "shard-notes":
            wait_unlocked(root / d)
    sd.ingest(dataset(ray, ids, vectors), root, 2, vector_column="vec")
    assert_complete(root, 2, ids, vectors)
    assert shard_dirs(root) == ["shard-00000", "shard-00001", "shard-notes"]


def test_an_existing_database_is_refused_unless_overwritten(ray, tmp_path):
    root = tmp_path / "db"
    ids, vectors = rows(300, 8, seed=7)
    sd.ingest(dataset(ray, ids, vectors), root, 3, vector_column="vec")
    with pytest.raises(FileExistsError, match="if_exists='overwrite'") as err:
        sd.ingest(dataset(ray, ids, vectors), root, 3, vector_column="vec")
    assert isinstance(err.value, srvdb.Error)
    assert_complete(root, 3, ids, vectors)
    new_ids, new_vectors = rows(100, 12, seed=8, prefix="new")
    sd.ingest(dataset(ray, new_ids, new_vectors), root, 2, vector_column="vec", if_exists="overwrite")
    assert_complete(root, 2, new_ids, new_vectors)
    assert shard_dirs(root) == ["shard-00000", "shard-00001"]


def test_shard_directories_it_did_not_make_are_left_alone(ray, tmp_path):
    root = tmp_path / "db"
    (root / "shard-00001").mkdir(parents=True)
    (root / "shard-00001" / "mine").write_text("x")
    ids, vectors = rows(50, 4)
    with pytest.raises(srvdb.InvalidInputError, match="not made by ingest"):
        sd.ingest(dataset(ray, ids, vectors), root, 2, vector_column="vec")
    assert (root / "shard-00001" / "mine").read_text() == "x"
    assert not (root / MARKER).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="the ingest lock is flock (POSIX)")
def test_a_second_ingest_into_the_same_path_is_refused_while_one_runs(ray, tmp_path):
    """A running ingest holds flock on the directory; another must not take its marker for a
    crashed run's and remove its shards."""
    import fcntl

    root = tmp_path / "db"
    root.mkdir()
    (root / MARKER).write_text(json.dumps({"dirs": ["shard-00000"]}))
    (root / "shard-00000").mkdir()
    (root / "shard-00000" / "busy").write_text("being written")
    fd = os.open(root, os.O_RDONLY)  # stands for the running ingest
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        ids, vectors = rows(20, 4)
        with pytest.raises(srvdb.LockedError, match="another ingest is writing"):
            sd.ingest(dataset(ray, ids, vectors), root, 2, vector_column="vec")
        assert (root / "shard-00000" / "busy").read_text() == "being written"
    finally:
        os.close(fd)


def test_texts_with_given_vectors_are_stored_as_documents(ray, tmp_path):
    ids, vectors = rows(60, 8, seed=11)
    texts = [f"text {n}" for n in range(len(ids))]
    sd.ingest(dataset(ray, ids, vectors, body=texts), tmp_path / "db", 2, vector_column="vec",
              text_column="body")
    assert_complete(tmp_path / "db", 2, ids, vectors)
    assert sd.read_manifest(tmp_path / "db").embedder is None
    for db in open_shards(tmp_path / "db", 2):
        with db:
            assert db.embedder is None
            assert all(r.document == texts[ids.index(r.id)] for r in db.records())


def assert_untouched(root: Path):
    assert sd.read_manifest(root) is None and not (root / MARKER).exists()
    assert not root.exists() or shard_dirs(root) == []


@pytest.mark.parametrize("shards", [0, -1, 4097, 2.0, "2", True, None])
def test_a_bad_shard_count_is_an_input_error(ray, tmp_path, shards):
    ids, vectors = rows(10, 4)
    with pytest.raises(srvdb.InvalidInputError, match="shards must be an integer"):
        sd.ingest(dataset(ray, ids, vectors), tmp_path / "db", shards, vector_column="vec")
    assert_untouched(tmp_path / "db")


@pytest.mark.parametrize("kwargs,match", [
    ({"vector_column": "embedding"}, "vector_column='embedding' is not a column"),
    ({"vector_column": "vec", "id_column": "key"}, "id_column='key' is not a column"),
    ({"vector_column": "vec", "metadata_columns": ["year"]}, "metadata_columns='year'"),
    ({"text_column": "body"}, "text_column='body' is not a column"),
    ({}, "needs vector_column= .* or text_column="),
    ({"vector_column": "vec", "metric": "manhattan"}, "metric must be"),
    ({"vector_column": "vec", "if_exists": "append"}, "if_exists must be"),
    ({"vector_column": "vec", "batch_size": 0}, "batch_size must be"),
])
def test_bad_arguments_are_input_errors_naming_the_argument(ray, tmp_path, kwargs, match):
    ids, vectors = rows(10, 4)
    with pytest.raises(srvdb.InvalidInputError, match=match):
        sd.ingest(dataset(ray, ids, vectors), tmp_path / "db", 2, **kwargs)
    assert_untouched(tmp_path / "db")


def test_a_duplicate_id_anywhere_in_the_dataset_is_named(ray, tmp_path):
    ids, vectors = rows(1000, 8)
    ids[900] = ids[3]  # far apart: different batches, same shard
    with pytest.raises(srvdb.DuplicateIdError, match="'doc-3' appears more than once") as err:
        sd.ingest(dataset(ray, ids, vectors), tmp_path / "db", 3, vector_column="vec",
                  batch_size=100)
    assert err.value.id == "doc-3"
    assert_untouched(tmp_path / "db")


def test_nan_is_an_input_error_naming_the_id(ray, tmp_path):
    ids, vectors = rows(500, 8)
    vectors[321, 5] = np.nan
    with pytest.raises(srvdb.InvalidInputError, match="id 'doc-321' was refused: .*is NaN") as err:
        sd.ingest(dataset(ray, ids, vectors), tmp_path / "db", 2, vector_column="vec")
    assert err.value.id == "doc-321"
    assert_untouched(tmp_path / "db")


def test_vectors_of_mixed_dimension_are_an_error_naming_the_id(ray, tmp_path):
    ids, vectors = rows(400, 8)
    items = [{"id": i, "vec": v if n != 250 else v[:6]} for n, (i, v) in enumerate(zip(ids, vectors))]
    ds = ray.data.from_items(items, override_num_blocks=4)
    with pytest.raises(srvdb.DimensionMismatchError, match="'doc-250' has 6 values"):
        sd.ingest(ds, tmp_path / "db", 2, vector_column="vec")
    assert_untouched(tmp_path / "db")


def test_a_number_where_a_vector_belongs_is_an_input_error(ray, tmp_path):
    ds = ray.data.from_items([{"id": f"r{n}", "vec": float(n)} for n in range(20)])
    with pytest.raises(srvdb.InvalidInputError, match="one vector .* per row; id 'r0'"):
        sd.ingest(ds, tmp_path / "db", 2, vector_column="vec")
    assert_untouched(tmp_path / "db")


def test_integer_ids_are_an_input_error(ray, tmp_path):
    _, vectors = rows(20, 4)
    ds = ray.data.from_items([{"id": n, "vec": v} for n, v in enumerate(vectors)])
    with pytest.raises(srvdb.InvalidInputError, match="must hold strings"):
        sd.ingest(ds, tmp_path / "db", 2, vector_column="vec")
    assert_untouched(tmp_path / "db")


def test_without_ray_import_works_and_ingest_says_how_to_install(tmp_path):
    out = run_python(f"""
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        import srvdb.distributed as sd
        try:
            sd.ingest(object(), {str(tmp_path / "db")!r}, 2, vector_column="vec")
        except ImportError as e:
            print(e)
    """, cwd=tmp_path)
    assert 'pip install "ray[data]"' in out
    assert not (tmp_path / "db").exists()


def test_blocks_are_cut_into_batches_of_at_most_batch_size_in_order():
    """ingest takes Ray's blocks as they come (no re-batching) and cuts them itself: every row
    once, in order, no batch over batch_size; a block without the id column is an error."""
    from srvdb.distributed._ingest import _batches

    class Blocks:
        def __init__(self, blocks):
            self.blocks = blocks

        def iter_batches(self, batch_size, batch_format):
            assert batch_size is None and batch_format == "numpy"
            return iter(self.blocks)

    sizes = [5000, 0, 2500, 1, 2048]
    start, blocks = 0, []
    for n in sizes:
        blocks.append({"id": np.array([f"r{i}" for i in range(start, start + n)], dtype=object),
                       "vec": np.arange(start, start + n, dtype=np.float32)[:, None]})
        start += n
    blocks.insert(1, {})  # an empty block without columns
    got = list(_batches(Blocks(blocks), 2048, "id"))
    assert [len(b["id"]) for b in got] == [2048, 2048, 904, 2048, 452, 1, 2048]
    assert [i for b in got for i in b["id"]] == [f"r{i}" for i in range(start)]
    assert np.array_equal(np.concatenate([b["vec"][:, 0] for b in got]), np.arange(start))
    with pytest.raises(srvdb.InvalidInputError, match="id_column='id' is not a column"):
        list(_batches(Blocks([{"key": np.array(["a"], dtype=object)}]), 10, "id"))
