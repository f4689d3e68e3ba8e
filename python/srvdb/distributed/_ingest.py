"""Sharded ingest from Ray Data: :func:`ingest` writes one SrvDB database per shard from a
``ray.data.Dataset`` and records them in the manifest, written last.

How it runs: with a text column and no vectors, the dataset flows through ``map_batches`` with
an actor pool that embeds the texts with the built-in embedder (each actor loads the model
once), on any node. The batches then stream to this process (the driver, on the node that
holds ``path``), which checks them (string ids, one dimension; the engine finds NaN and
infinity), splits each by :func:`shard_of` and hands every shard its part in one ``add``.
Each shard has one writer: a database handle with its own thread, so the shards are written
in parallel and each in batch order (the database itself refuses a duplicate id). Each shard
commits once at the end (no auto-commit) and closes; then the manifest is written (atomically).
A sharded database without a manifest is not one.

Durability: the shards are opened with their syncs deferred (the extension's private
``_defer_syncs``): their creation, commit and close fsync nothing (the engine's background
flush of the rows after every 1 MiB of appends aside, which only starts the write-back early). Nothing depends on a shard
before the manifest, and a crash before it makes the next run remove the shards and start
again, so each shard is made durable once, as a whole, after it is closed (``_sync_directory``:
every file, the directory, its parent), on its writer's thread so the shards sync in parallel.
The order is: marker durable, shards written, shards durable, manifest, marker removed.

Crash safety: before creating anything, ingest writes ``.ingest-in-progress`` under ``path``
naming the shard directories it will create. A re-run that finds that marker (and no
manifest) removes exactly those directories and starts clean; it removes nothing it did not
create. The marker goes after the manifest is written.

Progress: Ray Data draws its own progress bars for the stages (``ray.data.DataContext``'s
``enable_progress_bars`` turns them off).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .._errors import DimensionMismatchError, DuplicateIdError, Error, InvalidInputError, LockedError
from ._manifest import (
    MANIFEST_NAME,
    MAX_SHARDS,
    Manifest,
    fsync_dir,
    read_manifest,
    shard_dir_name,
    shard_numbers,
    write_manifest,
)

__all__ = ["ingest", "DatabaseExistsError", "IN_PROGRESS_NAME"]

#: The marker an unfinished ingest leaves under ``path`` (JSON: the shard directories it made).
IN_PROGRESS_NAME = ".ingest-in-progress"
#: Rows per batch through ``map_batches`` unless the caller says otherwise.
DEFAULT_BATCH_SIZE = 1024
# Adds each shard may have queued: two, so a shard starts its next batch at once when it
# finishes one, instead of idling until the driver has split the next.
_QUEUED_ADDS = 2
_SHARD_DIR = re.compile(r"shard-\d{5}")
# Column names the pipeline adds to a batch (chosen not to collide with a user's).
_VECTORS = "__srvdb_vector"
_ERROR = "__srvdb_error"
_RAY_MISSING = 'srvdb.distributed.ingest needs Ray Data: pip install "ray[data]"'


class DatabaseExistsError(Error, FileExistsError):
    """``path`` already holds a sharded database (its manifest) and ``if_exists`` is
    ``"error"``: pass ``if_exists="overwrite"`` to replace it, or choose another path."""

    path: Optional[str] = None


DatabaseExistsError.__module__ = "srvdb.distributed"


def ingest(
    dataset: Any,
    path: os.PathLike | str,
    shards: int,
    *,
    id_column: str = "id",
    text_column: Optional[str] = None,
    vector_column: Optional[str] = None,
    metadata_columns: Optional[Sequence[str]] = None,
    embedder: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    metric: str = "cosine",
    if_exists: str = "error",
    concurrency: Optional[int] = None,
) -> Manifest:
    """Writes ``dataset`` (a ``ray.data.Dataset``) as a sharded SrvDB database under ``path``
    and returns its manifest.

    Each row needs a unique string id (``id_column``) and a vector (``vector_column``, a
    fixed-length list or tensor column) or a text (``text_column``) that the built-in embedder
    turns into one (``embedder``, default ``"all-MiniLM-L6-v2"``; a sentence-transformers
    folder works too, at the same path on every node). With both, the vectors are stored and
    the texts kept as the records' documents; ``embedder`` with given vectors records that
    they come from that model (so the shards answer text queries). ``metadata_columns`` are stored as each record's
    JSON metadata (none by default). Row ``id`` goes to shard ``shard_of(id, shards)``,
    directory ``path/shard-NNNNN``.

    ``if_exists``: ``"error"`` (default) raises :class:`DatabaseExistsError` when ``path``
    already has a manifest; ``"overwrite"`` first removes that database's shards and manifest
    (nothing else under ``path``). An ingest that crashed (no manifest, its
    ``.ingest-in-progress`` marker left) is cleaned up and redone either way. There is no
    append: add rows to an existing sharded database with ``srvdb.distributed.open``.

    ``concurrency``: the most embedding actors (default: the cluster's CPU count); each loads
    the model once. The shards are written by this process, one thread per shard, so ``path``
    must be on this node's disk (or a shared file system). ``batch_size`` rows go to the
    embedder, and are checked and split per shard, at a time.

    Raises :class:`srvdb.InvalidInputError` for a missing column, a non-string id, a NaN or
    infinite value or a bad argument, :class:`srvdb.DimensionMismatchError` for vectors of
    different lengths, :class:`srvdb.DuplicateIdError` naming an id found twice and
    :class:`srvdb.LockedError` while another ingest writes ``path``; on any error the shard
    directories made so far are removed and no manifest is written.
    ImportError without Ray.
    """
    try:
        import ray
        import ray.data  # noqa: F401  (fail here, not in a worker, when only ray is installed)
    except ImportError:
        raise ImportError(_RAY_MISSING) from None

    shards = _check_args(shards, batch_size, metric, if_exists, concurrency)
    if text_column is None and vector_column is None:
        raise InvalidInputError("ingest needs vector_column= (vectors given) or text_column= "
                                "(texts embedded with the built-in embedder)")
    meta_cols = list(metadata_columns or ())
    _check_columns(dataset, id_column, text_column, vector_column, meta_cols)

    embed = vector_column is None
    # Given vectors are recorded as the embedder's only when the caller names it.
    model_name, model_folder = _resolve_embedder(embedder) if embed or embedder else (None, None)

    root = Path(path)
    if not root.is_dir():
        root.mkdir(parents=True)
        fsync_dir(root.parent)
    with _exclusive(root):
        dirs = [shard_dir_name(s) for s in range(shards)]
        _prepare(root, dirs, if_exists)

        writers: list[_ShardWriter] = []
        try:
            writers = [_ShardWriter(root / d, metric, model_folder or model_name) for d in dirs]
            pipeline = dataset
            vector_key = vector_column
            if embed:
                workers = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
                pipeline = pipeline.map_batches(
                    _Embedder, batch_size=batch_size, batch_format="numpy",
                    fn_constructor_kwargs={"name": model_name, "folder": model_folder,
                                           "text_column": text_column},
                    concurrency=(1, workers))
                vector_key = _VECTORS
            columns = _Columns(id_column, vector_key, text_column, meta_cols)
            dim = _write(pipeline, batch_size, columns, writers)
            for w in writers:
                w.start_commit()
            for w in writers:
                w.finish_commit()
        except BaseException as e:
            for w in writers:
                w.close()
            _remove(root, dirs)
            cause = _srvdb_cause(e)
            if cause is not None and cause is not e:
                raise _translated(cause, id_column) from None
            if isinstance(e, DuplicateIdError):
                raise _translated(e, id_column) from None
            raise
        manifest = Manifest(shards=shards, dim=dim, metric=metric, embedder=model_name)
        write_manifest(root, manifest)
        (root / IN_PROGRESS_NAME).unlink()
        fsync_dir(root)
        return manifest


# ---------------------------------------------------------------- arguments and directory


def _check_args(shards, batch_size, metric, if_exists, concurrency) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise InvalidInputError(f"shards must be an integer in 1..={MAX_SHARDS}, got {shards!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if metric not in ("cosine", "dot", "l2"):
        raise InvalidInputError(f"metric must be 'cosine', 'dot' or 'l2', got {metric!r}")
    if if_exists not in ("error", "overwrite"):
        raise InvalidInputError(f"if_exists must be 'error' or 'overwrite', got {if_exists!r}")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise InvalidInputError(f"concurrency must be a positive integer, got {concurrency!r}")
    return shards


def _check_columns(dataset, id_column, text_column, vector_column, meta_cols) -> None:
    schema = dataset.schema()
    if schema is None:  # an empty dataset: nothing to check, nothing to write
        return
    names = list(schema.names)
    wanted = [("id_column", id_column), ("text_column", text_column),
              ("vector_column", vector_column)] + [("metadata_columns", c) for c in meta_cols]
    for arg, col in wanted:
        if col is not None and col not in names:
            raise InvalidInputError(f"{arg}={col!r} is not a column of the dataset; its columns "
                                    f"are {names}")


def _resolve_embedder(embedder: Optional[str]) -> tuple[str, Optional[str]]:
    """The name the shards and manifest record, and the model folder on this node (an
    embedding actor on a node without that folder resolves the name itself)."""
    from .. import text

    name = embedder or text.DEFAULT_MODEL
    folder = str(text.model_dir(name))  # ModelError naming the install command if missing
    return text.model_name(name), folder


def _prepare(root: Path, dirs: list[str], if_exists: str) -> None:
    """Makes ``root`` ready for a fresh ingest of ``dirs``: redoes an interrupted ingest's
    cleanup, applies ``if_exists`` to an existing database, refuses shard directories it did
    not make, then writes the in-progress marker (durably) before anything else."""
    marker = root / IN_PROGRESS_NAME
    ours = set(_marker_dirs(marker))
    existing = read_manifest(root)
    if existing is not None:
        if if_exists == "error":
            err = DatabaseExistsError(
                f"{root} already holds a sharded database ({existing.shards} shards): pass "
                "if_exists='overwrite' to replace it, or choose another path")
            err.path = str(root)
            raise err
        ours |= {shard_dir_name(s) for s in range(existing.shards)}
    strangers = sorted(p.name for p in root.iterdir()
                       if _SHARD_DIR.fullmatch(p.name) and p.name not in ours)
    if strangers:
        raise InvalidInputError(
            f"{root} holds {', '.join(strangers[:3])}{' ...' if len(strangers) > 3 else ''} "
            f"but no manifest and no {IN_PROGRESS_NAME} marker of an interrupted ingest: not "
            "made by ingest, so left alone. Remove them or choose another path")
    _write_marker(marker, sorted(ours | set(dirs)))
    if existing is not None:
        (root / MANIFEST_NAME).unlink()
        fsync_dir(root)
    if ours:  # the marker keeps naming them: a re-run skips the ones already gone
        _remove_dirs(root, sorted(ours))


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``root`` (``flock`` on the directory; released by the OS if
    this process dies), so a second ingest into the same path fails instead of taking the
    first one's in-progress marker for a crashed run's and removing its shards. Where
    ``flock`` does not exist (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err = LockedError(f"another ingest is writing {root}: wait for it to finish (or end "
                              "it), then run this one again")
            err.path = str(root)
            raise err from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _marker_dirs(marker: Path) -> list[str]:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{marker} is unreadable ({e}); it marks an interrupted ingest: "
                                "remove the shard directories and it by hand") from None
    dirs = data.get("dirs") if isinstance(data, dict) else None
    if not isinstance(dirs, list) or not all(isinstance(d, str) and _SHARD_DIR.fullmatch(d)
                                             for d in dirs):
        raise InvalidInputError(f"{marker} does not list shard directories; it marks an "
                                "interrupted ingest: remove the shard directories and it by hand")
    return dirs


def _write_marker(marker: Path, dirs: list[str]) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"dirs": dirs}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)
    fsync_dir(marker.parent)


def _remove_dirs(root: Path, dirs: list[str]) -> None:
    for d in dirs:
        shutil.rmtree(root / d, ignore_errors=True)
    fsync_dir(root)


def _remove(root: Path, dirs: list[str]) -> None:
    """Removes this ingest's shard directories, then its marker: ``root`` is as before."""
    _remove_dirs(root, dirs)
    for name in (IN_PROGRESS_NAME, IN_PROGRESS_NAME + ".tmp"):
        try:
            (root / name).unlink()
        except FileNotFoundError:
            pass
    fsync_dir(root)


# ---------------------------------------------------------------- errors


def _srvdb_cause(exc: BaseException) -> Optional[Error]:
    """The SrvDB error behind ``exc``, through Ray's wrappers (task errors, Ray Data's user
    code errors), or None."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        # Ray's RayTaskError(DuplicateIdError) is an Error too, but an unpicklable one: the
        # error itself is its `cause`.
        if isinstance(e, Error) and type(e).__module__.startswith("srvdb"):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def _translated(err: Error, id_column: str) -> Error:
    """The error to raise in the caller for ``err`` (from a worker or a writer): a duplicate id
    says which column must be deduplicated; others are raised as they are."""
    if isinstance(err, DuplicateIdError) and err.id is not None:
        new = DuplicateIdError(
            f"id {err.id!r} appears more than once in column {id_column!r}: ingest needs unique "
            "ids (deduplicate the dataset first)")
        new.__dict__.update(err.__dict__)
        return new
    return err


# ---------------------------------------------------------------- the pipeline's stages


class _Embedder:
    """Ray Data actor: loads the embedder once, then adds the vectors of each batch's texts."""

    def __init__(self, name: str, folder: Optional[str], text_column: str):
        import ray
        import srvdb

        # The embedder's matrix products run on as many threads as RAYON_NUM_THREADS says, or
        # one per core: give it the CPUs Ray assigned this actor, so the pool's actors do not
        # each start a thread per core and slow each other down (Ray sets OMP_NUM_THREADS
        # the same way; a value the user set wins).
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus and "RAYON_NUM_THREADS" not in os.environ:
            os.environ["RAYON_NUM_THREADS"] = str(max(1, int(cpus)))

        source = folder if folder is not None and Path(folder).is_dir() else name
        self._db = srvdb.open(":memory:", embedder=source)
        self._text_column = text_column

    def __call__(self, batch: dict) -> dict:
        texts = batch[self._text_column]
        rows = len(texts)
        error = b""
        try:
            bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
            if bad:
                raise InvalidInputError(f"text_column={self._text_column!r} must hold strings; "
                                        f"got {type(texts[bad[0]]).__name__} {texts[bad[0]]!r}")
            batch[_VECTORS] = self._db.embed(list(texts), progress=False)
        except Error as e:
            # Reported by _write: raised here, Ray Data would replace it by a generic "UDF
            # failed" error, losing its class and message.
            error = pickle.dumps(e)
            batch[_VECTORS] = np.zeros((rows, self._db.dim or 1), dtype=np.float32)
        batch[_ERROR] = np.array([error] * rows, dtype=object)
        return batch


@dataclass(frozen=True)
class _Columns:
    """Where each part of a record is in the pipeline's batches."""

    id: str
    vector: str
    text: Optional[str]
    metadata: list[str]


class _ShardWriter:
    """The only handle on one shard's database while ingest writes it, with its own thread:
    the shards are opened, written and committed in parallel (``open``, ``add`` and
    ``persist`` release the GIL), each in batch order."""

    def __init__(self, directory: Path, metric: str, embedder: Optional[str]):
        self._db: Any = None
        self._directory = directory
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"srvdb-{directory.name}")
        # Opening creates and fsyncs the shard's files: queued, so the shards open together
        # and while the dataset's first batches arrive. Its error comes with the first wait.
        self._queued: deque[Future] = deque([self._thread.submit(self._open, directory, metric,
                                                                 embedder)])

    def _open(self, directory: Path, metric: str, embedder: Optional[str]) -> None:
        from .. import _srvdb

        # No auto-commit: the shard commits once, at the end (a commit per add would rewrite
        # redb's id tables about once per batch; it made the ingest about twice as slow).
        # Syncs deferred: _commit makes the closed shard durable in one pass (module docs).
        self._db = _srvdb.open(directory, metric=metric, embedder=embedder, auto_commit_rows=0,
                               _defer_syncs=True)

    def add(self, ids, vectors, metadatas, documents) -> None:
        """Queues one add (see :meth:`_queue`)."""
        self._queue(self._add, ids, vectors, metadatas, documents)

    def add_rows(self, rows: np.ndarray, ids, vectors, metadatas, documents) -> None:
        """As :meth:`add`, for rows ``rows`` (positions, in order) of the batch given."""
        self._queue(self._add_rows, rows, ids, vectors, metadatas, documents)

    def _queue(self, fn, *args) -> None:
        """Queues ``fn(*args)`` on the writer thread, after waiting for all but the last one
        queued before (so at most two batches per shard wait in memory, and the shard has the
        next one ready when it finishes one); raises the error of the one waited for, if any."""
        while len(self._queued) >= _QUEUED_ADDS:
            self._queued.popleft().result()
        self._queued.append(self._thread.submit(fn, *args))

    def _add_rows(self, rows, ids, vectors, metadatas, documents) -> None:
        positions = rows.tolist()
        self._add([ids[i] for i in positions], vectors[rows],
                  [metadatas[i] for i in positions] if metadatas is not None else None,
                  [documents[i] for i in positions] if documents is not None else None)

    def _add(self, ids, vectors, metadatas, documents) -> None:
        try:
            self._db.add(ids, vectors, metadatas, documents, progress=False)
        except InvalidInputError as e:
            # The engine names the row of the batch; the caller knows its records by id.
            if e.index is None or not 0 <= e.index < len(ids):
                raise
            err = InvalidInputError(f"the record with id {ids[e.index]!r} was refused: {e}")
            err.index, err.id = e.index, ids[e.index]
            raise err from None

    def wait(self) -> None:
        """Waits for everything queued (the shard's open and adds); raises the first error."""
        while self._queued:
            self._queued.popleft().result()

    def start_commit(self) -> None:
        """Starts the shard's one commit, its close and its sync pass (after its last add); the
        shards commit and sync in parallel."""
        self.wait()
        self._queued.append(self._thread.submit(self._commit))

    def _commit(self) -> None:
        from .. import _srvdb

        self._db.persist()
        self._db.close()
        # The shard was written with its syncs deferred: now every file, the directory and
        # its parent are made durable, before ingest writes the manifest.
        _srvdb._sync_directory(self._directory)

    def finish_commit(self) -> None:
        """Waits for the commit, close and sync pass (raising their error)."""
        self.wait()
        self.close()

    def close(self) -> None:
        for pending in self._queued:
            pending.cancel()
        while self._queued:
            try:
                self._queued.popleft().result()
            except BaseException:  # the error that stopped the ingest, already raised
                pass
        self._thread.shutdown(wait=True)
        if self._db is not None and not self._db.closed:
            self._db.close()


def _write(pipeline, batch_size: int, columns: _Columns, writers: list[_ShardWriter]) -> Optional[int]:
    """Streams ``pipeline``'s batches here, checks each and hands every shard its rows; returns
    the vectors' dimension (None for an empty dataset).

    Per batch the work here is one hash per id and one stable sort of the shard numbers (so
    each shard keeps batch order); each shard's writer thread gathers its rows from the batch
    (NumPy copies them without the GIL, beside the driver's next batch) and adds them in one
    ``add``."""
    dim: Optional[int] = None
    shards = len(writers)
    for batch in _batches(pipeline, batch_size, columns.id):
        if _ERROR in batch:  # the embedding stage failed on this batch (see _Embedder)
            error = next((e for e in batch[_ERROR] if e), b"")
            if error:
                raise pickle.loads(error)
        ids = _ids(batch[columns.id], columns.id)
        if not ids:
            continue
        vectors = _vectors(batch[columns.vector], ids, columns.vector, dim)
        dim = vectors.shape[1]
        metas = None
        if columns.metadata:
            values = {c: _plain(batch[c]) for c in columns.metadata}
            metas = [{c: values[c][i] for c in columns.metadata} for i in range(len(ids))]
        docs = None
        if columns.text is not None:
            docs = [t if isinstance(t, str) else None for t in batch[columns.text]]
        if shards == 1:
            writers[0].add(ids, vectors, metas, docs)
            continue
        owner = shard_numbers(ids, shards)
        order = np.argsort(owner, kind="stable")
        ends = np.cumsum(np.bincount(owner, minlength=shards)).tolist()
        start = 0
        for shard, end in enumerate(ends):
            if end > start:
                # The shard's rows are gathered on its writer thread (NumPy copies without the
                # GIL), not here: the driver only routes.
                writers[shard].add_rows(order[start:end], ids, vectors, metas, docs)
            start = end
    return dim


def _batches(pipeline, batch_size: int, id_column: str) -> Iterator[dict]:
    """``pipeline``'s rows in batches of at most ``batch_size``: Ray's blocks as they come
    (``batch_size=None``: no re-batching into new arrays, which took half the driver's time
    on a dataset of vectors), each cut into NumPy views of ``batch_size`` rows."""
    for block in _blocks(pipeline):
        if id_column not in block:
            if not any(len(column) for column in block.values()):
                continue  # an empty block may come without the columns
            raise InvalidInputError(f"id_column={id_column!r} is not a column of the dataset's "
                                    f"batches; their columns are {sorted(block)}")
        for start in range(0, len(block[id_column]), batch_size):
            yield {name: column[start:start + batch_size] for name, column in block.items()}


def _blocks(pipeline) -> Iterator[dict]:
    """``pipeline``'s blocks as NumPy batches, in order. A materialised dataset (what
    ``from_arrow``, ``from_numpy``, ``from_items`` and ``materialize()`` return) has its
    blocks in the object store already: they are fetched directly, skipping the streaming
    executor that ``iter_batches`` starts (its start and per-batch bookkeeping were 8-15 ms
    of a 45-65 ms ingest of 20,000 rows). Any other dataset streams through ``iter_batches``."""
    bundles = _materialized_bundles(pipeline)
    if bundles is None:
        yield from pipeline.iter_batches(batch_size=None, batch_format="numpy")
        return
    import ray
    from ray.data.block import BlockAccessor

    current = next(bundles, None)
    while current is not None:
        upcoming = next(bundles, None)
        if upcoming is not None:
            # Starts pulling the next bundle's blocks to this node (nothing to do for local
            # ones) while this one is routed, as iter_batches' prefetch would.
            refs = list(upcoming.block_refs)
            if refs:
                ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)
        for block in ray.get(list(current.block_refs)):
            yield BlockAccessor.for_block(block).to_batch_format("numpy")
        current = upcoming


def _materialized_bundles(pipeline) -> Optional[Iterator[Any]]:
    """The block bundles of a materialised Ray dataset, or None for anything else (a lazy
    dataset, or a Ray without the developer API this needs: ``iter_batches`` serves them)."""
    try:
        from ray.data.dataset import MaterializedDataset
        from ray.data.block import BlockAccessor  # noqa: F401  (used by _blocks)
    except ImportError:
        return None
    if not isinstance(pipeline, MaterializedDataset):
        return None
    bundles = getattr(pipeline, "iter_internal_ref_bundles", None)
    return iter(bundles()) if callable(bundles) else None


def _ids(column, id_column: str) -> list[str]:
    ids = column.tolist()
    for i in ids:
        if not isinstance(i, str):
            raise InvalidInputError(
                f"id_column={id_column!r} must hold strings (SrvDB ids are strings); got "
                f"{type(i).__name__} {i!r}: convert the column first (e.g. with map_batches)")
    return ids


def _vectors(column, ids: list[str], vector_key: str, dim: Optional[int]) -> np.ndarray:
    """The batch's vectors as one float32 (rows, dim) array, checked for equal lengths
    (``dim``, the earlier batches' length, when known). Errors name the offending id."""
    if isinstance(column, np.ndarray) and column.dtype != object and column.ndim == 2:
        rows = column
    else:
        items = [np.asarray(v) for v in column]
        for i, v in enumerate(items):
            if v.ndim != 1:
                raise InvalidInputError(f"vector_column={vector_key!r} must hold one vector (a "
                                        f"list or 1-D array) per row; id {ids[i]!r} has shape "
                                        f"{v.shape}")
            if v.shape != items[0].shape:
                raise _dim_error(ids[i], vector_key, items[0].size, v.size)
        rows = np.stack(items) if items else np.zeros((0, dim or 0))
    if rows.dtype.kind not in "fiu":
        raise InvalidInputError(f"vector_column={vector_key!r} must hold numbers, got {rows.dtype}")
    if dim is not None and len(ids) and rows.shape[1] != dim:
        raise _dim_error(ids[0], vector_key, dim, rows.shape[1])
    # NaN and infinity are the engine's to find (on every core, in the shard's add): the
    # shard writer names the id it reports (_ShardWriter._add).
    return np.ascontiguousarray(rows, dtype=np.float32)


def _dim_error(id: str, vector_key: str, expected: int, got: int) -> DimensionMismatchError:
    err = DimensionMismatchError(
        f"the vector of id {id!r} has {got} values, others in {vector_key!r} have {expected}: "
        "every vector must have the same length")
    err.expected, err.got = expected, got
    return err


def _plain(column) -> list:
    """A batch column as plain Python values (what JSON metadata can hold)."""
    return [v.tolist() if isinstance(v, np.ndarray) else v for v in column.tolist()]
