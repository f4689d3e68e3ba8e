"""One shard of a sharded database, served by a Ray actor.

The class is plain Python (Ray is not imported here); ``_sharded`` wraps it with
``ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)``. Ray re-runs ``__init__``
when the actor's process dies, so ``__init__`` only reopens the shard's directory: whatever
the shard committed (every write before an acknowledged ``persist()``) is there again. A
missing directory is an error rather than a new empty shard, so a lost disk is never
mistaken for an empty one.

Ray retries a task whose actor died, so writes are idempotent: a write carries the sequence
numbers the driver gave it, and a retry whose records are all live with those numbers was
applied before the crash and is not applied twice.

Calls run one at a time in submission order (the default ``max_concurrency=1``), so a
shard sees the driver's writes in the order it made them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .._errors import LockedError
from ._manifest import fsync_dir
from ._order import OrderLog

#: How long a restarted actor waits for the dead process's directory lock to be released.
LOCK_WAIT_SECONDS = 10.0


class ShardMissingError(FileNotFoundError):
    """The shard's directory is missing or empty: the actor refuses to create it."""


def create_shard(directory: str, dim: Optional[int], metric: str, embedder: Optional[str]) -> None:
    """Creates the empty shard database ``directory`` (run on the node that will hold it).
    An existing empty one is reused (an ``open`` that crashed before its manifest); one holding
    records is an error, as it may be an interrupted ``ingest``."""
    import srvdb

    path = Path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)  # on another node, the root may be new
    db = srvdb.open(path, dim=dim, metric=metric, embedder=embedder)
    try:
        if len(db) > 0:
            raise srvdb.InvalidInputError(
                f"{path} holds {len(db)} records but the sharded database has no manifest (an "
                "interrupted ingest?): finish or re-run the ingest, or remove the directory"
            )
    finally:
        db.close()
    fsync_dir(path.parent)


class ShardActor:
    """Serves one shard directory: writes, reads and searches, with the ordering keys the
    driver merges on."""

    def __init__(self, directory: str, shard: int, metric: str):
        import srvdb

        path = Path(directory)
        if not path.is_dir() or not any(path.iterdir()):
            raise ShardMissingError(
                f"shard {shard}: {path} is missing or empty on this node; restore it (or place "
                "the shard on the node that holds it) and open the sharded database again"
            )
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                # The manifest's metric is given, so a shard that disagrees is refused.
                self._db = srvdb.open(path, metric=metric)
                break
            except LockedError:
                # A restart races the dead process's exit; its lock goes with it.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._order = OrderLog(path, self._db.ids())

    # -- what the driver checks at open --------------------------------------------------

    def info(self) -> dict[str, Any]:
        db = self._db
        return {
            "dim": db.dim,
            "metric": db.metric,
            "embedder": db.embedder,
            "max_seq": self._order.max_seq,
            "count": len(db),
            "pid": os.getpid(),
        }

    # -- writes ---------------------------------------------------------------------------

    def write(
        self,
        mode: str,
        ids: list[str],
        seqs: list[int],
        embeddings: Any,
        metadatas: Optional[list[Any]],
        documents: Optional[list[Optional[str]]],
    ) -> None:
        """``add`` or ``upsert`` of a batch the driver validated; ``seqs`` order it."""
        key = self._order.key
        if all(key.get(id) == seq for id, seq in zip(ids, seqs)):
            return  # a retry of a write applied before a crash
        # What to restore if the engine refuses (a logged seq, else nothing: an unlogged
        # record's key comes from its position).
        previous = [(key[id] if key.get(id, -1) >= 0 else None, id) for id in ids]
        self._order.record(zip(seqs, ids))
        try:
            getattr(self._db, mode)(ids, embeddings, metadatas, documents, progress=False)
        except BaseException:
            self._order.record(previous)
            raise
        key.update(zip(ids, seqs))

    def existing(self, ids: list[str]) -> list[int]:
        """Positions of the ids this shard holds."""
        db = self._db
        return [i for i, id in enumerate(ids) if id in db]

    def delete(self, ids: Optional[list[str]], where: Any, where_document: Any) -> int:
        """Deletes ``ids`` (those still present: a retry after a crash finds some gone) or
        the records matching the filter; returns how many."""
        db = self._db
        if ids is not None:
            ids = [id for id in ids if id in db]
            if not ids:
                return 0
        deleted = db.delete(ids, where=where, where_document=where_document)
        if deleted:
            key = self._order.key
            for id in [id for id in (ids if ids is not None else list(key)) if id not in db]:
                del key[id]
        return deleted

    def persist(self) -> None:
        self._db.persist()
        if self._order.should_compact():
            self._order.compact()

    def compact(self) -> None:
        self._db.compact()

    def close(self) -> None:
        self._order.close()
        self._db.close()

    def call(self, method: str, args: tuple, kwargs: dict) -> Any:
        """A database method whose answer is plain data (count, index calls)."""
        return getattr(self._db, method)(*args, **kwargs)

    # -- reads ----------------------------------------------------------------------------

    def get(self, id: str) -> Optional[tuple]:
        record = self._db.get(id)
        return None if record is None else _record_tuple(record)

    def records(self, where: Any, where_document: Any, limit: Optional[int]) -> list[tuple]:
        """The first ``limit`` matching records in this shard's order, each with its key."""
        key = self._order.key
        found = self._db.records(where=where, where_document=where_document, limit=limit)
        return [(key[r.id],) + _record_tuple(r) for r in found]

    def ids(self) -> list[tuple[int, str]]:
        key = self._order.key
        return [(key[id], id) for id in self._db.ids()]

    def search(
        self,
        queries: Any,
        batch: bool,
        k: Any,
        where: Any,
        where_document: Any,
        scan: dict[str, Any],
        documents: bool,
    ) -> tuple[list[list[tuple]], float]:
        """This shard's exact top ``k`` per query as ``(score, key, id[, document])``, and the
        seconds the engine took (for the overhead figure)."""
        db = self._db
        start = time.perf_counter()
        if batch:
            found = db.search_batch(queries, k, where=where, where_document=where_document, **scan)
        else:
            found = [db.search(queries, k, where, where_document, **scan)]
        seconds = time.perf_counter() - start
        key = self._order.key
        if documents:
            out = [[(s, key[id], id, _document(db, id)) for id, s in hits] for hits in found]
        else:
            out = [[(s, key[id], id) for id, s in hits] for hits in found]
        return out, seconds


def _record_tuple(record: Any) -> tuple:
    return (record.id, record.vector, record.metadata, record.metadata_text, record.document)


def _document(db: Any, id: str) -> Optional[str]:
    record = db.get(id)
    return None if record is None else record.document

