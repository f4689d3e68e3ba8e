"""``srvdb.distributed.open``: a sharded database served by one Ray actor per shard.

Ids are split among the shards by :func:`shard_of`. A write is validated whole in this
process (against an in-memory database, so it raises what one database would, and against
the shards' ids), then each shard gets its part in one call, all shards at once. A search goes
to every shard in one call (the whole batch), each answers its exact top ``k``, and the merge
keeps the ``k`` best by score, ties to the record written first, as one database does
(see ``_order``).

Ray is imported when a sharded database is opened, not when this module is.
"""

from __future__ import annotations

import operator
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .. import _srvdb
from .._errors import (
    DimensionMismatchError,
    DuplicateIdError,
    EmbedderMismatchError,
    Error,
    InvalidInputError,
    NotFoundError,
)
from ._actor import ShardActor, create_shard
from ._errors import ReadOnlyError, ShardError, ShardUnavailableError
from ._manifest import (MAX_SHARDS, Manifest, read_manifest, shard_numbers, shard_of,
                        write_manifest)

__all__ = ["open", "ShardedDatabase", "ShardedRecord", "PartialResult", "PartialArrays"]

#: Seconds a call waits for a shard (a restarting actor included) before it is unavailable.
DEFAULT_TIMEOUT = 60.0
#: The marker ``srvdb.distributed.ingest`` keeps under the root until its manifest is written.
_INGEST_MARKER = ".ingest-in-progress"
#: Query batches larger than this go to the object store once instead of into each call.
_PUT_BYTES = 100_000
_HIGHER_IS_BETTER = {"cosine": True, "dot": True, "l2": False}
# Errors about the caller's input: every shard raises the same, so it is raised as-is.
_INPUT_ERRORS = (InvalidInputError, DimensionMismatchError, DuplicateIdError, NotFoundError)


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            'srvdb.distributed needs Ray: pip install "ray[data]"'
        ) from e
    return ray


@dataclass(frozen=True)
class ShardedRecord:
    """A stored record, as ``ShardedDatabase.get`` and ``records`` return it (the fields of
    :class:`srvdb.Record`)."""

    id: str
    vector: np.ndarray
    metadata: Any
    metadata_text: Optional[str]
    document: Optional[str]


class PartialResult(list):
    """A search answer from ``allow_partial=True``: a list like the normal answer, with
    ``partial`` (True when some shard did not answer) and ``missing_shards`` (which)."""

    partial: bool
    missing_shards: tuple[int, ...]

    def __init__(self, items, missing: Sequence[int]):
        super().__init__(items)
        self.missing_shards = tuple(missing)
        self.partial = bool(self.missing_shards)


class PartialArrays(tuple):
    """``search_batch(..., numpy=True, allow_partial=True)``: the ``(ids, scores)`` pair with
    ``partial`` and ``missing_shards``."""

    partial: bool
    missing_shards: tuple[int, ...]

    def __new__(cls, pair, missing: Sequence[int]):
        self = super().__new__(cls, pair)
        self.missing_shards = tuple(missing)
        self.partial = bool(self.missing_shards)
        return self


def open(
    path: os.PathLike | str,
    shards: Optional[int] = None,
    *,
    dim: Optional[int] = None,
    metric: Optional[str] = None,
    embedder: Optional[str] = None,
    read_only: bool = False,
    node_ids: Optional[Sequence[str]] = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> "ShardedDatabase":
    """Opens the sharded database at ``path``, creating ``shards`` empty shards and then its
    manifest when there is none; an existing manifest wins (a different ``shards``, ``dim``,
    ``metric`` or ``embedder`` raises).

    Starts one actor per shard (``ray.init()`` first if Ray is not initialised). Each actor is
    pinned to a node (hard affinity): ``node_ids[s]`` for shard ``s`` when given (the node
    whose local disk holds ``path/shard-0000s``), else the node of this process. ``timeout``:
    seconds a call waits for a shard before raising ``ShardUnavailableError``."""
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init()
    root = Path(path)
    manifest = read_manifest(root)
    if manifest is None:
        if read_only:
            raise NotFoundError(
                f"no sharded database at {root} (no manifest): nothing to open read-only"
            )
        if shards is None:
            raise InvalidInputError(
                f"no sharded database at {root}: pass shards= to create one (or run ingest)"
            )
        if (root / _INGEST_MARKER).exists():
            raise InvalidInputError(
                f"{root} holds an interrupted ingest ({_INGEST_MARKER}): re-run the ingest, or "
                "remove the directory to start an empty database there"
            )
        shards = _check_shards(shards)
        if metric is None:
            metric = "cosine"
        if metric not in _HIGHER_IS_BETTER:
            raise InvalidInputError(f"unknown metric {metric!r}: use cosine, dot or l2")
        if dim is not None:
            dim = operator.index(dim)
        manifest = Manifest(shards=shards, dim=dim, metric=metric, embedder=embedder)
        placement = _placement(ray, manifest.shards, node_ids)
        root.mkdir(parents=True, exist_ok=True)
        task = ray.remote(num_cpus=0, max_retries=0)(create_shard)
        refs = [
            task.options(scheduling_strategy=placement[s]).remote(
                str(manifest.shard_path(root, s)), dim, metric, embedder
            )
            for s in range(shards)
        ]
        _get_all(ray, refs, timeout, "create")
        write_manifest(root, manifest)
    else:
        _check_matches(root, manifest, shards, dim, metric, embedder)
        placement = _placement(ray, manifest.shards, node_ids)
    return ShardedDatabase(ray, root, manifest, placement, read_only, timeout)


def _check_shards(shards: Any) -> int:
    try:
        n = operator.index(shards)
    except TypeError:
        raise InvalidInputError(f"shards must be an int, not {type(shards).__name__}") from None
    if not 1 <= n <= MAX_SHARDS:
        raise InvalidInputError(f"shards must be in 1..={MAX_SHARDS}, got {n}")
    return n


def _check_matches(root: Path, m: Manifest, shards, dim, metric, embedder) -> None:
    """An existing manifest wins; a different request is an error, not a silent re-shard."""
    if shards is not None and _check_shards(shards) != m.shards:
        raise InvalidInputError(
            f"{root} has {m.shards} shards, not {shards}: open it with shards=None (re-sharding "
            "means writing a new database with ingest)"
        )
    if dim is not None and m.dim is not None and operator.index(dim) != m.dim:
        err = DimensionMismatchError(f"{root} has dimension {m.dim}, not {dim}")
        err.expected, err.got = m.dim, operator.index(dim)
        raise err
    if metric is not None and metric != m.metric:
        raise InvalidInputError(f"{root} uses metric {m.metric!r}, not {metric!r}: omit metric=")
    if embedder is not None and embedder != m.embedder:
        err = EmbedderMismatchError(
            f"{root} was created for embedder {m.embedder!r}, not {embedder!r}: its vectors are "
            "not comparable; open it with the embedder it recorded"
        )
        err.stored, err.asked = m.embedder, embedder
        raise err


def _placement(ray, shards: int, node_ids: Optional[Sequence[str]]) -> list:
    """One hard node-affinity strategy per shard: its shard directory lives on that node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if node_ids is None:
        nodes = [ray.get_runtime_context().get_node_id()] * shards
    else:
        nodes = list(node_ids)
        if len(nodes) != shards:
            raise InvalidInputError(
                f"node_ids names {len(nodes)} nodes for {shards} shards: give one per shard"
            )
    return [NodeAffinitySchedulingStrategy(node_id=n, soft=False) for n in nodes]


def _get_all(ray, refs: list, timeout: float, what: str, allow_partial: bool = False, shards=None):
    """The answers to ``refs`` (one per shard: ``shards[i]`` for ``refs[i]``, else shard
    ``i``), in order; a shard that fails raises (naming it) or, with ``allow_partial``, is
    None in the answers and listed in the second value."""
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    if len(ready) == len(refs):
        try:
            return ray.get(refs), []
        except Exception:
            pass  # find which shard failed, below
    done = set(ready)
    answers: list[Any] = []
    missing: list[int] = []
    for i, ref in enumerate(refs):
        shard = i if shards is None else shards[i]
        try:
            if ref not in done:
                raise ShardUnavailableError(
                    f"shard {shard} did not answer {what} within {timeout:g} s (its actor is "
                    "restarting or its node is unreachable)"
                )
            answers.append(ray.get(ref))
        except Exception as e:
            err = _shard_error(ray, e, shard, what)
            if not allow_partial or isinstance(err, _INPUT_ERRORS):
                if isinstance(err, ShardError):
                    raise err from err.__cause__
                raise err from None
            answers.append(None)
            missing.append(shard)
    return answers, missing


def _shard_error(ray, e: BaseException, shard: int, what: str) -> BaseException:
    """The error to raise for shard ``shard``'s failure ``e``: the engine's input errors as
    they are, anything else as a ShardError naming the shard."""
    if isinstance(e, ShardError):
        e.shard = shard
        return e
    cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) else e
    if isinstance(cause, _INPUT_ERRORS):
        return cause
    if isinstance(e, ray.exceptions.RayTaskError):
        err: ShardError = ShardError(f"shard {shard} failed {what}: {type(cause).__name__}: {cause}")
    else:
        err = ShardUnavailableError(f"shard {shard} cannot answer {what}: {type(e).__name__}: {e}")
    err.shard = shard
    err.__cause__ = cause
    return err


class ShardedDatabase:
    """A database split over shards, each a :class:`srvdb.Database` served by a Ray actor.

    The :class:`srvdb.Database` operations that make sense across shards, with the same
    arguments, answers and errors; search answers equal those of one database holding every
    record (ids, scores and order). Use :func:`open` to make one. ``actors`` are the shard
    actors' handles in shard order (for operators: ``ray.kill``, placement checks)."""

    def __init__(
        self, ray, root: Path, manifest: Manifest, placement: list, read_only: bool, timeout: float
    ):
        self._ray = ray
        self._root = root
        self._manifest = manifest
        self._read_only = read_only
        self._timeout = timeout
        self._closed = False
        self._write_lock = threading.Lock()
        remote = ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)(ShardActor)
        self.actors = [
            remote.options(scheduling_strategy=placement[s]).remote(
                str(manifest.shard_path(root, s)), s, manifest.metric
            )
            for s in range(manifest.shards)
        ]
        try:
            infos, _ = self._all([a.info.remote() for a in self.actors], "open")
        except BaseException:
            for a in self.actors:
                ray.kill(a, no_restart=True)
            raise
        for shard, info in enumerate(infos):
            if info["metric"] != manifest.metric:
                raise ShardError(
                    f"shard {shard} uses metric {info['metric']!r} but the manifest says "
                    f"{manifest.metric!r}: {root} is damaged"
                )
        dims = {info["dim"] for info in infos} - {None}
        if len(dims) > 1 or (manifest.dim is not None and dims - {manifest.dim}):
            raise ShardError(f"the shards of {root} have dimensions {sorted(dims)}: it is damaged")
        self._dim = manifest.dim if manifest.dim is not None else next(iter(dims), None)
        self._next_seq = max(info["max_seq"] for info in infos) + 1
        self._embedder_db: Optional[_srvdb.Database] = None

    # -- properties -------------------------------------------------------------------------

    @property
    def shards(self) -> int:
        return self._manifest.shards

    @property
    def dim(self) -> Optional[int]:
        """The dimension, or None until the first ``add``."""
        return self._dim

    @property
    def metric(self) -> str:
        return self._manifest.metric

    @property
    def embedder(self) -> Optional[str]:
        return self._manifest.embedder

    @property
    def path(self) -> Path:
        return self._root

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return (
            f"srvdb.distributed.ShardedDatabase({str(self._root)!r}, shards={self.shards}, "
            f"dim={self._dim}, metric={self.metric!r})"
        )

    # -- plumbing -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Error("the sharded database is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise ReadOnlyError(f"{self._root} was opened with read_only=True")

    def _all(self, refs: list, what: str, allow_partial: bool = False, shards=None):
        return _get_all(self._ray, refs, self._timeout, what, allow_partial, shards)

    def _call_all(self, method: str, *args, **kwargs) -> list:
        """The database method ``method`` on every shard; the answers in shard order."""
        answers, _ = self._all([a.call.remote(method, args, kwargs) for a in self.actors], method)
        return answers

    def _embed(self, texts: Sequence[str], progress: Optional[bool] = False) -> np.ndarray:
        """The embedder's vectors, computed once here rather than on every shard."""
        if self._embedder_db is None:
            self._embedder_db = _srvdb.open(":memory:", embedder=self._manifest.embedder)
        return self._embedder_db.embed(texts, progress=progress)

    # -- writes -------------------------------------------------------------------------------

    def add(self, ids, embeddings=None, metadatas=None, documents=None, *, progress=None) -> None:
        """Inserts a batch. Rejected whole (nothing written on any shard) for anything one
        database rejects: ``DuplicateIdError`` for an id present or repeated,
        ``DimensionMismatchError``, ``InvalidInputError``. Each shard's part is then atomic; a
        shard failing meanwhile raises ``ShardError`` and the other parts may be applied."""
        self._write("add", ids, embeddings, metadatas, documents, progress)

    def upsert(self, ids, embeddings=None, metadatas=None, documents=None, *, progress=None) -> None:
        """Like ``add``, but an existing id is replaced."""
        self._write("upsert", ids, embeddings, metadatas, documents, progress)

    def _write(self, mode: str, ids, embeddings, metadatas, documents, progress) -> None:
        self._check_writable()
        # Generators are read once, here (the batch is split by position below).
        ids, metadatas, documents = (_listed(x) for x in (ids, metadatas, documents))
        if embeddings is None and documents is not None and self._manifest.embedder is not None:
            embeddings = self._embed(documents, progress)
        # One database's checks, in its order: the batch itself, then (for add) the ids
        # already stored, which it checks position by position with repeats in the batch.
        scratch = _srvdb.open(":memory:", dim=self._dim, metric=self.metric)
        try:
            scratch.add(ids, embeddings, metadatas, documents, progress=False)
            first_bad = None
        except DuplicateIdError as e:
            first_bad = e
        finally:
            scratch.close()
        n = len(ids)
        if n == 0:
            return  # an empty batch one database accepts
        if mode == "add":
            limit = n if first_bad is None or first_bad.index is None else first_bad.index
            present = self._existing(ids[:limit])
            if present:
                i = min(present)
                err = DuplicateIdError(
                    f'duplicate id "{ids[i]}" at index {i}: each id may appear once in a batch, '
                    "and add refuses one the database holds (upsert replaces it)"
                )
                err.id, err.index = ids[i], i
                raise err
        if first_bad is not None:
            raise first_bad
        vectors = np.asarray(embeddings, dtype=np.float32).reshape(n, -1)
        with self._write_lock:
            seqs = list(range(self._next_seq, self._next_seq + n))
            self._next_seq += n
            refs, targets = [], []
            for shard, positions in enumerate(self._partition(ids)):
                if positions:
                    targets.append(shard)
                    refs.append(
                        self.actors[shard].write.remote(
                            mode,
                            [ids[i] for i in positions],
                            [seqs[i] for i in positions],
                            vectors[positions],
                            None if metadatas is None else [metadatas[i] for i in positions],
                            None if documents is None else [documents[i] for i in positions],
                        )
                    )
        self._all(refs, mode, shards=targets)
        if self._dim is None:
            self._dim = int(vectors.shape[1])
            write_manifest(self._root, _with_dim(self._manifest, self._dim))

    def _partition(self, ids: Sequence[str]) -> list[list[int]]:
        """The positions in ``ids`` of each shard's ids, in order (one hash per id, in the
        extension: :func:`shard_numbers`)."""
        out: list[list[int]] = [[] for _ in range(self.shards)]
        for i, shard in enumerate(shard_numbers(ids, self.shards).tolist()):
            out[shard].append(i)
        return out

    def _existing(self, ids: list[str]) -> list[int]:
        """Positions (in ``ids``) of the ids some shard holds."""
        parts = self._partition(ids)
        answers, _ = self._all(
            [a.existing.remote([ids[i] for i in p]) for a, p in zip(self.actors, parts)], "existing"
        )
        return [parts[s][j] for s, found in enumerate(answers) for j in found]

    def delete(self, ids=None, *, where=None, where_document=None) -> int:
        """Deletes ``ids``, or every record matching the filter, or those of ``ids`` that
        match it; returns how many. An unknown id raises ``NotFoundError`` and deletes nothing
        (checked on every shard first)."""
        self._check_writable()
        if ids is None:
            if where is None and where_document is None:
                raise InvalidInputError(
                    "delete needs ids, where or where_document; to delete every record pass where={}"
                )
            with self._write_lock:
                refs = [a.delete.remote(None, where, where_document) for a in self.actors]
                counts, _ = self._all(refs, "delete")
            return sum(counts)
        if isinstance(ids, str):
            ids = [ids]
        ids = list(ids)
        for i, id in enumerate(ids):
            if not isinstance(id, str):
                raise InvalidInputError(f"ids[{i}] is {type(id).__name__}, not str")
        present = set(self._existing(ids))
        for i, id in enumerate(ids):
            if i not in present:
                err = NotFoundError(f'id "{id}" not found')
                err.id = id
                raise err
        with self._write_lock:
            refs = [
                a.delete.remote([ids[i] for i in p], where, where_document)
                for a, p in zip(self.actors, self._partition(ids))
            ]
            counts, _ = self._all(refs, "delete")
        return sum(counts)

    def persist(self) -> None:
        """Makes every acknowledged change on every shard durable; once it returns, a shard
        actor that dies restarts with all of them."""
        self._check_open()
        self._all([a.persist.remote() for a in self.actors], "persist")

    def compact(self) -> None:
        """Compacts every shard (crash-safe per shard)."""
        self._check_writable()
        self._all([a.compact.remote() for a in self.actors], "compact")

    def create_index(self, *args, **kwargs) -> dict:
        """``Database.create_index`` on every shard; returns ``index_info()``."""
        self._check_writable()
        self._call_all("create_index", *args, **kwargs)
        return self.index_info()

    def drop_index(self) -> bool:
        self._check_writable()
        return any(self._call_all("drop_index"))

    def index_info(self) -> dict:
        """The shards' ``index_info``: their kind and parameters, ``rows`` and ``bytes``
        summed."""
        self._check_open()
        infos = self._call_all("index_info")
        out = dict(infos[0])
        out["rows"] = sum(i["rows"] for i in infos)
        out["bytes"] = sum(i["bytes"] for i in infos)
        return out

    def create_field_index(self, field: str) -> None:
        self._check_writable()
        self._call_all("create_field_index", field)

    def drop_field_index(self, field: str) -> bool:
        self._check_writable()
        return any(self._call_all("drop_field_index", field))

    def field_indexes(self) -> list[str]:
        self._check_open()
        return self._call_all("field_indexes")[0]

    # -- reads --------------------------------------------------------------------------------

    def get(self, id: str, default: Any = None) -> Any:
        """The record ``id`` (from the one shard that can hold it), or ``default``."""
        self._check_open()
        if not isinstance(id, str):
            raise InvalidInputError(f"an id is a str, not {type(id).__name__}")
        shard = shard_of(id, self.shards)
        (found,), _ = self._all([self.actors[shard].get.remote(id)], "get", shards=[shard])
        return default if found is None else ShardedRecord(*found)

    def __getitem__(self, id: str) -> ShardedRecord:
        record = self.get(id)
        if record is None:
            err = NotFoundError(f'id "{id}" not found')
            err.id = id
            raise err
        return record

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, str):
            return False
        self._check_open()
        shard = shard_of(id, self.shards)
        (found,), _ = self._all([self.actors[shard].existing.remote([id])], "contains", shards=[shard])
        return bool(found)

    def count(self, where=None, where_document=None) -> int:
        """How many records match, over every shard (``len(db)`` without a filter)."""
        self._check_open()
        return sum(self._call_all("count", where, where_document))

    def __len__(self) -> int:
        return self.count()

    def ids(self) -> list[str]:
        """The live ids, in the order they were written (as one database lists them)."""
        self._check_open()
        answers, _ = self._all([a.ids.remote() for a in self.actors], "ids")
        merged = sorted((key, shard, id) for shard, pairs in enumerate(answers) for key, id in pairs)
        return [id for _, _, id in merged]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def records(self, where=None, where_document=None, limit=None, offset=0) -> list[ShardedRecord]:
        """The matching records (all without a filter) in the order they were written,
        skipping ``offset``, at most ``limit``."""
        self._check_open()
        offset = operator.index(offset)
        if offset < 0 or (limit is not None and operator.index(limit) < 0):
            raise InvalidInputError("limit and offset must be non-negative")
        # Each shard's first offset + limit in write order cover the merged page.
        end = None if limit is None else offset + operator.index(limit)
        answers, _ = self._all(
            [a.records.remote(where, where_document, end) for a in self.actors], "records"
        )
        merged = sorted(
            ((row[0], shard) + row[1:] for shard, rows in enumerate(answers) for row in rows),
            key=lambda r: (r[0], r[1]),
        )
        return [ShardedRecord(*r[2:]) for r in merged[offset:end]]

    def search(
        self,
        query,
        k=10,
        where=None,
        where_document=None,
        *,
        oversample=None,
        ef=None,
        exact=False,
        allow_partial=False,
    ):
        """The ``k`` best ``(id, score)`` pairs over every shard, as one database holding every
        record answers (squared L2 distance: lowest first). A shard that cannot answer raises
        ``ShardError`` naming it; with ``allow_partial=True`` the answer is a
        :class:`PartialResult` that lists the shards missing from it."""
        scan = {"oversample": oversample, "ef": ef, "exact": exact}
        hits, missing = self._search(query, False, k, where, where_document, scan, False, allow_partial)
        return PartialResult(hits[0], missing) if allow_partial else hits[0]

    def search_batch(
        self,
        queries,
        k=10,
        *,
        where=None,
        where_document=None,
        numpy=False,
        oversample=None,
        ef=None,
        exact=False,
        allow_partial=False,
    ):
        """``search`` for every query; each shard gets the whole batch in one call.
        ``numpy=True``: ``(ids, scores)`` arrays of shape ``(len(queries), width)``, padded with
        None / NaN, as ``Database.search_batch`` returns them."""
        scan = {"oversample": oversample, "ef": ef, "exact": exact}
        hits, missing = self._search(queries, True, k, where, where_document, scan, False, allow_partial)
        if numpy:
            pair = _as_arrays(hits)
            return PartialArrays(pair, missing) if allow_partial else pair
        return PartialResult(hits, missing) if allow_partial else hits

    def query(
        self,
        texts,
        k=10,
        where=None,
        where_document=None,
        *,
        oversample=None,
        ef=None,
        exact=False,
        allow_partial=False,
    ):
        """The ``k`` best ``(id, score, document)`` hits for a text (or a list of them, for a
        list of texts); needs the embedder the database was created with. The texts are
        embedded once, here, and searched on every shard."""
        self._check_open()
        if self._manifest.embedder is None:
            raise InvalidInputError(
                "embedding text needs a text embedder: open the sharded database with "
                'srvdb.distributed.open(path, shards, embedder="all-MiniLM-L6-v2")'
            )
        one = isinstance(texts, str)
        vectors = self._embed([texts] if one else list(texts))
        scan = {"oversample": oversample, "ef": ef, "exact": exact}
        hits, missing = self._search(
            vectors, True, k, where, where_document, scan, True, allow_partial
        )
        answer = hits[0] if one else hits
        return PartialResult(answer, missing) if allow_partial else answer

    def _search(self, queries, batch, k, where, where_document, scan, documents, allow_partial):
        self._check_open()
        answers, missing, _ = self._fan_out(
            queries, batch, k, where, where_document, scan, documents, allow_partial
        )
        return self._merge(answers, operator.index(k), documents), missing

    def _fan_out(self, queries, batch, k, where, where_document, scan, documents, allow_partial):
        """Every shard's answer to the search (None for a missing shard), the missing shards,
        and each shard's own engine seconds."""
        if isinstance(queries, np.ndarray) and queries.nbytes > _PUT_BYTES:
            queries = self._ray.put(queries)  # stored once, not copied into every call
        refs = [
            a.search.remote(queries, batch, k, where, where_document, scan, documents)
            for a in self.actors
        ]
        answers, missing = self._all(refs, "search", allow_partial)
        if len(missing) == len(self.actors):
            raise ShardUnavailableError(f"no shard answered the search (shards {missing})")
        seconds = [None if a is None else a[1] for a in answers]
        return [None if a is None else a[0] for a in answers], missing, seconds

    def _merge(self, answers: list, k: int, documents: bool) -> list:
        """The ``k`` best hits per query over the shards' answers: by score, then by write
        order (the engine's tie rule: the earlier row wins), then by shard."""
        sign = -1.0 if _HIGHER_IS_BETTER[self.metric] else 1.0
        present = [(s, a) for s, a in enumerate(answers) if a is not None]
        nq = len(present[0][1])
        out = []
        for q in range(nq):
            pool = [(sign * hit[0], hit[1], s, hit) for s, a in present for hit in a[q]]
            pool.sort(key=lambda c: (c[0], c[1], c[2]))
            if documents:
                out.append([(h[2], h[0], h[3]) for _, _, _, h in pool[:k]])
            else:
                out.append([(h[2], h[0]) for _, _, _, h in pool[:k]])
        return out

    def _search_batch_seconds(self, queries, k=10, **scan) -> tuple[float, list[float]]:
        """One ``search_batch`` and what it took: the driver's wall seconds and each shard's
        engine seconds (the overhead figure: wall minus the slowest shard)."""
        import time

        start = time.perf_counter()
        scan = {"oversample": None, "ef": None, "exact": False, **scan}
        answers, _, seconds = self._fan_out(queries, True, k, None, None, scan, False, False)
        self._merge(answers, operator.index(k), False)
        return time.perf_counter() - start, seconds

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Commits and closes every shard, then ends the actors. Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._all([a.close.remote() for a in self.actors], "close")
        finally:
            for a in self.actors:
                self._ray.kill(a, no_restart=True)
            if self._embedder_db is not None:
                self._embedder_db.close()

    def __enter__(self) -> "ShardedDatabase":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False


def _listed(values: Any) -> Any:
    """``values`` as a list, unless it is None or a str (which one database rejects)."""
    return values if values is None or isinstance(values, (str, bytes)) else list(values)


def _with_dim(m: Manifest, dim: int) -> Manifest:
    return Manifest(shards=m.shards, dim=dim, metric=m.metric, embedder=m.embedder)


def _as_arrays(hits: list) -> tuple[np.ndarray, np.ndarray]:
    width = max((len(h) for h in hits), default=0)
    ids = np.full((len(hits), width), None, dtype=object)
    scores = np.full((len(hits), width), np.nan, dtype=np.float32)
    for q, row in enumerate(hits):
        for j, (id, score) in enumerate(row):
            ids[q, j] = id
            scores[q, j] = score
    return ids, scores

