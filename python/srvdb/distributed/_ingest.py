"""Sharded ingest from Ray Data: :func:`ingest` writes one SrvDB database per shard from a
``ray.data.Dataset`` and records them in the manifest, written last.

How it runs: the dataset flows through ``map_batches``. With a text column and no vectors, an
actor pool embeds the texts with the built-in embedder (each actor loads the model once).
A routing stage then splits every batch by :func:`shard_of` and sends each shard its part in
one call to that shard's writer actor. A writer is the only handle on its shard's directory,
adds what it receives (the database checks dimensions, NaN and duplicate ids) and commits once
at the end. When every writer has committed, the manifest is written (atomically); a sharded
database without a manifest is not one.

Crash safety: before creating anything, ingest writes ``.ingest-in-progress`` under ``path``
naming the shard directories it will create. A re-run that finds that marker (and no
manifest) removes exactly those directories and starts clean; it removes nothing it did not
create. The marker goes after the manifest is written.

Progress: Ray Data draws its own progress bars for the stages (``ray.data.DataContext``'s
``enable_progress_bars`` turns them off).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .._errors import DimensionMismatchError, DuplicateIdError, Error, InvalidInputError
from ._manifest import (
    MANIFEST_NAME,
    MAX_SHARDS,
    Manifest,
    fsync_dir,
    partition,
    read_manifest,
    shard_dir_name,
    write_manifest,
)

__all__ = ["ingest", "DatabaseExistsError", "IN_PROGRESS_NAME"]

#: The marker an unfinished ingest leaves under ``path`` (JSON: the shard directories it made).
IN_PROGRESS_NAME = ".ingest-in-progress"
#: Rows per batch through ``map_batches`` unless the caller says otherwise.
DEFAULT_BATCH_SIZE = 1024
_SHARD_DIR = re.compile(r"shard-\d{5}")
# Column names the pipeline adds to a batch (chosen not to collide with a user's).
_VECTORS = "__srvdb_vector"
_ROWS = "__srvdb_rows"
_ERROR = "__srvdb_error"
_RAY_MISSING = 'srvdb.distributed.ingest needs Ray Data: pip install "ray[data]"'


class DatabaseExistsError(Error, FileExistsError):
    """``path`` already holds a sharded database (its manifest) and ``if_exists`` is
    ``"error"``: pass ``if_exists="overwrite"`` to replace it, or choose another path."""

    path: Optional[str] = None


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
    the texts kept as the records' documents. ``metadata_columns`` are stored as each record's
    JSON metadata (none by default). Row ``id`` goes to shard ``shard_of(id, shards)``,
    directory ``path/shard-NNNNN``.

    ``if_exists``: ``"error"`` (default) raises :class:`DatabaseExistsError` when ``path``
    already has a manifest; ``"overwrite"`` first removes that database's shards and manifest
    (nothing else under ``path``). An ingest that crashed (no manifest, its
    ``.ingest-in-progress`` marker left) is cleaned up and redone either way. There is no
    append: add rows to an existing sharded database with ``srvdb.distributed.open``.

    ``concurrency``: the most embedding actors (default: the cluster's CPU count); each loads
    the model once. The shard writers run on this node (the one holding ``path``) and reserve
    no CPU.

    Raises :class:`srvdb.InvalidInputError` for a missing column, a non-string id, a NaN or
    infinite value or a bad argument, :class:`srvdb.DimensionMismatchError` for vectors of
    different lengths and :class:`srvdb.DuplicateIdError` naming an id found twice; on any
    error the shard directories made so far are removed and no manifest is written.
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
    if embedder is not None and vector_column is not None and text_column is None:
        raise InvalidInputError("embedder= applies to text_column=; vector_column alone stores "
                                "the given vectors")
    meta_cols = list(metadata_columns or ())
    _check_columns(dataset, id_column, text_column, vector_column, meta_cols)

    embed = vector_column is None
    model_name, model_folder = _resolve_embedder(embedder) if text_column is not None else (None, None)
    dim = _first_dim(dataset, vector_column) if not embed else None

    root = Path(path)
    dirs = [shard_dir_name(s) for s in range(shards)]
    _prepare(root, dirs, if_exists)

    writers: list = []
    try:
        writer_cls = ray.remote(num_cpus=0, max_restarts=0)(_ShardWriter).options(
            scheduling_strategy=_this_node(ray))
        writers = [writer_cls.remote(str(root / d), dim, metric, model_folder or model_name)
                   for d in dirs]
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
        routed = pipeline.map_batches(
            _route, batch_size=batch_size, batch_format="numpy",
            fn_kwargs={"writers": writers, "id_column": id_column, "vector_key": vector_key,
                       "text_column": text_column, "metadata_columns": meta_cols, "dim": dim})
        sent = 0
        for batch in routed.iter_batches(batch_size=None, batch_format="numpy"):
            error = next((e for e in batch[_ERROR] if e), None)
            if error:
                raise pickle.loads(error)
            sent += int(batch[_ROWS].sum())
        committed = ray.get([w.commit.remote() for w in writers])
    except BaseException as e:
        _abort(ray, writers, root, dirs)
        cause = _srvdb_cause(e)
        if cause is not None:
            raise _translated(cause, id_column) from None
        raise
    for w in writers:
        ray.kill(w)

    rows = sum(n for n, _ in committed)
    dims = {d for _, d in committed if d is not None}
    if rows != sent or len(dims) > 1:
        _remove(root, dirs)
        raise Error(f"ingest lost track of rows: {sent} sent, {rows} committed, dims {sorted(dims)}"
                    " (the shards were removed; please report this)")
    manifest = Manifest(shards=shards, dim=dims.pop() if dims else dim, metric=metric,
                        embedder=model_name)
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
    names = list(schema.names) if schema is not None else []
    wanted = [("id_column", id_column), ("text_column", text_column),
              ("vector_column", vector_column)] + [("metadata_columns", c) for c in meta_cols]
    for arg, col in wanted:
        if col is not None and col not in names:
            raise InvalidInputError(f"{arg}={col!r} is not a column of the dataset; its columns "
                                    f"are {names}")


def _resolve_embedder(embedder: Optional[str]) -> tuple[str, Optional[str]]:
    """The name the shards and manifest record, and the model folder found here (None if the
    workers must resolve the name themselves, e.g. on another node)."""
    from .. import text

    name = embedder or text.DEFAULT_MODEL
    folder = str(text.model_dir(name))  # ModelError naming the install command if missing
    return text.model_name(name), folder


def _first_dim(dataset, vector_column: str) -> Optional[int]:
    rows = dataset.take(1)
    if not rows:
        return None
    first = np.asarray(rows[0][vector_column])
    if first.ndim != 1 or first.size == 0:
        raise InvalidInputError(f"vector_column={vector_column!r} must hold one non-empty vector "
                                f"per row; the first row has shape {first.shape}")
    return int(first.size)


def _prepare(root: Path, dirs: list[str], if_exists: str) -> None:
    """Makes ``root`` ready for a fresh ingest of ``dirs``: redoes an interrupted ingest's
    cleanup, applies ``if_exists`` to an existing database, refuses shard directories it did
    not make, then writes the in-progress marker (durably) before anything else."""
    root.mkdir(parents=True, exist_ok=True)
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
    _remove_dirs(root, sorted(ours))
    _write_marker(marker, dirs)


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


def _abort(ray, writers: list, root: Path, dirs: list[str]) -> None:
    # Close each writer first (so no process still writes into a directory being removed);
    # one that does not answer in time is killed, and its directory stays for the next run.
    done, _ = ray.wait([w.close.remote() for w in writers], num_returns=len(writers), timeout=30)
    for w in writers:
        ray.kill(w)
    if len(done) == len(writers):
        _remove(root, dirs)


def _this_node(ray):
    """Pins an actor to the driver's node, the one whose disk holds ``path``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


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
        import srvdb

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
        except Error as e:  # handed to _route, which reports it (see there)
            error = pickle.dumps(e)
            batch[_VECTORS] = np.zeros((rows, self._db.dim or 1), dtype=np.float32)
        batch[_ERROR] = np.array([error] * rows, dtype=object)
        return batch


class _ShardWriter:
    """Ray actor: the only handle on one shard's database while ingest writes it."""

    def __init__(self, directory: str, dim: Optional[int], metric: str, embedder: Optional[str]):
        import srvdb

        self._db = srvdb.open(directory, dim=dim, metric=metric, embedder=embedder)

    def add(self, ids, vectors, metadatas, documents) -> int:
        self._db.add(ids, vectors, metadatas, documents, progress=False)
        return len(ids)

    def commit(self) -> tuple[int, Optional[int]]:
        """Commits once, closes, and returns the shard's row count and dimension."""
        self._db.persist()
        rows, dim = len(self._db), self._db.dim
        self._db.close()
        return rows, dim

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()


def _route(batch: dict, *, writers: list, id_column: str, vector_key: str,
           text_column: Optional[str], metadata_columns: list[str], dim: Optional[int]) -> dict:
    """Ray Data task: checks one batch, splits it by shard and sends each writer its part.
    Returns the row count, or the SrvDB error that stopped it (pickled): Ray Data would
    replace a raised one by a generic "UDF failed" error, losing its class and message."""
    try:
        if _ERROR in batch:  # the embedding stage failed on this batch
            error = next((e for e in batch[_ERROR] if e), b"")
            if error:
                return _result(0, error)
        ids = _ids(batch[id_column], id_column)
        vectors = _vectors(batch[vector_key], ids, vector_key, dim)
        metas = None
        if metadata_columns:
            columns = {c: _plain(batch[c]) for c in metadata_columns}
            metas = [{c: columns[c][i] for c in metadata_columns} for i in range(len(ids))]
        docs = None
        if text_column is not None:
            docs = [t if isinstance(t, str) else None for t in batch[text_column]]
        _send(writers, ids, vectors, metas, docs)
    except Exception as e:
        cause = _srvdb_cause(e)
        if cause is None:
            raise
        return _result(0, pickle.dumps(cause))
    return _result(len(ids), b"")


def _send(writers: list, ids: list[str], vectors: np.ndarray, metas, docs) -> None:
    """Sends each shard its rows of the batch, in one call per shard, and waits for all."""
    import ray

    refs = []
    for shard, rows in enumerate(partition(ids, len(writers))):
        if rows:
            refs.append(writers[shard].add.remote(
                [ids[i] for i in rows], vectors[rows],
                [metas[i] for i in rows] if metas is not None else None,
                [docs[i] for i in rows] if docs is not None else None))
    ray.get(refs)


def _result(rows: int, error: bytes) -> dict:
    return {_ROWS: np.array([rows], dtype=np.int64), _ERROR: np.array([error], dtype=object)}


def _ids(column, id_column: str) -> list[str]:
    ids = column.tolist()
    for i in ids:
        if not isinstance(i, str):
            raise InvalidInputError(
                f"id_column={id_column!r} must hold strings (SrvDB ids are strings); got "
                f"{type(i).__name__} {i!r}: convert the column first (e.g. with map_batches)")
    return ids


def _vectors(column, ids: list[str], vector_key: str, dim: Optional[int]) -> np.ndarray:
    """The batch's vectors as one float32 (rows, dim) array, checked: equal lengths (``dim``
    when known), finite values. Errors name the first offending id."""
    if isinstance(column, np.ndarray) and column.dtype != object and column.ndim == 2:
        rows = column
    else:
        items = [np.asarray(v) for v in column]
        for i, v in enumerate(items):
            if v.ndim != 1 or (items and v.shape != items[0].shape):
                raise _dim_error(ids[i], vector_key, items[0].size, v.size)
        rows = np.stack(items) if items else np.zeros((0, dim or 0))
    if rows.dtype.kind not in "fiu":
        raise InvalidInputError(f"vector_column={vector_key!r} must hold numbers, got {rows.dtype}")
    if dim is not None and len(ids) and rows.shape[1] != dim:
        raise _dim_error(ids[0], vector_key, dim, rows.shape[1])
    out = np.ascontiguousarray(rows, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise InvalidInputError(f"the vector of id {ids[bad]!r} holds NaN or infinity "
                                "(after conversion to float32)")
    return out


def _dim_error(id: str, vector_key: str, expected: int, got: int) -> DimensionMismatchError:
    err = DimensionMismatchError(
        f"the vector of id {id!r} has {got} values, others in {vector_key!r} have {expected}: "
        "every vector must have the same length")
    err.expected, err.got = expected, got
    return err


def _plain(column) -> list:
    """A batch column as plain Python values (what JSON metadata can hold)."""
    return [v.tolist() if isinstance(v, np.ndarray) else v for v in column.tolist()]
